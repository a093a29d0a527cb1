"""From float embeddings to 8-bit codes: PCA to 32 dims, then per-dimension
quantisation that uses each dimension's full 0..255 range.

The reference quantises globally (``127.5 x + 128``, truncating), which leaves
most of the range of most dimensions unused. Here every dimension is mapped
from its robust range (quantiles ``q`` and ``1 - q``) onto 0..255 with
rounding and clipping.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError

from .._validation import check_embeddings
from . import quantize as q8

__all__ = ["Compressor", "identity_compressor"]


class Compressor(q8.CodesMixin, TransformerMixin, BaseEstimator):
    """PCA to ``n_components`` dims + per-dimension 8-bit quantisation.

    Parameters
    ----------
    n_components : int, default 32
        Code width. When the data has fewer samples or features than that, the
        missing components are zero (their codes are constant).
    quantile : float, default 0.001
        Each dimension's range is its [q, 1 - q] quantile interval; values
        outside are clipped to 0 or 255.
    max_fit_samples : int, default 200_000
        Fit on a random subsample of at most this many rows.
    random_state : int or None, default 0

    Attributes
    ----------
    mean_ : (d,) float32
    components_ : (n_components, d) float32
    low_, scale_ : (n_components,) float32: ``code = round((z - low_) * scale_)``
    n_features_in_ : int
    """

    def __init__(self, n_components=32, *, quantile=0.001, max_fit_samples=200_000, random_state=0):
        self.n_components = n_components
        self.quantile = quantile
        self.max_fit_samples = max_fit_samples
        self.random_state = random_state

    def fit(self, X, y=None):
        X = check_embeddings(X)
        if not 1 <= int(self.n_components) <= 255:
            raise ValueError(f"n_components: expected 1..255, got {self.n_components}")
        if not 0 <= self.quantile < 0.5:
            raise ValueError(f"quantile: expected a value in [0, 0.5), got {self.quantile}")
        n, d = X.shape
        rng = np.random.default_rng(self.random_state)
        if n > self.max_fit_samples:
            X = X[np.sort(rng.choice(n, self.max_fit_samples, replace=False))]
        X64 = X.astype(np.float64)
        self.mean_ = X64.mean(axis=0).astype(np.float32)
        Xc = X64 - self.mean_
        # eigen-decomposition of the d x d covariance: cheap for d ~ 512
        evals, evecs = np.linalg.eigh(Xc.T @ Xc)
        order = np.argsort(evals)[::-1]
        k = int(self.n_components)
        rank = min(k, d, max(1, X.shape[0] - 1))
        comps = np.zeros((k, d), np.float64)
        comps[:rank] = evecs[:, order[:rank]].T
        # sign convention: largest-magnitude loading positive (deterministic)
        signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
        signs[signs == 0] = 1
        self.components_ = (comps * signs[:, None]).astype(np.float32)
        self.explained_variance_ = np.zeros(k, np.float32)
        self.explained_variance_[:rank] = evals[order[:rank]] / max(1, X.shape[0] - 1)
        self.n_features_in_ = d
        self.low_, self.scale_ = q8.fit_per_dimension(self.project(X), self.quantile)
        return self

    def _check_fitted(self):
        if not hasattr(self, "components_"):
            raise NotFittedError("Compressor is not fitted yet: call fit(X) first")

    def project(self, X) -> np.ndarray:
        """(n, n_components) float32 PCA coordinates, before quantisation."""
        self._check_fitted()
        X = check_embeddings(X, n_features=self.n_features_in_, allow_empty=True)
        return (X - self.mean_) @ self.components_.T

    def quantize(self, z) -> np.ndarray:
        return q8.quantize(z, self.low_, self.scale_)

    def inverse_transform(self, codes) -> np.ndarray:
        """Approximate embeddings back from codes."""
        return self.dequantize(codes) @ self.components_ + self.mean_

    def to_dict(self) -> dict:
        self._check_fitted()
        return {
            "kind": "pca",
            "params": self.get_params(),
            "mean": self.mean_.tolist(),
            "components": self.components_.tolist(),
            "low": self.low_.tolist(),
            "scale": self.scale_.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Compressor:
        if data.get("kind") != "pca":
            raise ValueError(f"Compressor.from_dict: expected kind 'pca', got {data.get('kind')!r}")
        c = cls(**data["params"])
        c.mean_ = np.asarray(data["mean"], np.float32)
        c.components_ = np.asarray(data["components"], np.float32)
        c.low_ = np.asarray(data["low"], np.float32)
        c.scale_ = np.asarray(data["scale"], np.float32)
        c.n_features_in_ = c.mean_.shape[0]
        return c


def identity_compressor(d: int = 32) -> Compressor:
    """A compressor for ready-made codes: the codes are the data (dequantised = code value)."""
    return Compressor.from_dict(
        {
            "kind": "pca",
            "params": Compressor().get_params(),
            "mean": [0.0] * d,
            "components": np.eye(d).tolist(),
            "low": [0.0] * d,
            "scale": [1.0] * d,
        }
    )
