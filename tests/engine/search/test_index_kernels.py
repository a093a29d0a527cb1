"""Each numba kernel family of the index against its plain-numpy twin, on random inputs."""

import numpy as np
import pytest

from clipbranches_widget.engine.search import index_kernels as K
from clipbranches_widget.engine.search.index import BoxIndex

from twins import (
    accumulate_twin,
    cell_keys_twin,
    collect_twin,
    compact_twin,
    nonzero_twin,
    plan_twin,
)

SUBSETS = [(0, 3), (1, 4, 7), (2, 5, 6, 8), (9,)]


@pytest.fixture(scope="module")
def small_index():
    rng = np.random.default_rng(21)
    codes = rng.integers(0, 256, (3_001, 12), dtype=np.uint8)
    codes[:200] = codes[200]  # duplicates: crowded cells
    return codes, BoxIndex.build(codes, subsets=SUBSETS, block_size=6, progress=False)


def test_count_cells_twin(small_index):
    codes, idx = small_index
    counts = np.zeros(int(idx.cell_ptr[-1]), np.int64)
    cols = np.ascontiguousarray(codes.T)
    sub = np.arange(len(SUBSETS), dtype=np.int64)
    K.count_cells(cols, sub, idx.dims, idx.ksize, idx.slots, idx.strides, idx.cell_ptr, counts[1:])
    for q in range(len(SUBSETS)):
        a, b = idx.cell_ptr[q], idx.cell_ptr[q + 1]
        keys = cell_keys_twin(codes, q, idx.dims, idx.ksize, idx.slots, idx.strides)
        np.testing.assert_array_equal(counts[a + 1 : b], np.bincount(keys, minlength=b - a - 1))


def _random_box(rng, idx, q):
    k = int(idx.ksize[q])
    dims = idx.dims[q, :k]
    lo = rng.integers(0, 200, k)
    hi = np.minimum(255, lo + rng.integers(0, 120, k))
    first = idx.slots[q, np.arange(k), lo].astype(np.int64)
    last = idx.slots[q, np.arange(k), hi].astype(np.int64)
    starts = idx._full_cache[q, :k]
    ends = np.concatenate([starts[:, 1:], np.full((k, 1), 256)], axis=1) - 1
    full = (starts[:, :256] >= lo[:, None]) & (ends[:, :256] <= hi[:, None])
    return dims, lo, hi, first, last, full


@pytest.mark.parametrize("run_len", [1, 5, 4096])
def test_plan_box_twin_random(small_index, run_len):
    codes, idx = small_index
    rng = np.random.default_rng(run_len)
    for trial in range(40):
        q = trial % len(SUBSETS)
        k = int(idx.ksize[q])
        _, _, _, first, last, full = _random_box(rng, idx, q)
        args = (
            idx.offsets,
            int(idx.cell_ptr[q]),
            k,
            first,
            last,
            idx.strides[q, :k],
            full,
            run_len,
        )
        e = np.empty(0, np.int64)
        nr, nc, nf, npart = K.plan_box(*args, False, e, e, np.empty(0, np.bool_))
        rs, re, rf = np.empty(nr, np.int64), np.empty(nr, np.int64), np.empty(nr, np.bool_)
        assert K.plan_box(*args, True, rs, re, rf) == (nr, nc, nf, npart)
        full_pos, part_pos, cells = plan_twin(
            idx.offsets, int(idx.cell_ptr[q]), k, first, last, idx.strides[q, :k], full
        )
        got_full = np.concatenate([np.arange(a, b) for a, b, f in zip(rs, re, rf) if f] + [e])
        got_part = np.concatenate([np.arange(a, b) for a, b, f in zip(rs, re, rf) if not f] + [e])
        np.testing.assert_array_equal(np.sort(got_full), np.sort(full_pos))
        np.testing.assert_array_equal(np.sort(got_part), np.sort(part_pos))
        assert (nc, nf, npart) == (cells, full_pos.shape[0], part_pos.shape[0])
        assert ((re - rs) <= run_len).all() and ((re - rs) > 0).all()


@pytest.mark.parametrize("kernel", ["collect", "collect_serial"])
def test_collect_twin_random(small_index, kernel):
    codes, idx = small_index
    rng = np.random.default_rng(4)
    m, kmax = 6, 4
    box_dims = np.zeros((m, kmax), np.int64)
    box_k = np.zeros(m, np.int64)
    box_lo = np.zeros((m, kmax), np.int64)
    box_hi = np.zeros((m, kmax), np.int64)
    bounds = []
    for b in range(m):
        q = b % len(SUBSETS)
        dims, lo, hi, *_ = _random_box(rng, idx, q)
        k = dims.shape[0]
        box_dims[b, :k], box_k[b], box_lo[b, :k], box_hi[b, :k] = dims, k, lo, hi
        bounds.append({int(j): (int(a), int(c)) for j, a, c in zip(dims, lo, hi)})
    # random runs of positions, any box on its own subset's row, some "full"
    R = 50
    run_box = rng.integers(0, m, R)
    run_row = run_box % len(SUBSETS)
    run_start = rng.integers(0, codes.shape[0] - 100, R)
    run_stop = run_start + rng.integers(0, 100, R)
    run_full = rng.random(R) < 0.3
    out_off = np.zeros(R + 1, np.int64)
    np.cumsum(run_stop - run_start, out=out_off[1:])
    out = np.full(int(out_off[-1]), 2**32 - 1, idx.order.dtype)
    out_count = np.zeros(R, np.int64)
    getattr(K, kernel)(
        idx.order,
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
    )
    want = collect_twin(idx.order, codes, run_start, run_stop, run_full, run_row, run_box, bounds)
    for r in range(R):
        assert out_count[r] == want[r].shape[0]
        np.testing.assert_array_equal(out[out_off[r] : out_off[r] + out_count[r]], want[r])


def test_compact_and_accumulate_twins_random():
    rng = np.random.default_rng(7)
    R, n = 40, 500
    lengths = rng.integers(0, 30, R)
    src_off = np.zeros(R + 1, np.int64)
    np.cumsum(lengths, out=src_off[1:])
    src = rng.integers(0, n, int(src_off[-1])).astype(np.uint32)
    counts = np.array([rng.integers(0, x + 1) for x in lengths], np.int64)
    dst_off = np.zeros(R + 1, np.int64)
    np.cumsum(counts, out=dst_off[1:])
    dst = np.empty(int(dst_off[-1]), np.uint32)
    K.compact(src, src_off, counts, dst_off, dst)
    np.testing.assert_array_equal(dst, compact_twin(src, src_off, counts))
    for dtype in (np.uint8, np.uint16):
        votes = np.zeros(n, dtype)
        K.accumulate(dst, votes)
        np.testing.assert_array_equal(votes, accumulate_twin(dst, n))


@pytest.mark.parametrize("chunk", [1, 7, 1 << 16])
@pytest.mark.parametrize("serial", [False, True])
def test_nonzero_twins_random(chunk, serial):
    rng = np.random.default_rng(chunk)
    votes = (rng.random(1_003) < 0.2).astype(np.uint8) * rng.integers(1, 9, 1_003).astype(np.uint8)
    counts_k = K.nonzero_counts_serial if serial else K.nonzero_counts
    gather_k = K.nonzero_gather_serial if serial else K.nonzero_gather
    per = counts_k(votes, chunk)
    off = np.zeros(per.shape[0] + 1, np.int64)
    np.cumsum(per, out=off[1:])
    ids = np.empty(int(off[-1]), np.int64)
    got = np.empty(ids.shape[0], votes.dtype)
    gather_k(votes, chunk, off, ids, got)
    want_ids, want_votes = nonzero_twin(votes)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(got, want_votes)
