"""Damaged catalogue files: a clear error naming the file, or the right data.

A small catalogue (with URIs, embeddings and listed failures) is saved once;
each case copies it, damages one file or one manifest field, and opens it
in a forked child that reads every field (codes, embeddings, URIs, failures,
compressor, identity). The outcome is a clear error (it names the file, or
the manifest field), the original data, or -- unacceptable -- a crash (a
signal, or an error that names nothing) or different data read silently.

To add a case: a ``(name, damage)`` to ``FILE_DAMAGES`` (``damage(file)``
changes one file in place) or a ``(field path, value)`` to ``MANIFEST_CASES``.
"""

from __future__ import annotations

import json
import shutil
import zlib

import numpy as np
import pytest
from hostile_child import open_catalogue

from clipbranches_widget import Catalogue
from clipbranches_widget.engine.store import format as storage

pytestmark = pytest.mark.hostile

AREA = "damaged catalogue"
N, D = 20, 16


@pytest.fixture(scope="module")
def original(session_dir):
    root = session_dir / "damaged"
    X = np.random.default_rng(0).standard_normal((N, D)).astype(np.float32)
    cat = Catalogue.from_embeddings(X, uris=[f"/photos/é{i}.jpg" for i in range(N)]).save(
        root / "cat"
    )
    # two listed failures, as a build that met unreadable images writes them
    w = storage.CatalogueWriter(
        cat.path, code_dims=32, n_features=D, embeddings=True, uris=True, start=cat.manifest
    )
    w.add_failed([("/photos/bad1.jpg", "truncated"), ("/photos/bad2.jpg", "not an image")])
    w.finish(compressor=cat.manifest["compressor"], embedder=None)
    outside = root / "outside.bin"
    outside.write_bytes(np.random.default_rng(1).integers(0, 256, 1 << 14, np.uint8).tobytes())
    expected = open_catalogue(str(cat.path))
    assert "ok" in expected, expected
    return cat.path, outside, expected["ok"]


def _damaged_copy(original, tmp_path):
    src, outside, expected = original
    path = tmp_path / "cat"
    shutil.copytree(src, path)
    return path, outside, expected


def classify(result: dict, status: dict, expected, path, names=()) -> str:
    """The outcome of opening a damaged catalogue (see the module docstring)."""
    died = status["signal"] is not None or status["code"] != 0
    if status["hang"]:
        return "hang"
    if died or result is None:
        return "crash"
    got = result["value"]
    if "error" in got:
        text = got["error"]
        # clear: it names the damaged file (or the manifest and the field)
        if str(path) in text or any(n in text for n in names):
            return "clear error"
        return "crash"  # an obscure error: what a user cannot act on
    return "correct" if got["ok"] == expected else "silent acceptance"


def _run(forker, tmp_path, path):
    status = forker.one("open_catalogue", tmp_path, path=str(path), _timeout=30)
    return status["result"], status


def _flip(data: bytes, rng) -> bytes:
    b = bytearray(data)
    for i in rng.integers(0, len(b), max(1, len(b) // 50)):
        b[i] ^= 1 << int(rng.integers(0, 8))
    return bytes(b)


FILE_DAMAGES = {
    "delete": lambda f, out, rng: f.unlink(),
    "empty": lambda f, out, rng: f.write_bytes(b""),
    "truncate-half": lambda f, out, rng: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2]),
    "truncate-one-byte": lambda f, out, rng: f.write_bytes(f.read_bytes()[:-1]),
    "grow": lambda f, out, rng: f.write_bytes(f.read_bytes() + b"\x07" * 4096),
    "zero-fill": lambda f, out, rng: f.write_bytes(b"\0" * f.stat().st_size),
    "random-bytes": lambda f, out, rng: f.write_bytes(
        rng.integers(0, 256, f.stat().st_size, np.uint8).tobytes()
    ),
    "bit-flips": lambda f, out, rng: f.write_bytes(_flip(f.read_bytes(), rng)),
    "symlink-outside": lambda f, out, rng: (f.unlink(), f.symlink_to(out)),
    "directory": lambda f, out, rng: (f.unlink(), f.mkdir()),
}
FILES = [
    storage.MANIFEST,
    storage.CODES,
    storage.EMBEDDINGS,
    storage.URI_OFFSETS,
    storage.URI_BYTES,
    storage.FAILED,
]


# Known defects (issue 16 follow-ups): each reason says what a user meets.
def _xfail(reason):
    return pytest.mark.xfail(strict=True, reason=reason)


KNOWN: dict = {}  # (file, damage) -> _xfail(reason); all fixed so far


def _file_cases():
    for name in FILES:
        for damage in FILE_DAMAGES:
            marks = KNOWN.get((name, damage), ())
            yield pytest.param(name, damage, id=f"{name}-{damage}", marks=marks)


@pytest.mark.parametrize(("name", "damage"), list(_file_cases()))
def test_a_damaged_file_is_refused_by_name_or_read_correctly(
    original, tmp_path, forker, outcomes, name, damage
):
    path, outside, expected = _damaged_copy(original, tmp_path)
    rng = np.random.default_rng(zlib.crc32(f"{name}/{damage}".encode()))
    FILE_DAMAGES[damage](path / name, outside, rng)
    result, status = _run(forker, tmp_path, path)
    outcome = outcomes.record(
        AREA,
        classify(result, status, expected, path, names=(name,)),
        f"{name} {damage}: {result and result['value']}",
    )
    assert outcome in ("clear error", "correct"), (outcome, result, status)


def _set(manifest: dict, field: str, value):
    *parents, last = field.split(".")
    node = manifest
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value


_DELETE = object()
_WRONG = ["text", -1, 2.5, None, [1], {"a": 1}, True, 10**30]
MANIFEST_CASES = (
    [("counts.items", v) for v in [*_WRONG, N + 1, 10**12, _DELETE]]
    + [("counts.uri_bytes", v) for v in [*_WRONG, 49, 51, _DELETE]]
    + [("counts.failed", v) for v in [*_WRONG, 3, 10**9]]
    + [("dims.code", v) for v in [*_WRONG, 16, 33, 0, _DELETE]]
    + [("dims.embedding", v) for v in [*_WRONG, 8, 15, 32, 0, _DELETE]]
    + [("files.codes", v) for v in ["/etc/passwd", "../cat/codes.u8", "x/codes.u8", "", None, 7]]
    + [("files.embeddings", v) for v in ["/etc/hostname", "..", "nope.f16", 3.5]]
    + [("files.uris", v) for v in ["/etc/passwd", "uri_offsets.i64", []]]
    + [("files.failed", v) for v in ["/etc/passwd", {"x": 1}]]
    + [("files", v) for v in [None, [], "codes.u8"]]
    + [("counts", v) for v in [None, [], 20]]
    + [("dims", v) for v in [None, "32"]]
    + [("compressor", v) for v in [None, {}, {"kind": "nope"}, [], "pca"]]
    + [("compressor.mean", v) for v in [None, "x", [0.0] * 3, [[0.0]] * D]]
    + [("compressor.kind", v) for v in [5, "global", _DELETE]]
    + [("identity", v) for v in [None, 5, "x", [], {"uuid": 5}, {"fingerprint": []}]]
    + [("format", v) for v in [None, "other", 1]]
    + [("version", v) for v in [None, "1", -1, 2, 1.0]]
    + [("dtypes.codes", v) for v in ["<f8", None, 3]]
)

KNOWN_FIELDS: dict = {}  # (field, shown value) -> _xfail(reason); all fixed so far


def _field_cases():
    for field, value in MANIFEST_CASES:
        shown = "<deleted>" if value is _DELETE else repr(value)
        marks = KNOWN_FIELDS.get((field, shown), ())
        yield pytest.param(field, value, id=f"{field}={shown[:30]}", marks=marks)


@pytest.mark.parametrize(("field", "value"), list(_field_cases()))
def test_a_wrong_manifest_field_is_refused_by_name_or_harmless(
    original, tmp_path, forker, outcomes, field, value
):
    path, _, expected = _damaged_copy(original, tmp_path)
    manifest = json.loads((path / storage.MANIFEST).read_text())
    _set(manifest, field, value)
    (path / storage.MANIFEST).write_text(json.dumps(manifest))
    result, status = _run(forker, tmp_path, path)
    # clear: it names the manifest or the file the wrong field made unreadable
    outcome = classify(result, status, expected, path, names=())
    outcomes.record(AREA, outcome, f"manifest {field}={value!r:.40}: {result and result['value']}")
    assert outcome in ("clear error", "correct"), (outcome, result, status)
