import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from clipbranches_widget import Session
from clipbranches_widget.engine.learn.branches import (
    _HALF_RANGE,
    DecisionBranchesClassifier,
    default_feature_subsets,
    grow_box,
)
from clipbranches_widget.engine.search.scan import scan
from clipbranches_widget.engine.subsets import REFINE_SIZES
from tests.test_session import catalogue

from twins import grow_box_twin, votes_twin


def training_set(codes, cluster, concept, rng, n_pos=30, n_neg=30, n_bg=1000):
    truth = np.isin(cluster, concept)
    pos = rng.choice(np.flatnonzero(truth), n_pos, replace=False)
    neg = rng.choice(np.flatnonzero(~truth), n_neg, replace=False)
    bg = np.setdiff1d(rng.choice(len(codes), n_bg, replace=False), np.r_[pos, neg])
    idx = np.r_[pos, neg, bg]
    y = np.r_[np.ones(n_pos), np.zeros(n_neg + bg.size)].astype(np.int64)
    return idx, y


@pytest.mark.parametrize("trial", range(6))
def test_grow_box_equals_numpy_twin(trial):
    rng = np.random.default_rng(trial)
    n = 300
    X = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    X[:40] = np.clip(X[:40] // 4 + 100, 0, 255)  # a dense region
    y = (rng.random(n) < 0.2).astype(np.uint8)
    y[:40] = 1
    w = rng.uniform(0.5, 2, n)
    dims = np.sort(rng.choice(32, int(rng.integers(2, 8)), replace=False)).astype(np.int64)
    seed = int(rng.choice(np.flatnonzero(y)))
    lo = np.zeros(len(dims), np.uint8)
    hi = np.zeros(len(dims), np.uint8)
    margin, min_margin, min_pts, cap = [(2.5, 2, 0, 1.0), (2.0, 3, 20, 1.5), (3.0, 1, 5, np.inf)][
        trial % 3
    ]
    params = np.array([margin, min_margin, min_pts, cap], float)
    prior = rng.uniform(0, 8, 32)
    g = grow_box(X, y, w, seed, dims, params, _HALF_RANGE, prior, lo, hi)
    tlo, thi, tg = grow_box_twin(
        X, y, w, seed, dims, margin, min_margin, min_pts, cap, _HALF_RANGE, prior
    )
    np.testing.assert_array_equal(lo, tlo)
    np.testing.assert_array_equal(hi, thi)
    assert g == pytest.approx(tg)
    assert np.all((X[seed, dims] >= lo) & (X[seed, dims] <= hi))  # the box contains its seed


def test_fit_is_deterministic_and_predicts_like_its_boxes(clustered, rng):
    codes, cluster, concept = clustered
    idx, y = training_set(codes, cluster, concept, rng)
    a = DecisionBranchesClassifier(random_state=3).fit(codes[idx], y)
    b = DecisionBranchesClassifier(random_state=3, n_jobs=1).fit(codes[idx], y)
    assert a.boxes_ == b.boxes_ and a.boxes_.n_boxes >= 1
    votes = a.decision_function(codes)
    np.testing.assert_array_equal(votes, votes_twin(codes, a.boxes_))
    np.testing.assert_array_equal(a.predict(codes), (votes > 0).astype(int))
    assert a.classes_.tolist() == [0, 1]
    # each box contains at least one training positive (its seed)
    inside = a.boxes_.contains(codes[idx])
    assert np.all(inside[y == 1].any(axis=0))


def test_recovers_a_concept_in_a_pure_region(clustered, rng):
    codes, cluster, concept = clustered
    truth = np.isin(cluster, concept)
    idx, y = training_set(codes, cluster, concept, rng)
    pure = ~truth[idx] | (y == 1)  # no unlabelled positives among the negatives
    clf = DecisionBranchesClassifier(random_state=0).fit(codes[idx[pure]], y[pure])
    assert clf.predict(codes[idx[y == 1]]).all()  # every training positive is covered
    assert not clf.predict(codes[idx[(y == 0) & pure]]).any()


@pytest.mark.parametrize("trial", range(3))
def test_finds_the_concept_with_background_negatives(clustered, trial):
    """The benchmark protocol: 30 positives, 30 negatives, 1000 background at weight 0.5."""
    codes, cluster, concept = clustered
    truth = np.isin(cluster, concept)
    idx, y = training_set(codes, cluster, concept, np.random.default_rng(trial))
    w = np.r_[np.ones(60), np.full(len(idx) - 60, 0.5)]
    clf = DecisionBranchesClassifier(random_state=trial).fit(codes[idx], y, sample_weight=w)
    found = scan(codes, clf.boxes_).ids
    precision = truth[found].mean()
    recall = truth[found].sum() / truth.sum()
    f1 = 2 * precision * recall / (precision + recall)
    assert f1 > 0.8, (precision, recall)
    # the user's explicit negatives are never in the result
    assert not clf.predict(codes[idx[30:60]]).any()


def test_minus_one_labels_and_sklearn_conventions(rng):
    X = rng.integers(0, 256, (50, 32), dtype=np.uint8)
    y = np.where(np.arange(50) < 10, 1, -1)
    clf = DecisionBranchesClassifier(random_state=0, max_boxes=3)
    assert clf.fit(X, y) is clf
    assert set(np.unique(clf.predict(X))) <= {-1, 1}
    assert clf.boxes_.n_boxes <= 3
    assert clone(clf).get_params() == clf.get_params()


def test_errors_name_what_was_expected():
    X = np.zeros((10, 32), np.uint8)
    with pytest.raises(ValueError, match="at least one positive label.*got 0 positives"):
        DecisionBranchesClassifier().fit(X, np.zeros(10))
    # floats are binned now (issue 15), but must still be finite, and a model
    # fitted on uint8 codes still refuses anything else at predict time
    with pytest.raises(ValueError, match="NaN"):
        DecisionBranchesClassifier().fit(np.full((10, 32), np.nan), np.r_[np.ones(5), np.zeros(5)])
    fitted = DecisionBranchesClassifier(random_state=0).fit(X, np.r_[np.ones(5), np.zeros(5)])
    with pytest.raises(TypeError, match="uint8.*got float64"):
        fitted.predict(X.astype(float))
    with pytest.raises(ValueError, match="expected a 1-D array of 10 labels"):
        DecisionBranchesClassifier().fit(X, np.ones(9))
    with pytest.raises(ValueError, match="binary labels"):
        DecisionBranchesClassifier().fit(X, np.arange(10))
    with pytest.raises(ValueError, match="at least one row"):
        DecisionBranchesClassifier().fit(np.zeros((0, 32), np.uint8), np.zeros(0))
    with pytest.raises(ValueError, match="feature_subsets"):
        DecisionBranchesClassifier(feature_subsets=[(0, 40)]).fit(X, np.ones(10))
    with pytest.raises(NotFittedError):
        DecisionBranchesClassifier().predict(X)


def test_default_subsets_are_fixed():
    a, b = default_feature_subsets(32), default_feature_subsets(32)
    assert a == b and len(a) == 104
    assert sorted({len(s) for s in a}) == [4, 6, 8]
    assert all(max(s) < 5 for s in default_feature_subsets(5))


def test_8d_subsets_option(rng):
    eight = default_feature_subsets(32, sizes=REFINE_SIZES)
    assert len(eight) == 104 and {len(s) for s in eight} == {8}
    X = rng.integers(0, 256, (200, 32), dtype=np.uint8)
    y = (X[:, 0] > 128).astype(int)
    model = DecisionBranchesClassifier(feature_subsets="8d", random_state=0).fit(X, y)
    assert model.feature_subsets_ == eight
    assert model.boxes_.n_boxes > 0
    assert all(tuple(sorted(int(j) for j in dd)) in set(eight) for dd in model.boxes_.dims)
    with pytest.raises(ValueError, match="'paper', '8d'"):
        DecisionBranchesClassifier(feature_subsets="9d").fit(X, y)


def test_parallel_box_search_equals_one_subset_at_a_time(rng):
    from clipbranches_widget.engine.learn.branches import grow_boxes

    X = rng.integers(0, 256, (400, 32), dtype=np.uint8)
    y = (rng.random(400) < 0.15).astype(np.uint8)
    w = np.where(rng.random(400) < 0.5, 1.0, 0.5)
    subsets = default_feature_subsets(32)
    kmax = max(len(s) for s in subsets)
    table = np.full((len(subsets), kmax), -1, np.int64)
    sizes = np.array([len(s) for s in subsets], np.int64)
    for s, dims in enumerate(subsets):
        table[s, : len(dims)] = dims
    params = np.array([2.5, 2, 10, 1.0])
    lo = np.zeros((len(subsets), kmax), np.uint8)
    hi = np.zeros((len(subsets), kmax), np.uint8)
    sc = np.zeros(len(subsets))
    seed = int(np.flatnonzero(y)[0])
    prior = np.full(32, 3.0)
    grow_boxes(X, y, w, seed, table, sizes, params, _HALF_RANGE, prior, lo, hi, sc)
    for s, dims in enumerate(subsets):
        k = len(dims)
        l1, h1 = np.zeros(k, np.uint8), np.zeros(k, np.uint8)
        g = grow_box(X, y, w, seed, np.array(dims, np.int64), params, _HALF_RANGE, prior, l1, h1)
        assert g == sc[s]
        np.testing.assert_array_equal(lo[s, :k], l1)
        np.testing.assert_array_equal(hi[s, :k], h1)


def test_a_lone_positive_gets_a_box_of_the_prior_spread(rng):
    X = rng.integers(0, 256, (500, 32), dtype=np.uint8)
    y = np.zeros(500, int)
    y[0] = 1
    X[0] = 128
    clf = DecisionBranchesClassifier(random_state=0, cap_weight=None).fit(X, y)
    box = clf.boxes_
    assert box.n_boxes == 1
    half = 2.5 * 0.1 * X.std(axis=0)
    for j in box.dims[0]:
        assert box.lower[0, j] <= 128 - np.floor(half[j]) + 1
        assert box.upper[0, j] >= 128 + np.floor(half[j]) - 1
    narrow = DecisionBranchesClassifier(random_state=0, cap_weight=None, prior_spread=0).fit(X, y)
    assert all(
        narrow.boxes_.upper[0, j] - narrow.boxes_.lower[0, j] == 4 for j in narrow.boxes_.dims[0]
    )


def test_hull_acceptance_keeps_the_boxes_of_a_large_concept():
    # a concept of a tenth of the catalogue (a CIFAR-10 class): the
    # margin-widened box holds more background weight (mostly unlabelled
    # positives) than labelled positives, so judged whole it is dropped;
    # judged by its positives' hull it is kept
    cat, which = catalogue(np.random.default_rng(12345), 3000, clusters=10)
    s = Session(cat)
    s.label(np.flatnonzero(which == 1)[:30], 1)
    s.label(np.flatnonzero(which != 1)[:30], -1)
    ids, y, w = s.training_set()
    X = cat.codes
    kw = {"feature_subsets": "8d", "margin": 3.5, "random_state": 2}
    box = DecisionBranchesClassifier(**kw).fit(X[ids], y, sample_weight=w)
    hull = DecisionBranchesClassifier(accept="hull", **kw).fit(X[ids], y, sample_weight=w)
    assert box.boxes_.n_boxes == 0
    found = hull.predict(X) == 1
    assert hull.boxes_.n_boxes >= 1
    assert (which[found] == 1).mean() > 0.95 and found[which == 1].mean() > 0.5
    with pytest.raises(ValueError, match="accept: expected 'box' or 'hull'"):
        DecisionBranchesClassifier(accept="both").fit(X[ids], y)
