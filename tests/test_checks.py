"""Random checks of a refine (checks.py, Session.check): the draw, the
estimates a user reads, the stage's use of them, and their session file."""

import json

import numpy as np
import pytest

from clipbranches_widget import Catalogue, Session
from clipbranches_widget.checks import STRATA, Draw, draw, estimate, wilson
from clipbranches_widget.evaluation.synthetic import clustered_codes, identity_compressor


@pytest.fixture(scope="module")
def refined():
    """A refined session on a 6,000-item catalogue with a 10 % concept."""
    codes, cluster, concept = clustered_codes(6000, random_state=3, spread=14.0)
    cat = Catalogue(codes, compressor=identity_compressor())
    truth = np.isin(cluster, concept)
    rng = np.random.default_rng(3)
    s = Session(cat, random_state=3)
    s.label(rng.choice(np.flatnonzero(truth), 15, replace=False), 1)
    s.label(rng.choice(np.flatnonzero(~truth), 15, replace=False), -1)
    s.refine()
    return cat, truth, s


def label_truly(s, ids, truth):
    s.label(ids[truth[ids]], 1)
    s.label(ids[~truth[ids]], -1)


@pytest.mark.parametrize("n_items", [5_000, 2_000_000])
def test_a_draw_keeps_to_its_strata(n_items):
    rng = np.random.default_rng(0)
    results = np.sort(rng.choice(min(n_items, 5000), 400, replace=False))
    others = rng.choice(np.setdiff1d(np.arange(n_items), results), 30, replace=False)
    labels = {int(i): 1 for i in results[:50]} | {int(i): -1 for i in others}
    below = np.setdiff1d(rng.choice(min(n_items, 5000), 200, replace=False), results)
    d = draw(results, below, labels, n_items, 40, np.random.default_rng(1), 2)
    labelled = np.fromiter(labels, np.int64)
    got = d.all_ids()
    assert got.size == len(set(got.tolist())) == 40
    assert not np.isin(got, labelled).any()
    assert np.isin(d.ids["results"], results).all()
    assert np.isin(d.ids["below"], below).all() and not np.isin(d.ids["below"], results).any()
    assert not np.isin(d.ids["rest"], np.union1d(results, below)).any()
    assert (got >= 0).all() and (got < n_items).all()
    assert [d.ids[k].size for k in STRATA] == [20, 10, 10]
    assert d.pools["results"] == np.setdiff1d(results, labelled).size
    taken = np.union1d(np.union1d(results, labelled), d.ids["below"].tolist() + below.tolist())
    assert d.pools["rest"] == n_items - taken.size
    assert d.positives == 50 and d.n_results == 400
    again = draw(results, below, labels, n_items, 40, np.random.default_rng(1), 2)
    np.testing.assert_array_equal(again.all_ids(), got)  # a session replays its checks


def test_a_draw_gives_what_a_small_stratum_cannot_take_to_the_others():
    results = np.arange(10)
    d = draw(results, np.arange(10, 13), {}, 100, 20, np.random.default_rng(0), 1)
    assert [d.ids[k].size for k in STRATA] == [10, 3, 7]
    with pytest.raises(ValueError, match="every item of the catalogue is labelled"):
        draw(np.arange(3), [], {0: 1, 1: -1, 2: 1}, 3, 5, np.random.default_rng(0), 1)


def test_the_rest_is_drawn_uniformly():
    """Ranks among the free ids: every allowed id equally likely, none taken."""
    taken = np.arange(0, 1000, 2)  # the even ids below 1000 are taken
    counts = np.zeros(2000, np.int64)
    for seed in range(400):
        d = draw(taken, [], {}, 2000, 20, np.random.default_rng(seed), 1)
        np.add.at(counts, d.ids["rest"], 1)
    assert counts[taken].sum() == 0
    free = counts[np.setdiff1d(np.arange(2000), taken)]
    # 4,000 draws over 1,500 ids: each ~2.7; the low and high halves agree
    lo, hi = free[:500].mean(), free[500:].mean()
    assert abs(lo - hi) < 0.3 * (lo + hi) / 2


def test_wilson_interval_equals_its_formula():
    for k, n in [(0, 10), (5, 10), (10, 10), (3, 17)]:
        p, lo, hi = wilson(k, n)
        z = 1.959964
        # the interval's ends are where the score test is exactly z
        for end in (lo, hi):
            if 0 < end < 1:
                assert abs((k / n - end) / np.sqrt(end * (1 - end) / n)) == pytest.approx(z, 1e-3)
        assert lo <= p <= hi
    assert wilson(0, 10)[1] == 0 and wilson(10, 10)[2] == 1


def test_the_estimate_is_the_strata_arithmetic():
    ids = {"results": np.array([1, 2, 3, 4]), "below": np.array([5, 6]), "rest": np.array([7, 8])}
    d = Draw(1, ids, {"results": 100, "below": 40, "rest": 1000}, n_results=120, positives=20)
    labels = {1: 1, 2: 1, 3: 1, 4: -1, 5: 1, 6: -1, 7: -1, 8: -1}
    est = estimate(d, labels)
    tp = 20 + 0.75 * 100
    assert est["precision"][0] == pytest.approx(tp / 120)
    assert est["recall"][0] == pytest.approx(tp / (tp + 0.5 * 40 + 0))
    assert est["checked"] == (8, 8)
    assert est["positives"] == {"results": 3, "below": 1, "rest": 0}
    p_lo, p_hi = wilson(3, 4)[1:]
    assert est["precision"][1] == pytest.approx((20 + p_lo * 100) / 120)
    # the worst recall: fewest found, most missed
    lo_tp = 20 + p_lo * 100
    miss = wilson(1, 2)[2] * 40 + wilson(0, 2)[2] * 1000
    assert est["recall"][1] == pytest.approx(lo_tp / (lo_tp + miss))
    assert est["recall"][2] == pytest.approx(
        (20 + p_hi * 100) / (20 + p_hi * 100 + wilson(1, 2)[1] * 40)
    )
    assert estimate(d, {7: -1}) is None  # nothing of the results labelled yet


def test_session_check_estimates_the_results_it_was_drawn_from(refined):
    cat, truth, s = refined
    s = s.fork(s.labels)
    s.refine()
    assert s.checked_quality() is None and s.current_check() is None
    ids = s.check(20)
    assert ids.size == 20 and not np.isin(ids, list(s.labels)).any()
    shown, box = s.view(-3)
    np.testing.assert_array_equal(shown.ids, ids)
    assert box == -3 and "label these random items" in s.summary()
    label_truly(s, ids, truth)
    est = s.checked_quality()
    true_p = truth[s.results.ids].mean()
    assert est["checked"] == (20, 20)
    assert est["precision"][1] <= true_p <= est["precision"][2]
    assert "check 20 of 20: precision" in s.summary()
    before = s.labels
    res = s.refine()
    assert np.isin(ids[truth[ids]], res.ids).all()  # checked positives are labels like any
    assert s.labels == before  # a refine never changes labels
    assert s.checked_quality() is None  # the check described the results before
    assert s.view(-3)[1] == -1  # no check of these results: all of them


def test_check_needs_refined_results(refined):
    cat, _, _ = refined
    s = Session(cat)
    with pytest.raises(ValueError, match="expected refined results to draw from, got 'empty'"):
        s.check()
    s.search([0])
    with pytest.raises(ValueError, match="got 'knn' results"):
        s.check()
    for bad in (0, -1, 2.5, True, 10_000):
        with pytest.raises(ValueError, match="n: expected a positive integer"):
            s.check(bad)


def test_a_session_file_keeps_its_checks_and_replays_exactly(refined):
    cat, truth, s = refined
    s = s.fork(s.labels)
    s.refine()
    label_truly(s, s.check(20), truth)
    res = s.refine()
    back = Session.from_dict(json.loads(json.dumps(s.to_dict())), cat)
    np.testing.assert_array_equal(back.results.ids, res.ids)  # checked items are labels
    np.testing.assert_array_equal(back.results.scores, res.scores)
    ids = s.check(10)
    label_truly(s, ids[:4], truth)
    back = Session.from_dict(json.loads(json.dumps(s.to_dict())), cat)
    assert back.checked_quality() == s.checked_quality() is not None
    np.testing.assert_array_equal(back.current_check().all_ids(), ids)


def _saved_with_a_check(s):
    s = s.fork(s.labels)
    s.refine()
    s.check(6)
    return json.loads(json.dumps(s.to_dict()))


@pytest.mark.parametrize(
    "path, value, match",
    [
        ((), [1, 2], "last_check: expected an object with"),
        ((), {"round": 1}, "last_check: expected an object with"),
        (("round",), -1, "last_check: round: expected a count"),
        (("round",), 2**40, "last_check: round: expected a count"),
        (("positives",), 1.5, "last_check: positives: expected 0..6000"),
        (("ids",), {"results": []}, "expected the strata"),
        (("pools", "results"), 10**9, "results: expected a pool of 0..6000"),
        (("ids", "rest"), [6000], "rest: expected at most .* distinct item ids below 6000"),
        (("ids", "rest"), [5, 5], "rest: expected at most .* distinct item ids"),
        (("ids", "rest"), ["5"], "rest: expected at most .* distinct item ids"),
        (("ids", "rest"), [True], "rest: expected at most .* distinct item ids"),
    ],
)
def test_a_damaged_check_in_a_session_file_is_refused(refined, path, value, match):
    cat, _, s = refined
    data = _saved_with_a_check(s)
    if not path:
        data["last_check"] = value
    else:
        node = data["last_check"]
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    with pytest.raises(ValueError, match=match):
        Session.from_dict(data, cat)


def test_a_check_item_in_two_strata_is_refused_and_old_files_load(refined):
    cat, _, s = refined
    data = _saved_with_a_check(s)
    lc = data["last_check"]
    lc["ids"]["below"] = lc["ids"]["below"] + lc["ids"]["results"][:1]
    lc["pools"]["below"] = max(lc["pools"]["below"], len(lc["ids"]["below"]))
    with pytest.raises(ValueError, match="an item is drawn in two strata"):
        Session.from_dict(data, cat)
    data = _saved_with_a_check(s)
    del data["last_check"]  # a file of an older version: no check
    assert Session.from_dict(data, cat).current_check() is None


def test_a_check_of_the_boxes_alone_draws_from_results_and_rest(refined):
    """``stage=None`` keeps no candidates below a cut: that stratum is empty
    and its share goes to the others."""
    cat, truth, s = refined
    b = Session(cat, random_state=3, stage=None)
    b.set_labels(s.labels)
    b.refine()
    ids = b.check(20)
    c = b.current_check()
    assert c.pools["below"] == 0 and c.ids["below"].size == 0 and ids.size == 20
    assert np.isin(c.ids["results"], b.results.ids).all()
    assert not np.isin(c.ids["rest"], b.results.ids).any()


def test_a_fork_does_not_inherit_the_check_of_other_results(refined):
    """A what-if session refines on other labels: the parent's check says
    nothing of its results."""
    cat, truth, s = refined
    s = s.fork(s.labels)
    s.refine()
    label_truly(s, s.check(20), truth)
    other = s.fork({k: v for k, v in list(s.labels.items())[:20]})
    other.refine()
    assert other.current_check() is None and other.checked_quality() is None
    assert s.checked_quality() is not None
