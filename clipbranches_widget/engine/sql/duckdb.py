"""Run a decision-branches model on a Parquet catalogue with DuckDB.

DuckDB is embedded (no server), reads Parquet directly, skips row groups by
their min/max statistics, runs in parallel and spills to disk beyond its
memory limit, so a catalogue far larger than RAM can be queried from a
notebook. The query is exactly ``Boxes.to_sql``'s text, so what runs here is
what a user would run anywhere else; results equal the numba ``scan``
(same ids, same votes).
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import numpy as np

from ..boxes import Boxes
from ..search.result import ScanResult
from .parquet import path_list
from .query import boxes_to_sql, quote_identifier
from .stage import stage_to_sql

__all__ = ["duckdb_connect", "refine_duckdb", "search_duckdb"]

log = logging.getLogger(__name__)


def _duckdb():
    try:
        import duckdb
    except ImportError as exc:  # pragma: no cover - duckdb is a declared extra
        raise ImportError(
            "DuckDB execution needs the duckdb package: pip install 'clipbranches-widget[sql]'"
        ) from exc
    return duckdb


def duckdb_connect(
    database: str = ":memory:",
    *,
    threads: int | None = None,
    memory_limit: str | None = None,
    temp_directory: str | None = None,
):
    """A DuckDB connection configured for out-of-core scans.

    ``memory_limit`` (e.g. ``"4GB"``) bounds DuckDB's memory; beyond it,
    sorts spill to ``temp_directory``.
    """
    config = {}
    if threads is not None:
        config["threads"] = int(threads)
    if memory_limit is not None:
        config["memory_limit"] = str(memory_limit)
    if temp_directory is not None:
        config["temp_directory"] = str(temp_directory)
    return _duckdb().connect(database, config=config)


def _sources(source) -> list[str]:
    items = path_list(
        source, "a Parquet path, glob or list of paths, a pyarrow Table or a pandas DataFrame"
    )
    out = []
    for s in items:
        if not any(ch in s for ch in "*?[") and not Path(s).exists():
            raise FileNotFoundError(f"source: no Parquet file or directory at {s}")
        if Path(s).is_dir():
            s = str(Path(s) / "**" / "*.parquet")  # a directory of shards
        out.append(s)
    return out


def _attach(con, source, view: str) -> None:
    """Expose ``source`` as the temporary view ``view`` on ``con``."""
    if hasattr(source, "schema") and (hasattr(source, "num_rows") or hasattr(source, "columns")):
        con.register(view, source)  # an in-memory pyarrow Table / pandas DataFrame
        return
    paths = _sources(source)
    listing = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {quote_identifier(view)} AS "
        f"SELECT * FROM read_parquet([{listing}])"
    )


def _run(source, connection, threads, make_sql):
    """``(columns as numpy, the SQL as the user would run it, ms)`` of the
    query ``make_sql(view)`` over ``source`` attached as a private view."""
    con = connection if connection is not None else duckdb_connect(threads=threads)
    # a private view name: never clobbers a user's own "catalogue" view
    view = f"clipbranches_{uuid.uuid4().hex[:12]}"
    sql = make_sql(view)
    t0 = time.perf_counter()
    _attach(con, source, view)
    try:
        got = con.execute(sql).fetchnumpy()
    finally:
        _detach(con, source, view)
        if connection is None:
            con.close()
    return got, sql.replace(view, "catalogue"), (time.perf_counter() - t0) * 1e3


def _detach(con, source, view: str) -> None:
    if hasattr(source, "schema") and (hasattr(source, "num_rows") or hasattr(source, "columns")):
        con.unregister(view)
    else:
        con.execute(f"DROP VIEW IF EXISTS {quote_identifier(view)}")


def search_duckdb(
    source,
    boxes,
    *,
    connection=None,
    columns=None,
    id_column: str = "id",
    order: str | None = "id",
    threads: int | None = None,
) -> ScanResult:
    """Every row of ``source`` inside at least one box, with its votes.

    Parameters
    ----------
    source : path, glob, directory of shards, list of paths, or pyarrow Table
        A catalogue in the ``write_parquet`` layout (``id``, ``c0`` .. ``c31``).
    boxes : Boxes
    connection : duckdb connection, optional
        Default: a fresh in-memory connection (``duckdb_connect``).
    order : "id" (like ``scan``), "votes" (ranked, ties by id) or None.

    Returns a ``ScanResult`` with ``path="duckdb"``; ``info["sql"]`` holds the
    query that ran.
    """
    if not isinstance(boxes, Boxes):
        raise TypeError(f"boxes: expected a Boxes model, got {type(boxes).__name__}")
    got, sql, ms = _run(
        source,
        connection,
        threads,
        lambda view: boxes_to_sql(boxes, view, columns=columns, id_column=id_column, order=order),
    )
    ids = np.asarray(got[id_column], np.int64)
    # the scan's vote dtype, so results compare (and concatenate) exactly
    votes = np.asarray(got["votes"]).astype(np.uint8 if boxes.n_boxes < 256 else np.uint16)
    log.info("duckdb: %d matches in %.1f ms", ids.shape[0], ms)
    return ScanResult(ids, votes, "duckdb", {"sql": sql, "order": order, "ms": ms})


def refine_duckdb(
    source,
    model,
    boxes,
    *,
    connection=None,
    columns=None,
    id_column: str = "id",
    threads: int | None = None,
) -> ScanResult:
    """A refine's result set computed by DuckDB: ``stage.stage_to_sql(model,
    boxes)`` run on ``source`` (as ``search_duckdb``). ``model`` is the
    refine's ``results.info["stage_model"]``. Returns a ``ScanResult`` in the
    session's order (not id order), ``info["scores"]`` float32 and
    ``info["sql"]`` the query that ran."""
    if not isinstance(boxes, Boxes):
        raise TypeError(f"boxes: expected a Boxes model, got {type(boxes).__name__}")
    got, sql, ms = _run(
        source,
        connection,
        threads,
        lambda view: stage_to_sql(model, boxes, view, columns=columns, id_column=id_column),
    )
    ids = np.asarray(got[id_column], np.int64)
    log.info("duckdb: a two-stage refine of %d results in %.1f ms", ids.shape[0], ms)
    info = {"sql": sql, "ms": ms}
    info["scores"] = np.asarray(got["score"], np.float32)
    return ScanResult(ids, np.asarray(got["votes"], np.int64), "duckdb", info)
