"""The resumable work of a build: images embedded into chunk files, then written.

A build of ``out`` works in the hidden sibling ``.<out>.partial/`` (see
``build.py`` for the commit):

1. the image list is embedded in fixed chunks of ``chunk_size`` images; each
   chunk's embeddings (float32) and its list of unreadable images are written
   to ``chunks/`` (data first, then the small JSON that marks the chunk done);
2. once every chunk is done, the compressor is fitted, the codes, embeddings
   and URIs are written to ``catalogue/`` and the manifest last;
3. ``catalogue/`` is renamed to ``out`` and the work folder removed.

Killed anywhere, ``out`` either does not exist or is complete. Run again with
the same images and settings, a build skips the chunks already done; the
batches are the same, so the result equals an uninterrupted build.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .._atomic import atomic_file
from ..codes.registry import is_fitted
from . import format as storage

__all__ = ["embed_to_chunks", "partial_dir", "read_chunks", "write_from_chunks"]

log = logging.getLogger(__name__)

STATE = "build.json"
DEFAULT_FIT_SAMPLES = 200_000  # for compressors without max_fit_samples


def partial_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def _fingerprint(uris, settings: dict) -> dict:
    h = hashlib.sha256()
    for u in uris:
        h.update(u.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return {"n_images": len(uris), "images_sha256": h.hexdigest(), **settings}


def _write_atomic(file: Path, write) -> None:
    with atomic_file(file, sweep=False) as f:  # chunk folders are large; .partial is resumed
        write(f)


def embed_to_chunks(
    uris: list[str],
    work: Path,
    embedder,
    *,
    batch_size: int,
    chunk_size: int,
    progress: bool = True,
    callback=None,
    desc: str = "embedding",
) -> dict:
    """Embed ``uris`` into chunk files under ``work``, skipping chunks already there.

    Returns a summary: images, embedded, failed, resumed (images found done),
    seconds, images_per_s, timings (decode wait vs model).
    """
    settings = {
        "embedder": embedder.spec,
        "batch_size": int(batch_size),
        "chunk_size": int(chunk_size),
    }
    state = _fingerprint(uris, settings)
    chunks = work / "chunks"
    state_file = work / STATE
    if state_file.exists():
        try:
            with open(state_file, encoding="utf-8") as f:
                previous = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError):
            previous = {}  # damaged: treated as another build's
        if previous != state:
            changed = sorted(k for k in state if previous.get(k) != state[k])
            log.warning(
                "the unfinished build in %s was for other inputs/settings (%s differ): "
                "starting over",
                work,
                ", ".join(changed),
            )
            shutil.rmtree(work)
    chunks.mkdir(parents=True, exist_ok=True)
    if not state_file.exists():
        _write_atomic(state_file, lambda f: f.write(json.dumps(state).encode()))

    n = len(uris)
    n_chunks = -(-n // chunk_size)
    done = [c for c in range(n_chunks) if (chunks / f"{c:06d}.json").exists()]
    resumed = sum(min(chunk_size, n - c * chunk_size) for c in done)
    if done:
        log.info(
            "resuming the build in %s: %d of %d chunks (%d images) already embedded",
            work,
            len(done),
            n_chunks,
            resumed,
        )
    bar = None
    if progress:
        bar = tqdm(
            total=n, initial=resumed, desc=desc, unit="img", smoothing=0.1, dynamic_ncols=True
        )
    timings: dict = {}
    t0 = time.perf_counter()
    finished = resumed
    n_failed_now = 0
    try:
        for c in range(n_chunks):
            if (chunks / f"{c:06d}.json").exists():
                continue
            lo, hi = c * chunk_size, min(n, (c + 1) * chunk_size)
            positions, blocks, failed = [], [], []
            for pos, X, bad in embedder.iter_batches(
                uris[lo:hi], batch_size=batch_size, timings=timings
            ):
                positions.append(pos)
                blocks.append(X)
                failed += [(int(p), e.reason) for p, e in bad]
                finished += len(pos) + len(bad)
                n_failed_now += len(bad)
                if bar is not None:
                    bar.update(len(pos) + len(bad))
                    if n_failed_now:
                        bar.set_postfix(unreadable=n_failed_now, refresh=False)
                if callback is not None:
                    callback(finished, n)
            X = np.concatenate(blocks).astype(np.float32, copy=False)
            _write_atomic(chunks / f"{c:06d}.npy", lambda f: np.save(f, X))
            record = {"ok": np.concatenate(positions).tolist(), "failed": failed}
            _write_atomic(chunks / f"{c:06d}.json", lambda f: f.write(json.dumps(record).encode()))
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    embedded_now = finished - resumed
    return {
        "images": n,
        "resumed": resumed,
        "seconds": seconds,
        "images_per_s": embedded_now / seconds if seconds > 0 else float("nan"),
        "timings": timings,
        "n_chunks": n_chunks,
    }


def read_chunks(uris: list[str], work: Path, chunk_size: int):
    """Yield ``(X, uris_ok, failures)`` per chunk, in order (all chunks must be done)."""
    chunks = work / "chunks"
    for c in range(-(-len(uris) // chunk_size)):
        with open(chunks / f"{c:06d}.json", encoding="utf-8") as f:
            record = json.load(f)
        X = np.load(chunks / f"{c:06d}.npy")
        lo = c * chunk_size
        yield (
            X,
            [uris[lo + p] for p in record["ok"]],
            [(uris[lo + p], reason) for p, reason in record["failed"]],
        )


def _fit_sample(uris, work, chunk_size, compressor, n_ok: int) -> np.ndarray:
    """The rows the compressor is fitted on: all, or a seeded uniform sample."""
    limit = int(getattr(compressor, "max_fit_samples", DEFAULT_FIT_SAMPLES))
    if n_ok <= limit:
        return np.concatenate([X for X, _, _ in read_chunks(uris, work, chunk_size)])
    rng = np.random.default_rng(compressor.random_state)
    keep = np.sort(rng.choice(n_ok, limit, replace=False))
    parts, start = [], 0
    for X, _, _ in read_chunks(uris, work, chunk_size):
        sel = keep[(keep >= start) & (keep < start + len(X))] - start
        parts.append(X[sel])
        start += len(X)
    return np.concatenate(parts)


def write_from_chunks(
    uris,
    work: Path,
    dest: Path,
    *,
    chunk_size: int,
    compressor,
    embedder_spec: dict,
    keep_embeddings: bool,
    extra: dict,
) -> dict:
    """Fit the compressor (if unfitted) and write the catalogue into ``dest``."""
    n_ok = 0
    n_features = None
    for X, _, _ in read_chunks(uris, work, chunk_size):
        n_ok += len(X)
        n_features = X.shape[1]
    if n_ok == 0:
        failures = [f for _, _, fs in read_chunks(uris, work, chunk_size) for f in fs]
        raise ValueError(
            f"none of the {len(uris)} images could be read; first: "
            f"{failures[0][0]}: {failures[0][1]}"
        )
    if not is_fitted(compressor):
        compressor.fit(_fit_sample(uris, work, chunk_size, compressor, n_ok))
    if dest.exists():
        shutil.rmtree(dest)
    writer = storage.CatalogueWriter(
        dest,
        code_dims=compressor.n_components,
        n_features=n_features,
        embeddings=keep_embeddings,
        uris=True,
    )
    for X, ok, failed in read_chunks(uris, work, chunk_size):
        if len(X):
            writer.add(compressor.transform(X), X if keep_embeddings else None, ok)
        writer.add_failed(failed)
    return writer.finish(compressor=compressor.to_dict(), embedder=embedder_spec, extra=extra)
