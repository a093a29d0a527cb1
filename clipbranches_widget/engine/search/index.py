"""The feature-subset index: whole-catalogue inference without a full scan.

A decision-branches box constrains one feature subset only (a few of the 32
code dimensions). For every subset the index lays a grid over the subset's
dimensions (slot edges at quantiles of each dimension, so cells are balanced)
and stores the item ids sorted by grid cell (a counting sort, two-level for
large catalogues: ids ascend inside a cell) plus the cell offsets. The cell
bounds are known exactly from the slot edges, so a box query:

* enumerates the cells its bounds intersect (contiguous along the last
  dimension: at most three runs of positions per prefix of slots),
* lists the ids of cells that lie fully inside the box without reading any
  code (every item there matches), and
* checks the codes of items in cells on the box's surface only.

Storage per item is one id per subset (uint32 below 2**32 items) plus a few
bytes of cell offsets: no copy of the codes. A cost model compares the work
of the index (ids listed, codes checked, runs) with a scan of all codes and
picks the cheaper path per query; the result says which ran. Both paths are
numba kernels parallel over threads, and both return exactly what
``scan(codes, boxes)`` returns.

On disk (``BoxIndex.build(..., path=dir)``) the arrays are ``.npy`` files
opened memory-mapped; a build writes into a temporary sibling directory,
writes ``manifest.json`` last and renames the directory into place, so an
interrupted build never looks complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import types
from pathlib import Path

import numpy as np
from numba import njit, prange

from .._parallel import numba_threads
from .._validation import check_codes, describe
from ..boxes import Boxes
from ..subsets import default_feature_subsets
from .scan import ScanResult, scan

__all__ = ["BoxIndex"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_ARRAYS = ("order", "offsets", "cell_ptr", "slots", "strides", "nslots", "dims", "ksize")
_RUN = 4096  # longest run of positions one thread takes at a time (load balance)
_BUILD_CHUNK = 1 << 18  # rows per transposed chunk during a build
_BUCKETS = 256  # first-level buckets of the counting sort (per subset)
_DIRECT_BYTES = 16 << 20  # ids of one subset up to this size: one-level counting sort


# --------------------------------------------------------------------------
# numba kernels: arrays and scalars only
# --------------------------------------------------------------------------


@njit(inline="always")
def _cell_key(cols, i, s, dims, ksize, slots, strides):
    key = 0
    for t in range(ksize[s]):
        key += slots[s, t, cols[dims[s, t], i]] * strides[s, t]
    return key


@njit(parallel=True, cache=True, nogil=True)
def _count_cells(cols, subsets, dims, ksize, slots, strides, cell_ptr, counts):
    # one thread per subset: no two threads write the same counter
    rows = cols.shape[1]
    for q in prange(subsets.shape[0]):
        s = subsets[q]
        base = cell_ptr[s]
        for i in range(rows):
            counts[base + _cell_key(cols, i, s, dims, ksize, slots, strides)] += 1


@njit(parallel=True, cache=True, nogil=True)
def _scatter_ids(cols, row0, subsets, dims, ksize, slots, strides, cell_ptr, cursor, order):
    """One-level counting sort: each id straight to its cell (small catalogues).

    Rows arrive in id order, so ids ascend inside each cell (a stable sort).
    """
    rows = cols.shape[1]
    for q in prange(subsets.shape[0]):
        s = subsets[q]
        base = cell_ptr[s]
        for i in range(rows):
            c = base + _cell_key(cols, i, s, dims, ksize, slots, strides)
            order[q, cursor[c]] = row0 + i
            cursor[c] += 1


@njit(parallel=True, cache=True, nogil=True)
def _scatter_coarse(
    cols, row0, subsets, dims, ksize, slots, strides, cell_ptr, shift, bcursor, order, fine
):
    """First level of the counting sort: ids into buckets of 2**shift consecutive cells.

    A bucket is a contiguous range of the final order. With at most 256
    buckets the writes go to a few streams that stay in cache; writing
    straight to one stream per cell (~10**6 at 10**8 items) misses the
    cache on nearly every write. Rows arrive in id order, so ids ascend
    inside each bucket; ``fine`` keeps each id's cell within its bucket.
    """
    rows = cols.shape[1]
    for q in prange(subsets.shape[0]):
        s = subsets[q]
        sh = shift[s]
        mask = (1 << sh) - 1
        for i in range(rows):
            key = _cell_key(cols, i, s, dims, ksize, slots, strides)
            bkt = key >> sh
            p = bcursor[q, bkt]
            order[q, p] = row0 + i
            fine[q, p] = key & mask
            bcursor[q, bkt] = p + 1


@njit(parallel=True, cache=True, nogil=True)
def _sort_buckets(order, fine, offsets, cell_ptr, subsets, shift, nbuckets):
    """Second level: a stable counting sort of each bucket by cell (in cache)."""
    for w in prange(subsets.shape[0] * nbuckets):
        q = w // nbuckets
        bkt = w - q * nbuckets
        s = subsets[q]
        sh = shift[s]
        base = cell_ptr[s]
        ncell = cell_ptr[s + 1] - base - 1
        c0 = bkt << sh
        if c0 >= ncell:
            continue
        c1 = min(ncell, (bkt + 1) << sh)
        a = offsets[base + c0]
        b = offsets[base + c1]
        if b - a < 2:
            continue
        cur = offsets[base + c0 : base + c1].copy()
        tmp = np.empty(b - a, order.dtype)
        for p in range(a, b):
            f = fine[q, p]
            tmp[cur[f] - a] = order[q, p]
            cur[f] += 1
        for p in range(a, b):
            order[q, p] = tmp[p - a]


@njit(cache=True)
def _plan_box(offsets, base, k, first, last, strides, full, add_runs, rs, re, rf):
    """Runs of order positions for one box on one subset.

    ``first[t]..last[t]`` are the slots the box meets on the subset's t-th
    dimension, ``full[t, g]`` whether slot g lies inside the box. Cells are
    numbered row-major (last dimension fastest), so for each combination of
    the leading slots the cells along the last dimension are contiguous:
    a partial first slot, a full middle, a partial last slot. Returns the
    number of runs (written only when ``add_runs``), the number of cells met and
    the number of positions in full and in partial cells.
    """
    n_runs = 0
    n_cells = 0
    n_full = 0
    n_part = 0
    last_t = k - 1
    pref = np.empty(max(k - 1, 1), np.int64)
    for t in range(k - 1):
        pref[t] = first[t]
    done = False
    while not done:
        key0 = 0
        pref_full = True
        for t in range(k - 1):
            key0 += pref[t] * strides[t]
            if not full[t, pref[t]]:
                pref_full = False
        g = first[last_t]
        while g <= last[last_t]:
            # extend a segment of last-dimension slots with the same status
            status = pref_full and full[last_t, g]
            h = g
            while h + 1 <= last[last_t] and (pref_full and full[last_t, h + 1]) == status:
                h += 1
            a = offsets[base + key0 + g * strides[last_t]]
            b = offsets[base + key0 + h * strides[last_t] + 1]
            n_cells += h - g + 1
            if b > a:
                if status:
                    n_full += b - a
                else:
                    n_part += b - a
                p = a
                while p < b:
                    e = min(b, p + _RUN)
                    if add_runs:
                        rs[n_runs] = p
                        re[n_runs] = e
                        rf[n_runs] = status
                    n_runs += 1
                    p = e
            g = h + 1
        # odometer over the leading dimensions
        t = k - 2
        while t >= 0:
            pref[t] += 1
            if pref[t] <= last[t]:
                break
            pref[t] = first[t]
            t -= 1
        if t < 0:
            done = True
    return n_runs, n_cells, n_full, n_part


def _collect_py(
    order,
    codes,
    run_start,
    run_stop,
    run_full,
    run_row,
    run_box,
    out_off,
    box_dims,
    box_k,
    box_lo,
    box_hi,
    out,
    out_count,
):
    # each run writes its matches into its own slice of ``out``: no races
    for r in prange(run_start.shape[0]):
        row = run_row[r]
        j = out_off[r]
        if run_full[r]:
            for p in range(run_start[r], run_stop[r]):
                out[j] = order[row, p]
                j += 1
        else:
            b = run_box[r]
            kb = box_k[b]
            for p in range(run_start[r], run_stop[r]):
                i = order[row, p]
                ok = True
                for t in range(kb):
                    v = codes[i, box_dims[b, t]]
                    if v < box_lo[b, t] or v > box_hi[b, t]:
                        ok = False
                        break
                if ok:
                    out[j] = i
                    j += 1
        out_count[r] = j - out_off[r]


def _serial_twin(fn):
    """A copy of ``fn`` under its own name, to compile without ``parallel``.

    numba's on-disk cache is keyed by the function's qualified name and
    bytecode, not by its compile options: two dispatchers of one function
    would overwrite each other's cached machine code.
    """
    twin = types.FunctionType(
        fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__, fn.__closure__
    )
    twin.__qualname__ = fn.__qualname__ + "_serial"
    return twin


# A parallel region costs a thread wake-up, and on a shared machine a
# descheduled worker can stall it for milliseconds: small queries run serial.
_collect = njit(parallel=True, cache=True, nogil=True)(_collect_py)
_collect_serial = njit(cache=True, nogil=True)(_serial_twin(_collect_py))


@njit(cache=True, nogil=True)
def _compact(src, src_off, counts, dst_off, dst):
    # serial: a memory copy of the matches, bandwidth-bound anyway
    for r in range(counts.shape[0]):
        a = src_off[r]
        b = dst_off[r]
        for j in range(counts[r]):
            dst[b + j] = src[a + j]


@njit(cache=True, nogil=True)
def _accumulate(ids, votes):
    # serial: one id may appear once per box, and parallel increments would race
    for j in range(ids.shape[0]):
        votes[ids[j]] += 1


def _nonzero_counts_py(votes, chunk):
    n = votes.shape[0]
    nchunks = (n + chunk - 1) // chunk
    counts = np.zeros(nchunks, np.int64)
    for c in prange(nchunks):
        found = 0
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            found += votes[i] != 0
        counts[c] = found
    return counts


def _nonzero_gather_py(votes, chunk, offsets, ids_out, votes_out):
    n = votes.shape[0]
    for c in prange(offsets.shape[0] - 1):
        j = offsets[c]
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            if votes[i] != 0:
                ids_out[j] = i
                votes_out[j] = votes[i]
                j += 1


_nonzero_counts = njit(parallel=True, cache=True, nogil=True)(_nonzero_counts_py)
_nonzero_counts_serial = njit(cache=True, nogil=True)(_serial_twin(_nonzero_counts_py))
_nonzero_gather = njit(parallel=True, cache=True, nogil=True)(_nonzero_gather_py)
_nonzero_gather_serial = njit(cache=True, nogil=True)(_serial_twin(_nonzero_gather_py))


# --------------------------------------------------------------------------
# grid design (plain numpy: a few thousand numbers per subset)
# --------------------------------------------------------------------------


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


def _fingerprint(codes) -> str:
    """A cheap identity of a code array: shape and a hash of spread rows."""
    n = codes.shape[0]
    rows = np.unique(np.linspace(0, max(n - 1, 0), min(n, 4096)).astype(np.int64))
    h = hashlib.blake2b(digest_size=16)
    h.update(np.asarray(codes.shape, np.int64).tobytes())
    if n:
        h.update(np.ascontiguousarray(codes[rows]).tobytes())
    return h.hexdigest()


def _codes_of(source, name="source"):
    """(codes, catalogue path or None) from a Catalogue or a code array."""
    if hasattr(source, "codes") and hasattr(source, "compressor"):
        path = getattr(source, "path", None)
        return check_codes(source.codes, name=f"{name}.codes"), path
    if isinstance(source, np.ndarray):
        return check_codes(source, name=name), None
    raise TypeError(
        f"{name}: expected a Catalogue or an (n, d) uint8 code array, got {describe(source)}"
    )


# --------------------------------------------------------------------------
# the index
# --------------------------------------------------------------------------


class BoxIndex:
    """Per-feature-subset grid index over uint8 codes (see the module doc).

    Build with ``BoxIndex.build``, reopen with ``BoxIndex.open``; query with
    ``search(boxes)``, which returns the same ``ScanResult`` as ``scan``.

    Cost-model constants (nanoseconds of one thread per unit of work; the
    defaults were measured by ``benchmarks/index.py`` on a 2-core EPYC) are
    class attributes so they can be tuned per machine.
    """

    cost_scan_item = 8.0  # scan: per item of the catalogue
    cost_listed_id = 1.5  # index: per id of a cell fully inside a box
    cost_checked_id = 150.0  # index: per id whose codes are checked (a random read)
    cost_checked_id_cached = 12.0  # the same when the codes fit in the cache
    cache_bytes = 32 << 20  # codes up to this size count as cached
    parallel_min = 50_000  # fewer candidate ids than this: serial kernels
    cost_run = 60.0  # index: per run of positions
    cost_dense_item = 0.6  # combining votes in an (n,) array: per catalogue item
    cost_sparse_id = 25.0  # combining votes by sorting: per matched id

    def __init__(
        self,
        codes,
        *,
        subsets,
        order,
        offsets,
        cell_ptr,
        slots,
        strides,
        nslots,
        dims,
        ksize,
        block_size,
        path=None,
        build_seconds=None,
    ):
        self.codes = codes
        self.subsets = [tuple(int(j) for j in s) for s in subsets]
        self.order = order
        self.offsets = offsets
        self.cell_ptr = cell_ptr
        self.slots = slots
        self.strides = strides
        self.nslots = nslots
        self.dims = dims
        self.ksize = ksize
        self.block_size = int(block_size)
        self.path = None if path is None else Path(path)
        self.build_seconds = build_seconds
        self._subset_row = {s: q for q, s in enumerate(self.subsets)}
        self._full_cache = self._slot_bounds()

    # ---- construction ----
    @classmethod
    def build(
        cls,
        source,
        path=None,
        *,
        subsets=None,
        block_size: int = 128,
        max_cells: int = 1 << 22,
        sample_size: int = 1 << 18,
        memory_budget: int = 2 << 30,
        overwrite: bool = False,
        progress: bool = True,
        n_jobs: int | None = None,
    ) -> BoxIndex:
        """Build the index of a Catalogue (or of an (n, d) uint8 code array).

        Parameters
        ----------
        source : Catalogue or ndarray
        path : directory or None
            Where to write the index. Default: ``<catalogue.path>/index`` when
            the catalogue has a path, else in memory (nothing written).
        subsets : list of tuples of int or None
            The feature subsets to index (default: ``default_feature_subsets(d)``,
            the ones every DecisionBranchesClassifier uses by default).
        block_size : int, default 128
            Target mean number of items per grid cell: smaller cells prune
            more finely but take more offsets and more runs per query.
        max_cells : int
            Upper bound on the cells of one subset's grid.
        sample_size : int
            Rows sampled (evenly spaced) to place the slot edges.
        memory_budget : int
            Bytes of RAM for the ids scattered in one pass; subsets are built
            in groups that fit (each group reads the codes twice).
        overwrite : bool
            Replace a complete index already at ``path``. Without it, an index
            there built from the same codes with the same settings is reopened
            (no work), and any other raises ``FileExistsError``.
        """

        codes, cat_path = _codes_of(source)
        n, d = codes.shape
        if not 1 <= max_cells <= 1 << 24:
            raise ValueError(f"max_cells: expected an integer in 1..2**24, got {max_cells!r}")
        if block_size < 1:
            raise ValueError(f"block_size: expected a positive integer, got {block_size!r}")
        if n >= 2**63:
            raise ValueError(f"codes: expected fewer than 2**63 rows, got {n}")
        if subsets is None:
            subsets = default_feature_subsets(d)
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
        if path is None and cat_path is not None:
            path = Path(cat_path) / "index"
        if path is not None and (Path(path) / MANIFEST).exists() and not overwrite:
            # built once per catalogue: a complete index of the same codes and settings is reused
            try:
                existing = cls.open(path, codes)
            except ValueError as exc:
                raise FileExistsError(
                    f"{path}: an index that does not match is there ({exc}); "
                    "pass overwrite=True to replace it"
                ) from None
            if existing.subsets == subsets and existing.block_size == block_size:
                log.info("BoxIndex: reusing the complete index at %s", path)
                return existing
            raise FileExistsError(
                f"{path}: an index with other subsets or block_size is there; "
                "pass overwrite=True to replace it"
            )
        t0 = time.perf_counter()

        # grid design from a sample of rows
        S, kmax = len(subsets), max(len(s) for s in subsets)
        hists = np.zeros((d, 256), np.int64)
        sample = _sample_rows(codes, sample_size)
        for j in range(d):
            hists[j] = np.bincount(sample[:, j], minlength=256)
        dims = np.zeros((S, kmax), np.int64)
        ksize = np.zeros(S, np.int64)
        slots = np.zeros((S, kmax, 256), np.int32)
        nslots = np.ones((S, kmax), np.int64)
        strides = np.zeros((S, kmax), np.int64)
        n_cells = np.zeros(S, np.int64)
        target = max(1, n // block_size)
        for q, s in enumerate(subsets):
            k = len(s)
            g = int(np.floor(min(target, max_cells) ** (1.0 / k) + 1e-9))
            g = max(1, min(256, g))
            dims[q, :k] = s
            ksize[q] = k
            for t, j in enumerate(s):
                slots[q, t], nslots[q, t] = _design_slots(hists[j], g)
            stride = 1
            for t in range(k - 1, -1, -1):
                strides[q, t] = stride
                stride *= int(nslots[q, t])
            n_cells[q] = stride
        cell_ptr = np.zeros(S + 1, np.int64)
        np.cumsum(n_cells + 1, out=cell_ptr[1:])
        id_dtype = np.uint32 if n < 2**32 else np.uint64

        tmp = None
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.building-", dir=path.parent))
        try:
            if tmp is None:
                order = np.empty((S, n), id_dtype)
            else:
                order = np.lib.format.open_memmap(tmp / "order.npy", "w+", id_dtype, (S, n))
            offsets = np.zeros(int(cell_ptr[-1]), np.int64)
            cls._fill(
                codes,
                order,
                offsets,
                cell_ptr,
                dims,
                ksize,
                slots,
                strides,
                memory_budget=memory_budget,
                progress=progress,
                n_jobs=n_jobs,
            )
            seconds = time.perf_counter() - t0
            arrays = dict(
                order=order,
                offsets=offsets,
                cell_ptr=cell_ptr,
                slots=slots,
                strides=strides,
                nslots=nslots,
                dims=dims,
                ksize=ksize,
            )
            if tmp is None:
                return cls(
                    codes, subsets=subsets, block_size=block_size, build_seconds=seconds, **arrays
                )
            order.flush()
            del arrays["order"], order
            for name, arr in arrays.items():
                np.save(tmp / f"{name}.npy", arr)
            manifest = {
                "format": "clipbranches-boxindex",
                "version": FORMAT_VERSION,
                "complete": True,
                "n_items": int(n),
                "n_features": int(d),
                "subsets": [list(s) for s in subsets],
                "block_size": int(block_size),
                "id_dtype": np.dtype(id_dtype).name,
                "fingerprint": _fingerprint(codes),
                "build_seconds": seconds,
                "files": {f"{a}.npy": (tmp / f"{a}.npy").stat().st_size for a in _ARRAYS},
            }
            # the manifest is written last: its presence means every array is complete
            with open(tmp / (MANIFEST + ".part"), "w") as fh:
                json.dump(manifest, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp / (MANIFEST + ".part"), tmp / MANIFEST)
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
                os.replace(path, old / "index")
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
            tmp = None
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        log.info("BoxIndex: %d items, %d subsets built in %.1f s at %s", n, S, seconds, path)
        return cls.open(path, codes)

    @staticmethod
    def _fill(
        codes,
        order,
        offsets,
        cell_ptr,
        dims,
        ksize,
        slots,
        strides,
        *,
        memory_budget,
        progress,
        n_jobs,
    ):
        """Counting sort of the item ids of every subset, in groups of subsets."""
        from tqdm.auto import tqdm

        n = codes.shape[0]
        S = order.shape[0]
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
        bar = tqdm(
            total=2 * len(chunks) * n_groups,
            desc="BoxIndex",
            unit="pass",
            disable=not progress,
            leave=False,
        )
        try:
            with numba_threads(n_jobs):
                for g0 in range(0, S, group):
                    sub = np.arange(g0, min(S, g0 + group), dtype=np.int64)
                    counts = offsets  # counts go to slot c+1, turning into offsets by cumsum
                    view = counts[1:]
                    for c0 in chunks:
                        cols = np.ascontiguousarray(codes[c0 : c0 + _BUILD_CHUNK].T)
                        _count_cells(cols, sub, dims, ksize, slots, strides, cell_ptr, view)
                        bar.update()
                    for q in sub:
                        a, b = cell_ptr[q], cell_ptr[q + 1]
                        np.cumsum(offsets[a:b], out=offsets[a:b])
                    # scatter in RAM, then write the rows out sequentially: random
                    # writes into a file-backed map fault and write pages back many
                    # times over (measured ~18x slower at 100M items)
                    on_disk = isinstance(order, np.memmap)
                    rows = (
                        np.empty((sub.shape[0], n), order.dtype)
                        if on_disk
                        else order[g0 : g0 + sub.shape[0]]
                    )
                    if not two_level:
                        cursor = offsets.copy()
                        for c0 in chunks:
                            cols = np.ascontiguousarray(codes[c0 : c0 + _BUILD_CHUNK].T)
                            _scatter_ids(
                                cols, c0, sub, dims, ksize, slots, strides, cell_ptr, cursor, rows
                            )
                            bar.update()
                    else:
                        fine = np.empty((sub.shape[0], n), np.uint16)
                        bcursor = np.zeros((sub.shape[0], _BUCKETS), np.int64)
                        for r, q in enumerate(sub):
                            starts = np.arange(0, n_cells[q], 1 << shift[q])
                            bcursor[r, : starts.shape[0]] = offsets[cell_ptr[q] + starts]
                        for c0 in chunks:
                            cols = np.ascontiguousarray(codes[c0 : c0 + _BUILD_CHUNK].T)
                            _scatter_coarse(
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
                        _sort_buckets(rows, fine, offsets, cell_ptr, sub, shift, _BUCKETS)
                        del fine
                    if on_disk:
                        order[g0 : g0 + sub.shape[0]] = rows
                        order.flush()
                        del rows
        finally:
            bar.close()

    @classmethod
    def open(cls, path, source) -> BoxIndex:
        """Open a complete index at ``path`` for the codes of ``source``."""
        codes, _ = _codes_of(source)
        path = Path(path)
        try:
            with open(path / MANIFEST) as fh:
                manifest = json.load(fh)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{path}: no complete BoxIndex there (no {MANIFEST}; an "
                "interrupted build leaves none) - build one with "
                "BoxIndex.build"
            ) from None
        if manifest.get("format") != "clipbranches-boxindex" or not manifest.get("complete"):
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
        if manifest["fingerprint"] != _fingerprint(codes):
            raise ValueError(
                f"{path}: the codes differ from those the index was built on; rebuild it"
            )
        arrays = {}
        for name in _ARRAYS:
            file = path / f"{name}.npy"
            size = file.stat().st_size if file.exists() else None
            if size != manifest["files"].get(f"{name}.npy"):
                raise ValueError(
                    f"{file}: expected {manifest['files'].get(f'{name}.npy')} bytes, "
                    f"got {size}; the index is damaged - rebuild it"
                )
            arrays[name] = np.load(file, mmap_mode="r" if name in ("order", "offsets") else None)
        return cls(
            codes,
            subsets=manifest["subsets"],
            block_size=manifest["block_size"],
            path=path,
            build_seconds=manifest.get("build_seconds"),
            **arrays,
        )

    # ---- description ----
    def __repr__(self) -> str:
        return (
            f"BoxIndex(n_items={self.n_items}, subsets={len(self.subsets)}, "
            f"bytes_per_item={self.bytes_per_item:.1f}, path={self.path})"
        )

    @property
    def n_items(self) -> int:
        return self.codes.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes of the index itself (not counting the codes)."""
        return int(sum(getattr(self, a).nbytes for a in _ARRAYS))

    @property
    def bytes_per_item(self) -> float:
        return self.nbytes / max(1, self.n_items)

    def _slot_bounds(self):
        """(S, kmax, 257) first value of every slot, plus 256 at the end."""
        S, kmax = self.dims.shape
        first = np.full((S, kmax, 257), 256, np.int64)
        for q in range(S):
            for t in range(int(self.ksize[q])):
                sl = self.slots[q, t]
                starts = np.flatnonzero(np.diff(np.concatenate([[-1], sl])))
                first[q, t, : starts.shape[0]] = starts
        return first

    # ---- queries ----
    def subset_for(self, dims) -> int | None:
        """Row of the indexed subset serving a box on ``dims`` (None: none does).

        The subset itself when indexed, else the smallest indexed superset
        (its other dimensions are then unconstrained).
        """
        dims = tuple(sorted(dims))
        if dims in self._subset_row:
            return self._subset_row[dims]
        best = None
        for q, s in enumerate(self.subsets):
            if set(dims) <= set(s) and (best is None or len(s) < len(self.subsets[best])):
                best = q
        return best

    def _plan(self, boxes: Boxes, with_runs: bool):
        m = boxes.n_boxes
        rows = np.zeros(m, np.int64)
        stats = np.zeros((m, 4), np.int64)  # runs, cells, ids listed, ids checked
        runs = []
        for b in range(m):
            q = self.subset_for(boxes.dims[b])
            if q is None:
                return None, b
            rows[b] = q
            k = int(self.ksize[q])
            sdims = self.dims[q, :k]
            lo = boxes.lower[b, sdims].astype(np.int64)
            hi = boxes.upper[b, sdims].astype(np.int64)
            if (lo > hi).any():
                continue  # an empty box: no cell, no run
            first = self.slots[q, np.arange(k), lo].astype(np.int64)
            last = self.slots[q, np.arange(k), hi].astype(np.int64)
            starts = self._full_cache[q, :k]  # first value of each slot
            ends = np.concatenate([starts[:, 1:], np.full((k, 1), 256)], axis=1) - 1
            full = (starts[:, :256] >= lo[:, None]) & (ends[:, :256] <= hi[:, None])
            strides = self.strides[q, :k]
            base = int(self.cell_ptr[q])
            none_i, none_b = np.empty(0, np.int64), np.empty(0, np.bool_)
            nr, nc, nf, npart = _plan_box(
                self.offsets, base, k, first, last, strides, full, False, none_i, none_i, none_b
            )
            if with_runs and nr:
                rs = np.empty(nr, np.int64)
                re = np.empty(nr, np.int64)
                rf = np.empty(nr, np.bool_)
                _plan_box(self.offsets, base, k, first, last, strides, full, True, rs, re, rf)
                runs.append((b, q, rs, re, rf))
            stats[b] = nr, nc, nf, npart
        return (rows, stats, runs), None

    def estimate(self, boxes: Boxes) -> dict:
        """Estimated work of both paths for ``boxes`` (nanoseconds of one thread)."""
        self._check_boxes(boxes)
        plan, missing = self._plan(boxes, with_runs=False)
        n = self.n_items
        out = {"n_items": n, "cost_scan_ns": self.cost_scan_item * n}
        if plan is None:
            out.update(
                cost_index_ns=float("inf"),
                missing_box=missing,
                reason=f"box {missing} constrains dims {boxes.dims[missing]}, which "
                "no indexed subset covers",
            )
            return out
        _, stats, _ = plan
        runs, cells, listed, checked = (int(x) for x in stats.sum(axis=0))
        candidates = listed + checked
        combine = min(self.cost_dense_item * n, self.cost_sparse_id * candidates)
        per_check = (
            self.cost_checked_id_cached
            if self.codes.nbytes <= self.cache_bytes
            else self.cost_checked_id
        )
        cost = self.cost_listed_id * listed + per_check * checked + self.cost_run * runs + combine
        out.update(
            cost_index_ns=float(cost),
            cells_touched=cells,
            runs_planned=runs,
            ids_listed=listed,
            ids_checked=checked,
            fraction_touched=candidates / max(1, n),
            bytes_index=listed * self.order.dtype.itemsize
            + checked * (self.order.dtype.itemsize + 64),
            bytes_scan=int(self.codes.nbytes),
        )
        return out

    def _check_boxes(self, boxes):
        if not isinstance(boxes, Boxes):
            raise TypeError(f"boxes: expected a Boxes instance, got {describe(boxes)}")
        if boxes.n_features != self.codes.shape[1]:
            raise ValueError(
                f"boxes: expected boxes over {self.codes.shape[1]} code dims, "
                f"got {boxes.n_features}"
            )

    def search(self, boxes: Boxes, *, path: str = "auto", n_jobs: int | None = None) -> ScanResult:
        """Every item in at least one box, with its votes, in id order.

        ``path``: "auto" (the cost model chooses), "index" or "scan". The
        index path is used only when every box's dimensions lie in an indexed
        subset; otherwise the query falls back to the scan and
        ``info["reason"]`` says why. The choice is per query, not per box:
        once one box needs the scan, the scan reads every code anyway and
        evaluates all the other boxes in the same pass almost for free.

        ``info``: ``cells_touched`` (grid cells the boxes meet),
        ``ids_listed`` (ids of cells inside a box: no code read),
        ``ids_checked`` (ids whose codes are read), ``fraction_touched``,
        ``bytes_index`` / ``bytes_scan`` (estimated bytes each path reads),
        ``cost_index_ns`` / ``cost_scan_ns`` (the cost model), ``plan_s``.
        """
        if path not in ("auto", "index", "scan"):
            raise ValueError(f"path: expected 'auto', 'index' or 'scan', got {path!r}")
        self._check_boxes(boxes)
        t0 = time.perf_counter()
        est = self.estimate(boxes)
        t_plan = time.perf_counter() - t0
        use_index = path == "index" or (
            path == "auto" and est["cost_index_ns"] < est["cost_scan_ns"]
        )
        if "missing_box" in est:
            if path == "index":
                log.info("BoxIndex: %s; scanning instead", est["reason"])
            use_index = False
        elif path == "scan":
            est["reason"] = "asked for the scan"
        elif not use_index:
            est["reason"] = "the scan is estimated cheaper"
        if not use_index:
            with numba_threads(n_jobs):
                res = scan(self.codes, boxes, n_jobs=n_jobs)
            res.info.update(est)
            res.info["plan_s"] = t_plan
            return res
        with numba_threads(n_jobs):
            res = self._search_index(boxes)
        res.info.update(est)
        res.info["plan_s"] = t_plan
        return res

    def _search_index(self, boxes: Boxes) -> ScanResult:
        n = self.n_items
        vdtype = np.uint8 if boxes.n_boxes < 256 else np.uint16
        plan, _ = self._plan(boxes, with_runs=True)
        _, stats, runs = plan
        if runs:
            run_start = np.concatenate([r[2] for r in runs])
            run_stop = np.concatenate([r[3] for r in runs])
            run_full = np.concatenate([r[4] for r in runs])
            run_box = np.concatenate([np.full(r[2].shape[0], r[0], np.int64) for r in runs])
            run_row = np.concatenate([np.full(r[2].shape[0], r[1], np.int64) for r in runs])
        else:
            run_start = run_stop = run_box = run_row = np.zeros(0, np.int64)
            run_full = np.zeros(0, np.bool_)
        m = boxes.n_boxes
        kmax = max([len(dd) for dd in boxes.dims] + [1])
        box_dims = np.zeros((m, kmax), np.int64)
        box_k = np.zeros(m, np.int64)
        box_lo = np.zeros((m, kmax), np.int64)
        box_hi = np.zeros((m, kmax), np.int64)
        for b, dd in enumerate(boxes.dims):
            box_k[b] = len(dd)
            box_dims[b, : len(dd)] = dd
            box_lo[b, : len(dd)] = boxes.lower[b, list(dd)]
            box_hi[b, : len(dd)] = boxes.upper[b, list(dd)]
        lengths = run_stop - run_start
        out_off = np.zeros(lengths.shape[0] + 1, np.int64)
        np.cumsum(lengths, out=out_off[1:])
        cand = int(out_off[-1])
        buf = np.empty(cand, self.order.dtype)
        counts = np.zeros(lengths.shape[0], np.int64)
        if lengths.shape[0]:
            collect = _collect if cand >= self.parallel_min else _collect_serial
            collect(
                self.order,
                self.codes,
                run_start,
                run_stop,
                run_full,
                run_row,
                run_box,
                out_off,
                box_dims,
                box_k,
                box_lo,
                box_hi,
                buf,
                counts,
            )
        dst_off = np.zeros(counts.shape[0] + 1, np.int64)
        np.cumsum(counts, out=dst_off[1:])
        matched = np.empty(int(dst_off[-1]), self.order.dtype)
        if counts.shape[0]:
            _compact(buf, out_off, counts, dst_off, matched)
        del buf
        dense = self.cost_dense_item * n < self.cost_sparse_id * matched.shape[0]
        if dense:
            votes = np.zeros(n, vdtype)
            _accumulate(matched, votes)
            chunk = 1 << 16
            big = n >= 4 * self.parallel_min
            per = (_nonzero_counts if big else _nonzero_counts_serial)(votes, chunk)
            off = np.zeros(per.shape[0] + 1, np.int64)
            np.cumsum(per, out=off[1:])
            ids = np.empty(int(off[-1]), np.int64)
            out_votes = np.empty(ids.shape[0], vdtype)
            if ids.shape[0]:
                (_nonzero_gather if big else _nonzero_gather_serial)(
                    votes, chunk, off, ids, out_votes
                )
        else:
            uniq, cnt = np.unique(matched, return_counts=True)
            ids = uniq.astype(np.int64)
            out_votes = cnt.astype(vdtype)
        info = {
            "n_items": n,
            "runs": int(lengths.shape[0]),
            "ids_matched": int(matched.shape[0]),
            "combine": "dense" if dense else "sparse",
        }
        return ScanResult(ids, out_votes, "index", info)
