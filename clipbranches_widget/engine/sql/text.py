"""Decision-branches models and saved sessions as SQL files.

``boxes_to_sql`` writes a model as a readable query (see ``query.py``: one
``BETWEEN`` group per box, votes as a sum of ``CASE`` expressions, ranked by
votes then id); ``boxes_from_sql`` parses such a query back into the same
``Boxes`` (round trip), and ``session_to_sql`` / ``session_from_sql`` keep a
saved session as one ``.sql`` file: the query plus its labels in a header
comment.

Dialects differ only in identifier quoting: ``"ansi"`` (DuckDB, PostgreSQL,
Trino, SQLite...) uses double quotes, ``"spark"`` (Spark SQL, Databricks,
Hive, BigQuery, MySQL) backticks.
"""

from __future__ import annotations

import json
import logging
import re

from ..boxes import Boxes
from ..learn.stage_model import StageModel
from .query import boxes_to_sql, quote_identifier, quote_table, tokenize
from .stage import stage_boxes_sql, stage_to_sql

__all__ = [
    "boxes_from_sql",
    "boxes_to_sql",
    "quote_identifier",
    "quote_table",
    "session_from_sql",
    "session_to_sql",
]

log = logging.getLogger(__name__)


def boxes_from_sql(sql: str, *, columns=None, n_features: int | None = None) -> Boxes:
    """Parse a query written by ``boxes_to_sql`` (any dialect) back into ``Boxes``
    (the same as ``Boxes.from_sql``)."""
    return Boxes.from_sql(sql, columns=columns, n_features=n_features)


# --- saved sessions as SQL -----------------------------------------------------

_SESSION_TAG = "clipbranches-session"


def session_to_sql(session, table="catalogue", **kwargs) -> str:
    """A saved session (a ``Session`` or its ``to_dict()``) as one SQL file.

    The text is the refined query preceded by header comments holding the
    labels and the query text as JSON, so the file is both runnable and a
    complete record of the session's outcome; ``session_from_sql`` reads it
    back. A session with a second stage (``stage_model`` in its dict) gives
    the two-stage query (``stage.stage_to_sql``: the session's result set in
    its order; ``columns``, ``id_column``, ``select`` and ``dialect`` pass
    through); one refined with ``stage=None`` the boxes query
    (``boxes_to_sql``, ``kwargs`` pass through), whose rows are exactly its
    results.
    """
    data = session.to_dict() if hasattr(session, "to_dict") else session
    if not isinstance(data, dict) or "labels" not in data:
        raise TypeError(
            f"session_to_sql: expected a Session or Session.to_dict(), got {type(session).__name__}"
        )
    if data.get("model") is None:
        raise ValueError(
            "session_to_sql: the session has no refined model yet: label some "
            "items and refine before exporting it as SQL"
        )
    boxes = Boxes.from_dict(data["model"])
    stage = data.get("stage_model")
    if stage is not None:
        if "order" in kwargs:
            raise ValueError(
                "session_to_sql: order: a two-stage export is always in the session's order"
            )
        body = stage_to_sql(StageModel.from_dict(stage), boxes, table, **kwargs)
    else:
        if (data.get("params") or {}).get("stage") is not None:
            log.warning(
                "session_to_sql: the session names a second stage but holds no fitted one "
                "(saved before a refine, or by an older version): exporting the boxes, a "
                "superset of its results"
            )
        body = boxes_to_sql(boxes, table, **kwargs)
    meta = {
        "query": data.get("query"),
        "n_items": data.get("n_items"),
        "rounds": data.get("rounds"),
    }
    labels = {str(k): int(v) for k, v in data["labels"].items()}
    head = (
        f"-- {_SESSION_TAG}: {json.dumps(meta, sort_keys=True)}\n"
        f"-- labels: {json.dumps(labels, sort_keys=True)}\n"
    )
    return head + body + "\n"


_ID = re.compile(r"[0-9]+")


def _session_labels(raw) -> dict[int, int]:
    """The header's labels, strictly: ids are decimal non-negative integers
    and values +1 or -1 (what ``session_to_sql`` writes), nothing coerced."""
    if not isinstance(raw, dict):
        raise ValueError(
            "session_from_sql: expected the labels header to be a JSON object "
            f'{{"id": 1 or -1, ...}}, got {type(raw).__name__}'
        )
    out = {}
    for k, v in raw.items():
        if not isinstance(k, str) or not _ID.fullmatch(k):
            raise ValueError(
                f"session_from_sql: label ids must be non-negative integers, got {k!r}"
            )
        if isinstance(v, bool) or v not in (1, -1) or not isinstance(v, int):
            raise ValueError(f"session_from_sql: label of item {k} must be 1 or -1, got {v!r}")
        out[int(k)] = int(v)
    return out


def _session_meta(raw) -> dict:
    if not isinstance(raw, dict):
        raise ValueError(
            f"session_from_sql: expected the {_SESSION_TAG} header to be a JSON object, "
            f"got {type(raw).__name__}"
        )
    out = {"query": raw.get("query")}
    for key in ("n_items", "rounds"):
        v = raw.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise ValueError(
                f"session_from_sql: {key} must be a non-negative integer or null, got {v!r}"
            )
        out[key] = v
    return out


def _header_json(text: str, what: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"session_from_sql: the {what} header is not valid JSON: {exc}") from exc


def session_from_sql(sql: str, *, columns=None) -> dict:
    """Read ``session_to_sql`` output: ``{"boxes", "labels", "query", "n_items", "rounds"}``.

    Plain model SQL without the session header is accepted too (no labels).
    The labels are validated (ids non-negative integers, values +1/-1): a
    hand-edited file fails here, not later on the wrong items.
    """
    if not isinstance(sql, str):
        raise TypeError(f"session_from_sql: expected SQL text (str), got {type(sql).__name__}")
    _, comments = tokenize(sql)
    out = {"labels": {}, "query": None, "n_items": None, "rounds": None}
    for c in comments:
        if c.startswith(_SESSION_TAG + ":"):
            out.update(_session_meta(_header_json(c[len(_SESSION_TAG) + 1 :], _SESSION_TAG)))
        elif c.startswith("labels:"):
            out["labels"] = _session_labels(_header_json(c[len("labels:") :], "labels"))
    out["boxes"] = boxes_from_sql(stage_boxes_sql(sql) or sql, columns=columns)
    return out
