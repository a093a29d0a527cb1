"""Where a build's images come from: a folder, a list of paths/URLs, or a table."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

__all__ = ["IMAGE_EXTENSIONS", "list_images"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
PATH_COLUMNS = (
    "uri",
    "url",
    "path",
    "filepath",
    "file_path",
    "image_path",
    "image",
    "file",
    "filename",
)
_TABLE_SUFFIXES = (".csv", ".parquet", ".pq", ".tsv")

log = logging.getLogger(__name__)


def list_images(source, *, path_column: str | None = None) -> list[str]:
    """The image URIs of ``source``, in a stable order.

    - a folder: every file with an image extension below it (recursive,
      hidden files and folders skipped), as absolute paths sorted by path;
    - a list/tuple of paths or http(s) URLs: as given (paths made absolute);
    - a table: a pandas DataFrame, or a .csv/.tsv/.parquet file, with a path
      column (``path_column``, or the first of "uri", "url", "path", ...);
      relative paths in a table file are relative to that file's folder.
    """
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if p.is_dir():
            return _folder(p)
        if p.is_file() and p.suffix.lower() in _TABLE_SUFFIXES:
            return _table(_read_table(p), path_column, base=p.parent)
        if p.is_file():
            raise ValueError(
                f"source: expected a folder of images, a list of paths/URLs or a "
                f"table (.csv/.parquet), got the file {str(p)!r}; for one image "
                f"pass [{str(p)!r}]"
            )
        raise FileNotFoundError(f"source: no such folder or table: {str(p)!r}")
    if _is_dataframe(source):
        return _table(source, path_column, base=None)
    if isinstance(source, (list, tuple)) or hasattr(source, "__array__"):
        items = list(source)
        if not all(isinstance(u, (str, os.PathLike)) for u in items):
            bad = next(u for u in items if not isinstance(u, (str, os.PathLike)))
            raise TypeError(
                f"source: expected paths or URLs, got a {type(bad).__name__} item ({bad!r:.60})"
            )
        return [_normalise(u, None) for u in items]
    raise TypeError(
        f"source: expected a folder, a list of paths/URLs or a table, got {type(source).__name__}"
    )


def _folder(root: Path) -> list[str]:
    """Regular image files below ``root``: a FIFO, socket or device named x.jpg is
    skipped (reading it would hang or never end)."""
    found = []
    # resolve the root once (not every file: a million extra syscalls on big folders);
    # scandir's entry types come with the listing, so checking them costs no syscall
    stack = [str(root.resolve())]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:  # like os.walk: an unreadable folder is skipped
            log.warning("source: skipping the folder %r: %s", folder, exc)
            continue
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
            elif os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS:
                if e.is_file():
                    found.append(_check_utf8(e.path))
                else:
                    log.warning("source: skipping %r: not a regular file", e.path)
    return sorted(found)


def _check_utf8(path: str) -> str:
    """``path``, or a ValueError naming it when it is not UTF-8 (catalogue URIs are
    UTF-8 text; failing here, before embedding, costs nothing)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"source: the file name {os.fsencode(path)!r} is not valid UTF-8; expected "
            "UTF-8 file names (catalogue URIs are text): rename the file"
        ) from None
    return path


def _is_dataframe(obj) -> bool:
    return type(obj).__name__ == "DataFrame" and hasattr(obj, "columns")


def _read_table(path: Path):
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")


def _table(df, path_column, base) -> list[str]:
    columns = [str(c) for c in df.columns]
    if path_column is None:
        lower = {c.lower(): c for c in columns}
        path_column = next((lower[c] for c in PATH_COLUMNS if c in lower), None)
        if path_column is None:
            raise ValueError(
                f"source: the table has no path column; expected one of "
                f"{list(PATH_COLUMNS)} or path_column=..., got columns {columns}"
            )
    elif path_column not in df.columns:
        raise ValueError(
            f"path_column: {path_column!r} is not a column of the table; got columns {columns}"
        )
    values = df[path_column].tolist()
    missing = [i for i, v in enumerate(values) if not isinstance(v, str) or not v]
    if missing:
        raise ValueError(
            f"source: column {path_column!r} has {len(missing)} empty or non-text "
            f"value(s), first at row {missing[0]}"
        )
    return [_normalise(v, base) for v in values]


def _normalise(uri, base) -> str:
    uri = os.fspath(uri)
    if isinstance(uri, bytes):
        uri = os.fsdecode(uri)
    _check_utf8(uri)
    if uri.startswith(("http://", "https://")):
        return uri
    p = Path(uri)
    if not p.is_absolute() and base is not None:
        p = base / p
    return str(p.absolute())
