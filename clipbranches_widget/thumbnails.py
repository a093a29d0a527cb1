"""Kernel-side thumbnails: small encoded images sent to the grid as binary buffers.

The browser never reads the user's files: the kernel opens each image (a path,
a file:// URL, or an http(s) URL when the catalogue was built from URLs) with
Pillow, shrinks it keeping its aspect ratio, encodes it (JPEG, or PNG when it
has transparency) and hands the bytes to the widget, which sends them as
binary comm buffers (never base64). Images already small enough and in a
format browsers decode are checked (fully decoded) and sent as they are.
Encoded thumbnails are kept in a bounded
LRU cache, so paging back and forth or refining re-sends bytes without
re-decoding the files.
"""

from __future__ import annotations

import io
import logging
from collections import OrderedDict
from dataclasses import dataclass

from PIL import Image

from .engine._validation import check_positive_int
from .engine.store.uris import is_remote, local_path, read_bytes

__all__ = [
    "Thumbnail",
    "Thumbnailer",
    "encode",
    "full_image",
    "image_bytes",
    "is_remote",
    "local_path",
    "open_image",
    "read_bytes",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Thumbnail:
    """Encoded image bytes with their pixel size and MIME type."""

    data: bytes
    width: int
    height: int
    mime: str


#: Formats every browser decodes: small images in them are sent as they are.
BROWSER_FORMATS = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
}


def _decode(uri, data: bytes):
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # every pixel: a truncated file fails here, not in the browser
            fmt = im.format
            if im.mode in ("RGB", "RGBA", "L"):
                return im.copy(), fmt
            alpha = "A" in im.getbands() or "transparency" in im.info
            return im.convert("RGBA" if alpha else "RGB"), fmt
    except Exception as e:
        # decoders fail in many ways (DecompressionBombError, SyntaxError from a
        # broken PNG chunk, TypeError from a malformed TIFF, ...): all are "not
        # readable", never a crash of the caller
        raise OSError(
            f"image: could not read {uri!r} as an image ({type(e).__name__}: {e})"
        ) from None


def image_bytes(uri) -> bytes:
    """The bytes of ``uri`` after checking that they decode as an image (for copies).

    Raises ``OSError`` naming the URI for what is not a readable regular image
    file: export never copies a password file a URI happens to name.
    """
    data = read_bytes(uri)
    _decode(uri, data)
    return data


def open_image(uri):
    """Open ``uri`` as a fully decoded PIL image (errors name the file)."""
    return _decode(uri, read_bytes(uri))[0]


def _shrunk(uri, max_side: int, quality: int) -> Thumbnail:
    """``uri`` no larger than ``max_side``, aspect ratio kept.

    An image that is already small enough, in a format browsers decode, is
    sent as its own bytes: no re-encoding cost and no second compression.
    """
    data = read_bytes(uri)
    im, fmt = _decode(uri, data)
    if max(im.size) <= max_side and fmt in BROWSER_FORMATS:
        return Thumbnail(data, im.width, im.height, BROWSER_FORMATS[fmt])
    # thumbnail() keeps the aspect ratio and never enlarges
    im.thumbnail((max_side, max_side))
    return encode(im, quality=quality)


def encode(im, *, quality: int = 85) -> Thumbnail:
    """Encode a PIL image: JPEG when opaque (small), PNG when it has alpha."""
    buf = io.BytesIO()
    if im.mode == "RGBA":
        im.save(buf, format="PNG", optimize=False)
        mime = "image/png"
    else:
        im.save(buf, format="JPEG", quality=quality)
        mime = "image/jpeg"
    return Thumbnail(buf.getvalue(), im.width, im.height, mime)


class Thumbnailer:
    """Make and cache aspect-preserving thumbnails of catalogue images.

    Parameters
    ----------
    size : int, default 160
        The longer side of a thumbnail in pixels. Images already smaller are
        not enlarged (the grid scales them up in the browser).
    max_items : int, default 4096
        Thumbnails kept in the LRU cache.
    quality : int, default 85
        JPEG quality.
    """

    def __init__(self, size: int = 160, *, max_items: int = 4096, quality: int = 85):
        if not isinstance(size, int) or size < 8:
            raise ValueError(f"size: expected an integer of at least 8 pixels, got {size!r}")
        self.size = size
        self.max_items = check_positive_int("max_items", max_items)
        self.quality = quality
        self._cache: OrderedDict = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._cache)

    def get(self, uri) -> Thumbnail:
        """The thumbnail of ``uri`` (cached). Raises on unreadable images."""
        key = str(uri)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return hit
        self.misses += 1
        thumb = _shrunk(uri, self.size, self.quality)
        self._cache[key] = thumb
        if len(self._cache) > self.max_items:
            self._cache.popitem(last=False)
        return thumb

    def try_get(self, uri) -> tuple[Thumbnail | None, str]:
        """``(thumbnail, "")``, or ``(None, reason)`` when the image cannot be read.

        One broken file must not blank the grid: the cell shows the reason.
        """
        try:
            return self.get(uri), ""
        except Exception as e:  # any failure stays in its own cell
            log.warning("thumbnail: %s", e)
            return None, str(e)


def full_image(uri, *, max_side: int = 1024, quality: int = 90) -> Thumbnail:
    """The image for the lightbox: full size, shrunk only when larger than ``max_side``."""
    return _shrunk(uri, max_side, quality)
