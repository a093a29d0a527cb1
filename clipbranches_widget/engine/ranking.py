"""Ranking of a refined result set: votes, then similarity, then id."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["code_scores", "rank"]


@njit(parallel=True, cache=True, nogil=True)
def _code_scores(codes, ids, low, inv_scale, ref, out):
    d = codes.shape[1]
    for r in prange(ids.shape[0]):
        i = ids[r]
        s = 0.0
        for j in range(d):
            s += (codes[i, j] * inv_scale[j] + low[j]) * ref[j]
        out[r] = s


def code_scores(codes, ids, compressor, reference) -> np.ndarray:
    """Similarity of items ``ids`` to ``reference`` (a point in code space).

    The dot product of the dequantised codes with the reference, which
    approximates the embeddings' inner product. Reads only 32 bytes per item.
    """
    out = np.empty(ids.shape[0], np.float32)
    if ids.shape[0]:
        _code_scores(codes, ids.astype(np.int64, copy=False),
                     compressor.low_.astype(np.float32),
                     (1.0 / compressor.scale_).astype(np.float32),
                     np.asarray(reference, np.float32), out)
    return out


def rank(ids, votes, scores) -> np.ndarray:
    """Order placing more votes first, then higher score, then lower id."""
    return np.lexsort((ids, -np.asarray(scores, np.float64), -np.asarray(votes, np.int64)))
