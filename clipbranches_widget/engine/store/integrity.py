"""Catalogue files are the catalogue's own, and hold what the manifest says.

* Every file is opened without following a symbolic link and must be a
  regular file: a link would make ``Catalogue.open`` read (and an append
  write) a file outside the folder.
* Checksums: the manifest's ``identity.fingerprint`` hashes every code row;
  ``checksums`` holds, for embeddings, URI offsets and URI bytes, a list of
  ``[start, stop, blake2b]`` segments (rows, or bytes for URIs). An append
  hashes only the rows it added (one more segment); save and merge write one.
* Verification at open: sizes always (``format.open_rows``); content when
  it is cheap. Files are hashed in the order codes, URI offsets, URI bytes,
  embeddings while their total stays within ``VERIFY_AT_OPEN_BYTES`` (512 MiB:
  about 0.3-0.5 s on two cores; 10M items' codes are 320 MB). Files past the
  budget are logged as unverified; ``Catalogue.verify()`` (or
  ``clipbranches info --verify``) hashes everything.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import numpy as np

from ..search.fingerprint import fingerprint

__all__ = [
    "VERIFY_AT_OPEN_BYTES",
    "CorruptCatalogueError",
    "checksum_segments",
    "open_file",
    "verify_files",
]

log = logging.getLogger(__name__)

VERIFY_AT_OPEN_BYTES = 512 << 20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class CorruptCatalogueError(ValueError):
    """A catalogue file that differs from what its manifest recorded."""


def open_file(file, flags: int = os.O_RDONLY, mode: str = "rb", **kw):
    """``file`` opened without following a link; it must be a regular file."""
    file = Path(file)
    if os.path.islink(file):
        raise ValueError(
            f"{str(file)!r}: expected a regular file inside the catalogue folder, got a "
            f"symbolic link to {os.readlink(file)!r}: catalogue files are never links "
            "(the catalogue is damaged)"
        )
    try:
        fd = os.open(file, flags | _NOFOLLOW, 0o644)
    except FileNotFoundError:
        raise ValueError(
            f"{str(file)!r}: expected a catalogue file, found none: the catalogue is damaged"
        ) from None
    except OSError as exc:  # ELOOP: a link made after the check; EISDIR for writes
        raise ValueError(
            f"{str(file)!r}: expected a regular file inside the catalogue folder, "
            f"could not open it ({exc.strerror}): the catalogue is damaged"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(
            f"{str(file)!r}: expected a regular file, got a directory or a device: "
            "the catalogue is damaged"
        )
    return os.fdopen(fd, mode, **kw)


def checksum_segments(array, old, old_rows: int) -> list:
    """Segments covering every row of ``array``: ``old`` (valid for its first
    ``old_rows`` rows, which an append never rewrites) plus one for the rest."""
    rows = array.shape[0]
    if not (_covers(old, old_rows) and 0 < old_rows <= rows):
        old, old_rows = [], 0
    segments = [list(s) for s in old]
    if rows > old_rows:
        segments.append([old_rows, rows, fingerprint(array[old_rows:rows])])
    return segments


def _covers(segments, rows: int) -> bool:
    if not isinstance(segments, list):
        return False
    at = 0
    for s in segments:
        ok = (
            isinstance(s, list)
            and len(s) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) for v in s[:2])
            and isinstance(s[2], str)
        )
        if not ok or s[0] != at or s[1] <= at:
            return False
        at = s[1]
    return at == rows


def verify_files(path: Path, manifest: dict, arrays: dict, *, budget: int | None) -> list[str]:
    """Check the files against the manifest's hashes; returns the names verified.

    ``arrays``: ``{file name: memory-mapped array}`` in priority order (codes
    first). ``budget``: the most bytes to hash (None: all); the rest are
    logged as unverified. Raises ``CorruptCatalogueError`` naming the file.
    """
    identity = manifest.get("identity") or {}
    sums = manifest.get("checksums")
    sums = {} if sums is None else sums  # None: written before checksums existed
    if not isinstance(sums, dict):
        raise ValueError(
            f"{str(path / 'manifest.json')!r}: expected 'checksums' to be an object, got "
            f"{type(sums).__name__}: the catalogue is damaged"
        )
    done, skipped, spent = [], [], 0
    for key, (name, array) in arrays.items():
        expected = identity.get("fingerprint") if key == "codes" else sums.get(key)
        if expected is None:
            continue  # written before checksums existed: nothing to compare
        size = int(array.nbytes)
        if budget is not None and spent + size > budget:
            skipped.append(name)
            continue
        spent += size
        file = path / name
        if key == "codes":
            if fingerprint(array) != expected:
                raise CorruptCatalogueError(
                    f"{str(file)!r}: expected the code rows the manifest's identity.fingerprint "
                    "hashes, got other bytes: the file was changed or damaged after it was "
                    "written"
                )
        else:
            _check_segments(path, file, key, array, expected)
        done.append(name)
    if skipped:
        log.info(
            "%s: %s not verified at open (over %d MiB to hash); Catalogue.verify() or "
            "'clipbranches info --verify' checks them",
            path,
            ", ".join(skipped),
            (budget or 0) >> 20,
        )
    return done


def _check_segments(path: Path, file: Path, key: str, array, segments) -> None:
    rows = array.shape[0]
    if not _covers(segments, rows):
        raise ValueError(
            f"{str(path / 'manifest.json')!r}: expected checksums.{key} to be "
            f"[start, stop, hash] segments covering rows 0..{rows}, got {segments!r:.80}: "
            "the catalogue is damaged"
        )
    for lo, hi, digest in segments:
        if fingerprint(array[lo:hi]) != digest:
            unit = "byte range" if array.ndim == 1 and array.dtype == np.uint8 else "rows"
            raise CorruptCatalogueError(
                f"{str(file)!r}: expected the content the manifest's checksums.{key} hashes, "
                f"got other bytes in {unit} {lo}..{hi}: the file was changed or damaged "
                "after it was written"
            )
