"""numba kernels of the feature-subset index: arrays and scalars only.

Shapes: ``n`` items, ``d`` code dims, ``S`` indexed subsets, ``kmax`` dims of
the widest subset, ``C`` = total grid cells over all subsets plus one per
subset (``cell_ptr[s]..cell_ptr[s+1]`` are subset ``s``'s cell offsets).
Ids are uint32 (uint64 from 2**32 items). The build kernels take a chunk of
codes transposed (``cols``: (d, rows) uint8) so each subset's dims are read
as contiguous streams. Plain-numpy twins live in ``tests/twins.py``.

Kernels have no explicit signatures: eager compilation at import would cost
seconds; ``cache=True`` loads compiled code from disk instead.
"""

from __future__ import annotations

import types

import numpy as np
from numba import njit, prange

from .._parallel import INLINE, KERNEL, PARALLEL

__all__ = [
    "accumulate",
    "cell_key",
    "collect",
    "collect_serial",
    "compact",
    "count_cells",
    "nonzero_counts",
    "nonzero_counts_serial",
    "nonzero_gather",
    "nonzero_gather_serial",
    "plan_box",
    "scatter_coarse",
    "scatter_ids",
    "sort_buckets",
]


# ---- build: the counting sort of ids by grid cell ----


@njit(**INLINE)
def cell_key(cols, i, s, dims, ksize, slots, strides):
    """Cell of row ``i`` in subset ``s``'s grid (row-major, last dim fastest).

    cols (d, rows) uint8; dims, strides (S, kmax) int64; ksize (S,) int64;
    slots (S, kmax, 256) int32 (slot of every code value). Returns int64.
    """
    key = 0
    for t in range(ksize[s]):
        key += slots[s, t, cols[dims[s, t], i]] * strides[s, t]
    return key


@njit(**PARALLEL)
def count_cells(cols, subsets, dims, ksize, slots, strides, cell_ptr, counts):
    """Add each row's cell to ``counts`` (C - 1,) int64, for subsets (G,) int64.

    cell_ptr (S + 1,) int64. One thread per subset: no two threads write
    the same counter.
    """
    rows = cols.shape[1]
    for q in prange(subsets.shape[0]):
        s = subsets[q]
        base = cell_ptr[s]
        for i in range(rows):
            counts[base + cell_key(cols, i, s, dims, ksize, slots, strides)] += 1


@njit(**PARALLEL)
def scatter_ids(cols, row0, subsets, dims, ksize, slots, strides, cell_ptr, cursor, order):
    """One-level counting sort: each id straight to its cell (small catalogues).

    row0: id of the chunk's first row; cursor (C,) int64 next free position
    per cell (advanced); order (G, n) ids, row q for subset ``subsets[q]``.
    Rows arrive in id order, so ids ascend inside each cell (a stable sort).
    """
    rows = cols.shape[1]
    for q in prange(subsets.shape[0]):
        s = subsets[q]
        base = cell_ptr[s]
        for i in range(rows):
            c = base + cell_key(cols, i, s, dims, ksize, slots, strides)
            order[q, cursor[c]] = row0 + i
            cursor[c] += 1


@njit(**PARALLEL)
def scatter_coarse(
    cols, row0, subsets, dims, ksize, slots, strides, cell_ptr, shift, bcursor, order, fine
):
    """First level of the counting sort: ids into buckets of 2**shift consecutive cells.

    shift (S,) int64; bcursor (G, 256) int64 next position per bucket
    (advanced); order (G, n) ids; fine (G, n) uint16 cell within the bucket.
    A bucket is a contiguous range of the final order. With at most 256
    buckets the writes go to a few streams that stay in cache; writing
    straight to one stream per cell (~10**6 at 10**8 items) misses the
    cache on nearly every write. Rows arrive in id order, so ids ascend
    inside each bucket.
    """
    rows = cols.shape[1]
    for q in prange(subsets.shape[0]):
        s = subsets[q]
        sh = shift[s]
        mask = (1 << sh) - 1
        for i in range(rows):
            key = cell_key(cols, i, s, dims, ksize, slots, strides)
            bkt = key >> sh
            p = bcursor[q, bkt]
            order[q, p] = row0 + i
            fine[q, p] = key & mask
            bcursor[q, bkt] = p + 1


@njit(**PARALLEL)
def sort_buckets(order, fine, offsets, cell_ptr, subsets, shift, nbuckets):
    """Second level: a stable counting sort of each bucket by cell (in cache).

    order (G, n) ids and fine (G, n) uint16 from ``scatter_coarse``;
    offsets (C,) int64 final cell offsets; nbuckets: buckets per subset.
    """
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


# ---- search: plan the runs of positions, collect their matches ----


@njit(**KERNEL)
def plan_box(offsets, base, k, first, last, strides, full, run_len, add_runs, rs, re, rf):
    """Runs of order positions for one box on one subset.

    offsets (C,) int64 and base = cell_ptr of the subset; k: its dims;
    ``first[t]..last[t]`` ((k,) int64) the slots the box meets on the t-th
    dim; strides (k,) int64; ``full[t, g]`` ((k, 256) bool) whether slot g
    lies inside the box; runs are at most ``run_len`` positions (load
    balance). Cells are numbered row-major (last dim fastest), so for each
    combination of the leading slots the cells along the last dim are
    contiguous: a partial first slot, a full middle, a partial last slot.
    Writes rs/re (int64) and rf (bool) only when ``add_runs``; returns
    (runs, cells met, positions in full cells, positions in partial cells).
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
                    e = min(b, p + run_len)
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
    """Ids of each run that lie in the run's box, into ``out[out_off[r]:]``.

    order (S, n) ids; codes (n, d) uint8; per run (R,): start/stop/row/box
    int64 and full bool (full: every id matches, no code read); out_off
    (R + 1,) int64; per box (m, kmax) int64 dims/lo/hi and (m,) int64 k;
    out (out_off[-1],) ids; out_count (R,) int64 matches per run. Each run
    writes its own slice of ``out``: no races.
    """
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


@njit(**KERNEL)
def compact(src, src_off, counts, dst_off, dst):
    """Copy ``counts[r]`` ids from ``src[src_off[r]:]`` to ``dst[dst_off[r]:]`` (all int64 offsets).

    Serial: a memory copy of the matches, bandwidth-bound anyway.
    """
    for r in range(counts.shape[0]):
        a = src_off[r]
        b = dst_off[r]
        for j in range(counts[r]):
            dst[b + j] = src[a + j]


@njit(**KERNEL)
def accumulate(ids, votes):
    """``votes[ids[j]] += 1`` for every j; votes (n,) uint8/uint16.

    Serial: one id appears once per box, and parallel increments would race.
    """
    for j in range(ids.shape[0]):
        votes[ids[j]] += 1


def _nonzero_counts_py(votes, chunk):
    """(ceil(n / chunk),) int64: non-zero votes per chunk of ``votes`` (n,)."""
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
    """Ids (int64) and votes of the non-zero entries, chunk c from ``offsets[c]``."""
    n = votes.shape[0]
    for c in prange(offsets.shape[0] - 1):
        j = offsets[c]
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            if votes[i] != 0:
                ids_out[j] = i
                votes_out[j] = votes[i]
                j += 1


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
collect = njit(**PARALLEL)(_collect_py)
collect_serial = njit(**KERNEL)(_serial_twin(_collect_py))
nonzero_counts = njit(**PARALLEL)(_nonzero_counts_py)
nonzero_counts_serial = njit(**KERNEL)(_serial_twin(_nonzero_counts_py))
nonzero_gather = njit(**PARALLEL)(_nonzero_gather_py)
nonzero_gather_serial = njit(**KERNEL)(_serial_twin(_nonzero_gather_py))
