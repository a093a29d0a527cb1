"""Decision branches: a union of axis-aligned boxes learned from a few labels.

Each box lives on one feature subset (a few code dimensions), so at inference
time every box can be answered by the index of its subset. Training is greedy
(DESIGN.md section 4): pick a random uncovered positive as seed, build the best
box around it on every subset in parallel, keep the best one by weighted Gini,
remove the points it covers, repeat.

How a box grows around its seed: it absorbs the other positives one at a
time in order of L-inf distance from the seed (on the subset's dimensions),
its bounds being their bounding box, and keeps the prefix whose weighted Gini
of inside/outside is lowest. Each side then widens by a margin learned from
the positives' spread (``margin`` x the box's extent), stopping midway before
the nearest negative beyond it. So no side ever claims the empty space beyond
the positives: the training sample is sparse, and the catalogue has many
items there (the authors' version extends such sides randomly to the data
range, which is why its result sets are imprecise).
"""

from __future__ import annotations

import logging

import numpy as np
from numba import njit, prange
from scipy.special import ndtri
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError

from .._parallel import INLINE, KERNEL, PARALLEL, numba_threads
from .._validation import check_codes
from ..boxes import Boxes
from ..search.scan import scan_votes
from ..subsets import PAPER_SIZES, REFINE_SIZES, default_feature_subsets
from .inputs import (
    apply_bins,
    check_n_features,
    check_params,
    check_X,
    encode_labels,
    fit_bins,
    sample_weights,
)

__all__ = ["DecisionBranchesClassifier", "default_feature_subsets"]

log = logging.getLogger(__name__)


@njit(**INLINE)
def _gini2(wp, wn):
    # weighted impurity of one node: total weight times Gini index
    t = wp + wn
    if t <= 0.0:
        return 0.0
    return 2.0 * wp * wn / t


@njit(**INLINE)
def _split_gini(wp_in, wn_in, wp_tot, wn_tot):
    return (_gini2(wp_in, wn_in) + _gini2(wp_tot - wp_in, wn_tot - wn_in)) / (wp_tot + wn_tot)


@njit(**KERNEL)
def _linf_from_seed(X, seed, dims):
    n = X.shape[0]
    dist = np.empty(n, np.int64)
    for i in range(n):
        m = 0
        for t in range(dims.shape[0]):
            d = abs(np.int64(X[i, dims[t]]) - np.int64(X[seed, dims[t]]))
            if d > m:
                m = d
        dist[i] = m
    return dist


@njit(**KERNEL)
def _weights_inside(X, y, w, dims, order, dist, radius, lo, hi, hard):
    # only points within the box's L-inf radius around the seed can be inside;
    # also counts "hard" negatives (weight >= hard): explicit user negatives
    wp = 0.0
    wn = 0.0
    n_hard = 0
    for q in range(order.shape[0]):
        i = order[q]
        if dist[i] > radius:
            break
        inside = True
        for t in range(dims.shape[0]):
            v = X[i, dims[t]]
            if v < lo[t] or v > hi[t]:
                inside = False
                break
        if inside:
            if y[i] == 1:
                wp += w[i]
            else:
                wn += w[i]
                if w[i] >= hard:
                    n_hard += 1
    return wp, wn, n_hard


@njit(**KERNEL)
def _add_margin(X, y, w, dims, lo, hi, n_pos, params, half_range, prior_sigma):
    # Widen each side: the positives' extent estimates the concept's spread
    # (sigma = extent / expected range of n_pos normal samples); the box
    # reaches ``margin`` sigmas from the middle, and at least ``min_margin``
    # beyond the extent. Then every explicit negative (weight >= cap_weight)
    # that the margin swallowed is cut off again, midway between it and the
    # positives' extent on the dimension where it lies furthest outside.
    margin = params[0]
    min_margin = np.int64(params[1])
    cap_weight = params[3]
    k = dims.shape[0]
    new_lo = lo.copy()
    new_hi = hi.copy()
    for t in range(k):
        if n_pos >= 2:
            sigma = (hi[t] - lo[t]) / (2.0 * half_range[min(n_pos, half_range.shape[0] - 1)])
        else:  # one positive says nothing about the spread: use the prior
            sigma = prior_sigma[dims[t]]
        half = margin * sigma
        mid = 0.5 * (lo[t] + hi[t])
        new_lo[t] = max(0, min(lo[t] - min_margin, np.int64(np.floor(mid - half))))
        new_hi[t] = min(255, max(hi[t] + min_margin, np.int64(np.ceil(mid + half))))
    for i in range(X.shape[0]):
        if y[i] == 1 or w[i] < cap_weight:
            continue
        best_t = -1
        best_gap = 0
        for t in range(k):
            v = np.int64(X[i, dims[t]])
            if v < new_lo[t] or v > new_hi[t]:
                best_t = -1
                break
            gap = max(lo[t] - v, v - hi[t])
            if gap > best_gap:
                best_gap = gap
                best_t = t
        if best_t >= 0:
            v = np.int64(X[i, dims[best_t]])
            if v < lo[best_t]:
                new_lo[best_t] = (v + lo[best_t] + 1) // 2
            else:
                new_hi[best_t] = (v + hi[best_t]) // 2
    return new_lo, new_hi


@njit(**KERNEL)
def grow_box(X, y, w, seed, dims, params, half_range, prior_sigma, lo, hi):
    """Grow the box around ``X[seed]`` on ``dims``; write bounds into lo/hi.

    X (n, d) uint8, y (n,) uint8 in {0, 1}, w (n,) float64 weights; params =
    (margin, min_margin, min_pts, cap_weight); prior_sigma (d,) = the spread assumed
    around a lone positive; half_range[n] = expected half-range of
    n standard normal samples. The box absorbs positives in order of L-inf
    distance from the seed (its bounding box grows with each) and keeps the
    prefix with the lowest weighted Gini of inside/outside; it stops looking
    once ``min_pts`` training points went by without an improvement (0: never),
    so it does not jump a gap to another cluster. Returns that Gini.
    """
    n = X.shape[0]
    k = dims.shape[0]
    min_pts = np.int64(params[2])
    wp_tot = 0.0
    wn_tot = 0.0
    for i in range(n):
        if y[i] == 1:
            wp_tot += w[i]
        else:
            wn_tot += w[i]
    dist = _linf_from_seed(X, seed, dims)
    order = np.argsort(dist, kind="mergesort")
    cur_lo = np.empty(k, np.int64)
    cur_hi = np.empty(k, np.int64)
    for t in range(k):
        cur_lo[t] = X[seed, dims[t]]
        cur_hi[t] = X[seed, dims[t]]
    best = 1e300
    best_lo = cur_lo.copy()
    best_hi = cur_hi.copy()
    best_q = 0
    absorbed = 0
    best_pos = 1
    for q in range(n):
        if min_pts > 0 and q - best_q > min_pts:
            break
        i = order[q]
        if y[i] != 1:
            continue
        absorbed += 1
        radius = 0
        for t in range(k):
            v = np.int64(X[i, dims[t]])
            cur_lo[t] = min(cur_lo[t], v)
            cur_hi[t] = max(cur_hi[t], v)
            s = np.int64(X[seed, dims[t]])
            radius = max(radius, max(s - cur_lo[t], cur_hi[t] - s))
        wp, wn, n_hard = _weights_inside(
            X, y, w, dims, order, dist, radius, cur_lo, cur_hi, params[3]
        )
        if n_hard > 0:
            break  # never grow over an explicit negative
        g = _split_gini(wp, wn, wp_tot, wn_tot)
        if g < best - 1e-12:
            best = g
            best_lo[:] = cur_lo
            best_hi[:] = cur_hi
            best_q = q
            best_pos = absorbed
    final_lo, final_hi = _add_margin(
        X, y, w, dims, best_lo, best_hi, best_pos, params, half_range, prior_sigma
    )
    for t in range(k):
        lo[t] = final_lo[t]
        hi[t] = final_hi[t]
    return best


@njit(**PARALLEL)
def grow_boxes(X, y, w, seed, subsets, sizes, params, half_range, prior_sigma, lo, hi, scores):
    """``grow_box`` on every subset in parallel (subsets padded with -1)."""
    for s in prange(subsets.shape[0]):
        k = sizes[s]
        scores[s] = grow_box(
            X, y, w, seed, subsets[s, :k], params, half_range, prior_sigma, lo[s, :k], hi[s, :k]
        )


def _inside(X, dims, lo, hi) -> np.ndarray:
    inside = np.ones(X.shape[0], bool)
    for t, j in enumerate(dims):
        inside &= (X[:, j] >= lo[t]) & (X[:, j] <= hi[t])
    return inside


def expected_half_range(n_max: int = 1024) -> np.ndarray:
    """E[max of n standard normal samples] (Blom's approximation), n = 0..n_max.

    Entries 0 and 1 are 0: one sample says nothing about the spread.
    """
    n = np.arange(n_max + 1, dtype=np.float64)
    out = np.zeros(n_max + 1)
    out[2:] = ndtri((n[2:] - 0.375) / (n[2:] + 0.25))
    return out


_HALF_RANGE = expected_half_range()


class DecisionBranchesClassifier(ClassifierMixin, BaseEstimator):
    """A union of axis-aligned boxes over uint8 codes, grown around positives.

    ``X`` is normally uint8 codes, used as they are. Any other finite numeric
    ``X`` is first binned per feature into 256 bins (as HistGradientBoosting
    does; ``bin_edges_`` keeps the thresholds for predict), so the estimator
    is a plain scikit-learn classifier too. ``y``: any two labels; the larger
    one (``classes_[1]``) is the positive class.

    Parameters
    ----------
    max_boxes : int, default 30
        Upper bound on the number of boxes.
    feature_subsets : "paper", "8d" or list of tuples of int, default "paper"
        The subsets a box may constrain, drawn with a fixed seed (see
        ``default_feature_subsets``): "paper" is 64 x 4, 32 x 6 and 8 x 8
        dimensions (the ones the index keeps by default), "8d" 104 subsets of 8
        dimensions (what ``Session.refine`` uses).
    max_subsets_per_box : int or None, default None
        Try only this many randomly chosen subsets per box (None: all).
    margin : float, default 2.5
        Half-width of a box on each dimension, in units of the spread of the
        positives inside it (estimated from their extent and count); a side
        never ends closer than ``min_margin`` to its furthest positive.
    min_margin : int, default 2
    prior_spread : float, default 0.1
        A box around a single positive has no spread to learn from: it assumes
        this fraction of the training data's standard deviation per dimension
        (then ``margin`` of those), instead of hugging the one point.
    min_pts : int or "auto", default "auto"
        Look-ahead window: a box stops growing once this many training points
        (in order of distance from the seed) brought no improvement; "auto" is
        min(10, max(3, #positives)); 0 disables the window. (DESIGN.md's
        min(50, 1.5 x #positives) let boxes jump gaps between clusters on the
        synthetic benchmark: F1 0.90 against 0.95 with 10.)
    cap_weight : float or None, default 1.0
        Negatives of at least this sample weight are *explicit*: a box never
        grows over one, and its margin stops midway before the nearest one
        beyond a side (None: no negative is explicit). ``Session`` gives
        background negatives weight 0.5, so only the user's own negatives
        limit the margin: background items inside a concept's region are
        often unlabelled positives.
    class_weight : None, "balanced" or dict {label: weight}, default None
    max_failures : int, default 5
        Stop after this many consecutive seeds whose best box is impure.
    accept : {"box", "hull"}, default "box"
        Which region must hold more positive than negative weight for a box to
        be kept: the box itself, or the bounding box of the positives inside
        it (the box without its margin).
    random_state : int, Generator or None
    n_jobs : int or None
        Threads for the parallel box search (None: all cores).

    Attributes
    ----------
    boxes_ : Boxes
    classes_ : ndarray of shape (2,), the labels seen in fit (positive last)
    n_features_in_ : int
    bin_edges_ : None (uint8 codes) or list of (<= 255,) float arrays
        Per feature, the upper bound (inclusive) of each bin but the last.
    feature_subsets_ : list of tuples
    box_scores_ : (m,) weighted Gini of each box on the training data
    """

    def __init__(
        self,
        *,
        max_boxes=30,
        feature_subsets="paper",
        max_subsets_per_box=None,
        margin=2.5,
        min_margin=2,
        prior_spread=0.1,
        min_pts="auto",
        cap_weight=1.0,
        class_weight=None,
        max_failures=5,
        accept="box",
        random_state=None,
        n_jobs=None,
    ):
        self.max_boxes = max_boxes
        self.feature_subsets = feature_subsets
        self.max_subsets_per_box = max_subsets_per_box
        self.margin = margin
        self.min_margin = min_margin
        self.prior_spread = prior_spread
        self.min_pts = min_pts
        self.cap_weight = cap_weight
        self.class_weight = class_weight
        self.max_failures = max_failures
        self.accept = accept
        self.random_state = random_state
        self.n_jobs = n_jobs

    def __sklearn_tags__(self):
        # binary only: one box union separates one class from the rest
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def _subsets(self, d):
        if isinstance(self.feature_subsets, str):
            if self.feature_subsets not in ("paper", "8d"):
                raise ValueError(
                    f"feature_subsets: expected 'paper', '8d' or a list of dimension "
                    f"tuples, got {self.feature_subsets!r}"
                )
            sizes = PAPER_SIZES if self.feature_subsets == "paper" else REFINE_SIZES
            return default_feature_subsets(d, sizes=sizes)
        subsets = [tuple(int(j) for j in s) for s in self.feature_subsets]
        if not subsets or any(
            not s or min(s) < 0 or max(s) >= d or len(set(s)) != len(s) for s in subsets
        ):
            raise ValueError(
                f"feature_subsets: expected non-empty tuples of distinct "
                f"dimensions in 0..{d - 1}, got {self.feature_subsets!r}"
            )
        return subsets

    def fit(self, X, y, sample_weight=None):
        X = check_X(X)
        n, d = X.shape
        check_params(self)
        subsets = self._subsets(d)  # before the labels: a bad parameter is named first
        classes, pos = encode_labels(y, n)
        w = sample_weights(sample_weight, n, classes, pos, self.class_weight)
        # uint8 codes are the boxes' own space; anything else is binned into it
        self.bin_edges_ = None if X.dtype == np.uint8 else fit_bins(X)
        if self.bin_edges_ is not None:
            X = apply_bins(X, self.bin_edges_)
        self.classes_ = classes
        self.feature_subsets_ = subsets
        self.n_features_in_ = d
        rng = np.random.default_rng(self.random_state)
        with numba_threads(self.n_jobs):
            boxes, scores = self._grow(X, pos, w, subsets, rng)
        m = len(boxes)
        lower = np.zeros((m, d), np.uint8)
        upper = np.full((m, d), 255, np.uint8)
        for b, (dims, lo, hi) in enumerate(boxes):
            lower[b, list(dims)] = lo
            upper[b, list(dims)] = hi
        self.boxes_ = Boxes(lower, upper, [bx[0] for bx in boxes])
        self.box_scores_ = np.asarray(scores, np.float64)
        log.debug("fitted %d boxes on %d points (%d positives)", m, n, int(pos.sum()))
        return self

    def _grow(self, X, y, w, subsets, rng):
        kmax = max(len(s) for s in subsets)
        table = np.full((len(subsets), kmax), -1, np.int64)
        sizes = np.array([len(s) for s in subsets], np.int64)
        for s, dims in enumerate(subsets):
            table[s, : len(dims)] = dims
        n_pos = int(y.sum())
        min_pts = min(10, max(3, n_pos)) if self.min_pts == "auto" else int(self.min_pts)
        params = np.array(
            [
                self.margin,
                self.min_margin,
                min_pts,
                np.inf if self.cap_weight is None else float(self.cap_weight),
            ]
        )
        # a lone positive's box: a fraction of the training data's spread
        prior_sigma = self.prior_spread * X.std(axis=0).astype(np.float64)
        active = np.arange(X.shape[0])
        tried = np.zeros(X.shape[0], bool)  # seeds whose best box was impure
        boxes, scores = [], []
        failures = 0
        while len(boxes) < self.max_boxes and failures < self.max_failures:
            ya = y[active]
            candidates = np.flatnonzero((ya == 1) & ~tried[active])
            if candidates.size == 0:
                break
            seed_local = int(rng.choice(candidates))
            pick = np.arange(len(subsets))
            if self.max_subsets_per_box is not None and self.max_subsets_per_box < len(pick):
                pick = np.sort(rng.choice(len(pick), self.max_subsets_per_box, replace=False))
            Xa = np.ascontiguousarray(X[active])
            lo = np.zeros((pick.size, kmax), np.uint8)
            hi = np.zeros((pick.size, kmax), np.uint8)
            sc = np.zeros(pick.size)
            grow_boxes(
                Xa,
                ya,
                np.ascontiguousarray(w[active]),
                seed_local,
                table[pick],
                sizes[pick],
                params,
                _HALF_RANGE,
                prior_sigma,
                lo,
                hi,
                sc,
            )
            # best Gini, ties to fewer dimensions, then to the earlier subset
            best = int(
                np.lexsort((np.arange(pick.size), sizes[pick], np.round(np.minimum(sc, 2.0), 12)))[
                    0
                ]
            )
            k = int(sizes[pick[best]])
            dims = subsets[pick[best]]
            blo, bhi = lo[best, :k].copy(), hi[best, :k].copy()
            inside = judged = _inside(Xa, dims, blo, bhi)
            pos = Xa[inside & (ya == 1)][:, list(dims)]
            if self.accept == "hull" and pos.size:  # the margin reaches into a
                # large concept's unlabelled positives: judge the box without it
                judged = _inside(Xa, dims, pos.min(0), pos.max(0))
            wp, wn = (w[active][judged & (ya == c)].sum() for c in (1, 0))
            if wp <= wn:
                tried[active[seed_local]] = True
                failures += 1
                continue
            failures = 0
            boxes.append((dims, blo, bhi))
            scores.append(sc[best])
            active = active[~inside]
        return boxes, scores

    def _codes(self, X):
        if self.bin_edges_ is None:  # fitted on codes: only codes make sense
            return check_codes(X, n_features=self.n_features_in_, allow_empty=True)
        X = check_X(X, allow_empty=True)
        check_n_features(X, self.n_features_in_, type(self).__name__)
        return apply_bins(X.astype(np.float64, copy=False), self.bin_edges_)

    def decision_function(self, X):
        """Number of boxes containing each item."""
        self._check_fitted()
        X = self._codes(X)
        with numba_threads(self.n_jobs):
            return scan_votes(X, self.boxes_).astype(np.int64)

    def predict(self, X):
        self._check_fitted()
        return self.classes_[(self.decision_function(X) > 0).astype(np.intp)]

    def _check_fitted(self):
        if not hasattr(self, "boxes_"):
            raise NotFittedError(
                "DecisionBranchesClassifier is not fitted yet: call fit(codes, y) first"
            )
