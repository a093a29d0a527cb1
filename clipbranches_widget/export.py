"""Writing a widget's results out: a table (CSV / Parquet) or a folder of copies."""

from __future__ import annotations

import logging
import pathlib
import shutil
from urllib.parse import urlparse

from .engine._atomic import replace_dir, temp_sibling, write_bytes
from .thumbnails import image_bytes, is_remote

__all__ = ["export_results"]

log = logging.getLogger(__name__)


def _suffix(uri: str) -> str:
    return pathlib.PurePosixPath(urlparse(uri).path if is_remote(uri) else uri).suffix


def export_results(df, path, catalogue) -> pathlib.Path:
    """Write ``df`` (``ClipBranches.results``): ``.csv`` / ``.parquet`` a table,
    any other path a folder with one copy per result plus ``results.csv``."""
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix in (".parquet", ".pq"):
        df.to_parquet(path, index=False)
    elif suffix:
        raise ValueError(f"export: expected a .csv or .parquet file or a folder, got {path}")
    else:
        _export_folder(path, df, catalogue)
    log.info("export: %d results to %s", len(df), path)
    return path


def _export_folder(path: pathlib.Path, df, catalogue) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"export: the folder {path} is not empty")
    if catalogue.uris is None:
        raise ValueError(
            "export: this catalogue has no URIs, so there is nothing to "
            "copy; export to a .csv or .parquet file instead"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    # built beside the target and swapped in whole: a refused copy leaves nothing
    work = temp_sibling(path, "export")
    work.mkdir()
    try:
        width = max(4, len(str(len(df))))
        for rank, (i, uri) in enumerate(zip(df["id"].tolist(), df["uri"].tolist())):
            # only what the catalogue names, only regular files that decode as
            # images: a URI naming /etc/passwd is refused, never copied
            data = image_bytes(uri)
            write_bytes(work / f"{rank:0{width}d}_{i}{_suffix(uri)}", data)
        df.to_csv(work / "results.csv", index=False)
        replace_dir(work, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
