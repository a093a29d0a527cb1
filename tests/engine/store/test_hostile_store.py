"""Issue 16, store items: each test reproduces one fault of main (d4ef349)."""

import json
import os
import threading
import time

import numpy as np
import pytest

from clipbranches_widget import Catalogue
from clipbranches_widget.cli import main
from clipbranches_widget.engine.codes.pca import Compressor
from clipbranches_widget.engine.store import build as build_module
from clipbranches_widget.engine.store import format as storage
from clipbranches_widget.engine.store.embed import (
    ClipEmbedder,
    ImageReadError,
    load_image,
    register_tiny_model,
)
from clipbranches_widget.engine.store.lock import output_lock
from clipbranches_widget.engine.store.sources import list_images

from images import write_images


@pytest.fixture(scope="module")
def embedder():
    return ClipEmbedder(register_tiny_model(), None, batch_size=4, num_workers=2)


def saved(tmp_path, n=20, d=16, seed=0):
    X = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return Catalogue.from_embeddings(X, uris=[f"u{i}" for i in range(n)]).save(tmp_path / "c")


def edit_manifest(path, change):
    m = json.loads((path / "manifest.json").read_text())
    change(m)
    (path / "manifest.json").write_text(json.dumps(m))


# --- data loss ---
def test_two_builds_of_one_out_at_once_never_corrupt_it(tmp_path, embedder):
    root = tmp_path / "imgs"
    write_images(root, 24, seed=4)
    clean = Catalogue.build(root, out=tmp_path / "clean", embedder=embedder, progress=False)
    out, results, errors = tmp_path / "out", [], []

    def run():
        try:
            kw = dict(embedder=embedder, batch_size=4, chunk_size=8, progress=False)
            results.append(Catalogue.build(root, out=out, **kw))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(results) == 2
    again = Catalogue.open(out)
    assert list(again.uris) == list(clean.uris)
    np.testing.assert_array_equal(again.codes, clean.codes)


def test_a_second_writer_waits_for_the_lock(tmp_path, embedder):
    root = tmp_path / "imgs"
    write_images(root, 4, seed=5)
    out, done = tmp_path / "out", []
    with output_lock(out):
        t = threading.Thread(
            target=lambda: done.append(
                Catalogue.build(root, out=out, embedder=embedder, progress=False)
            )
        )
        t.start()
        time.sleep(1.0)
        assert not done and not out.exists()  # waiting, not writing beside us
    t.join(60)
    assert len(done[0]) == 4


def test_a_killed_append_leaves_no_extra_failure_lines(tmp_path):
    cat = saved(tmp_path)
    # a killed append wrote failures (one half-written) but no manifest
    with open(cat.path / storage.FAILED, "w") as f:
        f.write('{"uri": "junk1", "reason": "x"}\n{"uri": "jun')
    w = storage.CatalogueWriter(
        cat.path, code_dims=32, n_features=16, embeddings=True, uris=True, start=cat.manifest
    )
    w.add_failed([("real", "unreadable")])
    w.finish(compressor=cat.manifest["compressor"], embedder=None)
    assert storage.read_failed(cat.path) == [{"uri": "real", "reason": "unreadable"}]
    assert Catalogue.open(cat.path).failed == [{"uri": "real", "reason": "unreadable"}]


# --- the kernel must not die ---
def test_damaged_uri_offsets_are_refused_at_open(tmp_path):
    cat = saved(tmp_path)
    offsets = np.fromfile(cat.path / storage.URI_OFFSETS, "<i8")
    offsets[5] = 10**12
    offsets.tofile(cat.path / storage.URI_OFFSETS)
    with pytest.raises(ValueError, match=r"uri_offsets.i64.*10{12} at row 5.*damaged"):
        Catalogue.open(cat.path)
    offsets[5], offsets[-1] = offsets[4], offsets[-1] + 1
    offsets.tofile(cat.path / storage.URI_OFFSETS)
    with pytest.raises(ValueError, match=r"uri_offsets.i64.*expected offsets from 0"):
        Catalogue.open(cat.path)


@pytest.mark.parametrize("name", ["/etc/passwd", "../../etc/passwd", "sub/codes.u8", "..", 7])
def test_manifest_file_names_stay_inside_the_catalogue(tmp_path, name):
    cat = saved(tmp_path)
    edit_manifest(cat.path, lambda m: m["files"].update(codes=name))
    with pytest.raises(ValueError, match="files.codes to name a file inside the catalogue"):
        Catalogue.open(cat.path)


# --- obscure errors ---
@pytest.mark.parametrize(
    "text, match",
    [
        ('{"format": "clipb', "expected a JSON manifest"),
        ("", "expected a JSON manifest"),
        ("[1, 2]", "expected a JSON object, got a list"),
        ('{"format": "clipbranches-catalogue", "version": 1}', "expected a 'counts' object"),
    ],
)
def test_broken_manifests_name_the_file_and_what_was_expected(tmp_path, capsys, text, match):
    cat = saved(tmp_path)
    (cat.path / "manifest.json").write_text(text)
    with pytest.raises(ValueError, match=f"manifest.json'?: {match}"):
        Catalogue.open(cat.path)
    assert main(["info", str(cat.path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("clipbranches info: error: ") and err.count("\n") == 1
    assert "manifest.json" in err and "Traceback" not in err


def test_manifest_without_items_count(tmp_path):
    cat = saved(tmp_path)
    edit_manifest(cat.path, lambda m: m["counts"].pop("items"))
    with pytest.raises(ValueError, match="expected counts.items to be a non-negative integer"):
        Catalogue.open(cat.path)


# --- builds that fail late or never finish ---
def test_a_non_utf8_file_name_fails_before_embedding(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    write_images(root, 2)
    bad = os.path.join(os.fsencode(root), b"caf\xe9.png")
    with open(os.path.join(os.fsencode(root), b"img000.png"), "rb") as f, open(bad, "wb") as g:
        g.write(f.read())
    monkeypatch.setattr(build_module, "ClipEmbedder", None)  # never reached
    with pytest.raises(ValueError, match=r"caf\\xe9.png' is not valid UTF-8"):
        Catalogue.build(root, out=tmp_path / "c", progress=False)


def test_a_fifo_in_the_source_folder_is_skipped_and_never_read(tmp_path):
    root = tmp_path / "imgs"
    paths = write_images(root, 2)
    os.mkfifo(root / "pipe.jpg")
    assert list_images(root) == sorted(paths)
    t0 = time.perf_counter()
    with pytest.raises(ImageReadError, match="not a regular file"):
        load_image(str(root / "pipe.jpg"))
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_cli_build_rejects_a_bad_out_before_embedding(tmp_path, capsys, monkeypatch, kind):
    write_images(tmp_path / "imgs", 2)
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("not a catalogue")
    else:
        out.mkdir()
        (out / "mine.txt").write_text("user data")
    monkeypatch.setattr(build_module, "ClipEmbedder", None)  # embedding would fail loudly
    args = ["build", str(tmp_path / "imgs"), str(out), "--model", "clipbranches-tiny"]
    assert main([*args, "--pretrained", "none", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert ("is a file" if kind == "file" else "non-empty folder") in err
    assert out.exists()


# --- silently wrong results ---
def test_in_memory_uris_must_be_strings():
    codes = np.zeros((3, 32), np.uint8)
    with pytest.raises(TypeError, match="got one str; wrap it in a list"):
        Catalogue(codes, compressor=Compressor(), uris="abc")
    for bad in ([1, 2, 3], ["a", b"b", "c"], ["a", 2.5, "c"]):
        with pytest.raises(TypeError, match="uris: expected strings or paths .* at position"):
            Catalogue(codes, compressor=Compressor(), uris=bad)


# --- leftovers ---
def test_leftovers_of_dead_writers_are_removed(tmp_path):
    cat = saved(tmp_path)
    left = [".c.old", ".c.saving", ".c.saving-999999-1", ".c.merging-1-2"]
    for name in left:
        (tmp_path / name).mkdir()
        (tmp_path / name / "codes.u8").write_bytes(b"x")
    (tmp_path / ".c.old-abc").mkdir()
    (tmp_path / ".c.partial").mkdir()  # a resumable build: kept
    cat.save(tmp_path / "c", overwrite=True)
    names = sorted(os.listdir(tmp_path))
    assert names == [".c.lock", ".c.partial", "c"]


def test_stale_parquet_temporaries_are_removed(tmp_path):
    cat = saved(tmp_path)
    stale = [tmp_path / "t.parquet.partial-999999", tmp_path / ".t.parquet.tmp-999999-5"]
    for p in stale:
        p.write_bytes(b"half")
    cat.to_parquet(tmp_path / "t.parquet")
    assert sorted(os.listdir(tmp_path)) == [".c.lock", "c", "t.parquet"]


# --- identity ---
def test_catalogue_identity_is_stored_and_follows_the_content(tmp_path):
    X = np.random.default_rng(1).standard_normal((20, 16)).astype(np.float32)
    mem = Catalogue.from_embeddings(X, uris=[f"u{i}" for i in range(20)])
    ident = mem.identity
    assert set(ident) == {"uuid", "fingerprint"} and mem.identity == ident
    disk = mem.save(tmp_path / "c")
    assert disk.identity == ident == disk.manifest["identity"]  # saved: the same catalogue
    assert Catalogue.open(tmp_path / "c").identity == ident
    disk.append(embeddings=X[:2], uris=["a", "b"])
    after = Catalogue.open(tmp_path / "c").identity
    assert after["uuid"] == ident["uuid"] and after["fingerprint"] != ident["fingerprint"]
    assert disk.identity == after
    mem.append(embeddings=X[:2], uris=["a", "b"])
    assert mem.identity == after  # same codes, same catalogue
    other = Catalogue.from_embeddings(X, uris=[f"u{i}" for i in range(20)])
    assert other.identity["uuid"] != ident["uuid"]
    assert other.identity["fingerprint"] == ident["fingerprint"]
    merged = Catalogue.merge([disk, disk], tmp_path / "m")
    assert merged.identity["uuid"] != ident["uuid"]
