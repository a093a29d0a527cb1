"""The on-disk catalogue: a directory of raw little-endian arrays and a manifest.

::

    manifest.json      format, version, model, compressor, counts, dims, files
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

__all__ = [
    "FORMAT",
    "VERSION",
    "CatalogueWriter",
    "NotACatalogueError",
    "UriColumn",
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
        with open(file, encoding="utf-8") as f:
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
    _count(file, manifest, "counts", "uri_bytes", required=False)
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
    with open(file, "ab") as f:
        f.truncate(start_row * row_bytes)
        f.write(rows.tobytes())
        f.flush()
        os.fsync(f.fileno())


def open_rows(file, dtype, shape) -> np.ndarray:
    """A read-only memory map of the first ``shape[0]`` rows of a raw array file."""
    dtype = np.dtype(dtype).newbyteorder("<")
    need = int(np.prod(shape)) * dtype.itemsize
    size = os.path.getsize(file) if os.path.exists(file) else -1
    if size < need:
        raise ValueError(
            f"{str(file)!r}: expected at least {need} bytes for {shape} {dtype}, "
            f"found {max(size, 0)}: the catalogue is damaged"
        )
    if need == 0:
        return np.zeros(shape, dtype)
    return np.memmap(file, dtype=dtype, mode="r", shape=tuple(shape))


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
    with open(path / URI_BYTES, "ab") as f:
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
    return UriColumn(offsets, data)


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


class UriColumn:
    """URIs stored as offsets + UTF-8 bytes (memory-mapped): O(1) per item.

    Behaves like a read-only 1-D array of str: ``len``, ``col[i]`` (a str),
    ``col[ids]`` / ``col[a:b]`` (an object ndarray), iteration,
    ``np.asarray(col)`` (reads everything).
    """

    def __init__(self, offsets: np.ndarray, data: np.ndarray):
        self.offsets = offsets
        self.data = data

    def __len__(self) -> int:
        return self.offsets.shape[0] - 1

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    @property
    def dtype(self):
        return np.dtype(object)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            n = len(self)
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"uri index {int(key)} out of range for {n} items")
            return bytes(self.data[self.offsets[i] : self.offsets[i + 1]]).decode("utf-8")
        if isinstance(key, slice):
            return self.to_numpy(np.arange(len(self))[key])
        return self.to_numpy(np.asarray(key))

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def to_arrow(self, ids=None):
        arr = pa.LargeStringArray.from_buffers(
            len(self), pa.py_buffer(self.offsets), pa.py_buffer(self.data)
        )
        return arr if ids is None else arr.take(pa.array(np.asarray(ids, np.int64)))

    def to_numpy(self, ids=None) -> np.ndarray:
        if ids is not None:
            ids = np.asarray(ids)
            if ids.dtype == bool:
                ids = np.flatnonzero(ids)
            ids = np.where(ids < 0, ids + len(self), ids)
        return self.to_arrow(ids).to_numpy(zero_copy_only=False).astype(object)

    def __array__(self, dtype=None, copy=None):
        arr = self.to_numpy()
        return arr if dtype is None else arr.astype(dtype)

    def __repr__(self) -> str:
        return f"UriColumn(n={len(self)})"


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
        with open(self.path / FAILED, "a", encoding="utf-8") as f:
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
        }
        write_manifest(self.path, manifest)
        return manifest


def truncate_lines(file: Path, keep: int) -> None:
    """Cut ``file`` after its first ``keep`` lines: drops what a killed writer added
    past the manifest's count (whole lines and a half-written last one)."""
    if not file.exists():
        return
    with open(file, "rb+") as f:
        end = 0
        for _ in range(keep):
            line = f.readline()
            if not line:
                return  # fewer lines than counted: nothing past the count
            end += len(line)
        if f.readline():
            f.truncate(end)


def read_failed(path) -> list[dict]:
    file = Path(path) / FAILED
    if not file.exists():
        return []
    with open(file, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
