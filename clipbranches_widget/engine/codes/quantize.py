"""Per-dimension 8-bit quantisation learned from the data, and the reference's
global one.

Shared by every compressor (``Compressor``'s PCA coordinates, the learned
head's outputs): codes and queries of a catalogue are consistent as long as
the same ``(low, scale)`` pair, stored in its manifest, is used for both.

``code = clip(round((z - low) * scale), 0, 255)`` and back
``z ~= code / scale + low`` (the bin centre, so ranking stays affine per
dimension: see ``ranking.code_scores``).
"""

from __future__ import annotations

import numpy as np

from .._validation import check_codes

__all__ = [
    "GLOBAL_LOW",
    "GLOBAL_SCALE",
    "fit_per_dimension",
    "global_range",
    "quantize",
    "quantize_global",
    "dequantize",
]

# the reference maps a unit vector's coordinates with code = trunc(127.5 z + 128);
# the centre of bin c is (c + 0.5 - 128) / 127.5
GLOBAL_SCALE = 127.5
GLOBAL_LOW = (0.5 - 128.0) / 127.5


def fit_per_dimension(z, quantile: float = 0.001) -> tuple[np.ndarray, np.ndarray]:
    """``(low, scale)`` mapping each column's [q, 1 - q] quantile range onto 0..255.

    A numerically constant column gets width 1 centred on its value, so its
    codes sit mid-range instead of dividing by zero.
    """
    if not 0 <= quantile < 0.5:
        raise ValueError(f"quantile: expected a value in [0, 0.5), got {quantile}")
    z = np.asarray(z, np.float64)
    if z.ndim != 2 or z.shape[0] == 0:
        raise ValueError(f"z: expected a non-empty 2-D array, got shape {z.shape}")
    low = np.quantile(z, quantile, axis=0)
    high = np.quantile(z, 1 - quantile, axis=0)
    width = high - low
    flat = width <= 1e-6 * max(float(width.max()), 1e-30)  # numerically constant
    low[flat] -= 0.5  # constant dimension: its value lands mid-range
    width[flat] = 1.0
    return low.astype(np.float32), (255.0 / width).astype(np.float32)


def global_range(n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """``(low, scale)`` of the reference's global map, for dequantisation."""
    k = int(n_components)
    return np.full(k, GLOBAL_LOW, np.float32), np.full(k, GLOBAL_SCALE, np.float32)


def quantize(z, low, scale) -> np.ndarray:
    """Rounded, clipped uint8 codes of ``z`` (n, k)."""
    z = np.asarray(z, np.float32)
    return np.clip(np.rint((z - low) * scale), 0, 255).astype(np.uint8)


def quantize_global(z) -> np.ndarray:
    """The reference's codes: ``trunc(127.5 z + 128)`` for every dimension."""
    z = np.asarray(z, np.float32)
    return np.clip(np.floor(GLOBAL_SCALE * z + 128.0), 0, 255).astype(np.uint8)


def dequantize(codes, low, scale) -> np.ndarray:
    """Bin centres of uint8 ``codes`` as float32."""
    return codes.astype(np.float32) / scale + low


class CodesMixin:
    """``dequantize`` and ``transform`` of a compressor that has ``project``,
    ``quantize``, ``_check_fitted`` and the fitted ``low_``/``scale_``."""

    def dequantize(self, codes) -> np.ndarray:
        """(n, n_components) float32 coordinates of codes before quantisation (bin centres)."""
        self._check_fitted()
        codes = check_codes(codes, n_features=len(self.low_), allow_empty=True)
        return dequantize(codes, self.low_, self.scale_)

    def transform(self, X) -> np.ndarray:
        """(n, n_components) uint8 codes of embeddings."""
        return self.quantize(self.project(X))
