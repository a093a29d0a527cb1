"""The on-disk catalogue: a directory of raw little-endian arrays and a manifest.

::

    manifest.json      format, version, model, compressor, counts, dims, files,
                       identity (uuid, fingerprint of the codes), checksums
    codes.u8           (n, code_dims) uint8, row-major
    embeddings.f16     (n, d) float16, row-major (optional)
    uri_offsets.i64    (n + 1,) int64: URI i is uris.utf8[offsets[i]:offsets[i + 1]]
    uris.utf8          the URIs, UTF-8, concatenated (optional, with uri_offsets.i64)
    failed.jsonl       inputs a build could not read, one {"uri", "reason"} per line

Every array file is opened as a read-only memory map whose shape comes from the
manifest, so opening costs the same for 10^3 and 10^8 items. The manifest is
the commit point: it is written last (write, fsync, rename), and readers trust
only the rows it counts. Appending writes past the end of the files first and
then a new manifest; a crash in between leaves extra bytes that nothing reads.
Files are never links, and their content is checked against the manifest's
hashes at open when that is cheap (``integrity.py``; ``Catalogue.verify()``).
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from uuid import uuid4

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._atomic import write_text
from ..search.fingerprint import fingerprint
from .integrity import checksum_segments, open_file
from .uri_column import UriColumn

__all__ = [
    "FORMAT",
    "VERSION",
    "CatalogueWriter",
    "NotACatalogueError",
    "UriColumn",
    "open_failed",
    "read_failed",
    "read_manifest",
    "write_manifest",
    "append_rows",
    "open_rows",
    "encode_uris",
    "open_uris",
    "append_uris",
]

FORMAT = "clipbranches-catalogue"
VERSION = 1
MANIFEST = "manifest.json"
CODES = "codes.u8"
EMBEDDINGS = "embeddings.f16"
URI_OFFSETS = "uri_offsets.i64"
URI_BYTES = "uris.utf8"
FAILED = "failed.jsonl"


class NotACatalogueError(FileNotFoundError):
    """A directory that holds no complete catalogue."""


def read_manifest(path) -> dict:
    """The checked manifest of the catalogue at ``path`` (errors name the file)."""
    path = Path(path)
    file = path / MANIFEST
    if not file.is_file():
        if not path.exists():
            raise NotACatalogueError(f"no catalogue at {str(path)!r}: the directory does not exist")
        partial = path.parent / f".{path.name}.partial"
        hint = (
            (
                f"; an unfinished build is in {str(partial)!r}: run the same Catalogue.build "
                "again to resume it"
            )
            if partial.exists()
            else ""
        )
        raise NotACatalogueError(
            f"{str(path)!r} is not a complete catalogue: it has no {MANIFEST}{hint}"
        )
    try:
        with open_file(file, mode="r", encoding="utf-8") as f:
            manifest = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"{str(file)!r}: expected a JSON manifest, got unreadable text ({exc}): "
            "the catalogue is damaged"
        ) from None
    if not isinstance(manifest, dict):
        raise ValueError(
            f"{str(file)!r}: expected a JSON object, got a {type(manifest).__name__}: "
            "the catalogue is damaged"
        )
    if manifest.get("format") != FORMAT:
        raise ValueError(
            f"{str(file)!r}: expected a {FORMAT!r} manifest, got format {manifest.get('format')!r}"
        )
    version = manifest.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise ValueError(
            f"{str(file)!r}: catalogue format version {version!r} is newer "
            f"than this library reads ({VERSION}); upgrade clipbranches-widget"
        )
    _check_manifest(file, manifest)
    return manifest


def _count(file, manifest, section: str, key: str, *, required: bool = True) -> None:
    value = manifest.get(section, {}).get(key, 0 if not required else None)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"{str(file)!r}: expected {section}.{key} to be a non-negative integer, "
            f"got {value!r}: the catalogue is damaged"
        )


def _check_manifest(file: Path, manifest: dict) -> None:
    """Every field ``Catalogue.open`` reads has the expected type; file names stay inside."""
    for section in ("counts", "dims", "files", "compressor"):
        if not isinstance(manifest.get(section), dict):
            raise ValueError(
                f"{str(file)!r}: expected a {section!r} object, got "
                f"{type(manifest.get(section)).__name__}: the catalogue is damaged"
            )
    _count(file, manifest, "counts", "items")
    _count(file, manifest, "counts", "failed", required=False)
    _count(file, manifest, "dims", "code")
    _count(file, manifest, "dims", "embedding")
    for key, name in manifest["files"].items():
        if name is None and key != "codes":
            continue
        # a catalogue names only its own files: a bare name, never a path elsewhere
        if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
            raise ValueError(
                f"{str(file)!r}: expected files.{key} to name a file inside the catalogue "
                f"folder, got {name!r}"
            )
    # URIs are read up to counts.uri_bytes: required with them
    _count(file, manifest, "counts", "uri_bytes", required=bool(manifest["files"].get("uris")))
    identity = manifest.get("identity")
    if identity is not None and not (
        isinstance(identity, dict)
        and all(isinstance(identity.get(k, ""), str) for k in ("uuid", "fingerprint"))
    ):
        raise ValueError(
            f"{str(file)!r}: expected identity to be an object with string uuid and "
            f"fingerprint, got {identity!r:.60}: the catalogue is damaged"
        )


def write_manifest(path, manifest: dict) -> None:
    """Write the manifest atomically: a reader sees the old one or the new one."""
    path = Path(path)
    write_text(path / MANIFEST, json.dumps(manifest, indent=1))
    fsync_dir(path)


def fsync_dir(path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def append_rows(file, rows: np.ndarray, *, start_row: int, dtype) -> None:
    """Write ``rows`` at row ``start_row`` of a raw array file (truncating what follows).

    Truncating first drops bytes a crashed append left past the manifest's end.
    """
    rows = np.ascontiguousarray(rows, dtype=np.dtype(dtype).newbyteorder("<"))
    row_bytes = rows.itemsize * (rows.shape[1] if rows.ndim == 2 else 1)
    with _open_append(file) as f:
        f.truncate(start_row * row_bytes)
        f.write(rows.tobytes())
        f.flush()
        os.fsync(f.fileno())


def _open_append(file):
    """``file`` for appending, created if missing; never through a link (an
    append must not write a file outside the catalogue)."""
    return open_file(file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, "ab")


def open_rows(file, dtype, shape) -> np.ndarray:
    """A read-only memory map of the first ``shape[0]`` rows of a raw array file
    (a regular file, not a link; it may be longer: a killed append's bytes)."""
    dtype = np.dtype(dtype).newbyteorder("<")
    need = int(np.prod(shape)) * dtype.itemsize
    if not os.path.lexists(file):
        raise ValueError(
            f"{str(file)!r}: expected {need} bytes for {shape} {dtype}, found no file: "
            "the catalogue is damaged"
        )
    with open_file(file) as f:
        size = os.fstat(f.fileno()).st_size
        if size < need:
            raise ValueError(
                f"{str(file)!r}: expected at least {need} bytes for {shape} {dtype}, "
                f"found {size}: the catalogue is damaged"
            )
        if need == 0:
            return np.zeros(shape, dtype)
        return np.memmap(f, dtype=dtype, mode="r", shape=tuple(shape))


def encode_uris(uris) -> tuple[np.ndarray, np.ndarray]:
    """(offsets (n+1,) int64, data uint8) of a sequence of strings (None -> "")."""
    if isinstance(uris, UriColumn):
        arr = uris.to_arrow()
    else:
        values = uris if isinstance(uris, np.ndarray) else list(uris)
        try:
            arr = pa.array(values, type=pa.large_string(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # Path objects and the like: their file-system form, anything else is an error
            values = [os.fspath(u) if isinstance(u, os.PathLike) else u for u in values]
            try:
                arr = pa.array(values, type=pa.large_string(), from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise TypeError(f"uris: expected strings or paths ({exc})") from None
    arr = pc.fill_null(arr, "") if arr.null_count else arr
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], np.int64, count=n + 1, offset=arr.offset * 8)
    data_buf = arr.buffers()[2]
    first, last = int(offsets[0]), int(offsets[-1])
    data = (
        np.frombuffer(data_buf, np.uint8)[first:last]
        if data_buf is not None and last > first
        else np.zeros(0, np.uint8)
    )
    return offsets - first, data


def append_uris(path, uris, *, start_row: int, start_byte: int) -> tuple[int, int]:
    """Append URIs after ``start_row`` rows / ``start_byte`` bytes; returns the new counts."""
    offsets, data = encode_uris(uris)
    path = Path(path)
    rows = offsets if start_row == 0 else offsets[1:]  # the first offset is already there
    append_rows(
        path / URI_OFFSETS,
        rows + start_byte,
        start_row=0 if start_row == 0 else start_row + 1,
        dtype=np.int64,
    )
    with _open_append(path / URI_BYTES) as f:
        f.truncate(start_byte)
        f.write(data.tobytes())
        f.flush()
        os.fsync(f.fileno())
    return start_row + len(offsets) - 1, start_byte + len(data)


def open_uris(path, n: int, n_bytes: int) -> UriColumn:
    """The URI column, after checking every offset (a bad one would crash the reader)."""
    path = Path(path)
    offsets = open_rows(path / URI_OFFSETS, np.int64, (n + 1,))
    data = open_rows(path / URI_BYTES, np.uint8, (n_bytes,))
    check_offsets(path / URI_OFFSETS, offsets, n_bytes)
    return UriColumn(offsets, data, file=path / URI_BYTES)


def check_offsets(file, offsets: np.ndarray, n_bytes: int, block: int = 1 << 22) -> None:
    """Offsets start at 0, never decrease and end at ``n_bytes``; read in blocks
    (8 bytes per item: 0.8 GB for 10^8 items, streamed, never held at once)."""
    n = offsets.shape[0]
    if n == 0 or int(offsets[0]) != 0 or int(offsets[n - 1]) != n_bytes:
        raise ValueError(
            f"{str(file)!r}: expected offsets from 0 to {n_bytes} (the URI bytes), got "
            f"{int(offsets[0]) if n else None}..{int(offsets[n - 1]) if n else None}: "
            "the catalogue is damaged"
        )
    for lo in range(0, n - 1, block):
        part = np.asarray(offsets[lo : min(n, lo + block + 1)])
        step = np.diff(part)
        if step.size and (step.min() < 0 or part.max() > n_bytes):
            bad = lo + int(np.flatnonzero((step < 0) | (part[1:] > n_bytes))[0]) + 1
            raise ValueError(
                f"{str(file)!r}: expected non-decreasing offsets within 0..{n_bytes}, got "
                f"{int(offsets[bad])} at row {bad}: the catalogue is damaged"
            )


class CatalogueWriter:
    """Write (or append) a catalogue directory block by block; ``finish`` commits.

    ``start``: the manifest of the catalogue being appended to (None: new).
    ``uuid``: the identity to keep (default: the appended one's, else a new one).
    """

    def __init__(
        self,
        path,
        *,
        code_dims: int,
        n_features: int,
        embeddings: bool,
        uris: bool,
        start: dict | None = None,
        uuid: str | None = None,
    ):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.code_dims = int(code_dims)
        self.n_features = int(n_features)
        self.embeddings = bool(embeddings)
        self.uris = bool(uris)
        counts = (start or {}).get("counts", {})
        self.n = int(counts.get("items", 0))
        self.n_failed = int(counts.get("failed", 0))
        self.uri_bytes = int(counts.get("uri_bytes", 0))
        self.uuid = uuid or (start or {}).get("identity", {}).get("uuid")
        # rows already hashed (an append hashes only what it adds)
        self._old_sums = (start or {}).get("checksums") or {}
        self._old_rows = {
            "embeddings": self.n,
            "uri_offsets": self.n + 1 if self.n else 0,
            "uris": self.uri_bytes,
        }
        truncate_lines(self.path / FAILED, self.n_failed)

    def add(self, codes: np.ndarray, embeddings=None, uris=None) -> None:
        m = codes.shape[0]
        if self.embeddings != (embeddings is not None) or self.uris != (uris is not None):
            raise ValueError(
                "every block must carry the same parts (embeddings, uris) as the "
                "catalogue it is written to"
            )
        append_rows(self.path / CODES, codes, start_row=self.n, dtype=np.uint8)
        if embeddings is not None:
            append_rows(
                self.path / EMBEDDINGS,
                np.asarray(embeddings, np.float16),
                start_row=self.n,
                dtype=np.float16,
            )
        if uris is not None:
            if len(uris) != m:
                raise ValueError(f"uris: expected {m} URIs (one per item), got {len(uris)}")
            _, self.uri_bytes = append_uris(
                self.path, uris, start_row=self.n, start_byte=self.uri_bytes
            )
        self.n += m

    def add_failed(self, failures) -> None:
        """Record ``(uri, reason)`` pairs of inputs that could not be read."""
        failures = list(failures)
        if not failures:
            return
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        with open_file(self.path / FAILED, flags, "a", encoding="utf-8") as f:
            for uri, reason in failures:
                f.write(json.dumps({"uri": str(uri), "reason": str(reason)}) + "\n")
        self.n_failed += len(failures)

    def finish(self, *, compressor: dict, embedder: dict | None, extra: dict | None = None) -> dict:
        if self.n == 0:
            raise ValueError("a catalogue needs at least one item; got none")
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "model": None if embedder is None else embedder.get("model"),
            "pretrained": None if embedder is None else embedder.get("pretrained"),
            "embedder": embedder,
            "compressor": compressor,
            "counts": {"items": self.n, "failed": self.n_failed, "uri_bytes": self.uri_bytes},
            "dims": {"code": self.code_dims, "embedding": self.n_features},
            "files": {
                "codes": CODES,
                "embeddings": EMBEDDINGS if self.embeddings else None,
                "uri_offsets": URI_OFFSETS if self.uris else None,
                "uris": URI_BYTES if self.uris else None,
                "failed": FAILED if self.n_failed else None,
            },
            "dtypes": {"codes": "<u1", "embeddings": "<f2", "uri_offsets": "<i8"},
            **(extra or {}),
            # the uuid names this catalogue (kept by appends, whose ids stay valid);
            # the fingerprint hashes every code row, so any change of content shows
            "identity": {
                "uuid": self.uuid or uuid4().hex,
                "fingerprint": fingerprint(
                    open_rows(self.path / CODES, np.uint8, (self.n, self.code_dims))
                ),
            },
            "checksums": self._checksums(),
        }
        write_manifest(self.path, manifest)
        return manifest

    def _checksums(self) -> dict:
        """``[start, stop, hash]`` segments of the other files (see ``integrity``)."""
        arrays = {}
        if self.embeddings:
            arrays["embeddings"] = open_rows(
                self.path / EMBEDDINGS, np.float16, (self.n, self.n_features)
            )
        if self.uris:
            arrays["uri_offsets"] = open_rows(self.path / URI_OFFSETS, np.int64, (self.n + 1,))
            arrays["uris"] = open_rows(self.path / URI_BYTES, np.uint8, (self.uri_bytes,))
        return {
            key: checksum_segments(a, self._old_sums.get(key), self._old_rows[key])
            for key, a in arrays.items()
        }


def truncate_lines(file: Path, keep: int) -> None:
    """Cut ``file`` after its first ``keep`` lines: drops what a killed writer added
    past the manifest's count (whole lines and a half-written last one)."""
    if not os.path.lexists(file):
        return
    with open_file(file, os.O_RDWR, "rb+") as f:
        end = 0
        for _ in range(keep):
            line = f.readline()
            if not line:
                return  # fewer lines than counted: nothing past the count
            end += len(line)
        if f.readline():
            f.truncate(end)


def open_failed(path, count: int):
    """``failed.jsonl``, which must exist when the manifest counts failures."""
    file = Path(path) / FAILED
    if not os.path.lexists(file):
        raise ValueError(
            f"{str(file)!r}: expected {count} failed inputs (the manifest's counts.failed), "
            "found no file: the catalogue is damaged"
        )
    return open_file(file, mode="rb")


def read_failed(path, count: int | None = None) -> list[dict]:
    """The first ``count`` lines of ``failed.jsonl`` (default: the manifest's
    counts.failed): lines past them are what a killed writer left, never read."""
    file = Path(path) / FAILED
    if count is None:
        count = int(read_manifest(path)["counts"].get("failed", 0))
    if count == 0:
        return []
    out = []
    with open_failed(path, count) as f:
        for i in range(count):
            line = f.readline()
            if not line:
                raise ValueError(
                    f"{str(file)!r}: expected {count} lines (the manifest's counts.failed), "
                    f"found {i}: the catalogue is damaged"
                )
            out.append(_failure(file, i + 1, line))
    return out


def _failure(file: Path, lineno: int, line: bytes) -> dict:
    try:
        item = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        item, why = None, str(exc)
    else:
        why = "not an object with string uri and reason"
    if not (
        isinstance(item, dict)
        and isinstance(item.get("uri"), str)
        and isinstance(item.get("reason"), str)
    ):
        raise ValueError(
            f'{str(file)!r}: expected a JSON {{"uri", "reason"}} object on line {lineno}, '
            f"got {line[:60]!r} ({why}): the catalogue is damaged"
        )
    return item
