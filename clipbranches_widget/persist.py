"""A session as plain data (JSON): what to save, and strict checks on loading.

A session file is user input: every field is checked before it is used, so a
damaged or foreign file fails with a ``ValueError`` naming the field, never
with a huge allocation or labels landing on another catalogue's items.
"""

from __future__ import annotations

import hashlib
import logging
import numbers
import re

import numpy as np

from .checks import STRATA, Draw
from .engine.learn.stage_model import StageModel
from .engine.learn.twostage import StageParams
from .results import Results

__all__ = ["SESSION_FORMAT", "catalogue_identity", "labels_from_json", "session_from_dict"]

log = logging.getLogger(__name__)

SESSION_FORMAT = 1
#: Rows hashed for a catalogue fingerprint (all of them up to this many).
IDENTITY_ROWS = 1 << 20
_ID = re.compile(r"(0|[1-9][0-9]*)\Z")
_KINDS = ("empty", "knn", "refined")


def catalogue_identity(catalogue) -> str:
    """What a session is tied to: the content of its catalogue.

    The catalogue's fingerprint of every code row (``Catalogue.identity``),
    plus its URIs (every row up to ``IDENTITY_ROWS``, an even sample beyond).
    Not the catalogue's uuid: the same items rebuilt, or built again in
    memory, are the same catalogue to a session.
    """
    n = len(catalogue)
    h = hashlib.sha256(f"{n}x{catalogue.codes.shape[1]}".encode())
    h.update(catalogue.identity["fingerprint"].encode())
    if catalogue.uris is not None:
        rows = (
            range(n)
            if n <= IDENTITY_ROWS
            else np.unique(np.linspace(0, n - 1, IDENTITY_ROWS).astype(np.int64)).tolist()
        )
        for i in rows:
            h.update(catalogue.uri(i).encode("utf-8", "surrogatepass") + b"\0")
    return "fingerprint:" + h.hexdigest()[:32]


def labels_from_json(obj, name: str = "labels") -> dict[int, int]:
    """``{"id": +1 | -1}`` as sent by a front end or stored in a file -> ``{id: +1 | -1}``.

    Strict: ids are decimal digits ("1_0", " 5", "5.0" are refused, unlike
    ``int()``), values are the integers +1 or -1 (1.5, true, "1" are refused).
    Range checks against a catalogue are the session's.
    """
    if not isinstance(obj, dict):
        raise TypeError(f"{name}: expected an object {{id: +1 | -1}}, got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if isinstance(k, numbers.Integral) and not isinstance(k, bool):
            key = int(k)
        elif isinstance(k, str) and _ID.match(k):
            key = int(k)
        else:
            raise ValueError(f"{name}: expected decimal item ids as keys, got {k!r}")
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v not in (1, -1):
            raise ValueError(f"{name}: expected values +1 or -1, got {v!r} for id {k}")
        out[key] = int(v)
    return out


def _field(data: dict, key: str, types, what: str):
    if key not in data:
        raise ValueError(f"session: the field {key!r} is missing")
    value = data[key]
    if not isinstance(value, types) or isinstance(value, bool):
        raise ValueError(f"session: {key}: expected {what}, got {value!r:.80}")
    return value


def _stage(raw):
    try:
        return StageParams.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"session: params: {e}") from None


def _last_check(raw, n_items: int) -> Draw:
    """The last random check of a session file (absent in older files): per
    stratum its distinct ids in the catalogue and its pool size."""
    if raw is None:
        return Draw.none()
    keys = ["ids", "n_results", "pools", "positives", "round"]
    if not isinstance(raw, dict) or sorted(raw) != keys:
        raise ValueError(f"session: last_check: expected an object with {keys}")
    if type(raw["round"]) is not int or not 0 <= raw["round"] < 1 << 31:
        raise ValueError(f"session: last_check: round: expected a count, got {raw['round']!r:.40}")
    for k in ("n_results", "positives"):
        if type(raw[k]) is not int or not 0 <= raw[k] <= n_items:
            raise ValueError(f"session: last_check: {k}: expected 0..{n_items}, got {raw[k]!r:.40}")
    ids, pools = raw["ids"], raw["pools"]
    if not (isinstance(ids, dict) and isinstance(pools, dict)) or not (
        set(ids) == set(pools) == set(STRATA)
    ):
        raise ValueError(f"session: last_check: expected the strata {list(STRATA)}")
    out = {}
    for k in STRATA:
        v, pool = ids[k], pools[k]
        if type(pool) is not int or not 0 <= pool <= n_items:
            raise ValueError(
                f"session: last_check: {k}: expected a pool of 0..{n_items}, got {pool!r:.40}"
            )
        if (
            not isinstance(v, list)
            or len(v) > pool
            or not all(type(i) is int and 0 <= i < n_items for i in v)
            or len(set(v)) != len(v)
        ):
            raise ValueError(
                f"session: last_check: {k}: expected at most {pool} distinct item ids "
                f"below {n_items}, got {v!r:.80}"
            )
        out[k] = np.array(v, np.int64)
    drawn = np.concatenate(list(out.values()))
    if np.unique(drawn).size != drawn.size:
        raise ValueError("session: last_check: an item is drawn in two strata")
    pools = {k: pools[k] for k in STRATA}
    return Draw(raw["round"], out, pools, raw["n_results"], raw["positives"])


def session_from_dict(cls, data, catalogue, **kwargs):
    """Rebuild a ``cls`` session from ``data`` and replay its last step exactly."""
    if not isinstance(data, dict):
        raise ValueError(f"session: expected a JSON object, got {type(data).__name__}")
    if data.get("format") != SESSION_FORMAT:
        raise ValueError(f"session: expected format {SESSION_FORMAT}, got {data.get('format')!r}")
    n_items = _field(data, "n_items", int, "an item count")
    if n_items != len(catalogue):
        raise ValueError(
            f"session: saved for a catalogue of {n_items} items, got one of {len(catalogue)}"
        )
    saved = data.get("catalogue")
    if saved is None:
        log.warning("session: the file names no catalogue identity; cannot check it was saved here")
    elif saved != catalogue_identity(catalogue):
        raise ValueError(
            f"session: saved for another catalogue of the same size (identity {saved!r:.60}, "
            f"this one is {catalogue_identity(catalogue)!r})"
        )
    if data.get("stage_model") is not None:  # checked, though a replay fits it again
        StageModel.from_dict(data["stage_model"])  # a ValueError names the field
    p = _field(data, "params", dict, "an object")
    if "stage" in p:  # files before the second stage was stored replay with the default
        kwargs.setdefault("stage", None if p["stage"] is None else _stage(p["stage"]))
    try:
        s = cls(
            catalogue,
            k=p["k"],
            page_size=p["page_size"],
            n_background=p["n_background"],
            background_weight=p["background_weight"],
            random_state=p["random_state"],
            classifier=p["classifier"],
            **kwargs,
        )
    except KeyError as e:
        raise ValueError(f"session: params: the field {e} is missing") from None
    s.set_labels(labels_from_json(_field(data, "labels", dict, "an object"), "session: labels"))
    s._last_check = _last_check(data.get("last_check"), len(catalogue))
    kind = data.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"session: kind: expected one of {list(_KINDS)}, got {kind!r:.80}")
    rounds = _field(data, "rounds", int, "a round count")
    if rounds < (1 if kind == "refined" else 0):
        raise ValueError(f"session: rounds: expected a count of at least 1, got {rounds}")
    if data.get("query_vector") is not None:
        v = _field(data, "query_vector", list, "a list of numbers")
        try:
            vector = np.asarray(v, np.float32)
        except (TypeError, ValueError):
            raise ValueError("session: query_vector: expected a list of numbers") from None
        if vector.shape != (catalogue.n_features,) or not np.isfinite(vector).all():
            raise ValueError(
                f"session: query_vector: expected {catalogue.n_features} finite numbers, "
                f"got shape {vector.shape}"
            )
        query = data.get("query")
        if not (
            query is None
            or isinstance(query, str)
            or (isinstance(query, list) and all(type(i) is int for i in query))
        ):
            raise ValueError(f"session: query: expected a text or item ids, got {query!r:.80}")
        s.query, s.query_vector = query, vector
        scores, ids = catalogue.seeder.search(vector, min(s.k, len(catalogue)))
        keep = ids >= 0
        s.results = Results(
            ids[keep], np.zeros(int(keep.sum()), np.int64), scores[keep], "knn", "knn"
        )
    if kind == "refined":
        s.rounds = rounds - 1
        s.refine()
    return s
