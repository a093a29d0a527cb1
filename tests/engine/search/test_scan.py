import numpy as np
import pytest

from clipbranches_widget.engine.boxes import Boxes
from clipbranches_widget.engine.search.scan import (
    CHUNK,
    _popcount,
    compile_tables,
    scan,
    scan_votes,
)

from twins import votes_twin


def random_boxes(rng, m, d=32, kmin=1, kmax=8, width=(5, 120)):
    boxes = []
    for _ in range(m):
        k = int(rng.integers(kmin, kmax + 1))
        dims = rng.choice(d, k, replace=False)
        box = {}
        for j in dims:
            w = int(rng.integers(*width))
            lo = int(rng.integers(0, 256 - w))
            box[int(j)] = (lo, lo + w)
        boxes.append(box)
    return Boxes.from_bounds(boxes, d)


@pytest.mark.parametrize("m", [1, 7, 63, 64, 65, 130, 300])
def test_scan_equals_numpy_twin(rng, m):
    codes = rng.integers(0, 256, (5_003, 32), dtype=np.uint8)
    boxes = random_boxes(rng, m, width=(60, 200))
    expected = votes_twin(codes, boxes)
    np.testing.assert_array_equal(scan_votes(codes, boxes), expected)
    np.testing.assert_array_equal(boxes.votes(codes), expected)
    r = scan(codes, boxes)
    np.testing.assert_array_equal(r.ids, np.flatnonzero(expected))
    np.testing.assert_array_equal(r.votes, expected[r.ids])
    assert r.path == "scan"
    assert expected.max() > 0  # the case is not vacuous


def test_scan_size_not_multiple_of_chunk_and_threads(rng):
    n = 3 * CHUNK + 17
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    boxes = random_boxes(rng, 20, width=(80, 160))
    expected = votes_twin(codes, boxes)
    for n_jobs in (1, 2):
        r = scan(codes, boxes, n_jobs=n_jobs)
        np.testing.assert_array_equal(r.ids, np.flatnonzero(expected))
        np.testing.assert_array_equal(r.votes, expected[r.ids])


def test_scan_adversarial_boxes(rng):
    codes = rng.integers(0, 256, (2_000, 32), dtype=np.uint8)
    codes[:10] = 0
    codes[10:20] = 255
    codes[20:30] = codes[30]  # duplicates
    everything = Boxes.from_bounds([{0: (0, 255)}], 32)
    at_zero = Boxes.from_bounds([{j: (0, 0) for j in range(32)}], 32)
    at_255 = Boxes.from_bounds([{j: (255, 255) for j in range(4)}], 32)
    lower = np.zeros((1, 32), np.uint8)
    upper = np.full((1, 32), 255, np.uint8)
    lower[0, 3], upper[0, 3] = 200, 100  # lower > upper: an empty box
    empty_box = Boxes(lower, upper, [(3,)])
    dup = Boxes.from_bounds([{j: (int(codes[30, j]), int(codes[30, j])) for j in range(32)}], 32)
    for boxes in (everything, at_zero, at_255, empty_box, dup, Boxes.empty(32)):
        expected = votes_twin(codes, boxes)
        r = scan(codes, boxes)
        np.testing.assert_array_equal(r.ids, np.flatnonzero(expected))
        np.testing.assert_array_equal(r.votes, expected[r.ids])
    assert len(scan(codes, everything)) == 2_000
    assert set(scan(codes, at_zero).ids) == set(range(10))
    assert len(scan(codes, empty_box)) == 0
    assert len(scan(codes, Boxes.empty(32))) == 0
    assert set(range(20, 31)) <= set(scan(codes, dup).ids)


def test_scan_one_item_and_empty_catalogue():
    one = np.full((1, 32), 7, np.uint8)
    boxes = Boxes.from_bounds([{0: (0, 10)}, {1: (7, 7)}, {2: (8, 9)}], 32)
    r = scan(one, boxes)
    assert r.ids.tolist() == [0] and r.votes.tolist() == [2]
    assert len(scan(np.zeros((0, 32), np.uint8), boxes)) == 0


def test_popcount_twin(rng):
    x = rng.integers(0, 2**63, 1000, dtype=np.uint64) * np.uint64(2) + rng.integers(
        0, 2, 1000, dtype=np.uint64
    )
    got = np.array([_popcount(v) for v in x])
    want = np.array([bin(int(v)).count("1") for v in x])
    np.testing.assert_array_equal(got, want)


def test_tables_encode_boxes(rng):
    boxes = random_boxes(rng, 70)
    tables, dims, full = compile_tables(boxes)
    for t, j in enumerate(dims):
        for v in (0, 17, 128, 255):
            for b in range(boxes.n_boxes):
                bit = (int(tables[t, v, b // 64]) >> (b % 64)) & 1
                assert bit == int(boxes.lower[b, j] <= v <= boxes.upper[b, j])
    assert bin(int(full[0])).count("1") + bin(int(full[1])).count("1") == 70


def test_scan_rejects_bad_codes():
    boxes = Boxes.from_bounds([{0: (0, 10)}], 32)
    with pytest.raises(TypeError, match="expected a 2-D uint8 array.*got float64"):
        scan(np.zeros((5, 32)), boxes)
    with pytest.raises(ValueError, match=r"shape \(n, 32\).*\(5, 16\)"):
        scan(np.zeros((5, 16), np.uint8), boxes)


def test_boxes_round_trip_and_validation(rng):
    boxes = random_boxes(rng, 12)
    again = Boxes.from_dict(boxes.to_dict())
    assert again == boxes
    assert again.bounds(0) == boxes.bounds(0)
    with pytest.raises(TypeError, match="uint8"):
        Boxes(np.zeros((1, 4)), np.zeros((1, 4)), [(0,)])
    with pytest.raises(ValueError, match="outside its dims"):
        Boxes(np.ones((1, 4), np.uint8), np.full((1, 4), 255, np.uint8), [(0,)])
    with pytest.raises(ValueError, match="bounds in 0..255"):
        Boxes.from_bounds([{0: (0, 300)}], 4)
    with pytest.raises(ValueError, match="expected .*n_features"):
        Boxes.from_dict({"boxes": []})


def test_to_sql_reads_like_the_model():
    boxes = Boxes.from_bounds([{0: (1, 2), 5: (3, 4)}, {7: (9, 9)}], 8)
    sql = boxes.to_sql("my table", columns=[f'c"{j}' for j in range(8)])
    assert 'FROM "my table"' in sql
    assert '"c""0" BETWEEN 1 AND 2 AND "c""5" BETWEEN 3 AND 4' in sql
    assert sql.count("CASE WHEN") == 2 and "ORDER BY votes DESC" in sql
    assert "WHERE FALSE" in Boxes.empty(8).to_sql()
