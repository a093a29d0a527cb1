"""Input checks at the engine's edges.

Every public entry point converts user input with these helpers, so a wrong
shape, dtype or value fails early with a message naming what was expected and
what arrived. Kernels behind them only ever see contiguous arrays.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["check_codes", "check_embeddings", "check_labels", "check_positive_int", "describe"]


def check_positive_int(name: str, value, *, maximum: int | None = None) -> int:
    """``value`` as a Python int >= 1 (and <= ``maximum``), or a ValueError naming ``name``.

    bool and floats are refused: ``True`` or ``2.5`` as a count is a caller's bug.
    """
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1
    if not ok or (maximum is not None and value > maximum):
        bound = f" no larger than {maximum:,}" if maximum is not None else ""
        raise ValueError(f"{name}: expected a positive integer{bound}, got {value!r}")
    return int(value)


def describe(a) -> str:
    """A short description of what arrived, for error messages."""
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array of shape {a.shape}"
    return f"{type(a).__name__}"


def check_codes(
    codes, *, n_features: int | None = None, name: str = "codes", allow_empty: bool = False
) -> np.ndarray:
    """Return ``codes`` as a C-contiguous (n, d) uint8 array or raise.

    Only uint8 is accepted: silently casting floats or wider integers would
    wrap or truncate values, which hides a pipeline mistake.
    """
    expected = f"a 2-D uint8 array of shape (n, {n_features if n_features else 'd'})"
    if not isinstance(codes, np.ndarray):
        try:
            codes = np.asarray(codes)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise TypeError(f"{name}: expected {expected}, got {describe(codes)}") from exc
    if codes.dtype != np.uint8:
        raise TypeError(
            f"{name}: expected {expected}, got {describe(codes)}; "
            "compress embeddings with Compressor.transform first"
        )
    if codes.ndim != 2:
        raise ValueError(f"{name}: expected {expected}, got {describe(codes)}")
    if n_features is not None and codes.shape[1] != n_features:
        raise ValueError(f"{name}: expected {expected}, got {describe(codes)}")
    if codes.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name}: expected at least one row, got {describe(codes)}")
    if not codes.flags.c_contiguous:
        codes = np.ascontiguousarray(codes)
    return codes


def check_embeddings(
    X, *, n_features: int | None = None, name: str = "X", allow_empty: bool = False
) -> np.ndarray:
    """Return ``X`` as a finite C-contiguous (n, d) float32 array or raise."""
    expected = f"a 2-D float array of shape (n, {n_features if n_features else 'd'})"
    arr = np.asarray(X) if not isinstance(X, np.ndarray) else X
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected {expected}, got {describe(arr)}")
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected {expected}, got {describe(arr)}")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{name}: expected {expected}, got {describe(arr)}")
    if arr.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name}: expected at least one row, got {describe(arr)}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name}: expected at least one column, got {describe(arr)}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise ValueError(
            f"{name}: expected finite values, got NaN or inf in "
            f"{bad.size} row(s), first at row {int(bad[0])}"
        )
    return arr


def check_labels(y, n: int) -> np.ndarray:
    """Return binary labels as a uint8 array of 0/1 (1 = positive) or raise.

    Accepts {0, 1}, {-1, 1} and booleans; anything else is ambiguous.
    """
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"y: expected a 1-D array of {n} labels, got {describe(y)}")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1} and not values <= {-1, 1}:
        raise ValueError(
            f"y: expected binary labels in {{0, 1}} or {{-1, 1}}, got values {sorted(values)[:5]}"
        )
    pos = (y == 1).astype(np.uint8)
    if pos.sum() == 0:
        raise ValueError(
            f"y: expected at least one positive label (1), got 0 positives among {n} labels"
        )
    return pos
