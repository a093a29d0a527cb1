"""A ``Catalogue`` on disk: open (memory maps), save and merge (atomic
folder writes through ``append.write_rows``), and the list of failed inputs.
The format is described in ``format.py``. A mixin, so the class in
``catalogue.py`` stays readable whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import numpy as np

from .._atomic import recover_dir
from ..codes.registry import compressor_from_dict
from . import append as appending
from . import format as storage
from . import integrity

__all__ = ["DiskMixin"]

# the class using the mixin (Catalogue: importing it here would be a cycle)
_C = TypeVar("_C", bound="DiskMixin")


class DiskMixin:
    """Opening, saving and merging catalogue folders (the constructor is
    ``Catalogue``'s)."""

    @classmethod
    def open(cls: type[_C], path, *, embedder=None, verify: bool | None = None) -> _C:
        """Open a catalogue directory: memory maps and the manifest.

        ``embedder``: use this encoder instead of creating one from the
        manifest's model on first use. ``verify``: hash the files against the
        manifest's checksums -- None (default): those within
        ``integrity.VERIFY_AT_OPEN_BYTES`` (every file of a catalogue of up to
        about 5M items; the rest are logged, see ``verify()``), True: all,
        False: none (sizes and structure are always checked).
        """
        path = Path(path)
        recover_dir(path)  # a commit killed between its two renames parked the catalogue
        manifest = storage.read_manifest(path)
        compressor = _compressor(path, manifest)
        n = int(manifest["counts"]["items"])
        dims = manifest["dims"]
        _check_dims(path, dims, compressor)
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
        n_failed = int(manifest["counts"].get("failed", 0))
        if n_failed:  # parsed when read (cat.failed); a missing file shows now
            storage.open_failed(path, n_failed).close()
        cat = cls(
            codes,
            compressor=compressor,
            embeddings=embeddings,
            uris=uris,
            embedder=embedder,
            path=path,
            manifest=manifest,
            embedder_spec=manifest.get("embedder"),
        )
        if verify is not False:
            checked = cat._verify(None if verify else integrity.VERIFY_AT_OPEN_BYTES)
            if files["codes"] in checked:  # just hashed: an index check need not again
                cat._use_verified_fingerprint(manifest["identity"]["fingerprint"])
        return cat

    def verify(self) -> list[str]:
        """Hash every file against the manifest's checksums (for catalogues too
        large to verify fully at open); returns the files checked. Raises
        ``integrity.CorruptCatalogueError`` naming a changed file."""
        return self._verify(None)

    def _verify(self, budget) -> list[str]:
        if self.path is None or self.manifest is None:
            return []
        files = self.manifest["files"]
        arrays = {"codes": (files["codes"], self.codes)}
        if isinstance(self.uris, storage.UriColumn):
            # open_uris reads these names (files.uris is checked to be a bare name)
            arrays["uri_offsets"] = (storage.URI_OFFSETS, self.uris.offsets)
            arrays["uris"] = (storage.URI_BYTES, self.uris.data)
        if self.embeddings is not None:
            arrays["embeddings"] = (files["embeddings"], self.embeddings)
        return integrity.verify_files(self.path, self.manifest, arrays, budget=budget)

    def save(self: _C, path, *, overwrite: bool = False, block_rows: int = 1 << 20) -> _C:
        """Write this catalogue to a directory (atomically) and return it opened from there."""
        path = Path(path)
        if path.exists() and not overwrite and (any(path.iterdir()) if path.is_dir() else True):
            raise FileExistsError(
                f"path: {str(path)!r} exists; pass overwrite=True to replace a catalogue there"
            )
        uid = self.identity["uuid"]  # the saved catalogue is this one: sessions carry over
        appending.write_rows(
            [self], path, "saving", overwrite=overwrite, block_rows=block_rows, uuid=uid
        )
        return type(self).open(path, embedder=self._embedder)

    @property
    def failed(self) -> list[dict]:
        """Inputs the build could not read: ``[{"uri": ..., "reason": ...}]``."""
        if self.path is None or self.manifest is None:
            return []
        return storage.read_failed(self.path, int(self.manifest["counts"].get("failed", 0)))

    @classmethod
    def merge(
        cls: type[_C], parts, out, *, overwrite: bool = False, block_rows: int = 1 << 20
    ) -> _C:
        """Concatenate catalogues (or their paths) into a new one at ``out``.

        For sharded builds: build each shard (on any machine) with the same
        fitted compressor, e.g. ``Catalogue.build(shard, compressor=fitted)``
        or ``compressor="compressor.json"``, then merge. Ids follow the order
        of ``parts``. The parts must agree on compressor, model and parts kept
        (embeddings, URIs).
        """
        cats = [p if isinstance(p, DiskMixin) else cls.open(p) for p in parts]
        appending.check_mergeable(cats)
        out = Path(out)
        if out.exists() and not overwrite:
            raise FileExistsError(f"out: {str(out)!r} exists; pass overwrite=True to replace it")
        appending.write_rows(cats, out, "merging", overwrite=overwrite, block_rows=block_rows)
        return cls.open(out, embedder=cats[0]._embedder)


def _compressor(path: Path, manifest: dict):
    try:
        return compressor_from_dict(manifest["compressor"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"{str(path / storage.MANIFEST)!r}: expected a compressor that this library "
            f"reads, got {exc}: the catalogue is damaged"
        ) from None


def _check_dims(path: Path, dims: dict, compressor) -> None:
    """The manifest's dims are the compressor's: else every row would be read misaligned."""
    for key, want, what in (
        ("code", int(np.asarray(compressor.low_).shape[0]), "code dimensions"),
        ("embedding", int(compressor.n_features_in_), "embedding features"),
    ):
        if int(dims[key]) != want:
            raise ValueError(
                f"{str(path / storage.MANIFEST)!r}: expected dims.{key} to be {want} (the "
                f"compressor's {what}), got {dims[key]!r}: the catalogue is damaged"
            )
