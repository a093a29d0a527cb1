"""The one reader of what a catalogue's URIs name: a path, a file:// URL or http(s).

Thumbnails, the details view and export all read through ``read_bytes``, so
every read has the same limits:

* local: regular files only (a FIFO or a device named ``x.jpg`` is refused
  before it is opened, and opened with ``O_NONBLOCK`` so a swap between the
  check and the open cannot block either), never more than ``max_bytes``;
* ``file://host/...`` naming another host is refused (it is not this
  machine's file, whatever the local path says);
* http(s): a connect/idle timeout, an overall deadline (``URL_TIMEOUT_S``:
  a server that trickles bytes cannot hold the kernel), and the same size cap.
"""

from __future__ import annotations

import os
import stat
import time
import urllib.error
import urllib.request
from urllib.parse import unquote, urlparse

__all__ = [
    "CONNECT_TIMEOUT_S",
    "MAX_BYTES",
    "URL_TIMEOUT_S",
    "is_remote",
    "local_path",
    "read_bytes",
]

#: Overall deadline for fetching one URL, seconds.
URL_TIMEOUT_S = 20.0
#: Connect timeout, and the longest a server may stay silent, seconds.
CONNECT_TIMEOUT_S = 5.0
#: The largest image read, bytes: far above any photo, far below a MemoryError.
MAX_BYTES = 64 * 2**20

_CHUNK = 1 << 16
_LOCAL_HOSTS = ("", "localhost")


def is_remote(uri) -> bool:
    return isinstance(uri, str) and uri.startswith(("http://", "https://"))


def local_path(uri) -> str:
    """A filesystem path for ``uri`` (a path or a ``file://`` URL on this machine).

    Raises ``ValueError`` for anything else: http(s) URLs are read by
    ``read_bytes``, never mistaken for paths; ``file://otherhost/...`` is
    refused rather than read as a local path.
    """
    if uri is None:
        raise ValueError("image: this item has no URI")
    uri = os.fspath(uri) if not isinstance(uri, str) else uri
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc.lower() not in _LOCAL_HOSTS:
            raise ValueError(
                f"image: expected a file:// URL on this machine, got {uri!r} "
                f"(host {parsed.netloc!r})"
            )
        return unquote(parsed.path)
    if parsed.scheme == "" or len(parsed.scheme) == 1:  # plain or Windows drive path
        return uri
    raise ValueError(f"image: expected a local path or file:// URL, got {uri!r}")


def _too_large(what: str, size, max_bytes: int) -> OSError:
    return OSError(f"image: {what} is larger than the {max_bytes:,}-byte limit ({size})")


def _read_local(path: str, max_bytes: int) -> bytes:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"image: no file at {path!r}") from None
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"image: {path!r} is not a regular file")
    if st.st_size > max_bytes:
        raise _too_large(repr(path), f"{st.st_size:,} bytes", max_bytes)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced since the stat above
            raise OSError(f"image: {path!r} is not a regular file")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew since the stat
        raise _too_large(repr(path), "still growing", max_bytes)
    return data


def _fetch(uri: str, max_bytes: int, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    try:
        with urllib.request.urlopen(uri, timeout=min(CONNECT_TIMEOUT_S, timeout)) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise _too_large(repr(uri), f"{int(length):,} bytes", max_bytes)
            parts, size = [], 0
            while True:
                # read1: at most one recv, so the deadline is checked however slowly
                # the server sends
                chunk = response.read1(_CHUNK)
                if not chunk:
                    break
                parts.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(repr(uri), "more bytes", max_bytes)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not complete after {timeout:g} s")
            return b"".join(parts)
    except (OSError, ValueError) as e:
        if "larger than the" in str(e):
            raise
        if isinstance(e, urllib.error.HTTPError):
            # still an HTTPError (callers name the type and status), with the URI
            raise urllib.error.HTTPError(
                e.url, e.code, f"{e.reason}; image: could not fetch {uri!r}", e.headers, None
            ) from None
        raise OSError(f"image: could not fetch {uri!r} ({e})") from None


def read_bytes(uri, *, max_bytes: int | None = None, timeout: float | None = None) -> bytes:
    """The raw bytes ``uri`` names: a path, a ``file://`` URL or an http(s) URL.

    http(s) is fetched only for catalogues built from URLs, i.e. when the
    user's own catalogue points there. ``max_bytes`` defaults to
    ``MAX_BYTES``, ``timeout`` (the overall deadline of a fetch) to
    ``URL_TIMEOUT_S``. Every failure is an ``OSError`` (``FileNotFoundError``
    for a missing file) or a ``ValueError`` naming the URI.
    """
    max_bytes = MAX_BYTES if max_bytes is None else int(max_bytes)
    timeout = URL_TIMEOUT_S if timeout is None else float(timeout)
    if is_remote(uri):
        return _fetch(uri, max_bytes, timeout)
    return _read_local(local_path(uri), max_bytes)
