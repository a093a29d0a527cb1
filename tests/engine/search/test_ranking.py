"""ranked_order against the plain lexsort it replaces (the numpy twin)."""

import numpy as np
import pytest

from clipbranches_widget.engine.search.ranking import rank, ranked_order


@pytest.mark.parametrize("seed", range(40))
def test_ranked_order_equals_lexsort(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 400))
    # many ties in both keys half of the time, ids sorted or not
    p = rng.integers(0, 5, n) / 4.0 if seed % 2 else rng.random(n)
    sim = (rng.integers(0, 4, n) / 3 - 0.5).astype(np.float32)
    ids = rng.choice(10_000, n, replace=False)
    if seed % 3:
        ids = np.sort(ids)
    want = np.lexsort((ids, -sim.astype(np.float64), -p))
    assert np.array_equal(ranked_order(p, sim, ids), want)


def test_ranked_order_integer_votes_and_signed_zero():
    votes = np.array([2, 3, 3, 0, 2], np.int64)
    sim = np.array([0.0, -0.0, 0.5, 1.0, 0.0], np.float32)
    ids = np.array([9, 4, 7, 1, 3])
    # -0.0 and 0.0 tie, so id 3 comes before id 9; votes first
    assert ids[rank(ids, votes, sim)].tolist() == [7, 4, 3, 9, 1]


def test_ranked_order_tiny():
    assert ranked_order(np.zeros(0), np.zeros(0), np.zeros(0, np.int64)).size == 0
    assert ranked_order(np.ones(1), np.ones(1), np.array([5])).tolist() == [0]
