"""Choosing and restoring a compressor: the one place that maps a kind to a class.

A new compressor is added here: its class (with fit/project/quantize/
dequantize/transform/inverse_transform and to_dict/from_dict whose dict has a
"kind") goes into ``KINDS``. Catalogue manifests and ``save_compressor`` files
store ``to_dict()``; ``compressor_from_dict`` dispatches on its "kind".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .._atomic import write_text
from .global_quantizer import GlobalQuantizer
from .learned import LearnedCompressor  # numpy at import; torch only inside fit
from .pca import Compressor

__all__ = [
    "KINDS",
    "compressor_from_dict",
    "is_fitted",
    "load_compressor",
    "make_compressor",
    "save_compressor",
]

KINDS = {"pca": Compressor, "global": GlobalQuantizer, "learned": LearnedCompressor}


def is_fitted(compressor) -> bool:
    """Whether ``compressor`` can transform (works for every kind)."""
    return hasattr(compressor, "low_") and hasattr(compressor, "scale_")


def make_compressor(spec=None, *, n_components: int = 32, random_state=0):
    """A compressor from a spec, unfitted unless it is a file or an instance.

    ``spec``: "pca" (default, also None), "global" (the reference's
    ``GlobalQuantizer``), "learned" (the learned head, needs torch to fit), a
    path to a JSON file written by ``save_compressor`` (a fitted compressor,
    reused as is), or an estimator instance (returned as is).
    """
    if spec is None:
        spec = "pca"
    if isinstance(spec, str) and spec in KINDS:
        return KINDS[spec](n_components=n_components, random_state=random_state)
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if not path.is_file():
            raise ValueError(
                f"compressor: expected 'pca' or a Compressor (or 'global', 'learned', or a "
                f"JSON file from save_compressor), got {os.fspath(spec)!r}: "
                "not a known kind, and no such file"
            )
        return load_compressor(path)
    if not hasattr(spec, "transform") or not hasattr(spec, "to_dict"):
        raise TypeError(
            f"compressor: expected 'pca' or a Compressor (or 'global', 'learned', or a "
            f"path), got {type(spec).__name__}"
        )
    return spec


def compressor_from_dict(data: dict):
    """A fitted compressor from its ``to_dict`` form (a manifest's ``compressor``)."""
    if not isinstance(data, dict):
        raise TypeError(f"compressor: expected a dict from to_dict(), got {type(data).__name__}")
    kind = data.get("kind")
    if kind not in KINDS:
        raise ValueError(
            f"compressor: unknown kind {kind!r} in the manifest; this library reads "
            f"{', '.join(map(repr, KINDS))} (a newer clipbranches-widget may read it)"
        )
    _check_fields(kind, data)
    try:
        compressor = KINDS[kind].from_dict(data)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ValueError(
            f"compressor: expected the to_dict() of a fitted {kind!r} compressor, got a "
            f"malformed one ({type(exc).__name__}: {exc})"
        ) from None
    _check_shapes(compressor)
    return compressor


# the plain array fields of each kind's dict, with their number of dimensions
# ("learned" packs its arrays and checks them in its from_dict)
_ARRAY_FIELDS = {
    "pca": {"mean": 1, "components": 2, "low": 1, "scale": 1},
    "global": {"mean": 1, "components": 2},
}


def _check_fields(kind: str, data: dict) -> None:
    for name, ndim in _ARRAY_FIELDS.get(kind, {}).items():
        value = data.get(name)
        try:
            a = np.asarray(value, np.float64)
        except (TypeError, ValueError):
            a = None
        if a is None or a.ndim != ndim or a.size == 0 or not np.isfinite(a).all():
            shown = "missing" if name not in data else f"{value!r:.40}"
            raise ValueError(
                f"compressor.{name}: expected a {ndim}-d array of finite numbers, got {shown}"
            )


def _check_shapes(c) -> None:
    """The restored arrays agree: mean (d,), components (k, d), low and scale (k,)."""
    k = c.n_components
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= 255:
        raise ValueError(f"compressor.params.n_components: expected 1..255, got {k!r}")
    mean = np.asarray(c.mean_)
    comps = getattr(c, "components_", None)
    if mean.ndim != 1 or mean.shape[0] < 1:
        raise ValueError(f"compressor.mean: expected a 1-d array, got shape {mean.shape}")
    d = mean.shape[0]
    if comps is not None:
        comps = np.asarray(comps)
        if comps.ndim == 2 and comps.shape[1] != d:
            raise ValueError(
                f"compressor.mean: expected {comps.shape[1]} numbers (one per column of "
                f"compressor.components), got {d}"
            )
        if comps.shape != (k, d):
            raise ValueError(
                f"compressor.components: expected shape ({k}, {d}) (n_components x "
                f"features), got {comps.shape}"
            )
    for name in ("low", "scale"):
        a = np.asarray(getattr(c, f"{name}_"))
        if a.shape != (k,) or not np.isfinite(a).all():
            raise ValueError(
                f"compressor.{name}: expected {k} finite numbers (one per code dimension), "
                f"got shape {a.shape}"
            )


def save_compressor(compressor, path) -> None:
    """Write a fitted compressor's ``to_dict`` as JSON (reusable with ``make_compressor``)."""
    write_text(Path(path), json.dumps(compressor.to_dict()))


def load_compressor(path):
    """A fitted compressor from a JSON file written by ``save_compressor``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"compressor: {str(path)!r} is not a compressor JSON file "
            f"(save_compressor writes one): {exc}"
        ) from exc
    return compressor_from_dict(data)
