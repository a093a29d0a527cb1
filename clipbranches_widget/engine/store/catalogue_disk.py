"""A ``Catalogue`` on disk: open (memory maps), save and merge (atomic
folder writes through ``append.write_rows``), and the list of failed inputs.
The format is described in ``format.py``. A mixin, so the class in
``catalogue.py`` stays readable whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import numpy as np

from ..codes.registry import compressor_from_dict
from . import append as appending
from . import format as storage

__all__ = ["DiskMixin"]

# the class using the mixin (Catalogue: importing it here would be a cycle)
_C = TypeVar("_C", bound="DiskMixin")


class DiskMixin:
    """Opening, saving and merging catalogue folders (the constructor is
    ``Catalogue``'s)."""

    @classmethod
    def open(cls: type[_C], path, *, embedder=None) -> _C:
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
        try:
            compressor = compressor_from_dict(manifest["compressor"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"{str(path / storage.MANIFEST)!r}: expected a compressor that this library "
                f"reads, got {exc}: the catalogue is damaged"
            ) from None
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
        return storage.read_failed(self.path)[: int(self.manifest["counts"].get("failed", 0))]

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
