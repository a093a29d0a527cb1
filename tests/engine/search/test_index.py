"""BoxIndex: identical results to the scan and to plain numpy, on disk and in memory."""

import json
import os

import numpy as np
import pytest

from clipbranches_widget.engine.boxes import Boxes
from clipbranches_widget.engine.codes.pca import Compressor
from clipbranches_widget.engine.learn.branches import DecisionBranchesClassifier
from clipbranches_widget.engine.search import index as index_mod
from clipbranches_widget.engine.search import index_build, index_kernels
from clipbranches_widget.engine.search.index import BoxIndex, _design_slots
from clipbranches_widget.engine.search.scan import scan
from clipbranches_widget.engine.store.catalogue import Catalogue
from clipbranches_widget.engine.subsets import default_feature_subsets

from twins import votes_twin

SUBSETS = default_feature_subsets(32)


def subset_boxes(rng, m, subsets=SUBSETS, width=(5, 120), d=32):
    """m random boxes, each on one indexed subset (as the classifier makes them)."""
    out = []
    for _ in range(m):
        s = subsets[int(rng.integers(len(subsets)))]
        box = {}
        for j in s:
            w = int(rng.integers(*width))
            lo = int(rng.integers(0, 256 - w))
            box[j] = (lo, lo + w)
        out.append(box)
    return Boxes.from_bounds(out, d)


def assert_same(idx, codes, boxes, path):
    expected = votes_twin(codes, boxes)
    np.testing.assert_array_equal(boxes.votes(codes), expected)
    ref = scan(codes, boxes)
    res = idx.search(boxes, path=path)
    np.testing.assert_array_equal(res.ids, np.flatnonzero(expected))
    np.testing.assert_array_equal(res.votes, expected[res.ids])
    np.testing.assert_array_equal(res.ids, ref.ids)
    np.testing.assert_array_equal(res.votes, ref.votes)
    assert res.votes.dtype == ref.votes.dtype
    assert res.ids.dtype == np.int64
    return res


@pytest.fixture(scope="module")
def clustered_index():
    from clipbranches_widget.evaluation.synthetic import clustered_codes

    codes, _, _ = clustered_codes(30_011, spread=6.0, random_state=3)
    return codes, BoxIndex.build(codes, block_size=32, progress=False)


@pytest.mark.parametrize("m", [1, 5, 30, 70])
def test_index_equals_scan_and_numpy_random(clustered_index, m):
    codes, idx = clustered_index
    rng = np.random.default_rng(m)
    for width in [(3, 30), (20, 120), (100, 250)]:
        boxes = subset_boxes(rng, m, width=width)
        res = assert_same(idx, codes, boxes, "index")
        assert res.path == "index"
        assert_same(idx, codes, boxes, "auto")


def test_index_touches_only_intersecting_cells(clustered_index):
    codes, idx = clustered_index
    rng = np.random.default_rng(1)
    boxes = subset_boxes(rng, 3, width=(10, 20))
    res = assert_same(idx, codes, boxes, "index")
    assert res.info["ids_listed"] + res.info["ids_checked"] < 0.2 * 3 * len(codes)
    # every id returned was a candidate, and every candidate set is bounded by its cells
    assert res.info["ids_matched"] >= len(res)


def test_boxes_from_a_fit_use_the_index(clustered):
    codes, cluster, concept = clustered
    rng = np.random.default_rng(0)
    pos = rng.choice(np.flatnonzero(np.isin(cluster, concept)), 30, replace=False)
    neg = rng.choice(np.flatnonzero(~np.isin(cluster, concept)), 300, replace=False)
    X = codes[np.concatenate([pos, neg])]
    y = np.r_[np.ones(30), np.zeros(300)].astype(int)
    model = DecisionBranchesClassifier(random_state=0).fit(X, y)
    idx = BoxIndex.build(codes, progress=False)
    res = assert_same(idx, codes, model.boxes_, "auto")
    assert res.path == "index"  # selective boxes: the cost model picks the index
    assert len(res) > 0


def test_adversarial_boxes(rng):
    codes = rng.integers(0, 256, (4_099, 32), dtype=np.uint8)
    codes[:50] = 0
    codes[50:100] = 255
    codes[100:400] = codes[400]  # duplicates
    idx = BoxIndex.build(codes, block_size=8, progress=False)
    s4, s6, s8 = SUBSETS[0], SUBSETS[64], SUBSETS[100]
    bounds = [
        {j: (0, 0) for j in s4},  # at 0
        {j: (255, 255) for j in s6},  # at 255
        {j: (0, 255) for j in s8},  # covers everything
        {s4[0]: (10, 9), s4[1]: (0, 255)},  # empty (lower > upper), on part of a subset
        {j: (int(codes[400, j]), int(codes[400, j])) for j in s6},  # the duplicates exactly
        {},  # no constraint at all: every item
        {j: (0, 0) for j in s4},  # a duplicate box: two votes each
    ]
    boxes = Boxes.from_bounds(bounds, 32)
    for path in ("index", "auto", "scan"):
        res = assert_same(idx, codes, boxes, path)
    assert len(res) == len(codes)
    assert res.votes[:50].min() >= 4  # 2 copies of the zero box + full + unconstrained


def test_empty_model_and_only_empty_boxes(rng):
    codes = rng.integers(0, 256, (1_000, 32), dtype=np.uint8)
    idx = BoxIndex.build(codes, progress=False)
    for boxes in (Boxes.empty(32), Boxes.from_bounds([{SUBSETS[3][0]: (200, 100)}], 32)):
        res = idx.search(boxes, path="index")
        assert res.path == "index" and len(res) == 0


@pytest.mark.parametrize("n", [1, 2, 127, 129, 1_000])
def test_small_and_odd_sizes(rng, n):
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    idx = BoxIndex.build(codes, block_size=64, progress=False)
    assert idx.order.shape == (len(SUBSETS), n)
    # each subset's order is a permutation of 0..n-1, ascending inside each cell
    for q in (0, 70, 103):
        np.testing.assert_array_equal(np.sort(idx.order[q]), np.arange(n))
    boxes = subset_boxes(rng, 12, width=(40, 200))
    for path in ("index", "auto"):
        assert_same(idx, codes, boxes, path)


def test_size_not_multiple_of_build_chunk_and_groups(rng, monkeypatch):
    monkeypatch.setattr(index_build, "_BUILD_CHUNK", 1000)
    monkeypatch.setattr(index_build, "_DIRECT_BYTES", 0)  # the two-level sort
    monkeypatch.setattr(index_mod, "_RUN", 7)  # many split runs
    monkeypatch.setattr(BoxIndex, "parallel_min", 0)  # the parallel kernels
    codes = rng.integers(0, 256, (5_321, 32), dtype=np.uint8)
    subsets = SUBSETS[:10]
    # a tiny memory budget forces one subset per pass
    idx = BoxIndex.build(codes, subsets=subsets, memory_budget=1, block_size=4, progress=False)
    ref = BoxIndex.build(codes, subsets=subsets, block_size=4, progress=False)
    np.testing.assert_array_equal(np.asarray(idx.order), np.asarray(ref.order))
    np.testing.assert_array_equal(np.asarray(idx.offsets), np.asarray(ref.offsets))
    boxes = subset_boxes(rng, 9, subsets=subsets, width=(30, 150))
    assert_same(idx, codes, boxes, "index")


@pytest.mark.parametrize("two_level", [False, True])
def test_order_sorts_by_cell(monkeypatch, two_level):
    monkeypatch.setattr(index_build, "_DIRECT_BYTES", 0 if two_level else 1 << 40)
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 256, (20_000, 32), dtype=np.uint8)
    # ~1700 cells: more than the 256 first-level buckets, so both sort levels run
    idx = BoxIndex.build(codes, subsets=[(1, 4, 9)], block_size=10, progress=False)
    assert idx.cell_ptr[1] - 1 > 4 * index_build._BUCKETS
    k = 3
    keys = sum(
        idx.slots[0, t, codes[:, j]].astype(np.int64) * idx.strides[0, t]
        for t, j in enumerate((1, 4, 9))
    )
    order = np.asarray(idx.order[0])
    np.testing.assert_array_equal(order, np.argsort(keys, kind="stable"))
    off = np.asarray(idx.offsets[idx.cell_ptr[0] : idx.cell_ptr[1]])
    np.testing.assert_array_equal(np.diff(off), np.bincount(keys, minlength=off.shape[0] - 1))
    assert k == int(idx.ksize[0])


def test_design_slots_balanced_and_monotone():
    hist = np.zeros(256, np.int64)
    hist[100:140] = 10
    hist[0] = 400  # a heavy value gets a slot of its own
    slot, g = _design_slots(hist, 8)
    assert (np.diff(slot) >= 0).all() and slot[0] == 0 and slot.max() == g - 1
    assert set(np.unique(slot)) == set(range(g))
    assert slot[0] != slot[100]


def test_plan_box_twin():
    """plan_box against plain numpy: ids in full cells are inside, no cell is missed."""
    rng = np.random.default_rng(9)
    codes = rng.integers(0, 256, (2_000, 32), dtype=np.uint8)
    idx = BoxIndex.build(codes, subsets=[(2, 5)], block_size=5, progress=False)
    lo, hi = np.array([30, 60]), np.array([150, 200])
    boxes = Boxes.from_bounds([{2: (30, 150), 5: (60, 200)}], 32)
    plan, _ = idx._plan(boxes, with_runs=True)
    _, stats, runs = plan
    _, _, rs, re, rf = runs[0]
    order = np.asarray(idx.order[0])
    inside = np.all((codes[:, [2, 5]] >= lo) & (codes[:, [2, 5]] <= hi), axis=1)
    listed = np.concatenate([order[a:b] for a, b, f in zip(rs, re, rf) if f])
    checked = np.concatenate([order[a:b] for a, b, f in zip(rs, re, rf) if not f])
    assert inside[listed].all()  # full cells hold only matches
    covered = np.zeros(len(codes), bool)
    covered[listed] = True
    covered[checked] = True
    assert covered[inside].all()  # no match is outside the runs
    assert stats[0, 2] == listed.shape[0] and stats[0, 3] == checked.shape[0]
    assert listed.shape[0] > 0 and not covered.all()


def test_unindexed_subset_falls_back_to_scan(rng, caplog):
    codes = rng.integers(0, 256, (3_000, 32), dtype=np.uint8)
    idx = BoxIndex.build(codes, subsets=[(0, 1, 2, 3), (4, 5, 6, 7)], progress=False)
    boxes = Boxes.from_bounds([{0: (10, 100), 1: (0, 50)}, {8: (0, 40), 9: (30, 60)}], 32)
    with caplog.at_level("INFO"):
        res = assert_same(idx, codes, boxes, "index")
    assert res.path == "scan"
    assert "no indexed subset" in res.info["reason"] and res.info["missing_box"] == 1
    assert idx.subset_for((0, 1)) == 0 and idx.subset_for((8, 9)) is None


def test_cost_model_picks_scan_for_wide_boxes(clustered_index):
    codes, idx = clustered_index
    wide = Boxes.from_bounds([{j: (0, 255) for j in s} for s in SUBSETS[:20]], 32)
    res = assert_same(idx, codes, wide, "auto")
    assert res.path == "scan" and res.info["reason"] == "the scan is estimated cheaper"
    assert res.info["cost_scan_ns"] < res.info["cost_index_ns"]


def test_sparse_and_dense_combine_agree(clustered_index, monkeypatch):
    codes, idx = clustered_index
    rng = np.random.default_rng(4)
    boxes = subset_boxes(rng, 25, width=(30, 90))
    monkeypatch.setattr(BoxIndex, "cost_dense_item", 0.0)
    assert assert_same(idx, codes, boxes, "index").info["combine"] == "dense"
    monkeypatch.setattr(BoxIndex, "cost_dense_item", 1e9)
    assert assert_same(idx, codes, boxes, "index").info["combine"] == "sparse"


def test_many_boxes_uint16_votes(clustered_index):
    codes, idx = clustered_index
    rng = np.random.default_rng(2)
    boxes = subset_boxes(rng, 300, width=(60, 200))
    res = assert_same(idx, codes, boxes, "index")
    assert res.votes.dtype == np.uint16


def test_on_disk_round_trip_and_catalogue(tmp_path, rng):
    codes = rng.integers(0, 256, (2_500, 32), dtype=np.uint8)
    cat = Catalogue(codes, compressor=Compressor(), path=str(tmp_path / "cat"))
    idx = BoxIndex.build(cat, progress=False)
    assert idx.path == tmp_path / "cat" / "index"
    assert isinstance(idx.order, np.memmap)
    manifest = json.loads((idx.path / "manifest.json").read_text())
    assert manifest["complete"] and manifest["n_items"] == 2_500
    assert sorted(os.listdir(tmp_path / "cat")) == ["index"]  # no temporary left behind
    again = BoxIndex.open(idx.path, cat)
    mem = BoxIndex.build(codes, progress=False)
    np.testing.assert_array_equal(np.asarray(again.order), mem.order)
    np.testing.assert_array_equal(np.asarray(again.offsets), mem.offsets)
    assert again.nbytes == mem.nbytes and again.subsets == mem.subsets
    cat.use_index(again)
    boxes = subset_boxes(rng, 10, width=(20, 160))
    res = cat.search_boxes(boxes)
    ref = scan(codes, boxes)
    np.testing.assert_array_equal(res.ids, ref.ids)
    np.testing.assert_array_equal(res.votes, ref.votes)
    before = (idx.path / "order.npy").stat().st_mtime_ns
    reused = BoxIndex.build(cat, progress=False)  # built once per catalogue: reopened
    assert (idx.path / "order.npy").stat().st_mtime_ns == before and reused.path == idx.path
    with pytest.raises(FileExistsError, match="overwrite=True"):
        BoxIndex.build(cat, progress=False, subsets=SUBSETS[:3])
    with pytest.raises(FileExistsError, match="does not match"):
        BoxIndex.build(codes[:2000], idx.path, progress=False)
    BoxIndex.build(cat, progress=False, overwrite=True, subsets=SUBSETS[:3])
    assert len(BoxIndex.open(idx.path, cat).subsets) == 3


def test_interrupted_build_is_not_complete(tmp_path, rng, monkeypatch):
    codes = rng.integers(0, 256, (1_500, 32), dtype=np.uint8)
    target = tmp_path / "idx"

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(index_build, "_fill", boom)
    with pytest.raises(KeyboardInterrupt):
        BoxIndex.build(codes, target, progress=False)
    assert not target.exists()
    assert os.listdir(tmp_path) == []  # the temporary directory is removed
    # a directory with arrays but no manifest (e.g. a killed process) is refused
    target.mkdir()
    np.save(target / "order.npy", np.zeros((1, 1500), np.uint32))
    with pytest.raises(FileNotFoundError, match="no complete BoxIndex"):
        BoxIndex.open(target, codes)


def test_open_detects_damage_and_other_codes(tmp_path, rng):
    codes = rng.integers(0, 256, (1_200, 32), dtype=np.uint8)
    BoxIndex.build(codes, tmp_path / "idx", progress=False)
    other = codes.copy()
    other[0] ^= 1
    with pytest.raises(ValueError, match="differ"):
        BoxIndex.open(tmp_path / "idx", other)
    with pytest.raises(ValueError, match="shape"):
        BoxIndex.open(tmp_path / "idx", codes[:100])
    with open(tmp_path / "idx" / "offsets.npy", "ab") as fh:
        fh.write(b"\0" * 8)
    with pytest.raises(ValueError, match="damaged"):
        BoxIndex.open(tmp_path / "idx", codes)


def test_bad_input_errors(rng):
    codes = rng.integers(0, 256, (500, 32), dtype=np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        BoxIndex.build(codes.astype(np.float32), progress=False)
    with pytest.raises(TypeError, match="Catalogue or an"):
        BoxIndex.build([[1, 2]], progress=False)
    with pytest.raises(ValueError, match="at least one row"):
        BoxIndex.build(np.zeros((0, 32), np.uint8), progress=False)
    with pytest.raises(ValueError, match="block_size"):
        BoxIndex.build(codes, block_size=0, progress=False)
    with pytest.raises(ValueError, match="distinct dims"):
        BoxIndex.build(codes, subsets=[(0, 40)], progress=False)
    with pytest.raises(ValueError, match="duplicates"):
        BoxIndex.build(codes, subsets=[(0, 1), (1, 0)], progress=False)
    idx = BoxIndex.build(codes, subsets=[(0, 1)], progress=False)
    with pytest.raises(TypeError, match="Boxes instance"):
        idx.search({"0": (1, 2)})
    with pytest.raises(ValueError, match="32 code dims, got 16"):
        idx.search(Boxes.empty(16))
    with pytest.raises(ValueError, match="'auto', 'index' or 'scan'"):
        idx.search(Boxes.empty(32), path="tree")


def test_both_paths_run_with_one_and_two_threads(clustered_index):
    codes, idx = clustered_index
    rng = np.random.default_rng(8)
    boxes = subset_boxes(rng, 15, width=(10, 80))
    a = idx.search(boxes, path="index", n_jobs=1)
    b = idx.search(boxes, path="index", n_jobs=2)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.votes, b.votes)


def test_serial_and_parallel_kernels_do_not_share_a_cache_entry(clustered_index):
    codes, idx = clustered_index
    boxes = subset_boxes(np.random.default_rng(3), 4, width=(20, 60))
    idx.search(boxes, path="index")  # compiles (or loads) the kernels in use
    pairs = [
        (index_kernels.collect, index_kernels.collect_serial),
        (index_kernels.nonzero_counts, index_kernels.nonzero_counts_serial),
        (index_kernels.nonzero_gather, index_kernels.nonzero_gather_serial),
    ]
    for par, ser in pairs:
        assert par.targetoptions.get("parallel") and not ser.targetoptions.get("parallel")
        assert par.py_func.__qualname__ != ser.py_func.__qualname__
        assert par.py_func.__code__ is ser.py_func.__code__  # one source, two builds
