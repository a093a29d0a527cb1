"""Adding rows to a catalogue, and writing the rows of several into a new one.

These functions read a catalogue through its attributes (codes, embeddings,
uris, compressor, path, manifest, failed, n_features) and never import the
``Catalogue`` class: ``Catalogue.append``, ``.merge`` and ``.save`` call them
and then open the result.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .._atomic import temp_sibling
from .._validation import check_embeddings
from . import format as storage
from .build import check_chunking, commit
from .chunks import embed_to_chunks, read_chunks
from .lock import output_lock
from .sources import list_images

__all__ = [
    "APPEND_WORK",
    "append_blocks",
    "check_mergeable",
    "embedding_blocks",
    "image_blocks",
    "new_images",
    "remove_append_work",
    "reopen_parts",
    "write_rows",
]

log = logging.getLogger(__name__)

APPEND_WORK = ".append.partial"  # inside the catalogue: an interrupted append resumes
_MANIFEST_KEYS = {
    "format",
    "version",
    "created",
    "model",
    "pretrained",
    "embedder",
    "compressor",
    "counts",
    "dims",
    "files",
    "dtypes",
    "identity",
    "checksums",
}


def embedding_blocks(cat, embeddings, uris) -> list:
    """The one block of precomputed ``embeddings`` (and their ``uris``), checked."""
    X = check_embeddings(embeddings, n_features=cat.n_features, name="embeddings")
    if (uris is None) != (cat.uris is None):
        raise ValueError(
            "uris: expected "
            + (
                "one URI per new item: this catalogue has URIs"
                if cat.uris is not None
                else "none: this catalogue has no URIs"
            )
        )
    return [(X, None if uris is None else list(uris), [])]


def new_images(cat, source, *, path_column, skip_existing: bool) -> list[str]:
    """The images of ``source`` to add (with ``skip_existing``: not yet listed or failed)."""
    new = list_images(source, path_column=path_column)
    if skip_existing and cat.uris is not None and new:
        known = set(np.asarray(cat.uris).tolist())
        known.update(f["uri"] for f in cat.failed)
        new = [u for u in new if u not in known]
    return new


def reopen_parts(cat) -> dict | None:
    """The rows of ``cat`` as its folder holds them now (hold the lock), or None
    when its manifest is unchanged since ``cat`` was opened or last written."""
    manifest = storage.read_manifest(cat.path)
    if manifest == cat.manifest:
        return None
    if manifest["compressor"] != cat.manifest["compressor"]:
        raise ValueError(
            f"append: {str(cat.path)!r} was rebuilt with another compressor since it was "
            "opened; open it again"
        )
    # written by this library under the lock: no need to hash it again
    fresh = type(cat).open(cat.path, embedder=cat._embedder, verify=False)
    return {
        "codes": fresh.codes,
        "embeddings": fresh.embeddings,
        "uris": fresh.uris,
        "manifest": fresh.manifest,
    }


def remove_append_work(cat) -> None:
    """Remove ``.append.partial`` (hold the lock): a death after an append's
    commit leaves it, with nothing in it left to add."""
    if cat.path is not None and os.path.lexists(cat.path / APPEND_WORK):
        log.info("removing %s, left by an interrupted append", cat.path / APPEND_WORK)
        shutil.rmtree(cat.path / APPEND_WORK, ignore_errors=True)


@contextlib.contextmanager
def image_blocks(cat, uris, *, batch_size, chunk_size, progress, callback):
    """Embed ``uris`` (resumably, in ``<catalogue>/.append.partial`` on disk) and
    yield their blocks; the work folder is removed once the caller is done."""
    batch_size, chunk_size = check_chunking(batch_size, chunk_size)
    work = (
        Path(tempfile.mkdtemp(prefix="clipbranches-append-"))
        if cat.path is None
        else cat.path / APPEND_WORK
    )
    try:
        embed_to_chunks(
            uris,
            work,
            cat.embedder,
            batch_size=batch_size,
            chunk_size=chunk_size,
            progress=progress,
            callback=callback,
            desc="appending",
        )
        yield read_chunks(uris, work, chunk_size)
    except BaseException:
        if cat.path is None:  # nothing to resume in memory
            shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)


def append_blocks(cat, blocks) -> tuple[int, dict | None]:
    """Add ``blocks`` of ``(X, uris, failures)`` to ``cat``; returns ``(added, parts)``.

    In memory, ``parts`` holds the new ``codes``/``embeddings``/``uris`` arrays;
    on disk (hold the folder's lock) the rows are written past the end and a new
    manifest commits them, and ``parts`` is None: reopen the folder.
    """
    keep, with_uris = cat.embeddings is not None, cat.uris is not None
    if cat.path is None:
        parts = list(blocks)
        X = np.concatenate([b[0] for b in parts])
        codes = cat.compressor.transform(X)
        new = {"codes": np.concatenate([cat.codes, codes])}
        if keep:
            new["embeddings"] = np.concatenate([cat.embeddings, X.astype(cat.embeddings.dtype)])
        if with_uris:
            added_uris = np.asarray([u for b in parts for u in b[1]], object)
            new["uris"] = np.concatenate([np.asarray(cat.uris, object), added_uris])
        return len(codes), new
    # re-read under the lock: another process may have appended since cat was opened
    manifest = storage.read_manifest(cat.path)
    if manifest["compressor"] != cat.manifest["compressor"]:
        raise ValueError(
            f"append: {str(cat.path)!r} was rebuilt with another compressor since it was "
            "opened; open it again"
        )
    writer = storage.CatalogueWriter(
        cat.path,
        code_dims=cat.codes.shape[1],
        n_features=cat.n_features,
        embeddings=keep,
        uris=with_uris,
        start=manifest,
    )
    before = writer.n
    for X, block_uris, failed in blocks:
        if len(X):
            writer.add(
                cat.compressor.transform(X), X if keep else None, block_uris if with_uris else None
            )
        writer.add_failed(failed)
    extra = {k: v for k, v in manifest.items() if k not in _MANIFEST_KEYS}
    writer.finish(compressor=manifest["compressor"], embedder=manifest.get("embedder"), extra=extra)
    return writer.n - before, None


def check_mergeable(cats) -> None:
    """Refuse parts that differ in compressor, model or the parts kept."""
    if not cats:
        raise ValueError("parts: expected at least one catalogue, got none")
    first = cats[0]
    for i, c in enumerate(cats[1:], 1):
        for what, a, b in (
            ("compressor", first.compressor.to_dict(), c.compressor.to_dict()),
            ("model", first.embedder_spec, c.embedder_spec),
            ("embeddings kept", first.embeddings is not None, c.embeddings is not None),
            ("URIs kept", first.uris is not None, c.uris is not None),
        ):
            if a != b:
                raise ValueError(
                    f"parts: part {i} differs from part 0 in its {what}; "
                    "shards must be built with the same fitted compressor "
                    "and model to be merged"
                )


def write_rows(
    cats, path: Path, purpose: str, *, overwrite: bool, block_rows: int, uuid=None
) -> None:
    """Write the rows of ``cats`` (same layout and compressor), in order, as one
    catalogue at ``path``: in a hidden sibling first, committed by renames."""
    path = Path(path)
    first = cats[0]
    with output_lock(path):
        tmp = temp_sibling(path, purpose)
        writer = storage.CatalogueWriter(
            tmp,
            code_dims=first.codes.shape[1],
            n_features=first.n_features,
            embeddings=first.embeddings is not None,
            uris=first.uris is not None,
            uuid=uuid,
        )
        try:
            for c in cats:
                for lo in range(0, len(c), block_rows):
                    hi = min(len(c), lo + block_rows)
                    writer.add(
                        c.codes[lo:hi],
                        None if c.embeddings is None else c.embeddings[lo:hi],
                        None if c.uris is None else c.uris[lo:hi],
                    )
                writer.add_failed((f["uri"], f["reason"]) for f in c.failed)
            writer.finish(compressor=first.compressor.to_dict(), embedder=first.embedder_spec)
            commit(tmp, path, overwrite=overwrite)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
