"""DecisionBranchesClassifier is a scikit-learn citizen (issue 15): the
estimator checks pass, except the few listed here with their reasons."""

import numpy as np
import pytest
from sklearn.utils.estimator_checks import estimator_checks_generator

from clipbranches_widget.engine.learn.branches import DecisionBranchesClassifier

EXPECTED_FAILURES = {
    # A box is grown around every positive and kept when it holds more positive
    # than negative weight: class_weight {0: 1000, 1: 1e-4} makes the positives
    # light but a pure box of them is still kept, so on these overlapping blobs
    # more than 13 % of the test points are predicted positive.
    "check_class_weight_classifiers": "pure boxes are kept whatever the class weights",
}


# Not applicable: array-API input (CuPy, torch tensors) is for estimators that
# compute with the array API; these numba kernels take numpy only. scikit-learn
# itself skips the check unless SCIPY_ARRAY_API is set, and a skip fails CI.
NOT_APPLICABLE = {"check_array_api_input"}


def _check_name(check) -> str:
    return getattr(check, "func", check).__name__


def _checks():
    # expected failures come as pytest.param(estimator, check, marks=xfail)
    for item in estimator_checks_generator(
        DecisionBranchesClassifier(), expected_failed_checks=EXPECTED_FAILURES, mark="xfail"
    ):
        check = item.values[1] if hasattr(item, "values") else item[1]
        if _check_name(check) not in NOT_APPLICABLE:
            yield item, _check_name(check)


CHECKS = list(_checks())


@pytest.mark.parametrize("estimator, check", [c for c, _ in CHECKS], ids=[n for _, n in CHECKS])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def test_nearly_every_sklearn_check_applies_and_passes():
    names = [n for _, n in CHECKS]
    assert len(names) >= 60 and len(EXPECTED_FAILURES) / len(names) <= 0.1


def test_float_features_are_binned_and_uint8_codes_are_not(rng):
    X = rng.standard_normal((300, 6))
    y = np.where(X[:, 0] + X[:, 1] > 1, "yes", "no")
    clf = DecisionBranchesClassifier(random_state=0, feature_subsets=[(0, 1), (2, 3)]).fit(X, y)
    assert clf.classes_.tolist() == ["no", "yes"]  # labels from y; "yes" is positive
    assert len(clf.bin_edges_) == 6 and all(e.size == 255 for e in clf.bin_edges_)
    assert set(clf.predict(X)) <= {"no", "yes"}
    assert (clf.predict(X) == y).mean() > 0.9
    # the decision is the box count of the binned codes
    codes = np.stack(
        [np.searchsorted(e, X[:, j], side="left") for j, e in enumerate(clf.bin_edges_)], 1
    ).astype(np.uint8)
    np.testing.assert_array_equal(clf.decision_function(X), clf.boxes_.votes(codes))
    with pytest.raises(ValueError, match="X has 5 features, but DecisionBranchesClassifier"):
        clf.predict(X[:, :5])
    # uint8 input is used as codes, as before: no bins
    c = rng.integers(0, 256, (200, 32), dtype=np.uint8)
    yc = (c[:, 0] > 128).astype(int)
    fitted = DecisionBranchesClassifier(random_state=0).fit(c, yc)
    assert fitted.bin_edges_ is None
    np.testing.assert_array_equal(fitted.decision_function(c), fitted.boxes_.votes(c))


@pytest.mark.parametrize(
    "params, match",
    [
        ({"max_boxes": 0}, "max_boxes"),
        ({"max_boxes": 2.5}, "max_boxes"),
        ({"margin": float("nan")}, "margin"),
        ({"margin": -1}, "margin"),
        ({"min_margin": -1}, "min_margin"),
        ({"prior_spread": float("inf")}, "prior_spread"),
        ({"cap_weight": 0}, "cap_weight"),
        ({"cap_weight": float("nan")}, "cap_weight"),
        ({"min_pts": -3}, "min_pts"),
        ({"min_pts": "all"}, "min_pts"),
        ({"max_subsets_per_box": 0}, "max_subsets_per_box"),
        ({"max_failures": 0}, "max_failures"),
        ({"class_weight": "equal"}, "class_weight"),
        ({"class_weight": {0: -1.0}}, "class_weight"),
        ({"n_jobs": 0}, "n_jobs"),
        ({"n_jobs": 1.5}, "n_jobs"),
    ],
)
def test_every_parameter_is_validated(rng, params, match):
    X = rng.integers(0, 256, (40, 32), dtype=np.uint8)
    y = np.r_[np.ones(10), np.zeros(30)]
    with pytest.raises(ValueError, match=match):
        DecisionBranchesClassifier(**params).fit(X, y)


def test_sample_weight_errors_are_clear(rng):
    X = rng.integers(0, 256, (40, 32), dtype=np.uint8)
    y = np.r_[np.ones(10), np.zeros(30)]
    clf = DecisionBranchesClassifier(random_state=0)
    with pytest.raises(ValueError, match="sample_weight: expected at least one non-zero"):
        clf.fit(X, y, sample_weight=np.zeros(40))  # was a SystemError from numba
    with pytest.raises(ValueError, match="class 1.0 has zero weight"):
        clf.fit(X, y, sample_weight=np.r_[np.zeros(10), np.ones(30)])
    with pytest.raises(ValueError, match="finite non-negative"):
        clf.fit(X, y, sample_weight=np.r_[np.full(10, np.nan), np.ones(30)])
    with pytest.raises(ValueError, match="finite non-negative"):
        clf.fit(X, y, sample_weight=np.ones(39))
