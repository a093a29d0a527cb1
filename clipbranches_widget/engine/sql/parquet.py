"""A catalogue as a Parquet table: ``id``, ``uri``, ``c0`` .. ``c{d-1}``.

This is the layout the SQL of ``Boxes.to_sql`` runs on (DuckDB, Spark, any
engine that reads Parquet). Codes are stored as unsigned 8-bit integers, so a
32-dim catalogue costs about 32 bytes per item plus its URI.

Row groups are what an engine skips with min/max statistics (predicate
pushdown) and what it parallelises over. The default of 2^17 rows is small
enough that a 10M-item file has ~80 groups (work for many threads and a
fine grain for skipping), large enough that per-group overhead stays small.
Skipping only pays when rows are stored in an order that makes per-group
ranges narrow: ``sort_by`` stores them ordered by some code columns (ids are
kept, so results are unchanged).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .._atomic import atomic_file, process_alive
from .._validation import check_codes, check_positive_int, describe

__all__ = ["DEFAULT_ROW_GROUP_SIZE", "code_columns", "read_parquet_codes", "write_parquet"]

log = logging.getLogger(__name__)

DEFAULT_ROW_GROUP_SIZE = 1 << 17


def code_columns(n_features: int = 32) -> list[str]:
    """The code column names of the layout: ``c0`` .. ``c{d-1}``."""
    return [f"c{j}" for j in range(n_features)]


def _schema(n_features: int):
    fields = [pa.field("id", pa.int64(), nullable=False), pa.field("uri", pa.string())]
    fields += [pa.field(c, pa.uint8(), nullable=False) for c in code_columns(n_features)]
    return pa.schema(fields, metadata={b"clipbranches.layout": b"id,uri,codes:uint8"})


def write_parquet(
    catalogue,
    path,
    *,
    uris=None,
    ids=None,
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
    compression: str | None = "snappy",
    sort_by=None,
) -> Path:
    """Write a catalogue (or a plain (n, d) uint8 code array) as one Parquet file.

    Parameters
    ----------
    catalogue : Catalogue or (n, d) uint8 array
        A ``Catalogue`` gives its codes and URIs; an array gives codes only.
    path : str or Path
        The file to write. It appears atomically (written aside, then renamed).
    uris, ids : optional (n,) arrays
        Override the URIs (default: the catalogue's, else null) and the ids
        (default: row positions 0..n-1, the catalogue's item ids).
    row_group_size : int
        Rows per row group (the unit of min/max skipping and of parallelism).
    compression : str or None
        Parquet codec ("snappy", "zstd", None...).
    sort_by : sequence of code column indices or names, optional
        Store rows ordered by these columns, so row groups hold narrow ranges
        of them and boxes constraining them skip whole groups.
    """
    if hasattr(catalogue, "codes"):
        codes = catalogue.codes
        if uris is None:
            uris = getattr(catalogue, "uris", None)
    else:
        codes = catalogue
    codes = check_codes(codes, name="codes", allow_empty=True)
    n, d = codes.shape
    row_group_size = check_positive_int("row_group_size", row_group_size)
    if uris is not None:
        uris = np.asarray(uris, dtype=object)
        if uris.shape != (n,):
            raise ValueError(f"uris: expected {n} URIs (one per item), got {describe(uris)}")
    if ids is None:
        ids = np.arange(n, dtype=np.int64)
    else:
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu" or ids.shape != (n,):
            raise ValueError(f"ids: expected {n} integer ids, got {describe(ids)}")
        ids = ids.astype(np.int64)
    order = None if sort_by is None else _sort_order(codes, sort_by)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    schema = _schema(d)
    with (
        atomic_file(path) as f,
        pq.ParquetWriter(f, schema, compression=compression, write_statistics=True) as writer,
    ):
        for s in range(0, max(n, 1), row_group_size):
            e = min(n, s + row_group_size)
            rows = slice(s, e) if order is None else order[s:e]
            block = np.ascontiguousarray(codes[rows])
            uri = (
                pa.nulls(e - s, pa.string())
                if uris is None
                else pa.array(uris[rows].tolist(), pa.string())
            )
            arrays = [pa.array(ids[rows], pa.int64()), uri]
            arrays += [pa.array(block[:, j], pa.uint8()) for j in range(d)]
            writer.write_table(
                pa.Table.from_arrays(arrays, schema=schema), row_group_size=row_group_size
            )
    log.info(
        "wrote %d items to %s (%d row groups of %d)",
        n,
        path,
        -(-n // row_group_size),
        row_group_size,
    )
    return path


def remove_stale_temporaries(path: Path) -> None:
    """Remove ``<name>.partial-<pid>`` temporaries (this module's older naming) whose
    writer died; ``_atomic.atomic_file`` sweeps its own ``.<name>.tmp-*`` ones."""
    prefix = f"{path.name}.partial-"
    for entry in os.scandir(path.parent):
        pid = entry.name[len(prefix) :].split("-")[0] if entry.name.startswith(prefix) else ""
        if pid.isdigit() and not process_alive(int(pid)) and entry.is_file():
            log.info("removing %s, left by a killed writer", entry.path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


def _sort_order(codes, sort_by):
    d = codes.shape[1]
    dims = []
    for c in [sort_by] if isinstance(sort_by, (str, int)) else list(sort_by):
        j = int(c[1:]) if isinstance(c, str) and c.startswith("c") and c[1:].isdigit() else c
        if not isinstance(j, (int, np.integer)) or not 0 <= j < d:
            raise ValueError(
                f"sort_by: expected code columns c0..c{d - 1} or indices 0..{d - 1}, got {c!r}"
            )
        dims.append(int(j))
    # np.lexsort sorts by its last key first; stable, so ties keep id order
    return np.lexsort([codes[:, j] for j in reversed(dims)]).astype(np.int64)


def read_parquet_codes(path):
    """``(ids, codes, uris)`` of a file written by ``write_parquet`` (in memory)."""
    table = pq.read_table(path)
    names = [c for c in table.column_names if c.startswith("c") and c[1:].isdigit()]
    names.sort(key=lambda c: int(c[1:]))
    if "id" not in table.column_names or names != code_columns(len(names)) or not names:
        raise ValueError(
            f"{path}: expected columns id, uri, c0..c{{d-1}}, got {table.column_names}"
        )
    codes = np.empty((table.num_rows, len(names)), np.uint8)
    for j, c in enumerate(names):
        codes[:, j] = table.column(c).to_numpy()
    uris = (
        table.column("uri").to_numpy(zero_copy_only=False) if "uri" in table.column_names else None
    )
    return table.column("id").to_numpy().astype(np.int64), codes, uris


def path_list(source, expected: str) -> list[str]:
    """``source`` (a path or a list/tuple of paths) as a list of strings, or raise.

    ``expected`` completes the error message ("source: expected ...") so
    each engine names the other inputs it accepts.
    """
    items = (
        [source]
        if isinstance(source, (str, Path))
        else list(source)
        if isinstance(source, (list, tuple))
        else []
    )
    if not items or not all(isinstance(s, (str, Path)) for s in items):
        raise TypeError(f"source: expected {expected}, got {type(source).__name__}")
    return [str(s) for s in items]
