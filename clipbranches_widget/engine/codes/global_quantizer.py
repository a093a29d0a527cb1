"""The reference's codes, kept for comparison: one global 8-bit map for every
dimension (``code = trunc(127.5 z + 128)``) of L2-normalised PCA coordinates."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError

from .._validation import check_codes, check_embeddings
from . import quantize as q8
from .pca import Compressor

__all__ = ["GlobalQuantizer"]


def _unit_rows(X) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


class GlobalQuantizer(TransformerMixin, BaseEstimator):
    """The reference's codes: PCA-32 of L2-normalised embeddings, each 32-d
    vector L2-normalised (like the reference head's output), then one global
    map ``code = trunc(127.5 z + 128)`` for every dimension.

    Same interface as ``Compressor`` (project/quantize/dequantize/transform/
    inverse_transform, to_dict/from_dict, ``low_``/``scale_``), so a
    ``Catalogue`` and ``Session`` run on its codes unchanged.
    """

    def __init__(self, n_components=32, *, random_state=0):
        self.n_components = n_components
        self.random_state = random_state

    def fit(self, X, y=None):
        X = _unit_rows(check_embeddings(X))
        pca = Compressor(self.n_components, random_state=self.random_state).fit(X)
        self.mean_, self.components_ = pca.mean_, pca.components_
        self.n_features_in_ = X.shape[1]
        # dequantised value = bin centre of the truncation
        self.low_, self.scale_ = q8.global_range(self.n_components)
        return self

    def _check_fitted(self):
        if not hasattr(self, "components_"):
            raise NotFittedError("GlobalQuantizer is not fitted yet: call fit(X) first")

    def project(self, X) -> np.ndarray:
        self._check_fitted()
        X = _unit_rows(check_embeddings(X, n_features=self.n_features_in_, allow_empty=True))
        return _unit_rows((X - self.mean_) @ self.components_.T).astype(np.float32)

    def quantize(self, z) -> np.ndarray:
        return q8.quantize_global(z)

    def dequantize(self, codes) -> np.ndarray:
        codes = check_codes(codes, n_features=int(self.n_components), allow_empty=True)
        return codes.astype(np.float32) / self.scale_ + self.low_

    def transform(self, X) -> np.ndarray:
        return self.quantize(self.project(X))

    def inverse_transform(self, codes) -> np.ndarray:
        return self.dequantize(codes) @ self.components_ + self.mean_

    def to_dict(self) -> dict:
        self._check_fitted()
        return {
            "kind": "global",
            "params": self.get_params(),
            "mean": self.mean_.tolist(),
            "components": self.components_.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> GlobalQuantizer:
        if data.get("kind") != "global":
            raise ValueError(
                f"GlobalQuantizer.from_dict: expected kind 'global', got {data.get('kind')!r}"
            )
        q = cls(**data["params"])
        q.mean_ = np.asarray(data["mean"], np.float32)
        q.components_ = np.asarray(data["components"], np.float32)
        q.n_features_in_ = q.mean_.shape[0]
        q.low_, q.scale_ = q8.global_range(q.n_components)
        return q
