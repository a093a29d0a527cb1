"""Whole-catalogue inference by a parallel scan over (n, d) uint8 codes.

The boxes are compiled into per-dimension 256-entry bitmask tables:
``tables[t, v]`` has bit ``b`` set when value ``v`` of dimension ``dims[t]``
lies inside box ``b``. An item's set of containing boxes is the AND of its
table entries over the constrained dimensions, and its votes the popcount.
Dimensions are visited most selective first so most items exit after one or
two lookups. This is the baseline every index must beat.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._parallel import INLINE, PARALLEL, numba_threads
from .._validation import check_codes
from ..boxes import Boxes
from .result import ScanResult

__all__ = ["ScanResult", "compile_tables", "scan", "scan_votes"]

CHUNK = 1 << 14
_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)


@njit(**INLINE)
def _popcount(x):
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return (x * _H01) >> np.uint64(56)


def value_frequencies(codes, sample: int = 8192) -> np.ndarray:
    """(d, 256) share of each code value per dimension, from a strided sample."""
    step = max(1, codes.shape[0] // sample)
    d = codes.shape[1]
    # one bincount over (dimension, value) pairs: 32 bincounts of strided
    # columns cost more than the scan of a small catalogue
    pairs = np.asarray(codes[::step], np.int32) + 256 * np.arange(d, dtype=np.int32)
    freq = np.bincount(pairs.ravel(), minlength=256 * d).reshape(d, 256).astype(np.float64)
    return (freq + 0.5) / (freq.sum(axis=1, keepdims=True) + 128.0)


def dimension_order(boxes: Boxes, constrained, freq=None) -> np.ndarray:
    """Order the constrained dimensions so that items die early.

    An item leaves the scan once no box is alive for it. Greedy: next visit
    the dimension that most lowers the expected number of boxes still alive,
    where box b survives dimension j with probability = share of values in
    its range (``freq``, uniform when not given).
    """
    m = boxes.n_boxes
    if freq is None:
        freq = np.full((boxes.n_features, 256), 1 / 256)
    cum = np.concatenate([np.zeros((freq.shape[0], 1)), np.cumsum(freq, axis=1)], axis=1)
    cols = np.asarray(constrained)
    lo = boxes.lower[:, cols].astype(np.int64)
    hi = boxes.upper[:, cols].astype(np.int64)
    # pass[b, t]: probability that box b admits an item on dimension cols[t]
    passing = np.where(hi >= lo, cum[cols, hi + 1] - cum[cols, lo], 0.0)
    alive = np.ones(m)
    left = list(range(len(cols)))
    order = []
    while left:
        best = min(left, key=lambda t: (alive * passing[:, t]).sum())
        order.append(cols[best])
        alive = alive * passing[:, best]
        left.remove(best)
    return np.asarray(order, np.int64)


def compile_tables(boxes: Boxes, freq=None):
    """Bitmask tables for ``boxes``.

    Returns ``(tables, dims, full)``: tables of shape (k, 256, w) uint64 for
    the k dimensions that some box constrains (in the visiting order of
    ``dimension_order``), those dimensions, and the (w,) mask with one bit
    per box. ``freq``: (d, 256) value shares of the catalogue, if known.
    """
    m, d = boxes.n_boxes, boxes.n_features
    w = max(1, (m + 63) // 64)
    values = np.arange(256, dtype=np.int64)
    inside = (values[None, None, :] >= boxes.lower[:, :, None]) & (
        values[None, None, :] <= boxes.upper[:, :, None]
    )  # (m, d, 256)
    bits = np.left_shift(np.uint64(1), np.arange(64, dtype=np.uint64))
    tables = np.zeros((d, 256, w), np.uint64)
    full = np.zeros(w, np.uint64)
    for word in range(w):
        chunk = inside[word * 64 : (word + 1) * 64]
        nb = chunk.shape[0]
        tables[:, :, word] = (chunk.astype(np.uint64) * bits[:nb, None, None]).sum(
            axis=0, dtype=np.uint64
        )
        full[word] = bits[:nb].sum(dtype=np.uint64)
    constrained = np.flatnonzero((tables != full[None, None, :]).any(axis=(1, 2)))
    order = dimension_order(boxes, constrained, freq)
    return np.ascontiguousarray(tables[order]), order.astype(np.int64), full


@njit(**PARALLEL)
def _votes_kernel(codes, tables, dims, full, votes, chunk):
    n = codes.shape[0]
    k = dims.shape[0]
    w = full.shape[0]
    nchunks = (n + chunk - 1) // chunk
    counts = np.zeros(nchunks, np.int64)
    for c in prange(nchunks):
        start = c * chunk
        stop = min(n, start + chunk)
        mask = np.empty(w, np.uint64)
        found = 0
        for i in range(start, stop):
            for q in range(w):
                mask[q] = full[q]
            for t in range(k):
                alive = np.uint64(0)
                v = codes[i, dims[t]]
                for q in range(w):
                    mask[q] &= tables[t, v, q]
                    alive |= mask[q]
                if alive == 0:
                    break
            total = 0
            for q in range(w):
                total += _popcount(mask[q])
            votes[i] = total
            if total > 0:
                found += 1
        counts[c] = found
    return counts


@njit(**PARALLEL)
def _votes_kernel_1(codes, tables, dims, full, votes, chunk):
    # At most 64 boxes: one scalar mask per item. Branch-free "selection
    # vector" stages: each dimension filters the survivors of the previous
    # one, so the loop bodies have no unpredictable branches and most items
    # are dropped after the first, most selective dimension.
    n = codes.shape[0]
    k = dims.shape[0]
    nchunks = (n + chunk - 1) // chunk
    counts = np.zeros(nchunks, np.int64)
    f = full[0]
    for c in prange(nchunks):
        start = c * chunk
        stop = min(n, start + chunk)
        size = stop - start
        sel = np.empty(size, np.int64)
        msk = np.empty(size, np.uint64)
        for i in range(size):
            votes[start + i] = 0
        if k == 0:
            alive = size if f != 0 else 0  # no constrained dims: all or nothing
            for i in range(size):
                sel[i] = start + i
                msk[i] = f
        else:
            alive = 0
            d0 = dims[0]
            for i in range(size):
                m = tables[0, codes[start + i, d0], 0]
                sel[alive] = start + i
                msk[alive] = m
                alive += m != 0
            for t in range(1, k):
                dt = dims[t]
                kept = 0
                for j in range(alive):
                    i = sel[j]
                    m = msk[j] & tables[t, codes[i, dt], 0]
                    sel[kept] = i
                    msk[kept] = m
                    kept += m != 0
                alive = kept
        for j in range(alive):
            votes[sel[j]] = _popcount(msk[j])
        counts[c] = alive
    return counts


@njit(**PARALLEL)
def _gather_kernel(votes, offsets, chunk, ids_out, votes_out):
    n = votes.shape[0]
    nchunks = offsets.shape[0] - 1
    for c in prange(nchunks):
        start = c * chunk
        stop = min(n, start + chunk)
        j = offsets[c]
        for i in range(start, stop):
            if votes[i] > 0:
                ids_out[j] = i
                votes_out[j] = votes[i]
                j += 1


def scan_votes(codes: np.ndarray, boxes: Boxes) -> np.ndarray:
    """(n,) votes of every item (numba, parallel). ``codes`` is trusted."""
    votes, _ = _scan_votes(codes, boxes)
    return votes


def _scan_votes(codes, boxes):
    tables, dims, full = compile_tables(boxes, value_frequencies(codes) if len(codes) else None)
    dtype = np.uint8 if boxes.n_boxes < 256 else np.uint16
    votes = np.empty(codes.shape[0], dtype)
    if codes.shape[0] == 0:
        return votes, np.zeros(0, np.int64)
    kernel = _votes_kernel_1 if full.shape[0] == 1 else _votes_kernel
    counts = kernel(codes, tables, dims, full, votes, CHUNK)
    return votes, counts


def scan(codes, boxes: Boxes, *, n_jobs: int | None = None) -> ScanResult:
    """Every item contained in at least one box, with its votes, in id order."""
    codes = check_codes(codes, n_features=boxes.n_features, allow_empty=True)
    with numba_threads(n_jobs):
        votes, counts = _scan_votes(codes, boxes)
        offsets = np.zeros(counts.shape[0] + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        total = int(offsets[-1])
        ids = np.empty(total, np.int64)
        out_votes = np.empty(total, votes.dtype)
        if total:
            _gather_kernel(votes, offsets, CHUNK, ids, out_votes)
    return ScanResult(ids, out_votes, "scan", {"n_items": codes.shape[0]})
