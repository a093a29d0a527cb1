"""Building a ``BoxIndex``: grid design, counting sort, and the folder on disk.

The grid: for every feature subset, slot edges at quantiles of each of its
dims (from a sample of rows) so cells hold ~``block_size`` items each. The
order: item ids sorted by cell, a counting sort (two-level beyond
``_DIRECT_BYTES`` of ids per subset), subsets in groups that fit
``memory_budget``.

On disk a build writes into ``.<name>.building-<pid>-<tid>`` beside the
target, writes ``manifest.json`` last and swaps the folder in
(``_atomic.replace_dir``): a killed build leaves the previous index or
none, never a broken one. The building folder is flock'ed while in use, so
the next build can tell a dead build's leftovers from a live one's and
removes them. Folders get the process's normal permissions (umask).
"""

from __future__ import annotations

import contextlib
import fcntl  # POSIX only, like store/lock.py (the package needs flock)
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .._atomic import recover_dir, replace_dir, temp_sibling, write_text
from .._parallel import numba_threads
from .._validation import check_positive_int
from ..subsets import default_feature_subsets
from .fingerprint import fingerprint
from .index_kernels import count_cells, scatter_coarse, scatter_ids, sort_buckets

__all__ = ["ARRAYS", "FORMAT_VERSION", "MANIFEST", "build_arrays", "check_args", "load", "write"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: the fingerprint hashes every code row (1 sampled 4,096)
MANIFEST = "manifest.json"
ARRAYS = ("order", "offsets", "cell_ptr", "slots", "strides", "nslots", "dims", "ksize")
_BUILD_CHUNK = 1 << 18  # rows per transposed chunk during a build
_BUCKETS = 256  # first-level buckets of the counting sort (per subset)
_DIRECT_BYTES = 16 << 20  # ids of one subset up to this size: one-level counting sort


# ---- arguments ----


def check_args(codes, subsets, block_size, max_cells):
    """(subsets sorted and checked, block_size) for a build of ``codes``, or raise."""
    n, d = codes.shape
    if (
        isinstance(max_cells, bool)
        or not isinstance(max_cells, int)
        or not 1 <= max_cells <= 1 << 24
    ):
        raise ValueError(f"max_cells: expected an integer in 1..2**24, got {max_cells!r}")
    block_size = check_positive_int("block_size", block_size)
    if n >= 2**63:
        raise ValueError(f"codes: expected fewer than 2**63 rows, got {n}")
    subsets = default_feature_subsets(d) if subsets is None else subsets
    return _check_subsets(subsets, d), block_size


def _check_subsets(subsets, d):
    subsets = [tuple(sorted(int(j) for j in s)) for s in subsets]
    if not subsets:
        raise ValueError("subsets: expected at least one feature subset, got none")
    for s in subsets:
        if not s or len(set(s)) != len(s) or s[0] < 0 or s[-1] >= d:
            raise ValueError(
                f"subsets: expected non-empty tuples of distinct dims in 0..{d - 1}, got {s}"
            )
    if len(set(subsets)) != len(subsets):
        raise ValueError("subsets: expected distinct feature subsets, got duplicates")
    return subsets


# ---- grid design (plain numpy: a few thousand numbers per subset) ----


def _sample_rows(codes, size):
    n = codes.shape[0]
    if n <= size:
        return np.asarray(codes)
    rows = np.linspace(0, n - 1, size).astype(np.int64)
    return np.asarray(codes[rows])


def _design_slots(hist, g):
    """Slot of every value 0..255 for one dimension: ~equal counts per slot.

    ``hist`` is the (256,) histogram of the dimension. Values are cut at the
    g-quantiles of the histogram; slot ids are then renumbered so every slot
    holds at least one value (empty ranges merge into their neighbours).
    """
    total = hist.sum()
    below = np.concatenate([[0], np.cumsum(hist)[:-1]]).astype(np.float64)
    raw = np.minimum(g - 1, np.floor(below * g / max(total, 1))).astype(np.int64)
    _, slot = np.unique(raw, return_inverse=True)
    return slot.astype(np.int32), int(slot.max()) + 1


def _design_grid(codes, subsets, block_size, max_cells, sample_size):
    n, d = codes.shape
    S, kmax = len(subsets), max(len(s) for s in subsets)
    hists = np.zeros((d, 256), np.int64)
    sample = _sample_rows(codes, sample_size)
    for j in range(d):
        hists[j] = np.bincount(sample[:, j], minlength=256)
    grid = dict(
        dims=np.zeros((S, kmax), np.int64),
        ksize=np.zeros(S, np.int64),
        slots=np.zeros((S, kmax, 256), np.int32),
        nslots=np.ones((S, kmax), np.int64),
        strides=np.zeros((S, kmax), np.int64),
    )
    n_cells = np.zeros(S, np.int64)
    target = max(1, n // block_size)
    for q, s in enumerate(subsets):
        k = len(s)
        g = max(1, min(256, int(np.floor(min(target, max_cells) ** (1.0 / k) + 1e-9))))
        grid["dims"][q, :k] = s
        grid["ksize"][q] = k
        for t, j in enumerate(s):
            grid["slots"][q, t], grid["nslots"][q, t] = _design_slots(hists[j], g)
        stride = 1
        for t in range(k - 1, -1, -1):
            grid["strides"][q, t] = stride
            stride *= int(grid["nslots"][q, t])
        n_cells[q] = stride
    grid["cell_ptr"] = np.zeros(S + 1, np.int64)
    np.cumsum(n_cells + 1, out=grid["cell_ptr"][1:])
    return grid


# ---- the counting sort ----


def _fill(codes, order, offsets, grid, *, memory_budget, progress, n_jobs):
    """Counting sort of the item ids of every subset, in groups of subsets."""
    dims, ksize, slots, strides, cell_ptr = (
        grid[k] for k in ("dims", "ksize", "slots", "strides", "cell_ptr")
    )
    n, S = codes.shape[0], order.shape[0]
    n_cells = np.diff(cell_ptr) - 1
    # bucket = 2**shift consecutive cells, at most _BUCKETS buckets per subset
    bits = np.array([int(c - 1).bit_length() for c in n_cells], np.int64)
    shift = np.maximum(0, bits - int(np.log2(_BUCKETS)))
    # one level while a subset's ids fit in cache (measured faster at 10**6 items),
    # two levels beyond (1.4x faster at 10**7, more at 10**8)
    two_level = n * order.dtype.itemsize > _DIRECT_BYTES
    per_subset = max(1, n * (order.dtype.itemsize + 2 * two_level))  # + 16-bit cell
    group = int(max(1, min(S, memory_budget // per_subset)))
    chunks = list(range(0, n, _BUILD_CHUNK))
    n_groups = (S + group - 1) // group
    on_disk = isinstance(order, np.memmap)
    bar = tqdm(
        total=2 * len(chunks) * n_groups,
        desc="BoxIndex",
        unit="pass",
        disable=not progress,
        leave=False,
    )
    with bar, numba_threads(n_jobs):
        for g0 in range(0, S, group):
            sub = np.arange(g0, min(S, g0 + group), dtype=np.int64)
            for c0 in chunks:  # counts go to slot c+1, turning into offsets by cumsum
                cols = np.ascontiguousarray(codes[c0 : c0 + _BUILD_CHUNK].T)
                count_cells(cols, sub, dims, ksize, slots, strides, cell_ptr, offsets[1:])
                bar.update()
            for q in sub:
                a, b = cell_ptr[q], cell_ptr[q + 1]
                np.cumsum(offsets[a:b], out=offsets[a:b])
            # scatter in RAM, then write the rows out sequentially: random writes
            # into a file-backed map fault and write pages back many times over
            # (measured ~18x slower at 100M items)
            rows = (
                np.empty((sub.shape[0], n), order.dtype)
                if on_disk
                else order[g0 : g0 + sub.shape[0]]
            )
            if not two_level:
                cursor = offsets.copy()
                for c0 in chunks:
                    cols = np.ascontiguousarray(codes[c0 : c0 + _BUILD_CHUNK].T)
                    scatter_ids(cols, c0, sub, dims, ksize, slots, strides, cell_ptr, cursor, rows)
                    bar.update()
            else:
                fine = np.empty((sub.shape[0], n), np.uint16)
                bcursor = np.zeros((sub.shape[0], _BUCKETS), np.int64)
                for r, q in enumerate(sub):
                    starts = np.arange(0, n_cells[q], 1 << shift[q])
                    bcursor[r, : starts.shape[0]] = offsets[cell_ptr[q] + starts]
                for c0 in chunks:
                    cols = np.ascontiguousarray(codes[c0 : c0 + _BUILD_CHUNK].T)
                    scatter_coarse(
                        cols,
                        c0,
                        sub,
                        dims,
                        ksize,
                        slots,
                        strides,
                        cell_ptr,
                        shift,
                        bcursor,
                        rows,
                        fine,
                    )
                    bar.update()
                sort_buckets(rows, fine, offsets, cell_ptr, sub, shift, _BUCKETS)
                del fine
            if on_disk:
                order[g0 : g0 + sub.shape[0]] = rows
                order.flush()
                del rows


def build_arrays(
    codes,
    subsets,
    *,
    block_size,
    max_cells,
    sample_size,
    memory_budget,
    progress,
    n_jobs,
    order_file=None,
) -> dict:
    """The index arrays (``ARRAYS``) of ``codes``; ``order`` memory-mapped to ``order_file``."""
    n = codes.shape[0]
    grid = _design_grid(codes, subsets, block_size, max_cells, sample_size)
    id_dtype = np.uint32 if n < 2**32 else np.uint64
    shape = (len(subsets), n)
    if order_file is None:
        order = np.empty(shape, id_dtype)
    else:
        order = np.lib.format.open_memmap(order_file, "w+", id_dtype, shape)
    offsets = np.zeros(int(grid["cell_ptr"][-1]), np.int64)
    _fill(
        codes, order, offsets, grid, memory_budget=memory_budget, progress=progress, n_jobs=n_jobs
    )
    return dict(order=order, offsets=offsets, **grid)


# ---- the folder on disk ----


@contextlib.contextmanager
def _held(folder: Path):
    """flock ``folder`` while it is being built: the kernel drops it if we die."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _is_live(folder: Path) -> bool:
    """Whether a build still holds ``folder``."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def clean_leftovers(path: Path, keep: Path | None = None) -> list:
    """Remove what killed builds left beside ``path``; returns the removed folders.

    A ``.building-*`` folder is a dead build's when no process holds its
    lock. The previous index parked by a build killed mid-swap goes back in
    place first (``recover_dir``), so a kill never leaves no index at all.
    """
    recover_dir(path)
    building = sorted(path.parent.glob(f".{path.name}.building-*"))
    live = [f for f in building if f != keep and _is_live(f)]
    stale = [f for f in building if f != keep and f not in live]
    if not live:  # what recover_dir cannot attribute to a process (older versions' names)
        stale += sorted(path.parent.glob(f".{path.name}.old-*"))
    for f in stale:
        shutil.rmtree(f, ignore_errors=True)
    if stale:
        log.info("BoxIndex: removed %d leftovers of killed builds beside %s", len(stale), path)
    return stale


def write(path: Path, codes, digest, subsets, *, block_size, **build_args) -> float:
    """Build the index of ``codes`` (``digest``: their fingerprint) into folder ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path, "building")
    shutil.rmtree(tmp, ignore_errors=True)  # a dead build of a recycled pid
    tmp.mkdir()  # default mode: the umask decides, as for any folder
    try:
        with _held(tmp):
            clean_leftovers(path, keep=tmp)
            t0 = time.perf_counter()
            arrays = build_arrays(
                codes, subsets, block_size=block_size, order_file=tmp / "order.npy", **build_args
            )
            seconds = time.perf_counter() - t0
            arrays["order"].flush()
            arrays.pop("order")
            for name, arr in arrays.items():
                np.save(tmp / f"{name}.npy", arr)
            n, d = codes.shape
            manifest = {
                "format": "clipbranches-boxindex",
                "version": FORMAT_VERSION,
                "complete": True,
                "n_items": int(n),
                "n_features": int(d),
                "subsets": [list(s) for s in subsets],
                "block_size": int(block_size),
                "id_dtype": "uint32" if n < 2**32 else "uint64",
                "fingerprint": digest,
                "build_seconds": seconds,
                "files": {f"{a}.npy": (tmp / f"{a}.npy").stat().st_size for a in ARRAYS},
            }
            # the manifest is written last: its presence means every array is complete
            write_text(tmp / MANIFEST, json.dumps(manifest, indent=1))
            replace_dir(tmp, path)
            tmp = None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return seconds


def load(path: Path, codes, codes_fingerprint=None):
    """(manifest, arrays) of the complete index at ``path``, checked against ``codes``."""
    recover_dir(path)  # a build killed between its two renames parked the previous index
    path = Path(path)
    try:
        with open(path / MANIFEST) as fh:
            manifest = json.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: no complete BoxIndex there (no {MANIFEST}; an interrupted build "
            "leaves none) - build one with BoxIndex.build"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{path / MANIFEST}: expected a JSON BoxIndex manifest ({exc}); rebuild the index"
        ) from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != "clipbranches-boxindex"
        or not manifest.get("complete")
    ):
        raise ValueError(f"{path}/{MANIFEST}: expected a complete BoxIndex manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: expected index format version {FORMAT_VERSION}, got "
            f"{manifest.get('version')}; rebuild the index"
        )
    if (manifest["n_items"], manifest["n_features"]) != codes.shape:
        raise ValueError(
            f"{path}: the index covers codes of shape ({manifest['n_items']}, "
            f"{manifest['n_features']}), got {codes.shape}; rebuild it"
        )
    if manifest["fingerprint"] != (codes_fingerprint or fingerprint(codes)):
        raise ValueError(f"{path}: the codes differ from those the index was built on; rebuild it")
    arrays = {}
    for name in ARRAYS:
        file = path / f"{name}.npy"
        size = file.stat().st_size if file.exists() else None
        if size != manifest["files"].get(f"{name}.npy"):
            raise ValueError(
                f"{file}: expected {manifest['files'].get(f'{name}.npy')} bytes, "
                f"got {size}; the index is damaged - rebuild it"
            )
        arrays[name] = np.load(file, mmap_mode="r" if name in ("order", "offsets") else None)
    return manifest, arrays
