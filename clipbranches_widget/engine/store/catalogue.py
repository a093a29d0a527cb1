"""A catalogue: the items, their 8-bit codes, and what is needed to query them.

Built from images (``Catalogue.build``), from precomputed embeddings
(``from_embeddings``, ``from_clip_retrieval``) or opened from disk
(``Catalogue.open``: memory-mapped, no full read). The on-disk format is
described in ``storage.py``.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

from .._validation import check_codes, check_embeddings, describe
from ..codes.pca import Compressor, is_fitted, make_compressor
from ..codes.pca import compressor_from_dict as _compressor_from_dict
from ..search.scan import ScanResult, scan
from ..search.seed import KnnSeeder
from . import format as storage

__all__ = ["Catalogue"]

log = logging.getLogger(__name__)


class Catalogue:
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
        compressor: Compressor,
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
        if uris is not None:
            if not isinstance(uris, storage.UriColumn):  # memory-mapped URIs stay lazy
                uris = np.asarray(
                    [os.fspath(u) if isinstance(u, os.PathLike) else u for u in uris]
                    if not isinstance(uris, np.ndarray)
                    else uris,
                    dtype=object,
                )
                if uris.ndim != 1:
                    raise ValueError(
                        f"uris: expected a 1-D sequence of {n} URIs, got shape {uris.shape}"
                    )
            if len(uris) != n:
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
        self.index = None  # a BoxIndex, when one is built for this catalogue
        self._seeder = None

    # --- the text/image encoder ---
    @property
    def embedder(self):
        """The text/image encoder, created on first use from ``embedder_spec``.

        None when the catalogue has neither (e.g. precomputed embeddings).
        Creating it imports torch and loads the weights; errors say what to do.
        """
        if self._embedder is None and self.embedder_spec is not None:
            from .embed import ClipEmbedder

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

    def search_boxes(self, boxes, *, n_jobs=None) -> ScanResult:
        """All items in at least one box, with votes (index when built, else scan)."""
        if self.index is not None:
            return self.index.search(boxes, n_jobs=n_jobs)
        return scan(self.codes, boxes, n_jobs=n_jobs)

    def to_parquet(self, path, **kwargs):
        """Write the catalogue as Parquet (``id``, ``uri``, ``c0`` .. ``c31``): the
        layout ``Boxes.to_sql`` queries. See ``engine.parquet.write_parquet``."""
        from ..sql.parquet import write_parquet

        return write_parquet(self, path, **kwargs)

    # --- on disk ---
    @classmethod
    def open(cls, path, *, embedder=None) -> Catalogue:
        """Open a catalogue directory: memory maps and the manifest, nothing read in full.

        ``embedder``: use this encoder instead of creating one from the
        manifest's model on first use.
        """
        path = Path(path)
        manifest = storage.read_manifest(path)
        n = int(manifest["counts"]["items"])
        dims = manifest["dims"]
        files = manifest["files"]
        codes = storage.open_rows(path / files["codes"], np.uint8, (n, int(dims["code"])))
        embeddings = (
            storage.open_rows(path / files["embeddings"], np.float16, (n, int(dims["embedding"])))
            if files.get("embeddings")
            else None
        )
        uris = (
            storage.open_uris(path, n, int(manifest["counts"]["uri_bytes"]))
            if files.get("uris")
            else None
        )
        compressor = compressor_from_dict(manifest["compressor"])
        return cls(
            codes,
            compressor=compressor,
            embeddings=embeddings,
            uris=uris,
            embedder=embedder,
            path=path,
            manifest=manifest,
            embedder_spec=manifest.get("embedder"),
        )

    def save(self, path, *, overwrite: bool = False, block_rows: int = 1 << 20) -> Catalogue:
        """Write this catalogue to a directory (atomically) and return it opened from there."""
        path = Path(path)
        if path.exists() and not overwrite and (any(path.iterdir()) if path.is_dir() else True):
            raise FileExistsError(
                f"path: {str(path)!r} exists; pass overwrite=True to replace a catalogue there"
            )
        _write_rows([self], path, "saving", overwrite=overwrite, block_rows=block_rows)
        return type(self).open(path, embedder=self._embedder)

    @property
    def failed(self) -> list[dict]:
        """Inputs the build could not read: ``[{"uri": ..., "reason": ...}]``."""
        if self.path is None or self.manifest is None:
            return []
        return storage.read_failed(self.path)[: int(self.manifest["counts"].get("failed", 0))]

    @classmethod
    def build(
        cls,
        source,
        *,
        model: str = "ViT-B-32",
        pretrained: str | None = "laion2b_s34b_b79k",
        out=None,
        compressor="pca",
        batch_size: int = 64,
        num_workers: int | None = None,
        chunk_size: int | None = None,
        keep_embeddings: bool = True,
        path_column: str | None = None,
        progress: bool = True,
        overwrite: bool = False,
        embedder=None,
        device: str = "cpu",
        callback=None,
    ) -> Catalogue:
        """Embed images with CLIP, compress them and store the catalogue in ``out``.

        ``source``: a folder (recursive), a list of paths/URLs, or a table
        (DataFrame or .csv/.parquet file) with a path column. ``out``: the
        catalogue directory (default for a folder: ``<folder>/.clipbranches``).
        Unreadable images are skipped and listed (``cat.failed``). A killed
        build resumes when run again with the same arguments; ``out`` only
        ever holds a complete catalogue. Already built with the same model:
        it is opened, not rebuilt (``overwrite=True`` rebuilds).
        ``callback(n_done, n_total)`` runs after every batch.
        ``compressor``: "pca" (default), "learned" (``LearnedCompressor``, needs
        torch), a JSON file from ``save_compressor``, or a compressor; the
        manifest records which ("kind").
        """
        from .build import build_catalogue, partial_dir
        from .embed import ClipEmbedder, _check_positive
        from .sources import list_images

        _check_positive("batch_size", batch_size)
        chunk_size = (
            32 * batch_size if chunk_size is None else _check_positive("chunk_size", chunk_size)
        )
        if out is None:
            if not (isinstance(source, (str, os.PathLike)) and Path(source).is_dir()):
                raise ValueError(
                    "out: expected a directory to store the catalogue in (it is "
                    "only optional when source is a folder)"
                )
            out = Path(source) / ".clipbranches"
        out = Path(out)
        compressor = _make_compressor(compressor)
        uris = list_images(source, path_column=path_column)
        if not uris:
            from .sources import IMAGE_EXTENSIONS

            raise ValueError(
                f"source: found no images in {source!r} (looked for "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        if embedder is None:
            embedder = ClipEmbedder(
                model, pretrained, device=device, batch_size=batch_size, num_workers=num_workers
            )
        spec = embedder.spec
        if (out / storage.MANIFEST).exists() and not overwrite:
            manifest = storage.read_manifest(out)
            if manifest.get("embedder") != spec:
                raise FileExistsError(
                    f"out: {str(out)!r} holds a catalogue built with {manifest.get('embedder')}, "
                    f"not {spec}; pass overwrite=True to rebuild it, or another out"
                )
            log.info(
                "%s is already built: opening it (overwrite=True rebuilds; "
                "append() adds new images)",
                out,
            )
            shutil.rmtree(partial_dir(out), ignore_errors=True)
            return cls.open(out, embedder=embedder)
        summary = build_catalogue(
            uris,
            out,
            embedder,
            compressor=compressor,
            batch_size=batch_size,
            chunk_size=chunk_size,
            keep_embeddings=keep_embeddings,
            progress=progress,
            overwrite=overwrite,
            callback=callback,
            source_label=str(source)
            if isinstance(source, (str, os.PathLike))
            else type(source).__name__,
        )
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
        from .embed import _check_positive

        if (source is None) == (embeddings is None):
            raise ValueError(
                "append: expected either source (images) or embeddings, got "
                + ("both" if source is not None else "neither")
            )
        if embeddings is not None:
            X = check_embeddings(embeddings, n_features=self.n_features, name="embeddings")
            if (uris is None) != (self.uris is None):
                raise ValueError(
                    "uris: expected "
                    + (
                        "one URI per new item: this catalogue has URIs"
                        if self.uris is not None
                        else "none: this catalogue has no URIs"
                    )
                )
            blocks = [(X, None if uris is None else list(uris), [])]
            return self._append_blocks(blocks)
        if self.embedder is None:
            raise ValueError("append: this catalogue has no image encoder; pass embeddings=")
        from .build import embed_to_chunks, read_chunks
        from .sources import list_images

        _check_positive("batch_size", batch_size)
        chunk_size = (
            32 * batch_size if chunk_size is None else _check_positive("chunk_size", chunk_size)
        )
        new = list_images(source, path_column=path_column)
        if skip_existing and self.uris is not None and new:
            known = set(np.asarray(self.uris).tolist())
            known.update(f["uri"] for f in self.failed)
            new = [u for u in new if u not in known]
        if not new:
            log.info("append: no new images")
            return 0
        if self.path is None:
            work = Path(_temp_dir())
        else:
            work = self.path / ".append.partial"
        try:
            embed_to_chunks(
                new,
                work,
                self.embedder,
                batch_size=batch_size,
                chunk_size=chunk_size,
                progress=progress,
                callback=callback,
                desc="appending",
            )
            added = self._append_blocks(read_chunks(new, work, chunk_size))
        finally:
            if self.path is None:
                shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        return added

    def _append_blocks(self, blocks) -> int:
        keep = self.embeddings is not None
        with_uris = self.uris is not None
        if self.path is None:  # in memory
            parts = list(blocks)
            X = np.concatenate([b[0] for b in parts])
            codes = self.compressor.transform(X)
            added = len(codes)
            self.codes = np.concatenate([self.codes, codes])
            if keep:
                self.embeddings = np.concatenate([self.embeddings, X.astype(self.embeddings.dtype)])
            if with_uris:
                self.uris = np.concatenate(
                    [
                        np.asarray(self.uris, object),
                        np.asarray([u for b in parts for u in b[1]], object),
                    ]
                )
        else:
            writer = storage.CatalogueWriter(
                self.path,
                code_dims=self.codes.shape[1],
                n_features=self.n_features,
                embeddings=keep,
                uris=with_uris,
                start=self.manifest,
            )
            before = writer.n
            for X, block_uris, failed in blocks:
                if len(X):
                    writer.add(
                        self.compressor.transform(X),
                        X if keep else None,
                        block_uris if with_uris else None,
                    )
                writer.add_failed(failed)
            added = writer.n - before
            extra = {
                k: v
                for k, v in self.manifest.items()
                if k
                not in (
                    "format",
                    "version",
                    "created",
                    "model",
                    "pretrained",
                    "embedder",
                    "compressor",
                    "counts",
                    "dims",
                    "files",
                    "dtypes",
                )
            }
            writer.finish(
                compressor=self.manifest["compressor"],
                embedder=self.manifest.get("embedder"),
                extra=extra,
            )
            fresh = type(self).open(self.path, embedder=self._embedder)
            self.codes, self.embeddings, self.uris = fresh.codes, fresh.embeddings, fresh.uris
            self.manifest = fresh.manifest
        self._seeder = None
        if self.index is not None:
            log.warning(
                "append: the box index covers the old items only; it was dropped "
                "(searches scan until it is rebuilt)"
            )
            self.index = None
        log.info("appended %d items (now %d)", added, len(self))
        return added

    @classmethod
    def merge(cls, parts, out, *, overwrite: bool = False, block_rows: int = 1 << 20) -> Catalogue:
        """Concatenate catalogues (or their paths) into a new one at ``out``.

        For sharded builds: build each shard (on any machine) with the same
        fitted compressor, e.g. ``Catalogue.build(shard, compressor=fitted)``
        or ``compressor="compressor.json"``, then merge. Ids follow the order
        of ``parts``. The parts must agree on compressor, model and parts kept
        (embeddings, URIs).
        """
        cats = [p if isinstance(p, Catalogue) else cls.open(p) for p in parts]
        if not cats:
            raise ValueError("parts: expected at least one catalogue, got none")
        first = cats[0]
        for i, c in enumerate(cats[1:], 1):
            for what, a, b in (
                ("compressor", first.compressor.to_dict(), c.compressor.to_dict()),
                ("model", first.embedder_spec, c.embedder_spec),
                ("embeddings kept", first.embeddings is not None, c.embeddings is not None),
                ("URIs kept", first.uris is not None, c.uris is not None),
            ):
                if a != b:
                    raise ValueError(
                        f"parts: part {i} differs from part 0 in its {what}; "
                        "shards must be built with the same fitted compressor "
                        "and model to be merged"
                    )
        out = Path(out)
        if out.exists() and not overwrite:
            raise FileExistsError(f"out: {str(out)!r} exists; pass overwrite=True to replace it")
        _write_rows(cats, out, "merging", overwrite=overwrite, block_rows=block_rows)
        return cls.open(out, embedder=first._embedder)

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
        from .readers import read_clip_retrieval

        X, meta = read_clip_retrieval(folder)
        uris = None
        if meta is not None:
            col = uri_column or next(
                (c for c in ("url", "image_path", "uri", "path") if c in meta.columns), None
            )
            if uri_column is not None and uri_column not in meta.columns:
                raise ValueError(
                    f"uri_column: {uri_column!r} is not a metadata column; got {list(meta.columns)}"
                )
            uris = None if col is None else meta[col].astype(str).to_numpy(object)
        cat = cls.from_embeddings(
            X, uris=uris, compressor=compressor, keep_embeddings=keep_embeddings
        )
        if model is not None:
            if pretrained is None:
                raise ValueError(
                    f"pretrained: expected the tag or checkpoint of {model!r} that "
                    "made these embeddings (random weights would not match them)"
                )
            cat.embedder_spec = {"model": model, "pretrained": pretrained, "seed": 0}
        cat.metadata = meta
        return cat


def _write_rows(cats, path: Path, purpose: str, *, overwrite: bool, block_rows: int) -> None:
    """Write the rows of ``cats`` (same layout and compressor), in order, as one
    catalogue at ``path``: in a hidden sibling first, committed by a rename."""
    from .build import _commit

    first = cats[0]
    tmp = path.parent / f".{path.name}.{purpose}"
    if tmp.exists():
        shutil.rmtree(tmp)
    writer = storage.CatalogueWriter(
        tmp,
        code_dims=first.codes.shape[1],
        n_features=first.n_features,
        embeddings=first.embeddings is not None,
        uris=first.uris is not None,
    )
    for c in cats:
        for lo in range(0, len(c), block_rows):
            hi = min(len(c), lo + block_rows)
            writer.add(
                c.codes[lo:hi],
                None if c.embeddings is None else c.embeddings[lo:hi],
                None if c.uris is None else c.uris[lo:hi],
            )
        writer.add_failed((f["uri"], f["reason"]) for f in c.failed)
    writer.finish(compressor=first.compressor.to_dict(), embedder=first.embedder_spec)
    _commit(tmp, path, overwrite=overwrite)


def compressor_from_dict(data: dict):
    """A fitted compressor from its ``to_dict`` form (the manifest's): dispatches on "kind"."""
    return _compressor_from_dict(data)


def _make_compressor(compressor):
    return make_compressor(compressor)


def _temp_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="clipbranches-append-")
