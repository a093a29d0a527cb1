"""A catalogue: the items, their 8-bit codes, and what is needed to query them."""

from __future__ import annotations

import logging

import numpy as np

from .compress import Compressor
from .scan import ScanResult, scan
from .seed import KnnSeeder
from .validation import check_codes, check_embeddings, describe

__all__ = ["Catalogue"]

log = logging.getLogger(__name__)


class Catalogue:
    """Items with codes (n, 32) uint8, optional float embeddings and URIs.

    Item ids are row positions 0..n-1. ``embedder`` (optional) turns text or
    images into embeddings of the same space; without one, queries are by
    vectors or by example items.
    """

    def __init__(self, codes, *, compressor: Compressor, embeddings=None, uris=None,
                 embedder=None, path=None):
        self.codes = check_codes(codes, name="codes")
        n = self.codes.shape[0]
        if embeddings is not None:
            if embeddings.dtype not in (np.float16, np.float32) or embeddings.ndim != 2 \
                    or embeddings.shape[0] != n:
                raise ValueError(f"embeddings: expected a float16/float32 array of shape "
                                 f"({n}, d), got {describe(embeddings)}")
        if uris is not None:
            uris = np.asarray(uris, dtype=object)
            if uris.shape != (n,):
                raise ValueError(f"uris: expected {n} URIs (one per item), got {uris.shape[0]}")
        self.embeddings = embeddings
        self.uris = uris
        self.compressor = compressor
        self.embedder = embedder
        self.path = path
        self.index = None  # a BoxIndex, when one is built for this catalogue
        self._seeder = None

    @classmethod
    def from_embeddings(cls, X, uris=None, *, compressor=None, keep_embeddings=True,
                        embedder=None) -> "Catalogue":
        """Compress ``X`` (n, d) float embeddings into a catalogue.

        ``compressor``: a fitted or unfitted ``Compressor`` (default: PCA to 32
        dims, fitted on X). ``keep_embeddings=False`` keeps only the codes;
        k-NN then runs on the decoded codes.
        """
        X = check_embeddings(X)
        compressor = Compressor() if compressor is None else compressor
        if not hasattr(compressor, "components_"):
            compressor.fit(X)
        codes = compressor.transform(X)
        return cls(codes, compressor=compressor, embeddings=X if keep_embeddings else None,
                   uris=uris, embedder=embedder)

    def __len__(self) -> int:
        return self.codes.shape[0]

    def __repr__(self) -> str:
        return (f"Catalogue(n_items={len(self)}, code_dims={self.codes.shape[1]}, "
                f"embeddings={'yes' if self.embeddings is not None else 'no'})")

    @property
    def n_features(self) -> int:
        """Dimension of the float embedding space."""
        return self.compressor.n_features_in_

    @property
    def seeder(self) -> KnnSeeder:
        if self._seeder is None:
            X = (np.asarray(self.embeddings, np.float32) if self.embeddings is not None
                 else self.compressor.inverse_transform(self.codes))
            self._seeder = KnnSeeder().fit(X)
        return self._seeder

    def vector(self, ids) -> np.ndarray:
        """Embeddings of items (decoded from codes when none are kept)."""
        ids = self.check_ids(ids)
        if self.embeddings is not None:
            return np.asarray(self.embeddings[ids], np.float32)
        return self.compressor.inverse_transform(self.codes[ids])

    def embed_text(self, texts) -> np.ndarray:
        if self.embedder is None:
            raise ValueError("this catalogue has no text encoder: search by a vector or by "
                             "example ids, or build it with a CLIP model (Catalogue.build)")
        return self.embedder.embed_text(list(texts))

    def check_ids(self, ids) -> np.ndarray:
        ids = np.atleast_1d(np.asarray(ids))
        if ids.dtype.kind not in "iu":
            raise TypeError(f"ids: expected integer item ids, got {describe(ids)}")
        n = len(self)
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            bad = ids[(ids < 0) | (ids >= n)][0]
            raise IndexError(f"ids: expected ids in 0..{n - 1}, got {int(bad)}")
        return ids.astype(np.int64)

    def uri(self, i: int) -> str | None:
        return None if self.uris is None else str(self.uris[i])

    def search_boxes(self, boxes, *, n_jobs=None) -> ScanResult:
        """All items in at least one box, with votes (index when built, else scan)."""
        if self.index is not None:
            return self.index.search(boxes)
        return scan(self.codes, boxes, n_jobs=n_jobs)

    def to_parquet(self, path, **kwargs):
        """Write the catalogue as Parquet (``id``, ``uri``, ``c0`` .. ``c31``): the
        layout ``Boxes.to_sql`` queries. See ``engine.parquet.write_parquet``."""
        from .parquet import write_parquet
        return write_parquet(self, path, **kwargs)
