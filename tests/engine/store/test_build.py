"""Catalogue.build / open / save / append, the on-disk format and the readers."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from clipbranches_widget import Catalogue, Session
from clipbranches_widget.engine.store import format as storage
from clipbranches_widget.engine.store.build import partial_dir
from clipbranches_widget.engine.store.embed import ClipEmbedder, register_tiny_model
from clipbranches_widget.engine.store.sources import list_images

from images import write_images, write_truncated_jpeg


@pytest.fixture(scope="module")
def embedder():
    return ClipEmbedder(register_tiny_model(), None, batch_size=4, num_workers=2)


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    paths = write_images(root / "a", 13, seed=1) + write_images(
        root / "b" / "c", 12, seed=2, ext=".jpg"
    )
    return root, sorted(paths)


def build(source, out, embedder, **kw):
    kw.setdefault("batch_size", 4)
    kw.setdefault("chunk_size", 8)
    kw.setdefault("progress", False)
    return Catalogue.build(source, out=out, embedder=embedder, **kw)


def test_build_open_round_trip(photos, tmp_path, embedder):
    root, paths = photos
    out = tmp_path / "cat"
    cat = build(root, out, embedder)
    assert len(cat) == 25 and cat.codes.shape == (25, 32) and cat.codes.dtype == np.uint8
    assert list(cat.uris) == paths  # sorted absolute paths, recursive
    X = embedder.embed_images(paths, batch_size=4)  # the build's batches
    np.testing.assert_array_equal(np.asarray(cat.embeddings), X.astype(np.float16))
    np.testing.assert_array_equal(cat.codes, cat.compressor.transform(X))
    again = Catalogue.open(out)
    np.testing.assert_array_equal(again.codes, cat.codes)
    np.testing.assert_array_equal(again.embeddings, cat.embeddings)
    assert isinstance(again.codes, np.memmap) and isinstance(again.embeddings, np.memmap)
    assert again.uri(3) == paths[3] and again.uris[-1] == paths[-1]
    assert list(again.uris[[0, 24, -2]]) == [paths[0], paths[24], paths[-2]]
    assert again.compressor.to_dict() == cat.compressor.to_dict()
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "clipbranches-catalogue" and m["version"] == 1
    assert m["model"] == "clipbranches-tiny" and m["pretrained"] is None
    assert m["counts"] == {
        "items": 25,
        "failed": 0,
        "uri_bytes": sum(len(p.encode()) for p in paths),
    }
    assert m["dims"] == {"code": 32, "embedding": embedder.n_features_}
    assert m["compressor"]["kind"] == "pca"
    assert not partial_dir(out).exists()
    done = cat.build_summary
    assert done["images"] == 25 and done["items"] == 25 and done["failed"] == 0
    assert done["resumed"] == 0 and done["images_per_s"] > 0
    assert again.build_summary is None


def test_opened_catalogue_searches_by_text_with_a_lazily_created_embedder(
    photos, tmp_path, embedder
):
    root, _ = photos
    build(root, tmp_path / "cat", embedder)
    cat = Catalogue.open(tmp_path / "cat")
    assert cat.has_embedder and cat._embedder is None  # nothing loaded by open
    s = Session(cat, k=5)
    res = s.search("a photo of a dog")
    assert cat._embedder is not None
    expected = embedder.embed_text(["a photo of a dog"])[0]
    scores, ids = cat.seeder.search(expected, 5)
    np.testing.assert_array_equal(res.ids, ids)
    s.label(res.ids[:2], 1)
    s.label(res.ids[2:4], -1)
    assert s.refine().count >= 2
    q = cat.embed_images([cat.uri(7)])
    assert cat.seeder.search(q[0], 1)[1][0] == 7


def test_an_unavailable_model_fails_on_first_text_query_with_advice(tmp_path, rng, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    X = rng.standard_normal((40, 1024)).astype(np.float32)
    cat = Catalogue.from_embeddings(X)
    cat.embedder_spec = {"model": "RN50", "pretrained": "openai", "seed": 0}
    opened = cat.save(tmp_path / "c")  # opening never loads the model
    assert opened.has_embedder and opened.manifest["model"] == "RN50"
    s = Session(opened, k=5)
    assert s.search([3]).ids[0] == 3  # search by example still works
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE is set.*pretrained=<path to a local"):
        s.search("a red bus")


def test_interrupted_build_resumes_and_equals_a_clean_build(photos, tmp_path, embedder, caplog):
    root, _ = photos
    clean = build(root, tmp_path / "clean", embedder)
    out = tmp_path / "resumed"

    class Interrupt(Exception):
        pass

    def stop_after_5_batches(done, total):
        if done >= 20:
            raise Interrupt

    with pytest.raises(Interrupt):
        build(root, out, embedder, callback=stop_after_5_batches)
    assert not out.exists()  # a half-written catalogue is never mistaken for a complete one
    assert partial_dir(out).exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Catalogue.open(out)
    out.mkdir()
    with pytest.raises(FileNotFoundError, match="no manifest.json; an unfinished build.*resume"):
        Catalogue.open(out)
    seen = []
    caplog.set_level("INFO", logger="clipbranches_widget.engine.store")
    resumed = build(root, out, embedder, callback=lambda d, t: seen.append(d))
    assert "2 of 4 chunks (16 images) already embedded" in caplog.text
    assert seen == [20, 24, 25]  # only the batches of the two missing chunks ran
    np.testing.assert_array_equal(resumed.codes, clean.codes)
    np.testing.assert_array_equal(resumed.embeddings, clean.embeddings)
    assert list(resumed.uris) == list(clean.uris)
    assert resumed.compressor.to_dict() == clean.compressor.to_dict()
    assert not partial_dir(out).exists()


def test_a_changed_source_restarts_instead_of_mixing(photos, tmp_path, embedder, caplog):
    root, _ = photos
    out = tmp_path / "cat"

    def stop(done, total):
        if done >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(root, out, embedder, callback=stop)
    write_images(root / "new", 2, seed=9)
    seen = []
    cat = build(root, out, embedder, callback=lambda d, t: seen.append(d))
    assert "starting over" in caplog.text and seen[0] == 4
    assert len(cat) == 27


def test_corrupt_files_are_skipped_and_reported(photos, tmp_path, embedder, caplog):
    root, paths = photos
    (root / "notes.jpg").write_text("a text file named .jpg")
    write_truncated_jpeg(root / "b" / "cut.jpg")
    (root / "readme.txt").write_text("ignored: not an image extension")
    cat = build(root, tmp_path / "cat", embedder)
    assert len(cat) == 25 and list(cat.uris) == paths
    failed = {os.path.basename(f["uri"]): f["reason"] for f in cat.failed}
    assert set(failed) == {"notes.jpg", "cut.jpg"}
    assert "not an image" in failed["notes.jpg"] and "truncated" in failed["cut.jpg"]
    assert "2 of 27 images could not be read" in caplog.text
    assert Catalogue.open(tmp_path / "cat").manifest["counts"]["failed"] == 2


def test_nothing_readable_is_a_clear_error(tmp_path, embedder):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.png").write_text("no")
    with pytest.raises(ValueError, match="none of the 1 images could be read; first: .*a.png"):
        build(tmp_path / "x", tmp_path / "cat", embedder)
    assert not (tmp_path / "cat").exists()


def test_sources_folder_list_and_tables(photos, tmp_path):
    root, paths = photos
    (root / ".hidden").mkdir()
    write_images(root / ".hidden", 1)
    (root / "UPPER.PNG").write_bytes(open(paths[0], "rb").read())
    listed = list_images(root)
    assert listed == sorted(paths + [str((root / "UPPER.PNG").resolve())])
    assert list_images(paths[:3]) == paths[:3]
    assert list_images(["https://example.org/a.jpg"]) == ["https://example.org/a.jpg"]
    table = tmp_path / "t.csv"
    pd.DataFrame(
        {"caption": ["x", "y"], "filepath": ["photos/a/img000.png", "photos/a/img001.png"]}
    ).to_csv(table)
    assert list_images(table) == paths[:2]  # relative to the table's folder
    df = pd.DataFrame({"my_col": paths[:2]})
    assert list_images(df, path_column="my_col") == paths[:2]
    with pytest.raises(ValueError, match="no path column; expected one of"):
        list_images(df)
    with pytest.raises(ValueError, match="'nope' is not a column"):
        list_images(df, path_column="nope")
    with pytest.raises(FileNotFoundError, match="no such folder or table"):
        list_images(tmp_path / "missing")
    with pytest.raises(ValueError, match="for one image pass"):
        list_images(paths[0])
    with pytest.raises(TypeError, match="expected paths or URLs, got a int"):
        list_images([paths[0], 3])


def test_build_from_a_list_and_a_table(photos, tmp_path, embedder):
    root, paths = photos
    cat = build(paths[:6], tmp_path / "from_list", embedder)
    assert list(cat.uris) == paths[:6]
    cat = build(pd.DataFrame({"path": paths[5:9]}), tmp_path / "from_df", embedder)
    assert list(cat.uris) == paths[5:9]


def test_bad_build_arguments(photos, tmp_path, embedder):
    root, paths = photos
    with pytest.raises(ValueError, match="out: expected a directory"):
        Catalogue.build(paths, embedder=embedder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="found no images"):
        build(tmp_path / "empty", tmp_path / "cat", embedder)
    with pytest.raises(ValueError, match="chunk_size: expected a positive integer"):
        build(root, tmp_path / "cat", embedder, chunk_size=0)
    with pytest.raises(ValueError, match="compressor: expected 'pca' or a Compressor"):
        build(root, tmp_path / "cat", embedder, compressor="mlp")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="is not a catalogue"):
        build(root, tmp_path / "busy", embedder)
    assert (tmp_path / "busy" / "mine.txt").exists()


def test_rebuilding_opens_the_cached_catalogue_unless_overwritten(photos, tmp_path, embedder):
    root, _ = photos
    first = build(root, None, embedder)  # default: next to the images
    out = root / ".clipbranches"
    assert first.path == out and (out / "manifest.json").exists()
    calls = []
    again = build(root, None, embedder, callback=lambda d, t: calls.append(d))
    assert calls == [] and len(again) == 25
    other = ClipEmbedder(register_tiny_model(), None, seed=3)
    with pytest.raises(FileExistsError, match="built with .* pass overwrite=True"):
        build(root, None, other)
    rebuilt = build(root, None, other, overwrite=True)
    assert rebuilt.manifest["embedder"]["seed"] == 3
    assert not np.array_equal(rebuilt.embeddings, first.embeddings)


def test_append_images_later(photos, tmp_path, embedder):
    root, paths = photos
    cat = build(paths[:10], tmp_path / "cat", embedder)
    codes_before = np.array(cat.codes)
    added = cat.append(paths[5:20], batch_size=4, progress=False)  # 5 already there
    assert added == 10 and len(cat) == 20
    np.testing.assert_array_equal(cat.codes[:10], codes_before)  # old codes never change
    assert list(cat.uris) == paths[:20]
    X = embedder.embed_images(paths[10:20])
    np.testing.assert_array_equal(cat.codes[10:], cat.compressor.transform(X))
    reopened = Catalogue.open(tmp_path / "cat")
    assert len(reopened) == 20 and reopened.uri(19) == paths[19]
    np.testing.assert_array_equal(reopened.codes, cat.codes)
    assert cat.append(paths[:20], progress=False) == 0
    assert not (tmp_path / "cat" / ".append.partial").exists()


def test_an_interrupted_append_leaves_the_catalogue_intact_and_resumes(photos, tmp_path, embedder):
    root, paths = photos
    clean = build(paths[:5], tmp_path / "clean", embedder)
    clean.append(paths[5:], batch_size=4, chunk_size=8, progress=False)
    cat = build(paths[:5], tmp_path / "cat", embedder)

    def stop(done, total):
        if done >= 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cat.append(paths[5:], batch_size=4, chunk_size=8, progress=False, callback=stop)
    assert len(Catalogue.open(tmp_path / "cat")) == 5  # nothing committed
    seen = []
    assert (
        cat.append(
            paths[5:],
            batch_size=4,
            chunk_size=8,
            progress=False,
            callback=lambda d, t: seen.append(d),
        )
        == 20
    )
    assert seen[0] == 12  # the first chunk (8 images) was kept
    np.testing.assert_array_equal(cat.codes, clean.codes)
    assert list(Catalogue.open(tmp_path / "cat").uris) == paths


def test_sharded_builds_merge_into_the_catalogue_of_all_images(photos, tmp_path, embedder):
    root, paths = photos
    whole = build(paths, tmp_path / "whole", embedder)
    fitted = whole.compressor  # shards share one fitted compressor
    a = build(paths[:8], tmp_path / "a", embedder, compressor=fitted)  # batch-aligned
    (root / "notes.jpg").write_text("not an image")
    build(paths[8:] + [str(root / "notes.jpg")], tmp_path / "b", embedder, compressor=fitted)
    merged = Catalogue.merge([a, tmp_path / "b"], tmp_path / "merged")
    np.testing.assert_array_equal(merged.codes, whole.codes)
    np.testing.assert_array_equal(merged.embeddings, whole.embeddings)
    assert list(merged.uris) == paths and len(merged.failed) == 1
    assert merged.manifest["model"] == "clipbranches-tiny"
    other = build(paths[:4], tmp_path / "other", embedder)  # its own PCA fit
    with pytest.raises(ValueError, match="part 1 differs from part 0 in its compressor"):
        Catalogue.merge([a, other], tmp_path / "bad")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        Catalogue.merge([a], tmp_path / "merged")


def test_append_embeddings_and_crash_safety(tmp_path, rng):
    X = rng.standard_normal((50, 24)).astype(np.float32)
    cat = Catalogue.from_embeddings(X[:40], uris=[f"u{i}" for i in range(40)])
    disk = cat.save(tmp_path / "cat")
    with pytest.raises(ValueError, match="uris: expected one URI per new item"):
        disk.append(embeddings=X[40:])
    with pytest.raises(ValueError, match=r"expected a 2-D float array of shape \(n, 24\)"):
        disk.append(embeddings=X[40:, :5], uris=["x"] * 10)
    with pytest.raises(ValueError, match="either source .* or embeddings, got neither"):
        disk.append()
    assert disk.append(embeddings=X[40:], uris=[f"u{i}" for i in range(40, 50)]) == 10
    # a crash after writing data but before the manifest: the extra bytes are ignored
    with open(tmp_path / "cat" / storage.CODES, "ab") as f:
        f.write(b"\xff" * 32 * 3)
    again = Catalogue.open(tmp_path / "cat")
    assert len(again) == 50 and again.uri(49) == "u49"
    mem = Catalogue.from_embeddings(X[:40], uris=[f"u{i}" for i in range(40)])
    mem.append(embeddings=X[40:], uris=[f"u{i}" for i in range(40, 50)])
    np.testing.assert_array_equal(again.codes, mem.codes)
    assert again.append(embeddings=X[:2], uris=["a", "b"]) == 2  # overwrites the junk
    np.testing.assert_array_equal(
        Catalogue.open(tmp_path / "cat").codes[50:], mem.compressor.transform(X[:2])
    )


def test_save_open_without_uris_embeddings_or_model(tmp_path, rng):
    X = rng.standard_normal((30, 40)).astype(np.float32)
    cat = Catalogue.from_embeddings(X, keep_embeddings=False)
    disk = cat.save(tmp_path / "c")
    assert disk.uris is None and disk.embeddings is None and not disk.has_embedder
    assert disk.uri(0) is None
    np.testing.assert_array_equal(disk.codes, cat.codes)
    np.testing.assert_allclose(disk.vector([3]), cat.vector([3]), atol=1e-6)
    with pytest.raises(ValueError, match="no text encoder"):
        disk.embed_text(["x"])
    with pytest.raises(FileExistsError, match="overwrite=True"):
        cat.save(tmp_path / "c")
    cat.save(tmp_path / "c", overwrite=True)


def test_uri_column_handles_unicode_empty_and_indexing(tmp_path):
    uris = ["a", "", "ü/日本.jpg", None, "s3://bucket/x.png"]
    cat = Catalogue.from_embeddings(np.eye(5, 8, dtype=np.float32), uris=uris)
    col = cat.save(tmp_path / "c").uris
    assert isinstance(col, storage.UriColumn) and len(col) == 5
    assert list(col) == ["a", "", "ü/日本.jpg", "", "s3://bucket/x.png"]  # missing -> ""
    assert col[2] == "ü/日本.jpg" and col[-1] == "s3://bucket/x.png"
    assert list(col[1:3]) == ["", "ü/日本.jpg"]
    assert list(col[np.array([4, 0])]) == ["s3://bucket/x.png", "a"]
    assert np.asarray(col).dtype == object and np.asarray(col).shape == (5,)
    with pytest.raises(IndexError, match="out of range"):
        col[5]


def test_damaged_or_foreign_directories_are_reported(tmp_path, rng):
    X = rng.standard_normal((20, 16)).astype(np.float32)
    Catalogue.from_embeddings(X).save(tmp_path / "c")
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    m["counts"]["items"] = 99
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="catalogue is damaged"):
        Catalogue.open(tmp_path / "c")
    m["format"] = "something-else"
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="expected a 'clipbranches-catalogue' manifest"):
        Catalogue.open(tmp_path / "c")
    m["format"], m["version"] = "clipbranches-catalogue", 99
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="newer than this library reads"):
        Catalogue.open(tmp_path / "c")


def write_clip_retrieval(folder, rng, shards=(7, 5), d=16):
    (folder / "img_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    Xs, start = [], 0
    for k, n in enumerate(shards):
        X = rng.standard_normal((n, d)).astype(np.float16)
        np.save(folder / "img_emb" / f"img_emb_{k}.npy", X)
        pd.DataFrame(
            {
                "image_path": [f"/data/{start + i}.jpg" for i in range(n)],
                "caption": [f"c{start + i}" for i in range(n)],
            }
        ).to_parquet(folder / "metadata" / f"metadata_{k}.parquet")
        Xs.append(X)
        start += n
    return np.concatenate(Xs).astype(np.float32)


def test_clip_retrieval_reader(tmp_path, rng):
    X = write_clip_retrieval(tmp_path / "cr", rng, shards=(7, 5, 3))
    cat = Catalogue.from_clip_retrieval(tmp_path / "cr")
    assert len(cat) == 15 and cat.uri(8) == "/data/8.jpg"
    np.testing.assert_array_equal(np.asarray(cat.embeddings), X)
    assert list(cat.metadata["caption"][:2]) == ["c0", "c1"]
    assert not cat.has_embedder
    with pytest.raises(ValueError, match="pretrained: expected the tag or checkpoint"):
        Catalogue.from_clip_retrieval(tmp_path / "cr", model="ViT-B-32")
    with_model = Catalogue.from_clip_retrieval(
        tmp_path / "cr", model="ViT-B-32", pretrained="openai"
    )
    assert with_model.embedder_spec["model"] == "ViT-B-32"
    disk = with_model.save(tmp_path / "saved")
    assert disk.manifest["model"] == "ViT-B-32" and disk.has_embedder
    np.save(tmp_path / "cr" / "img_emb" / "img_emb_3.npy", X[:2])
    with pytest.raises(ValueError, match=r"metadata shards \[0, 1, 2\] do not match"):
        Catalogue.from_clip_retrieval(tmp_path / "cr")
    with pytest.raises(FileNotFoundError, match="img_emb/ folder"):
        Catalogue.from_clip_retrieval(tmp_path)


def test_precomputed_paths_never_import_torch(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        import numpy as np, pandas as pd
        import clipbranches_widget
        from clipbranches_widget import Catalogue, Session
        from clipbranches_widget.engine.store import build, readers, sources
        from clipbranches_widget.engine.store import format as storage
        rng = np.random.default_rng(0)
        X = rng.standard_normal((300, 24)).astype(np.float32)
        cat = Catalogue.from_embeddings(X, uris=[f"u{{i}}" for i in range(300)])
        disk = cat.save(r"{tmp_path / "c"}")
        disk = Catalogue.open(r"{tmp_path / "c"}")
        s = Session(disk, k=10)
        res = s.search([0])
        s.label(res.ids[:3], 1)
        s.refine()
        disk.append(embeddings=X[:5], uris=list("abcde"))
        heavy = sorted(m for m in ("torch", "torchvision", "open_clip") if m in sys.modules)
        print("heavy:", heavy)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "heavy: []" in r.stdout
