"""Building a catalogue folder from images: checked first, resumable, atomic.

``build_catalogue`` checks every argument and ``out`` before any image is
embedded, takes the folder's lock (``lock.py``), embeds into
``.<out>.partial/`` (``chunks.py``) and commits the finished catalogue by
renames. It returns the folder; ``Catalogue.build`` opens it. Nothing here
imports the ``Catalogue`` class.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from .._atomic import replace_dir
from .._validation import check_positive_int
from ..codes.registry import make_compressor
from . import format as storage
from .chunks import embed_to_chunks, partial_dir, write_from_chunks
from .embed import ClipEmbedder
from .lock import output_lock
from .sources import IMAGE_EXTENSIONS, list_images

__all__ = ["build_catalogue", "check_chunking", "check_out", "commit", "partial_dir"]

log = logging.getLogger(__name__)


def check_chunking(batch_size, chunk_size) -> tuple[int, int]:
    """``(batch_size, chunk_size)`` checked; the chunk defaults to 32 batches."""
    batch_size = check_positive_int("batch_size", batch_size)
    chunk_size = 32 * batch_size if chunk_size is None else chunk_size
    return batch_size, check_positive_int("chunk_size", chunk_size)


def check_out(out: Path) -> None:
    """Refuse, before any embedding, an ``out`` no build may write: a file, or a
    non-empty folder that holds no catalogue (a user's data is never replaced)."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(
            f"out: {str(out)!r} is a file and not a catalogue; expected a new or empty "
            "folder, or a catalogue folder"
        )
    if out.is_dir() and not (out / storage.MANIFEST).exists() and any(out.iterdir()):
        raise FileExistsError(
            f"out: {str(out)!r} exists and is not a catalogue this build may replace: "
            "it is a non-empty folder without a manifest.json; expected a new or empty "
            "folder, or a catalogue folder"
        )


def default_out(source) -> Path:
    if not (isinstance(source, (str, os.PathLike)) and Path(source).is_dir()):
        raise ValueError(
            "out: expected a directory to store the catalogue in (it is "
            "only optional when source is a folder)"
        )
    return Path(source) / ".clipbranches"


def build_catalogue(
    source,
    *,
    out=None,
    model: str = "ViT-B-32",
    pretrained: str | None = "laion2b_s34b_b79k",
    compressor="pca",
    batch_size: int = 64,
    num_workers: int | None = None,
    chunk_size: int | None = None,
    keep_embeddings: bool = True,
    path_column: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    embedder=None,
    device: str = "cpu",
    callback=None,
) -> tuple[Path, object, dict | None]:
    """Build (or find built) the catalogue of ``source`` in ``out``.

    Returns ``(out, embedder, summary)``; ``summary`` is None when ``out``
    already held this catalogue. Arguments as in ``Catalogue.build``.
    """
    batch_size, chunk_size = check_chunking(batch_size, chunk_size)
    out = default_out(source) if out is None else Path(out)
    check_out(out)
    compressor = make_compressor(compressor)
    uris = list_images(source, path_column=path_column)
    if not uris:
        raise ValueError(
            f"source: found no images in {source!r} (looked for "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    if embedder is None:
        embedder = ClipEmbedder(
            model, pretrained, device=device, batch_size=batch_size, num_workers=num_workers
        )
    label = str(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__
    with output_lock(out):
        if (out / storage.MANIFEST).exists() and not overwrite:
            _check_same_model(out, embedder.spec)
            log.info(
                "%s is already built: opening it (overwrite=True rebuilds; "
                "append() adds new images)",
                out,
            )
            shutil.rmtree(partial_dir(out), ignore_errors=True)
            return out, embedder, None
        summary = _build_locked(
            uris,
            out,
            embedder,
            compressor=compressor,
            batch_size=batch_size,
            chunk_size=chunk_size,
            keep_embeddings=keep_embeddings,
            progress=progress,
            overwrite=overwrite,
            callback=callback,
            source_label=label,
        )
    return out, embedder, summary


def _check_same_model(out: Path, spec: dict) -> None:
    manifest = storage.read_manifest(out)
    if manifest.get("embedder") != spec:
        raise FileExistsError(
            f"out: {str(out)!r} holds a catalogue built with {manifest.get('embedder')}, "
            f"not {spec}; pass overwrite=True to rebuild it, or another out"
        )


def _build_locked(
    uris, out, embedder, *, compressor, keep_embeddings, overwrite, source_label, chunk_size, **kw
) -> dict:
    work = partial_dir(out)
    summary = embed_to_chunks(uris, work, embedder, chunk_size=chunk_size, **kw)
    manifest = write_from_chunks(
        uris,
        work,
        work / "catalogue",
        chunk_size=chunk_size,
        compressor=compressor,
        embedder_spec=embedder.spec,
        keep_embeddings=keep_embeddings,
        extra={"source": source_label},
    )
    commit(work / "catalogue", out, overwrite=overwrite)
    shutil.rmtree(work, ignore_errors=True)
    failures = storage.read_failed(out, manifest["counts"]["failed"])
    summary.update(items=manifest["counts"]["items"], failed=len(failures))
    if failures:
        shown = "; ".join(f"{f['uri']}: {f['reason']}" for f in failures[:5])
        log.warning(
            "%d of %d images could not be read and were skipped (listed in %s): %s%s",
            len(failures),
            len(uris),
            out / storage.FAILED,
            shown,
            " ..." if len(failures) > 5 else "",
        )
    log.info(
        "built %s: %d items in %.1f s (%.0f images/s)",
        out,
        summary["items"],
        summary["seconds"],
        summary["images_per_s"],
    )
    return summary


def commit(ready: Path, out: Path, *, overwrite: bool) -> None:
    """Move a finished catalogue into place with renames only (hold ``out``'s lock)."""
    if out.exists():
        if overwrite and (out / storage.MANIFEST).exists():
            pass  # replace_dir swaps the old catalogue out
        elif out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        else:
            raise FileExistsError(
                f"out: {str(out)!r} exists and is not a catalogue this build may replace"
            )
    replace_dir(ready, out)
    storage.fsync_dir(out.parent)
