"""Ranking of a refined result set: votes, then similarity, then id."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._parallel import PARALLEL

__all__ = ["code_scores", "rank"]


@njit(**PARALLEL)
def _code_scores(codes, ids, weight, offset, out):
    # dequantisation is affine per dimension, so the dot product with the
    # reference is sum_j code_j * weight_j + offset
    d = codes.shape[1]
    for r in prange(ids.shape[0]):
        i = ids[r]
        s = offset
        for j in range(d):
            s += codes[i, j] * weight[j]
        out[r] = s


def code_scores(codes, ids, compressor, reference) -> np.ndarray:
    """Similarity of items ``ids`` to ``reference`` (a point in code space).

    The dot product of the dequantised codes with the reference, which
    approximates the embeddings' inner product. Reads only 32 bytes per item.
    """
    out = np.empty(ids.shape[0], np.float32)
    if ids.shape[0]:
        ref = np.asarray(reference, np.float64)
        weight = (ref / compressor.scale_).astype(np.float32)
        offset = np.float32(np.dot(compressor.low_.astype(np.float64), ref))
        _code_scores(codes, ids.astype(np.int64, copy=False), weight, offset, out)
    return out


def rank(ids, votes, scores) -> np.ndarray:
    """Order placing more votes first, then higher score, then lower id."""
    return np.lexsort((ids, -np.asarray(scores, np.float64), -np.asarray(votes, np.int64)))
