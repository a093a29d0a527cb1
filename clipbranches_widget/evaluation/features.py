"""Hand-made image features for data sets without CLIP weights offline.

HOG of the grey image (local shape) and an HSV colour histogram (global
colour), each Hellinger-mapped and L2-normalised. scikit-image is optional
(the ``bench`` extra), so it is imported only when features are computed.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["image_features"]


def _hog():
    try:
        from skimage.feature import hog
    except ImportError as exc:  # optional: only the CIFAR-10 set needs it
        raise ImportError(
            "image features need scikit-image: pip install 'clipbranches-widget[bench]'"
        ) from exc
    return hog


def image_features(paths) -> np.ndarray:
    """(n, 1892) float32 HOG + colour-histogram features of small images."""
    hog = _hog()
    rows = []
    for p in paths:
        with Image.open(p) as im:
            rgb = im.convert("RGB").resize((32, 32))
            grey = np.asarray(rgb.convert("L"), np.float32) / 255.0
            hsv = np.asarray(rgb.convert("HSV"))
        h = hog(
            grey,
            orientations=9,
            pixels_per_cell=(4, 4),
            cells_per_block=(2, 2),
            block_norm="L2-Hys",
            feature_vector=True,
        )
        bins = (
            (hsv[..., 0].astype(np.int64) * 8 // 256) * 16
            + (hsv[..., 1].astype(np.int64) * 4 // 256) * 4
            + hsv[..., 2].astype(np.int64) * 4 // 256
        )
        col = np.bincount(bins.ravel(), minlength=128).astype(np.float32)
        parts = []
        for v, wgt in ((h, 0.8), (col, 0.6)):
            v = np.sqrt(np.maximum(v, 0))
            parts.append(wgt * v / max(np.linalg.norm(v), 1e-12))
        rows.append(np.concatenate(parts))
    X = np.asarray(rows, np.float32)
    return X - X.mean(axis=0)
