"""A catalogue: the items, their 8-bit codes, and what is needed to query them.

Built from images (``Catalogue.build``), from precomputed embeddings
(``from_embeddings``, ``from_clip_retrieval``) or opened from disk
(``Catalogue.open``: memory-mapped, no full read). The on-disk format is
described in ``format.py``; building, appending and merging live in
``build.py`` / ``append.py`` (functions that write a folder), opening and
saving in ``catalogue_disk.py``, the query side (identity, seeder, box
search: the searcher chooses index or scan) in ``catalogue_search.py``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np

from .._validation import check_codes, check_embeddings, describe
from ..codes.registry import is_fitted, make_compressor
from ..search.searcher import Searcher
from . import append as appending
from . import format as storage
from .build import build_catalogue
from .catalogue_disk import DiskMixin
from .catalogue_search import SearchMixin
from .embed import ClipEmbedder
from .lock import output_lock
from .readers import clip_retrieval_items, embedder_spec_of

__all__ = ["Catalogue"]

log = logging.getLogger(__name__)


class Catalogue(SearchMixin, DiskMixin):
    """Items with codes (n, 32) uint8, optional float embeddings and URIs.

    Item ids are row positions 0..n-1 (appends add rows at the end, so ids
    never change). ``embedder`` (optional) turns text or images into
    embeddings of the same space; without one, queries are by vectors or by
    example items. A catalogue opened from disk creates its embedder on first
    use from the manifest's model and pretrained weights (``embedder_spec``).
    """

    def __init__(
        self,
        codes,
        *,
        compressor,
        embeddings=None,
        uris=None,
        embedder=None,
        path=None,
        embedder_spec: dict | None = None,
        manifest: dict | None = None,
    ):
        self.codes = check_codes(codes, name="codes")
        n = self.codes.shape[0]
        if embeddings is not None:
            if (
                embeddings.dtype not in (np.float16, np.float32)
                or embeddings.ndim != 2
                or embeddings.shape[0] != n
            ):
                raise ValueError(
                    f"embeddings: expected a float16/float32 array of shape "
                    f"({n}, d), got {describe(embeddings)}"
                )
        if uris is not None and not isinstance(uris, storage.UriColumn):
            uris = _check_uris(uris, n)  # memory-mapped URIs stay lazy
        if uris is not None and len(uris) != n:
            raise ValueError(f"uris: expected {n} URIs (one per item), got {len(uris)}")
        self.embeddings = embeddings
        self.uris = uris
        self.compressor = compressor
        self._embedder = embedder
        self.embedder_spec = embedder_spec if embedder is None else getattr(embedder, "spec", None)
        self.path = None if path is None else Path(path)
        self.manifest = manifest
        self.metadata = None  # a DataFrame of per-item metadata, when a reader provides one
        # what the last build of this catalogue did (images, items, failed, seconds,
        # images_per_s, resumed, timings); None when not built in this process
        self.build_summary = None
        self._searcher = Searcher(self.codes)
        self._seeder = None
        self._uuid = self._fingerprint = None  # see identity

    # --- the text/image encoder ---
    @property
    def embedder(self):
        """The text/image encoder, created on first use from ``embedder_spec``.

        None when the catalogue has neither (e.g. precomputed embeddings).
        Creating it imports torch and loads the weights; errors say what to do.
        """
        if self._embedder is None and self.embedder_spec is not None:
            log.info("loading the catalogue's CLIP model %s", self.embedder_spec)
            self._embedder = ClipEmbedder.from_spec(self.embedder_spec)
        return self._embedder

    @embedder.setter
    def embedder(self, value):
        self._embedder = value
        self.embedder_spec = getattr(value, "spec", None) if value is not None else None

    @property
    def has_embedder(self) -> bool:
        """Whether text/image queries are possible, without loading the model."""
        return self._embedder is not None or self.embedder_spec is not None

    @classmethod
    def from_embeddings(
        cls, X, uris=None, *, compressor=None, keep_embeddings=True, embedder=None
    ) -> Catalogue:
        """Compress ``X`` (n, d) float embeddings into a catalogue.

        ``compressor``: a fitted or unfitted ``Compressor`` (default: PCA to 32
        dims, fitted on X), or a spec as in ``build``. ``keep_embeddings=False``
        keeps only the codes; k-NN then runs on the decoded codes.
        """
        X = check_embeddings(X)
        compressor = make_compressor(compressor)
        if not is_fitted(compressor):
            compressor.fit(X)
        codes = compressor.transform(X)
        return cls(
            codes,
            compressor=compressor,
            embeddings=X if keep_embeddings else None,
            uris=uris,
            embedder=embedder,
        )

    def __len__(self) -> int:
        return self.codes.shape[0]

    def __repr__(self) -> str:
        return (
            f"Catalogue(n_items={len(self)}, code_dims={self.codes.shape[1]}, "
            f"embeddings={'yes' if self.embeddings is not None else 'no'})"
        )

    @property
    def n_features(self) -> int:
        """Dimension of the float embedding space."""
        return self.compressor.n_features_in_

    def embed_text(self, texts) -> np.ndarray:
        if self.embedder is None:
            raise ValueError(
                "this catalogue has no text encoder: search by a vector or by "
                "example ids, or build it with a CLIP model (Catalogue.build)"
            )
        return self.embedder.embed_text(list(texts))

    def embed_images(self, images) -> np.ndarray:
        """(n, d) embeddings of images (paths, URLs, PIL images) for query-by-image."""
        if self.embedder is None:
            raise ValueError(
                "this catalogue has no image encoder: search by example ids, or "
                "build it with a CLIP model (Catalogue.build)"
            )
        return self.embedder.embed_images(images)

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

    @classmethod
    def build(cls, source, *, out=None, embedder=None, **kwargs) -> Catalogue:
        """Embed images with CLIP, compress them and store the catalogue in ``out``.

        ``source``: a folder (recursive), a list of paths/URLs, or a table
        (DataFrame or .csv/.parquet file) with a path column. ``out``: the
        catalogue directory (default for a folder: ``<folder>/.clipbranches``).
        Unreadable images are skipped and listed (``cat.failed``). A killed
        build resumes when run again with the same arguments; ``out`` only
        ever holds a complete catalogue, and one build at a time writes it (a
        second waits for the first). Already built with the same model: it is
        opened, not rebuilt (``overwrite=True`` rebuilds).

        Keywords: ``model="ViT-B-32"``, ``pretrained="laion2b_s34b_b79k"``,
        ``compressor`` ("pca" (default), "global", "learned" (needs torch), a
        JSON file from ``save_compressor``, or a compressor; the manifest
        records which), ``batch_size=64``, ``num_workers``, ``chunk_size``
        (default 32 batches), ``keep_embeddings=True``, ``path_column``,
        ``progress=True``, ``overwrite=False``, ``embedder``, ``device="cpu"``,
        ``callback(n_done, n_total)`` (after every batch).
        """
        out, embedder, summary = build_catalogue(source, out=out, embedder=embedder, **kwargs)
        cat = cls.open(out, embedder=embedder)
        cat.build_summary = summary
        return cat

    def append(
        self,
        source=None,
        *,
        embeddings=None,
        uris=None,
        batch_size: int = 64,
        chunk_size: int | None = None,
        path_column: str | None = None,
        skip_existing: bool = True,
        progress: bool = True,
        callback=None,
    ) -> int:
        """Add items at the end; returns how many were added.

        Either ``source`` (images, as in ``build``; with ``skip_existing``
        only URIs not yet in the catalogue) or precomputed ``embeddings``
        (with ``uris`` when the catalogue has URIs). The compressor is not
        refitted: codes of existing items never change. On disk the append is
        committed by the manifest, and an interrupted image append resumes.
        """
        if (source is None) == (embeddings is None):
            raise ValueError(
                "append: expected either source (images) or embeddings, got "
                + ("both" if source is not None else "neither")
            )
        with output_lock(self.path) if self.path is not None else _no_lock():
            if self.path is not None:
                # decide under the lock: another process may have appended since
                # this catalogue was opened (its items are then not new)
                fresh = appending.reopen_parts(self)
                if fresh is not None:
                    self._adopt(fresh)
            if embeddings is not None:
                added = self._add(appending.embedding_blocks(self, embeddings, uris))
            else:
                if self.embedder is None:
                    raise ValueError(
                        "append: this catalogue has no image encoder; pass embeddings="
                    )
                new = appending.new_images(
                    self, source, path_column=path_column, skip_existing=skip_existing
                )
                if not new:
                    log.info("append: no new images")
                    appending.remove_append_work(self)  # nothing is left to resume
                    return 0
                with appending.image_blocks(
                    self,
                    new,
                    batch_size=batch_size,
                    chunk_size=chunk_size,
                    progress=progress,
                    callback=callback,
                ) as blocks:
                    added = self._add(blocks)
        log.info("appended %d items (now %d)", added, len(self))
        return added

    def _add(self, blocks) -> int:
        added, parts = appending.append_blocks(self, blocks)
        if parts is None:  # written on disk: reopen
            parts = appending.reopen_parts(self)
        if parts is not None:
            self._adopt(parts)
        return added

    def _adopt(self, parts: dict) -> None:
        """Take new ``codes``/``embeddings``/``uris`` (and ``manifest``) rows."""
        self.manifest = parts.get("manifest", self.manifest)
        self.codes = parts["codes"]
        self.embeddings = parts.get("embeddings", self.embeddings)
        self.uris = parts.get("uris", self.uris)
        self._seeder = None
        self._fingerprint = None  # same catalogue (uuid), new content
        if self._searcher.index is not None:
            log.warning(
                "append: the box index covers the old items only; it was dropped "
                "(searches scan until it is rebuilt)"
            )
        self._searcher = Searcher(self.codes)

    @classmethod
    def from_clip_retrieval(
        cls,
        folder,
        *,
        uri_column: str | None = None,
        compressor=None,
        keep_embeddings: bool = True,
        model: str | None = None,
        pretrained: str | None = None,
    ) -> Catalogue:
        """A catalogue from clip-retrieval output (``img_emb/*.npy`` + ``metadata/*.parquet``).

        No torch needed. ``model``/``pretrained``: the CLIP model that made the
        embeddings, to enable text queries (loaded on first use).
        """
        X, uris, meta = clip_retrieval_items(folder, uri_column=uri_column)
        cat = cls.from_embeddings(
            X, uris=uris, compressor=compressor, keep_embeddings=keep_embeddings
        )
        cat.embedder_spec = embedder_spec_of(model, pretrained)
        cat.metadata = meta
        return cat


def _no_lock():
    return contextlib.nullcontext()


def _check_uris(uris, n: int) -> np.ndarray:
    """In-memory URIs as a 1-D object array of str (None: missing, stored as "")."""
    if isinstance(uris, (str, bytes)):
        raise TypeError(
            f"uris: expected a sequence of {n} URIs (one per item), got one "
            f"{type(uris).__name__}; wrap it in a list"
        )
    if not isinstance(uris, np.ndarray):
        uris = [os.fspath(u) if isinstance(u, os.PathLike) else u for u in uris]
    uris = np.asarray(uris, dtype=object)
    if uris.ndim != 1:
        raise ValueError(f"uris: expected a 1-D sequence of {n} URIs, got shape {uris.shape}")
    for i, u in enumerate(uris.tolist()):
        if u is not None and not isinstance(u, str):
            raise TypeError(
                f"uris: expected strings or paths (None for a missing one), got "
                f"{type(u).__name__} {u!r:.60} at position {i}"
            )
    return uris
