"""Session.estimate_quality: precision and recall cross-validated on the labels."""

import numpy as np
import pytest

from clipbranches_widget import Session
from clipbranches_widget.estimate import _folds, cross_validate
from tests.test_session import catalogue


def labelled_session(rng, noisy: bool):
    cat, which = catalogue(rng, 3000, clusters=6)
    s = Session(cat, random_state=2)
    s.search([int(np.flatnonzero(which == 1)[0])])
    ids = np.concatenate([np.flatnonzero(which == 1)[:30], np.flatnonzero(which != 1)[:30]])
    truth = which[ids] == 1
    if noisy:  # labels that no model can learn: a random half marked positive
        truth = rng.permutation(truth)
    for i, t in zip(ids.tolist(), truth.tolist()):
        s.label([i], 1 if t else -1)
    s.refine()
    return s


def test_a_clean_concept_scores_high_and_the_session_is_untouched(rng):
    s = labelled_session(rng, noisy=False)
    before = (s.labels, s.results.ids.copy(), s.rounds)
    est = s.estimate_quality(folds=5)
    assert est["folds"] == 5 and est["n_labels"] == 60
    assert est["tp"] + est["fn"] == 30  # every positive held out once
    assert est["precision"] >= 0.9 and est["recall"] >= 0.5
    assert s.results.info["cv"] is est
    assert s.labels == before[0] and s.rounds == before[2]
    np.testing.assert_array_equal(s.results.ids, before[1])


def test_random_labels_score_low(rng):
    est = labelled_session(rng, noisy=True).estimate_quality(folds=5)
    assert est["precision"] < 0.75


def test_folds_are_stratified_and_cover_every_label():
    y = np.array([True] * 7 + [False] * 13)
    fold = _folds(y, 3, seed=0)
    for f in range(3):
        assert 2 <= (fold[y] == f).sum() <= 3 and 4 <= (fold[~y] == f).sum() <= 5


def test_clear_errors(rng):
    cat, which = catalogue(rng, 200)
    s = Session(cat)
    s.label([0], 1)
    s.label([1], -1)
    with pytest.raises(ValueError, match="at least 2 positive labels, got 1"):
        s.estimate_quality()
    with pytest.raises(ValueError, match="folds: expected an integer of at least 2"):
        cross_validate(s, folds=1)
