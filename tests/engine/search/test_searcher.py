"""Searcher: the one owner of the choice between the index and the scan."""

import numpy as np
import pytest

from clipbranches_widget.engine.boxes import Boxes
from clipbranches_widget.engine.search.index import BoxIndex
from clipbranches_widget.engine.search.result import ScanResult
from clipbranches_widget.engine.search.scan import scan
from clipbranches_widget.engine.search.searcher import Searcher

SUBSETS = [(0, 1), (2, 3, 4)]


@pytest.fixture
def codes(rng):
    return rng.integers(0, 256, (3_000, 8), dtype=np.uint8)


def narrow_boxes():
    return Boxes.from_bounds([{0: (10, 40), 1: (100, 130)}, {2: (0, 50), 3: (0, 60)}], 8)


def assert_same_as_scan(res, codes, boxes):
    ref = scan(codes, boxes)
    assert isinstance(res, ScanResult)
    np.testing.assert_array_equal(res.ids, ref.ids)
    np.testing.assert_array_equal(res.votes, ref.votes)


def test_scan_without_index(codes):
    s = Searcher(codes)
    assert s.index is None
    res = s.search(narrow_boxes())
    assert res.path == "scan"
    assert_same_as_scan(res, codes, narrow_boxes())
    with pytest.raises(ValueError, match="no index"):
        s.search(narrow_boxes(), path="index")
    with pytest.raises(ValueError, match="'auto', 'index' or 'scan'"):
        s.search(narrow_boxes(), path="tree")


def test_index_when_present_and_drop(codes):
    idx = BoxIndex.build(codes, subsets=SUBSETS, block_size=8, progress=False)
    s = Searcher(codes, index=idx)
    assert s.index is idx
    res = s.search(narrow_boxes(), path="index", n_jobs=1)
    assert res.path == "index"
    assert_same_as_scan(res, codes, narrow_boxes())
    assert s.search(narrow_boxes(), path="scan").path == "scan"
    assert s.search(narrow_boxes()).path in ("index", "scan")  # the cost model's choice
    s.drop_index()
    assert s.index is None and s.search(narrow_boxes()).path == "scan"
    s.use_index(idx)
    assert s.index is idx


def test_index_is_read_only(codes):
    s = Searcher(codes)
    with pytest.raises(AttributeError):
        s.index = BoxIndex.build(codes, subsets=SUBSETS, progress=False)


def test_use_index_refuses_an_index_of_other_codes(codes):
    other = codes.copy()
    other[1234, 5] ^= 0x40  # one byte of one row
    idx = BoxIndex.build(other, subsets=SUBSETS, progress=False)
    s = Searcher(codes)
    with pytest.raises(ValueError, match="fingerprint") as err:
        s.use_index(idx)
    assert idx.fingerprint in str(err.value)  # names both
    assert s.index is None
    short = BoxIndex.build(codes[:2_000], subsets=SUBSETS, progress=False)
    with pytest.raises(ValueError, match="2000 items.*3000"):
        s.use_index(short)
    with pytest.raises(ValueError, match="2000 items.*3000"):
        Searcher(codes, index=short)
    with pytest.raises(TypeError, match="BoxIndex"):
        s.use_index("index")


def test_on_disk_index_reopened(codes, tmp_path):
    BoxIndex.build(codes, tmp_path / "idx", subsets=SUBSETS, progress=False)
    s = Searcher(codes, index=BoxIndex.open(tmp_path / "idx", codes))
    assert_same_as_scan(s.search(narrow_boxes(), path="index"), codes, narrow_boxes())
