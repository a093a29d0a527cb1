"""The URI column of a catalogue on disk: offsets + UTF-8 bytes, memory-mapped."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

__all__ = ["UriColumn"]


class UriColumn:
    """URIs stored as offsets + UTF-8 bytes (memory-mapped): O(1) per item.

    Behaves like a read-only 1-D array of str: ``len``, ``col[i]`` (a str),
    ``col[ids]`` / ``col[a:b]`` (an object ndarray), iteration,
    ``np.asarray(col)`` (reads everything).
    """

    def __init__(self, offsets: np.ndarray, data: np.ndarray, *, file=None):
        self.offsets = offsets
        self.data = data
        self.file = file  # named by decoding errors

    def _invalid(self, i: int) -> ValueError:
        raw = bytes(self.data[self.offsets[i] : self.offsets[i + 1]])
        where = repr(str(self.file)) if self.file is not None else "uris"
        return ValueError(
            f"{where}: expected UTF-8 text for URI {i}, got invalid bytes {raw[:40]!r}: "
            "the catalogue is damaged"
        )

    def _first_invalid(self, ids) -> ValueError:
        """The error for the first row of ``ids`` that is not UTF-8 (an error path:
        rows are decoded one by one)."""
        for i in np.arange(len(self)) if ids is None else np.asarray(ids, np.int64):
            try:
                bytes(self.data[self.offsets[i] : self.offsets[i + 1]]).decode("utf-8")
            except UnicodeDecodeError:
                return self._invalid(int(i))
        return ValueError(f"{self.file or 'uris'}: the URI bytes could not be decoded")

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
            try:
                return bytes(self.data[self.offsets[i] : self.offsets[i + 1]]).decode("utf-8")
            except UnicodeDecodeError:
                raise self._invalid(i) from None
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
        try:
            return self.to_arrow(ids).to_numpy(zero_copy_only=False).astype(object)
        except (pa.ArrowException, UnicodeDecodeError):
            # invalid UTF-8 (a damaged file): name the file and the row
            raise self._first_invalid(ids) from None

    def __array__(self, dtype=None, copy=None):
        arr = self.to_numpy()
        return arr if dtype is None else arr.astype(dtype)

    def __repr__(self) -> str:
        return f"UriColumn(n={len(self)})"
