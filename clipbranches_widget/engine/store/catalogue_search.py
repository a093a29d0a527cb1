"""The query side of a ``Catalogue``: its identity, the k-NN seeder and the
whole-catalogue search, which a ``search.searcher.Searcher`` answers by index
or scan. A mixin, so the class in ``catalogue.py`` stays readable whole.
"""

from __future__ import annotations

import uuid

import numpy as np

from ..search.index import BoxIndex
from ..search.result import ScanResult
from ..search.searcher import Searcher
from ..search.seed import KnnSeeder
from ..sql.parquet import write_parquet
from ..subsets import REFINE_SIZES, default_feature_subsets

__all__ = ["SearchMixin"]


class SearchMixin:
    """Seeding, identity and box search of a catalogue (``Catalogue`` sets
    ``codes``, ``embeddings``, ``compressor``, ``manifest``, ``_searcher``,
    ``_seeder``, ``_uuid`` and ``_fingerprint``)."""

    @property
    def seeder(self) -> KnnSeeder:
        if self._seeder is None:
            X = (
                np.asarray(self.embeddings, np.float32)
                if self.embeddings is not None
                else self.compressor.inverse_transform(self.codes)
            )
            self._seeder = KnnSeeder().fit(X)
        return self._seeder

    def vector(self, ids) -> np.ndarray:
        """Embeddings of items (decoded from codes when none are kept)."""
        ids = self.check_ids(ids)
        if self.embeddings is not None:
            return np.asarray(self.embeddings[ids], np.float32)
        return self.compressor.inverse_transform(self.codes[ids])

    @property
    def identity(self) -> dict:
        """``{"uuid", "fingerprint"}``: which catalogue this is (kept by appends) and
        a hash of every code row. Sessions and indexes check it; stored in the manifest."""
        stored = (self.manifest or {}).get("identity") or {}
        if self._uuid is None:
            self._uuid = stored.get("uuid") or uuid.uuid4().hex
        if self._fingerprint is None:
            # the searcher's digest: one hash serves identity and index checks
            self._fingerprint = stored.get("fingerprint") or self._searcher.fingerprint
        return {"uuid": self._uuid, "fingerprint": self._fingerprint}

    def _use_verified_fingerprint(self, digest: str) -> None:
        """The codes were just hashed and match ``digest`` (checked at open)."""
        self._searcher = Searcher(self.codes, fingerprint=digest)

    # --- whole-catalogue search: the searcher chooses index or scan ---
    @property
    def searcher(self) -> Searcher:
        return self._searcher

    @property
    def index(self):
        """The ``BoxIndex`` searches use, or None (set it with ``use_index``)."""
        return self._searcher.index

    def use_index(self, index) -> None:
        """Search through ``index`` (it must be built on exactly these codes)."""
        self._searcher.use_index(index)

    def build_index(self, path=None, **kwargs) -> BoxIndex:
        """Build (or reopen) the box index of this catalogue and search through it.

        ``path`` and ``kwargs`` as in ``BoxIndex.build`` (default path:
        ``<catalogue>/index`` on disk, in memory otherwise). The default
        ``subsets`` are those a ``Session`` refines with (``REFINE_SIZES``:
        104 of 8 dims), so a refine goes through the index; pass
        ``subsets=default_feature_subsets(d)`` for models of the
        classifier's own default (the paper's subsets)."""
        kwargs.setdefault("subsets", default_feature_subsets(self.codes.shape[1], REFINE_SIZES))
        index = BoxIndex.build(self, path, **kwargs)
        self.use_index(index)
        return index

    def search_boxes(self, boxes, *, n_jobs=None) -> ScanResult:
        """All items in at least one box, with votes (index when used, else scan)."""
        return self._searcher.search(boxes, n_jobs=n_jobs)

    def to_parquet(self, path, **kwargs):
        """Write the catalogue as Parquet (``id``, ``uri``, ``c0`` .. ``c31``): the
        layout ``Boxes.to_sql`` queries. See ``engine.sql.parquet.write_parquet``."""
        return write_parquet(self, path, **kwargs)
