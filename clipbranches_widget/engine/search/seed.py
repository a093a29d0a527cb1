"""k-nearest-neighbour seeding of a search (faiss, exact inner product)."""

from __future__ import annotations

import faiss
import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from .._validation import check_embeddings, check_positive_int

__all__ = ["KnnSeeder"]


class KnnSeeder(BaseEstimator):
    """Exact inner-product k-NN over float embeddings (cosine on L2-normalised).

    ``search(q, k) -> (scores, ids)`` as in faiss: scores first, int64 ids,
    and -1 (with score -inf) where fewer than k items exist.
    """

    def __init__(self, *, n_jobs=None):
        self.n_jobs = n_jobs

    def fit(self, X, y=None):
        X = check_embeddings(X)
        self.index_ = faiss.IndexFlatIP(X.shape[1])
        self.index_.add(X)
        self.n_features_in_ = X.shape[1]
        return self

    def search(self, q, k: int):
        if not hasattr(self, "index_"):
            raise NotFittedError("KnnSeeder is not fitted yet: call fit(X) first")
        k = check_positive_int("k", k)
        q = np.asarray(q)
        single = q.ndim == 1
        q = check_embeddings(q[None, :] if single else q, n_features=self.n_features_in_, name="q")
        if self.n_jobs is not None:
            faiss.omp_set_num_threads(max(1, int(self.n_jobs)))
        scores, ids = self.index_.search(q, int(k))
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        ids = ids.astype(np.int64)
        return (scores[0], ids[0]) if single else (scores, ids)
