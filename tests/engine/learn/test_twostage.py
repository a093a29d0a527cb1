"""Issue 15: the second stage of a refine (engine/learn/rescore.py, twostage.py)."""

import numpy as np
import pytest

from clipbranches_widget import Catalogue, Session
from clipbranches_widget.engine.codes.pca import Compressor
from clipbranches_widget.engine.learn.rescore import (
    _kd_tree,
    dimension_weights,
    f1_cut,
    fit_logistic,
    knn_order,
    knn_query,
    knn_tree,
    knn_votes,
    label_frequency,
    leaf_of,
    leaf_shares,
    linear_scores,
)
from clipbranches_widget.engine.learn.twostage import DEFAULT_STAGE, StageParams, member
from clipbranches_widget.engine.subsets import REFINE_SIZES, default_feature_subsets
from clipbranches_widget.evaluation.synthetic import clustered_codes, identity_compressor

from twins import kd_tree_twin


def knn_order_twin(codes, query_ids, ref_codes, wdim, K, exclude=None):
    """Plain-numpy K nearest (weighted squared L2, ties: lower index)."""
    q = codes[np.asarray(query_ids, np.int64)].astype(np.int64)
    ref = np.asarray(ref_codes).astype(np.int64)
    dist = (((q[:, None, :] - ref[None]) ** 2) * np.asarray(wdim, np.int64)).sum(-1)
    big = np.iinfo(np.int64).max
    if exclude is not None:
        ex = np.asarray(exclude, np.int64)
        rows = np.flatnonzero(ex >= 0)
        dist[rows, ex[rows]] = big
    out = np.full((q.shape[0], int(K)), -1, np.int64)
    idx = np.arange(ref.shape[0])
    for r in range(q.shape[0]):
        o = np.lexsort((idx, dist[r]))
        o = o[dist[r, o] < big][:K]
        out[r, : o.size] = o
    return out


@pytest.fixture(scope="module")
def cat():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 48)).astype(np.float32)
    X[:300] += 3 * rng.standard_normal(48).astype(np.float32)  # a concept
    comp = Compressor().fit(X)
    return Catalogue(comp.transform(X), compressor=comp, embeddings=X)


def test_knn_order_matches_numpy_with_ties():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, (500, 32), dtype=np.uint8)
    codes[50:60] = codes[10]  # ties
    ref = codes[rng.choice(500, 120, replace=False)]
    w = rng.integers(1, 257, 32).astype(np.int32)
    q = np.arange(0, 500, 3)
    ex = np.where(q % 2 == 0, q % 120, -1)
    for K in (1, 10, 130):
        np.testing.assert_array_equal(
            knn_order(codes, q, ref, w, K, ex), knn_order_twin(codes, q, ref, w, K, ex)
        )


def test_knn_order_matches_numpy_clustered():
    codes, _, _ = clustered_codes(3000, spread=6.0, random_state=4)
    rng = np.random.default_rng(5)
    ref_rows = rng.choice(3000, 400, replace=False)
    q = rng.choice(3000, 300, replace=False)
    ex = np.full(q.size, -1)
    hit = np.isin(q, ref_rows)
    ex[hit] = [int(np.flatnonzero(ref_rows == i)[0]) for i in q[hit]]
    for w in (np.ones(32, np.int32), rng.integers(1, 257, 32).astype(np.int32)):
        for K in (1, 10, 30):
            want = knn_order_twin(codes, q, codes[ref_rows], w, K, ex)
            for leaf in (1, 4, 32, 1000):  # the leaf size changes the speed only
                got = knn_order(codes, q, codes[ref_rows], w, K, ex, leaf_size=leaf)
                np.testing.assert_array_equal(got, want)


def test_knn_votes():
    nb = np.array([[0, 1, 2], [2, -1, -1]])
    y, w = np.array([1.0, 0.0, 1.0]), np.array([1.0, 0.5, 2.0])
    np.testing.assert_allclose(knn_votes(nb, y, w, (3,)), [3 / 3.5, 1.0])
    np.testing.assert_allclose(knn_votes(nb, y, w, (1, 3)), [(1 + 3 / 3.5) / 2, 1.0])


def test_linear_scores_match_numpy():
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 256, (400, 32), dtype=np.uint8)
    a, ids = rng.standard_normal(32), rng.choice(400, 100)
    want = codes[ids].astype(np.float64) @ a + 0.3
    np.testing.assert_allclose(linear_scores(codes, ids, a, 0.3), want, rtol=0, atol=1e-9)


def test_approximate_leave_one_out_logits():
    rng = np.random.default_rng(3)
    F = rng.standard_normal((300, 5))
    y = (F[:, 0] + 0.5 * rng.standard_normal(300) > 0).astype(float)
    w = np.where(y > 0, 1.0, 0.5)
    coef, b, eta = fit_logistic(F, y, w, loo=True)
    for i in (0, 7, 123):
        keep = np.arange(300) != i
        c, bb = fit_logistic(F[keep], y[keep], w[keep])
        exact = F[i] @ c + bb
        assert abs(eta[i] - exact) < 0.05 * (1 + abs(exact))


def test_f1_cut_and_member():
    assert f1_cut(np.array([1.0, 1.0, 0.01]), 0) == 2
    assert f1_cut(np.zeros(0), 3) == 0
    assert f1_cut(np.array([0.9, 0.4, 0.3]), 100) == 3  # a large class: take everything likely
    np.testing.assert_array_equal(member([3, 4, 9], np.array([1, 3, 9])), [True, False, True])
    assert not member([1], np.zeros(0, np.int64)).any()


@pytest.mark.parametrize("seed", range(6))
def test_f1_cut_with_known_positives_is_the_best_of_every_cut(seed):
    """The "set" cut: the m that maximises the whole set's expected F1, the
    labelled positives counted (m = 0 allowed), by brute force over m."""
    rng = np.random.default_rng(seed)
    p = np.sort(rng.beta(0.5, 2.0, rng.integers(1, 40)))[::-1]
    known = float(rng.integers(1, 60))
    extra = known + float(rng.integers(0, 80))
    n = extra + p.sum()
    f = [2 * (known + p[:m].sum()) / (known + m + n) for m in range(p.size + 1)]
    assert f1_cut(p, extra, known) == int(np.argmax(f))
    # with none known the old rule: the best non-empty prefix
    g = [2 * p[:m].sum() / (m + n) for m in range(1, p.size + 1)]
    assert f1_cut(p, extra) == int(np.argmax(g)) + 1
    # sure positives and unlikely items: nothing is added
    assert f1_cut(np.array([0.05, 0.01]), 100.0, 90.0) == 0


def test_background_gets_soft_targets_that_lift_a_large_class(cat):
    """background_steps=1: the background's targets become the first fit's
    out-of-sample probabilities (the labels stay 0/1), and the unlabelled
    items of a class of 10 % (a tenth of the background) score higher than
    when the background counts as negative."""
    rng = np.random.default_rng(11)
    pos = rng.choice(300, 20, replace=False)
    neg = rng.choice(np.arange(300, 3000), 20, replace=False)
    rest = np.setdiff1d(np.arange(300), pos)  # the class's unlabelled items
    mean_score = {}
    for steps in (0, 1):
        s = Session(cat, random_state=0, stage=StageParams(background_steps=steps))
        s.label(pos, 1)
        s.label(neg, -1)
        model = s.refine().info["stage_model"]
        n_lab = model.labelled.size
        assert set(np.unique(model.y[:n_lab])) == {0.0, 1.0}
        bg, in_class = model.y[n_lab:], model.train_ids[n_lab:] < 300
        if steps == 0:
            assert (bg == 0).all()
        else:
            assert ((bg >= 0) & (bg <= 1)).all()
            assert bg[in_class].mean() > bg[~in_class].mean() + 0.05
        mean_score[steps] = model.scores(cat.codes, rest).mean()
    assert mean_score[1] > mean_score[0]


def test_dimension_weights(cat):
    w = dimension_weights(cat.compressor)
    assert w.dtype == np.int32 and w.min() >= 1 and w.max() == 256


def test_stage_params_are_checked(cat):
    with pytest.raises(ValueError, match="combine"):
        StageParams(combine="vote")
    with pytest.raises(ValueError, match="logistic_weight"):
        StageParams(combine="mean", logistic_weight=2)
    with pytest.raises(TypeError, match="stage"):
        Session(cat, stage={"combine": "cv"})


@pytest.mark.parametrize(
    "stage", [StageParams(), StageParams(combine="mean", calibrate=False), None]
)
def test_result_set_contains_positives_and_is_never_empty(cat, stage):
    rng = np.random.default_rng(3)
    for trial in range(4):
        s = Session(cat, random_state=trial, stage=stage)
        pos = rng.choice(300, 5 + 10 * trial, replace=False)
        s.label(pos, 1)
        s.label(rng.choice(np.arange(300, 3000), 20, replace=False), -1)
        res = s.refine()
        assert res.info["n_positives"] == pos.size
        assert res.count == np.unique(res.ids).size
        if stage is None:
            continue
        assert np.isin(pos, res.ids).all() and res.count > 0
        assert 0 <= res.info["accepted_positives"] <= pos.size
        assert np.all(np.diff(res.scores) <= 1e-7)  # ranked by score
        assert 0 <= res.info["expected_precision"] <= 1
        assert (res.info["fallback"] is None) == (s.model.boxes_.n_boxes > 0)


def test_fallback_when_no_box():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (600, 32), dtype=np.uint8)
    codes[:100] = codes[0]  # the positive's 99 duplicates are negatives: no box can pay
    s = Session(Catalogue(codes, compressor=identity_compressor()), n_background=100)
    s.label([0], 1)
    s.label(np.arange(1, 100), -1)
    res = s.refine()
    assert s.model.boxes_.n_boxes == 0
    assert res.info["fallback"] and res.ids.tolist()[:1] == [0]
    assert res.info["n_candidates"] > 1  # the positive's nearest neighbours were scored


def test_index_equals_scan_with_the_second_stage():
    codes, cluster, concept = clustered_codes(40_000, spread=5.0, random_state=1)
    truth = np.isin(cluster, concept)
    scanned = Catalogue(codes, compressor=identity_compressor())
    indexed = Catalogue(codes, compressor=identity_compressor())
    # a catalogue's index keeps the subsets a refine trains on, by default
    indexed.build_index(progress=False, block_size=32)
    assert indexed.index.subsets == default_feature_subsets(32, REFINE_SIZES)
    rng = np.random.default_rng(7)
    paths = set()
    for trial in range(3):
        pos = rng.choice(np.flatnonzero(truth), 20, replace=False)
        neg = rng.choice(np.flatnonzero(~truth), 20, replace=False)
        out = []
        for c in (scanned, indexed):
            s = Session(c, random_state=trial)
            s.label(pos, 1)
            s.label(neg, -1)
            out.append(s.refine())
        a, b = out
        paths.add(b.path)
        assert a.path == "scan"
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.votes, b.votes)
        np.testing.assert_array_equal(a.scores, b.scores)
        assert np.isin(pos, a.ids).all()
    assert "index" in paths


@pytest.mark.parametrize("leaf_size", [1, 4, 32, 1000])
def test_kd_tree_build_equals_its_numpy_twin(leaf_size):
    """The numba build numbers nodes and fills leaves as the recursive twin
    does, ties (repeated codes, constant dimensions) included."""
    codes, _, _ = clustered_codes(2000, spread=3.0, random_state=3)
    rng = np.random.default_rng(4)
    ref = np.ascontiguousarray(codes[rng.choice(2000, 700, replace=True)])  # duplicates
    ref[:, 5] = 7  # a constant dimension
    w = rng.integers(1, 257, 32).astype(np.int64)
    for got, want in zip(_kd_tree(ref, w, leaf_size), kd_tree_twin(ref, w, leaf_size)):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    same = np.repeat(ref[:1], 50, axis=0)  # one point 50 times: a single leaf
    for got, want in zip(_kd_tree(same, w, 4), kd_tree_twin(same, w, 4)):
        np.testing.assert_array_equal(got, want)


def test_leaf_only_neighbours_are_per_item_and_exact_in_one_leaf():
    """exact=False (huge candidate sets): each query's K nearest within its own
    leaf, whatever the other queries; with a single leaf it is the exact search."""
    codes, _, _ = clustered_codes(3000, spread=6.0, random_state=6)
    rng = np.random.default_rng(8)
    ref = codes[rng.choice(3000, 300, replace=False)]
    w = rng.integers(1, 257, 32).astype(np.int32)
    q = rng.choice(3000, 200, replace=False)
    one_leaf = knn_tree(ref, w, leaf_size=1000)
    np.testing.assert_array_equal(
        knn_query(codes, q, one_leaf, 10, exact=False), knn_order_twin(codes, q, ref, w, 10)
    )
    tree = knn_tree(ref, w)
    both = knn_query(codes, q, tree, 10, exact=False)
    np.testing.assert_array_equal(both[:50], knn_query(codes, q[:50], tree, 10, exact=False))
    assert (both >= 0).all() and all(np.unique(r).size == 10 for r in both)


def test_member_table_and_search_agree():
    rng = np.random.default_rng(9)
    keys = np.unique(rng.integers(0, 60_000, 20_000))
    ids = rng.integers(-5, 70_000, 30_000)
    np.testing.assert_array_equal(member(ids, keys), np.isin(ids, keys))
    np.testing.assert_array_equal(member(ids[:100], keys), np.isin(ids[:100], keys))


def test_stage_params_round_trip_through_json():
    import json

    p = StageParams(
        k_grid=((3,), (5, 10)),
        mix_grid=(0.0, 1.0),
        lam=2.0,
        exact_limit=50,
        background_steps=2,
        cut="added",
        label_frequency=False,
    )
    back = StageParams.from_dict(json.loads(json.dumps(p.to_dict())))
    assert back == p and hash(back) == hash(p)
    assert StageParams.from_dict(StageParams().to_dict()) == StageParams()


def test_a_stage_saved_before_the_label_frequency_replays_without_it():
    """Session files of earlier versions hold every other field: they refine
    as they did (no correction), not with today's default."""
    old = {k: v for k, v in StageParams(cut="added").to_dict().items() if k != "label_frequency"}
    assert StageParams.from_dict(old).label_frequency is False
    assert StageParams().label_frequency is True and StageParams().cut == "set"


@pytest.mark.parametrize(
    "bad",
    [
        {"k_grid": [[0]]},
        {"k_grid": []},
        {"ks": "10"},
        {"mix_grid": [1.5]},
        {"lam": float("nan")},
        {"calibrate": "yes"},
        {"exact_limit": -1},
        {"logistic_weight": True},
        {"background_steps": -1},
        {"background_steps": 1.5},
        {"background_steps": 11},
        {"cut": "all"},
        {"label_frequency": "yes"},
        {"label_frequency": 1},
        {"nope": 1},
    ],
)
def test_stage_params_from_dict_refuses_bad_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad)) if "nope" not in bad else "unknown"):
        StageParams.from_dict(bad)


@pytest.mark.parametrize("seed", range(5))
def test_member_equals_isin(seed):
    # both paths: few keys in many sorted ids (searched the other way round), and the rest
    rng = np.random.default_rng(seed)
    for _ in range(60):
        n = int(rng.integers(0, 400))
        keys = np.unique(rng.integers(0, 300, int(rng.integers(0, 40))))
        for ids in (np.sort(rng.integers(0, 300, n)), rng.integers(0, 300, n)):
            np.testing.assert_array_equal(member(ids, keys), np.isin(ids, keys))


def leaf_twin(tree, q):
    """Plain-numpy descent: the nearer child of each split, down to a leaf."""
    _, _, lo, hi, child, _, dims, _ = tree
    out = []
    for row in np.asarray(q, np.float64):
        node = 0
        while child[node, 0] >= 0:
            left, right, c = child[node, 0], child[node, 1], dims[node]
            node = left if lo[right, c] - row[c] >= row[c] - hi[left, c] else right
        out.append(node)
    return np.array(out, np.int64)


@pytest.mark.parametrize("seed", range(4))
def test_leaf_votes_equal_a_plain_numpy_twin(seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (3000, 32), dtype=np.uint8)
    ref = rng.choice(3000, 400, replace=False)
    y = (rng.random(400) < 0.2).astype(np.float64)
    w = np.where(rng.random(400) < 0.5, 1.0, 0.3)
    tree = knn_tree(codes[ref], rng.integers(1, 257, 32).astype(np.int32), leaf_size=16)
    q = rng.choice(3000, 700, replace=False)
    leaves = leaf_of(codes, q, tree)
    np.testing.assert_array_equal(leaves, leaf_twin(tree, codes[q]))
    # each item's leaf holds the training items of its own leaf-only neighbours
    near = knn_query(codes, q, tree, 3, exact=False)
    _, ref_idx, _, _, child, rows, _, _ = tree
    for r in range(0, 700, 50):
        members = ref_idx[rows[leaves[r], 0] : rows[leaves[r], 1]]
        assert set(near[r][near[r] >= 0].tolist()) <= set(members.tolist())
    shares = leaf_shares(tree, y, w)
    for node in np.flatnonzero(child[:, 0] < 0):
        j = ref_idx[rows[node, 0] : rows[node, 1]]
        assert shares[node] == pytest.approx((w[j] * y[j]).sum() / w[j].sum(), rel=1e-12)


def _refined(cat, n_pos, stage=DEFAULT_STAGE, seed=5):
    rng = np.random.default_rng(seed)
    s = Session(cat, random_state=seed, stage=stage)
    pos = rng.choice(300, n_pos, replace=False)
    s.label(pos, 1)
    s.label(rng.choice(np.arange(300, 3000), 20, replace=False), -1)
    return s, s.refine(), pos


@pytest.mark.parametrize("n_pos", [8, 25, 60])
def test_label_frequency_is_the_labelled_positives_mean_out_of_sample_score(cat, n_pos):
    """c (Elkan and Noto's e1) is the mean score of the labelled positives,
    each scored out of sample as every training item is; the expected
    precision is the mean of the added items' scores divided by c."""
    s, res, pos = _refined(cat, n_pos)
    c = res.info["combination"]["label_frequency"]
    lab = np.isin(res.ids, pos)
    assert c == pytest.approx(np.clip(res.scores[lab].astype(np.float64).mean(), 0.05, 1), abs=1e-6)
    assert 0.05 <= c <= 1
    added = res.scores[~lab].astype(np.float64)
    if added.size:
        want = np.minimum(added / c, 1).mean()
        assert res.info["expected_precision"] == pytest.approx(want, abs=1e-5)


def test_label_frequency_off_or_too_few_positives_is_one(cat):
    _, res, _ = _refined(cat, 25, StageParams(label_frequency=False))
    assert res.info["combination"]["label_frequency"] == 1.0
    _, res, _ = _refined(cat, 4)  # fewer than min_calibration = 5 positives
    assert res.info["combination"]["label_frequency"] == 1.0


@pytest.mark.parametrize("n_pos", [8, 25, 60])
def test_the_cut_maximises_the_whole_sets_expected_f1_on_the_corrected_scores(cat, n_pos):
    """Among every cut reaching into the near misses, the one taken has the
    highest expected F1 of the whole set: 2 (K + sum p') / (K + m + N), the K
    labelled positives counted, p' = min(p / c, 1) and N the expected class
    size."""
    s, res, pos = _refined(cat, n_pos)
    c = res.info["combination"]["label_frequency"]
    lab = np.isin(res.ids, pos)
    p = np.concatenate([res.scores[~lab], res.info["below_scores"]]).astype(np.float64)
    p = np.minimum(p / c, 1)
    m = int((~lab).sum())
    K, N = float(pos.size), res.info["expected_class_size"]
    f1 = 2 * (K + np.concatenate([[0], np.cumsum(p)])) / (K + np.arange(p.size + 1) + N)
    assert f1[m] >= f1.max() - 1e-9
    assert np.all(np.diff(res.info["below_scores"]) <= 1e-7)  # still in rank order


def test_label_frequency_is_a_floored_mean_of_enough_scores():
    assert label_frequency([0.2, 0.4, 0.6, 0.8, 1.0]) == pytest.approx(0.6)
    assert label_frequency([0.9] * 4) == 1.0  # fewer than 5 positives: no correction
    assert label_frequency([0.9] * 4, min_count=4) == pytest.approx(0.9)
    assert label_frequency([0.0] * 10) == 0.05  # never a twentyfold lift or more
    assert label_frequency([]) == 1.0
