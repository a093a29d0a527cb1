"""Bad images and hostile URIs never stop the widget and never leave the machine.

Issue 16, groups 3 and 4: every input is generated here, in tmp_path.
"""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from clipbranches_widget import Catalogue, ClipBranches
from clipbranches_widget.thumbnails import Thumbnailer, image_bytes


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


_SIG = b"\x89PNG\r\n\x1a\n"


def bomb_png() -> bytes:
    """A 30000x30000 PNG header over a few bytes: PIL's DecompressionBombError."""
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
    return _SIG + ihdr + _chunk(b"IDAT", zlib.compress(b"\0" * 10)) + _chunk(b"IEND", b"")


def broken_chunk_png() -> bytes:
    """A PNG whose data is cut by a chunk of an invalid type: PIL's SyntaxError."""
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
    raw = zlib.compress(b"".join(b"\0" + b"\x10" * 12 for _ in range(4)))
    bad = struct.pack(">I", 3) + b"\x01\x02\x03\x04abc\0\0\0\0"
    return _SIG + ihdr + _chunk(b"IDAT", raw[:5]) + bad + _chunk(b"IEND", b"")


def malformed_tiff() -> bytes:
    """A TIFF whose strip offsets are a RATIONAL: PIL's TypeError."""
    off = 8 + 2 + 12 * 8 + 4
    entries = [
        (256, 3, 1, 2),
        (257, 3, 1, 2),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 5, 1, off),  # StripOffsets, of the wrong type
        (277, 3, 1, 1),
        (279, 4, 1, 4),
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries)
    return b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + struct.pack("<II", 3, 2)


BAD = {
    "bomb.png": (bomb_png, "DecompressionBombError"),
    "chunk.png": (broken_chunk_png, "SyntaxError"),
    "strips.tif": (malformed_tiff, "TypeError"),
}


def _good(path, colour=(200, 30, 30)):
    Image.new("RGB", (24, 16), colour).save(path)
    return str(path)


def _catalogue(uris):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((len(uris), 16)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return Catalogue.from_embeddings(X, uris=list(uris))


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_image_is_a_message_in_its_cell(tmp_path, name):
    make, error = BAD[name]
    path = tmp_path / name
    path.write_bytes(make())
    thumb, problem = Thumbnailer(64).try_get(str(path))
    assert thumb is None and "could not read" in problem and error in problem


def test_bad_images_never_stop_the_widget(tmp_path):
    uris = [_good(tmp_path / f"ok{k}.png", (k * 40, 90, 90)) for k in range(3)]
    for name, (make, _) in BAD.items():
        (tmp_path / name).write_bytes(make())
        uris.append(str(tmp_path / name))
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.jpg")
        uris.append(str(tmp_path / "fifo.jpg"))
    uris += ["/dev/zero", "file://otherhost/etc/passwd"]
    w = ClipBranches(_catalogue(uris))  # must open: one bad image never stops it
    items = {it["id"]: it for it in w.items}
    assert sum(it["thumb"] is not None for it in w.items) == 3
    for k in range(3, len(uris)):
        assert items[k]["thumb"] is None and items[k]["problem"], uris[k]
    for k in range(len(uris)):  # the details view: a message, never an exception
        detail, image = w.explain(k)
        assert (image is None) == (k >= 3) and (k < 3 or detail["problem"])


def test_export_copies_only_images_the_catalogue_names(tmp_path, monkeypatch):
    secret = tmp_path / "secret"
    secret.mkdir()
    passwd = secret / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    fake = secret / "key.jpg"  # an image name, not an image
    fake.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    pics = tmp_path / "pics"
    pics.mkdir()
    good = [_good(pics / f"{k}.png") for k in range(2)]
    monkeypatch.chdir(pics)
    for hostile in ("../secret/passwd", passwd.as_uri(), str(fake), "/etc/passwd"):
        w = ClipBranches(_catalogue(good + [hostile]), k=3)
        w.session.search([0])
        assert w.session.results.count == 3
        out = tmp_path / "out"
        with pytest.raises(OSError, match="could not read|not a regular file|no file"):
            w.export(out)
        assert not out.exists()  # nothing half-copied either
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and b"root:x" in p.read_bytes()]
    assert leaked == [passwd]
    w = ClipBranches(_catalogue(good), k=2)
    w.session.search([0])
    out = w.export(tmp_path / "fine")
    assert sorted(p.suffix for p in out.iterdir()) == [".csv", ".png", ".png"]
    assert image_bytes(good[0]) == open(good[0], "rb").read()


def test_export_refuses_a_non_image_even_with_an_image_name(tmp_path):
    text = tmp_path / "x.jpg"
    text.write_text("hello")
    with pytest.raises(OSError, match="could not read .*x.jpg.* as an image"):
        image_bytes(str(text))
    with pytest.raises(OSError, match="is not a regular file"):
        image_bytes(str(tmp_path))
    im = Image.open(io.BytesIO(image_bytes(_good(tmp_path / "y.png"))))
    assert im.size == (24, 16)
