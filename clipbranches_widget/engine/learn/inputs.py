"""What ``DecisionBranchesClassifier.fit`` accepts, checked and put in code space.

uint8 codes pass through untouched (the product's path: boxes bound the
codes themselves). Any other finite numeric X is binned per feature into
0..255 the way HistGradientBoosting bins (midpoints between distinct values,
or quantiles when there are more than 256), so the same box learner runs on
it; the thresholds are kept for predict. Labels may be any two values:
``classes_[1]`` (the larger) is the positive class, as in scikit-learn.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.utils import check_array, column_or_1d
from sklearn.utils.multiclass import check_classification_targets

from .._validation import check_codes, check_positive_int, describe

__all__ = [
    "apply_bins",
    "check_X",
    "check_n_features",
    "check_params",
    "encode_labels",
    "fit_bins",
    "sample_weights",
]

_N_BINS = 256
# uint8 is kept as is; every other numeric dtype is read as float64
_DTYPES = [np.float64, np.float32, np.uint8]


def check_X(X, *, allow_empty: bool = False) -> np.ndarray:
    """A finite 2-D numeric array (uint8 kept, anything else float), or raise."""
    X = check_array(X, accept_sparse=False, dtype=_DTYPES, ensure_min_samples=0)
    if X.dtype == np.uint8:
        return check_codes(X, name="X", allow_empty=allow_empty)
    if X.shape[0] == 0 and not allow_empty:
        raise ValueError(f"X: expected at least one row, got {describe(X)}")
    return X


def check_n_features(X, n_features: int, owner: str) -> None:
    if X.shape[1] != n_features:
        raise ValueError(
            f"X has {X.shape[1]} features, but {owner} is expecting {n_features} features as input"
        )


def fit_bins(X: np.ndarray) -> list[np.ndarray]:
    """Per feature, at most 255 increasing thresholds: bin ``i`` holds the
    values ``<= thresholds[i]`` (and above the previous one)."""
    out = []
    for col in X.T:
        values = np.unique(col)
        if values.size <= _N_BINS:
            t = (values[:-1] + values[1:]) / 2
        else:
            q = np.linspace(0, 100, _N_BINS + 1)[1:-1]
            t = np.unique(np.percentile(col, q, method="midpoint"))
        out.append(np.asarray(t, np.float64))
    return out


def apply_bins(X: np.ndarray, thresholds) -> np.ndarray:
    """(n, d) float -> (n, d) uint8 codes with the fitted thresholds."""
    codes = np.empty(X.shape, np.uint8)
    for j, t in enumerate(thresholds):
        codes[:, j] = np.searchsorted(t, X[:, j], side="left")
    return codes


def encode_labels(y, n: int):
    """``(classes_, pos)``: the two sorted labels and a uint8 0/1 positive mask."""
    y = np.asarray(y) if not hasattr(y, "shape") else y
    y = column_or_1d(y, warn=True)
    if y.shape[0] != n:
        raise ValueError(f"y: expected a 1-D array of {n} labels, got {describe(np.asarray(y))}")
    y = check_array(y, ensure_2d=False, dtype=None)
    check_classification_targets(y)
    classes, idx = np.unique(y, return_inverse=True)
    if classes.size > 2:
        raise ValueError(
            "y: Only binary classification is supported (expected binary labels, two "
            f"classes); the type of the target is multiclass, got {classes.size} classes: "
            f"{classes[:5].tolist()}"
        )
    if classes.size < 2:
        only = classes[0]
        n_pos = n if only in (1, True) else 0
        raise ValueError(
            f"y: expected two classes, got one class ({only!r}): need at least one "
            f"positive label and one negative, got {n_pos} positives among {n} labels"
        )
    return classes, idx.astype(np.uint8)


def sample_weights(sample_weight, n: int, classes, pos, class_weight) -> np.ndarray:
    """Finite non-negative float64 weights, times ``class_weight``; each class
    must keep some weight (else there is nothing to separate)."""
    if sample_weight is None:
        w = np.ones(n)
    else:
        w = np.asarray(sample_weight, np.float64)
        if w.ndim == 0:
            w = np.full(n, float(w))
    if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(
            f"sample_weight: expected {n} finite non-negative weights, got {describe(w)}"
        )
    if not w.any():
        raise ValueError("sample_weight: expected at least one non-zero weight, got all zero")
    if class_weight == "balanced":
        n_pos = int(pos.sum())
        w = w * np.where(pos == 1, n / (2.0 * n_pos), n / (2.0 * max(n - n_pos, 1)))
    elif isinstance(class_weight, dict):
        factors = [class_weight.get(c, 1.0) for c in classes.tolist()]
        for c, f in zip(classes.tolist(), factors):
            if not isinstance(f, numbers.Real) or not np.isfinite(f) or f < 0:
                raise ValueError(
                    f"class_weight: expected a finite non-negative weight for class {c!r}, "
                    f"got {f!r}"
                )
        w = w * np.where(pos == 1, float(factors[1]), float(factors[0]))
    elif class_weight is not None:
        raise ValueError(f"class_weight: expected None, 'balanced' or a dict, got {class_weight!r}")
    for k, c in enumerate(classes.tolist()):
        if w[pos == k].sum() <= 0:
            raise ValueError(
                f"sample_weight: every sample of class {c!r} has zero weight; "
                "expected some weight on both classes"
            )
    return w


def _number(name, value, *, positive=False, allow_none=False):
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
    ok = ok and (value > 0 if positive else value >= 0)
    if not ok:
        what = "positive" if positive else "non-negative"
        raise ValueError(f"{name}: expected a finite {what} number, got {value!r}")
    return float(value)


def _count(name, value, *, allow_zero=False):
    if allow_zero and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if value == 0:
            return 0
    return check_positive_int(name, value)


def check_params(est) -> dict:
    """Every hyper-parameter checked; a ValueError names the first bad one."""
    out = {
        "max_boxes": check_positive_int("max_boxes", est.max_boxes),
        "max_failures": check_positive_int("max_failures", est.max_failures),
        "margin": _number("margin", est.margin),
        "min_margin": _number("min_margin", est.min_margin),
        "prior_spread": _number("prior_spread", est.prior_spread),
        "cap_weight": _number("cap_weight", est.cap_weight, positive=True, allow_none=True),
    }
    m = est.max_subsets_per_box
    out["max_subsets_per_box"] = None if m is None else check_positive_int("max_subsets_per_box", m)
    out["min_pts"] = (
        "auto" if isinstance(est.min_pts, str) and est.min_pts == "auto" else None
    ) or _count("min_pts", est.min_pts, allow_zero=True)
    if not (isinstance(est.accept, str) and est.accept in ("box", "hull")):
        raise ValueError(f"accept: expected 'box' or 'hull', got {est.accept!r}")
    nj = est.n_jobs
    if nj is not None and (not isinstance(nj, numbers.Integral) or isinstance(nj, bool) or nj == 0):
        raise ValueError(f"n_jobs: expected a non-zero integer or None, got {nj!r}")
    return out
