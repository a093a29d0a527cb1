"""Bagged decision branches: votes count estimators, not boxes (issue 15).

``BaggedBranchesClassifier`` fits ``n_estimators`` ``DecisionBranchesClassifier``
models, each on a stratified bag of the training set (every bag keeps at least
one positive and one negative), and accepts an item when *more than*
``threshold`` of the estimators accept it. An item's votes are the number of
distinct estimators with a box containing it: an estimator that covers a
region with three overlapping boxes still votes once (the authors' ensemble
counts boxes, which lets one greedy model outvote the others).

The fitted model is still boxes: ``boxes_`` is the union of every estimator's
boxes and ``box_estimator_`` names the estimator of each. Whole-catalogue
inference (``search``) asks the catalogue for the union once (through its
``BoxIndex`` when one is built, else the scan: the index prunes), then counts
distinct estimators over the candidates' codes only, with a numba kernel.
"""

from __future__ import annotations

import logging
import numbers

import numpy as np
from numba import njit, prange
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError

from .._parallel import PARALLEL, numba_threads
from .._validation import check_codes, check_positive_int
from ..boxes import Boxes
from ..search.result import ScanResult
from .branches import DecisionBranchesClassifier
from .inputs import (
    apply_bins,
    check_n_features,
    check_params,
    check_X,
    encode_labels,
    fit_bins,
    sample_weights,
)

__all__ = ["BaggedBranchesClassifier", "estimator_votes"]

log = logging.getLogger(__name__)

_OWN = ("random_state", "n_jobs")  # the ensemble sets these on every estimator


@njit(**PARALLEL)
def _estimator_votes(codes, ids, dims, sizes, lower, upper, est_start, out):
    """Per row ``ids[r]`` of ``codes``: how many estimators have a box holding it.

    Boxes are grouped by estimator: estimator e owns boxes
    ``est_start[e]:est_start[e + 1]``; box b bounds dimensions
    ``dims[b, :sizes[b]]`` with inclusive ``lower[b, t] .. upper[b, t]``.
    An estimator's later boxes are skipped once one of its boxes holds the row.
    """
    n_est = est_start.shape[0] - 1
    for r in prange(ids.shape[0]):
        i = ids[r]
        v = 0
        for e in range(n_est):
            for b in range(est_start[e], est_start[e + 1]):
                inside = True
                for t in range(sizes[b]):
                    x = codes[i, dims[b, t]]
                    if x < lower[b, t] or x > upper[b, t]:
                        inside = False
                        break
                if inside:
                    v += 1
                    break
        out[r] = v


def _packed(boxes: Boxes):
    """(dims, sizes, lower, upper): each box's own dimensions, padded to the widest."""
    m = boxes.n_boxes
    kmax = max([len(d) for d in boxes.dims] + [1])
    dims = np.zeros((m, kmax), np.int64)
    sizes = np.zeros(m, np.int64)
    lower = np.zeros((m, kmax), np.uint8)
    upper = np.zeros((m, kmax), np.uint8)
    for b, dd in enumerate(boxes.dims):
        k = len(dd)
        sizes[b] = k
        dims[b, :k] = dd
        lower[b, :k] = boxes.lower[b, list(dd)]
        upper[b, :k] = boxes.upper[b, list(dd)]
    return dims, sizes, lower, upper


def estimator_votes(codes, ids, boxes: Boxes, box_estimator, n_estimators: int, *, n_jobs=None):
    """(len(ids),) int64: distinct estimators with a box holding each row ``ids``.

    ``boxes``: the union of the estimators' boxes; ``box_estimator`` (m,) the
    estimator (0 .. n_estimators - 1) of each box.
    """
    codes = check_codes(codes, n_features=boxes.n_features, allow_empty=True)
    ids = np.asarray(ids, np.int64)
    box_estimator = np.asarray(box_estimator, np.int64)
    if box_estimator.shape != (boxes.n_boxes,):
        raise ValueError(
            f"box_estimator: expected one estimator per box ({boxes.n_boxes}), "
            f"got shape {box_estimator.shape}"
        )
    n_estimators = check_positive_int("n_estimators", n_estimators)
    if box_estimator.size and (box_estimator.min() < 0 or box_estimator.max() >= n_estimators):
        raise ValueError(f"box_estimator: expected values in 0..{n_estimators - 1}")
    if ids.size and (ids.min() < 0 or ids.max() >= codes.shape[0]):
        raise ValueError(f"ids: expected row numbers in 0..{codes.shape[0] - 1}")
    order = np.argsort(box_estimator, kind="stable")
    dims, sizes, lower, upper = _packed(boxes)
    est_start = np.zeros(n_estimators + 1, np.int64)
    np.cumsum(np.bincount(box_estimator, minlength=n_estimators), out=est_start[1:])
    out = np.zeros(ids.size, np.int64)
    if ids.size and boxes.n_boxes:
        with numba_threads(n_jobs):
            _estimator_votes(
                np.asarray(codes),
                ids,
                dims[order],
                sizes[order],
                lower[order],
                upper[order],
                est_start,
                out,
            )
    return out


def _share(name, value, *, low_open: bool, high_open: bool):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
    ok = ok and (value > 0 if low_open else value >= 0) and (value < 1 if high_open else value <= 1)
    if not ok:
        lo, hi = ("(0" if low_open else "[0"), ("1)" if high_open else "1]")
        raise ValueError(f"{name}: expected a share in {lo}, {hi}, got {value!r}")
    return float(value)


class BaggedBranchesClassifier(ClassifierMixin, BaseEstimator):
    """Bagged ``DecisionBranchesClassifier`` models voting per estimator.

    Inputs as ``DecisionBranchesClassifier``: uint8 codes are used as they
    are; any other finite numeric X is binned once (``bin_edges_``) and every
    estimator is fitted on the same bins, so the union of their boxes lives in
    one code space.

    Parameters
    ----------
    n_estimators : int, default 9
    max_samples : float in (0, 1], default 1.0
        Size of each bag as a share of each class (bags are stratified: every
        bag holds at least one positive and one negative of non-zero weight).
    bootstrap : bool, default True
        Draw with replacement (a row drawn c times gets c times its weight,
        but an implicit negative never reaches the estimator's ``cap_weight``,
        so duplicates do not turn background into explicit negatives); False:
        draw without replacement, weights as given.
    threshold : float in [0, 1), default 0.5
        An item is accepted when more than this share of the estimators vote
        for it: 0.5 is a strict majority, 0 any estimator (the union).
    estimator_params : dict or None
        Keywords of every ``DecisionBranchesClassifier`` (not ``random_state``
        or ``n_jobs``, which the ensemble sets).
    random_state : int, Generator or None
    n_jobs : int or None
        Threads of each estimator's fit and of inference (None: all cores).

    Attributes
    ----------
    estimators_ : list of fitted DecisionBranchesClassifier
    boxes_ : Boxes, the union of every estimator's boxes
    box_estimator_ : (m,) int64, the estimator of each box of ``boxes_``
    min_votes_ : int, the votes an item needs to be accepted
    classes_, n_features_in_, bin_edges_ : as ``DecisionBranchesClassifier``
    """

    def __init__(
        self,
        *,
        n_estimators=9,
        max_samples=1.0,
        bootstrap=True,
        threshold=0.5,
        estimator_params=None,
        random_state=None,
        n_jobs=None,
    ):
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.bootstrap = bootstrap
        self.threshold = threshold
        self.estimator_params = estimator_params
        self.random_state = random_state
        self.n_jobs = n_jobs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False  # one box union per estimator
        return tags

    def _base(self):
        """An unfitted estimator with ``estimator_params``, its values checked."""
        params = {} if self.estimator_params is None else self.estimator_params
        if not isinstance(params, dict):
            raise ValueError(f"estimator_params: expected a dict or None, got {params!r}")
        own = sorted(set(params) & set(_OWN))
        known = DecisionBranchesClassifier().get_params()
        unknown = sorted(set(params) - set(known))
        if own or unknown:
            raise ValueError(
                f"estimator_params: {own + unknown} are not keywords the ensemble passes on; "
                f"expected some of {sorted(set(known) - set(_OWN))}"
            )
        base = DecisionBranchesClassifier(n_jobs=self.n_jobs, **params)
        check_params(base)
        return base

    def _check_params(self) -> int:
        n = check_positive_int("n_estimators", self.n_estimators)
        _share("max_samples", self.max_samples, low_open=True, high_open=False)
        _share("threshold", self.threshold, low_open=False, high_open=True)
        if not isinstance(self.bootstrap, (bool, np.bool_)):
            raise ValueError(f"bootstrap: expected True or False, got {self.bootstrap!r}")
        return n

    def fit(self, X, y, sample_weight=None):
        X = check_X(X)
        n, d = X.shape
        n_est = self._check_params()
        base = self._base()
        subsets = base._subsets(d)  # a bad subset is named before the labels
        classes, pos = encode_labels(y, n)
        w = sample_weights(sample_weight, n, classes, pos, base.class_weight)
        base.set_params(class_weight=None, feature_subsets=subsets)  # applied once, in w
        self.bin_edges_ = None if X.dtype == np.uint8 else fit_bins(X)
        if self.bin_edges_ is not None:
            X = apply_bins(X, self.bin_edges_)
        self.classes_ = classes
        self.n_features_in_ = d
        rng = np.random.default_rng(self.random_state)
        cap = np.inf if base.cap_weight is None else float(base.cap_weight)
        self.estimators_, parts, owner = [], [], []
        for e in range(n_est):
            rows, wb = self._bag(pos, w, cap, rng)
            seed = int(rng.integers(2**32))
            est = DecisionBranchesClassifier(**{**base.get_params(), "random_state": seed})
            est.fit(X[rows], pos[rows], sample_weight=wb)
            self.estimators_.append(est)
            parts.append(est.boxes_)
            owner.append(np.full(est.boxes_.n_boxes, e, np.int64))
        self.boxes_ = Boxes(
            np.concatenate([b.lower for b in parts]),
            np.concatenate([b.upper for b in parts]),
            [dd for b in parts for dd in b.dims],
        )
        self.box_estimator_ = np.concatenate(owner)
        self.min_votes_ = int(np.floor(self.threshold * n_est + 1e-9)) + 1
        log.debug(
            "fitted %d estimators, %d boxes in all, on %d points (%d positives)",
            n_est,
            self.boxes_.n_boxes,
            n,
            int(pos.sum()),
        )
        return self

    def _bag(self, pos, w, cap, rng):
        """(rows, weights) of one stratified bag: each class drawn on its own,
        among its rows of non-zero weight, so every bag keeps both classes."""
        rows, counts = [], []
        for c in (1, 0):
            pool = np.flatnonzero((pos == c) & (w > 0))
            k = max(1, int(round(self.max_samples * pool.size)))
            if self.bootstrap:
                r, cnt = np.unique(rng.choice(pool, k, replace=True), return_counts=True)
            else:
                r = np.sort(rng.choice(pool, k, replace=False))
                cnt = np.ones(r.size, np.int64)
            rows.append(r)
            counts.append(cnt)
        rows, counts = np.concatenate(rows), np.concatenate(counts)
        wb = w[rows] * counts
        implicit = w[rows] < cap  # stays implicit however often it is drawn
        wb[implicit] = np.minimum(wb[implicit], np.nextafter(cap, 0.0))
        return rows, wb

    def _codes(self, X):
        if self.bin_edges_ is None:
            return check_codes(X, n_features=self.n_features_in_, allow_empty=True)
        X = check_X(X, allow_empty=True)
        check_n_features(X, self.n_features_in_, type(self).__name__)
        return apply_bins(X.astype(np.float64, copy=False), self.bin_edges_)

    def estimator_votes(self, X) -> np.ndarray:
        """(n,) int64: per row, the number of estimators with a box containing it."""
        self._check_fitted()
        X = self._codes(X)
        return estimator_votes(
            X,
            np.arange(X.shape[0]),
            self.boxes_,
            self.box_estimator_,
            len(self.estimators_),
            n_jobs=self.n_jobs,
        )

    def predict_proba(self, X) -> np.ndarray:
        """(n, 2): the share of estimators voting against / for each row."""
        p = self.estimator_votes(X) / len(self.estimators_)
        return np.stack([1.0 - p, p], axis=1)

    def decision_function(self, X) -> np.ndarray:
        """Votes minus the votes needed, plus 0.5: positive exactly where accepted."""
        return self.estimator_votes(X) - self.min_votes_ + 0.5

    def predict(self, X):
        votes = self.estimator_votes(X)
        return self.classes_[(votes >= self.min_votes_).astype(np.intp)]

    def search(self, catalogue, *, min_votes=None, path="auto", n_jobs=None) -> ScanResult:
        """Every catalogue item with at least ``min_votes`` estimator votes
        (default ``min_votes_``), with those votes, in id order.

        The union of the boxes goes to ``catalogue.search_boxes`` once (the
        catalogue's index when it has one, else the scan; ``path`` "index" or
        "scan" forces one through ``catalogue.searcher``), then the distinct
        estimators are counted over the candidates' codes only. The result's
        ``path`` is the union search's; ``info["n_candidates"]`` its size.
        """
        self._check_fitted()
        if self.bin_edges_ is not None:
            raise ValueError(
                "search: this ensemble was fitted on binned float features, not on "
                "catalogue codes; fit it on uint8 codes to search a catalogue"
            )
        need = self.min_votes_ if min_votes is None else check_positive_int("min_votes", min_votes)
        n_jobs = self.n_jobs if n_jobs is None else n_jobs
        if path == "auto":
            found = catalogue.search_boxes(self.boxes_, n_jobs=n_jobs)
        else:
            found = catalogue.searcher.search(self.boxes_, path=path, n_jobs=n_jobs)
        ids = np.asarray(found.ids, np.int64)
        votes = estimator_votes(
            catalogue.codes,
            ids,
            self.boxes_,
            self.box_estimator_,
            len(self.estimators_),
            n_jobs=n_jobs,
        )
        keep = votes >= need
        info = {**found.info, "n_candidates": int(ids.size), "min_votes": need}
        return ScanResult(ids[keep], votes[keep], found.path, info)

    def _check_fitted(self):
        if not hasattr(self, "boxes_"):
            raise NotFittedError(
                "BaggedBranchesClassifier is not fitted yet: call fit(codes, y) first"
            )
