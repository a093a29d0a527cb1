"""Issue 16 follow-ups: catalogue files are checked against the manifest at open
(checksums, links, failure list, dims, compressor, identity), and appends decide
what is new under the folder lock."""

import json
import logging
import threading

import numpy as np
import pytest

from clipbranches_widget import Catalogue
from clipbranches_widget.cli import main
from clipbranches_widget.engine.codes.registry import compressor_from_dict
from clipbranches_widget.engine.store import append as appending
from clipbranches_widget.engine.store import format as storage
from clipbranches_widget.engine.store import integrity
from clipbranches_widget.engine.store.embed import ClipEmbedder, register_tiny_model
from clipbranches_widget.engine.store.lock import output_lock

from images import write_images

N, D = 20, 16


def saved(tmp_path, n=N, seed=0):
    X = np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)
    uris = [f"/photos/é{i}.jpg" for i in range(n)]
    return Catalogue.from_embeddings(X, uris=uris).save(tmp_path / "c")


def scramble(file, offset=0):
    """Same size, other bytes."""
    b = bytearray(file.read_bytes())
    b[offset] ^= 0xFF
    file.write_bytes(bytes(b))


@pytest.mark.parametrize("name", [storage.CODES, storage.EMBEDDINGS, storage.URI_BYTES])
def test_same_size_damage_is_refused_at_open_naming_the_file(tmp_path, name):
    cat = saved(tmp_path)
    scramble(cat.path / name, offset=5)
    with pytest.raises(integrity.CorruptCatalogueError, match=name):
        Catalogue.open(cat.path)
    # not hashed when asked not to; verify() hashes on demand
    quick = Catalogue.open(cat.path, verify=False)
    with pytest.raises(integrity.CorruptCatalogueError, match=name):
        quick.verify()


def test_files_over_the_budget_are_logged_and_verify_checks_them(tmp_path, monkeypatch, caplog):
    cat = saved(tmp_path)
    assert sorted(cat.verify()) == sorted(
        [storage.CODES, storage.EMBEDDINGS, storage.URI_OFFSETS, storage.URI_BYTES]
    )
    scramble(cat.path / storage.EMBEDDINGS)
    monkeypatch.setattr(integrity, "VERIFY_AT_OPEN_BYTES", cat.codes.nbytes)
    with caplog.at_level(logging.INFO):
        big = Catalogue.open(cat.path)  # only the codes fit the budget
    assert "not verified at open" in caplog.text and storage.EMBEDDINGS in caplog.text
    with pytest.raises(integrity.CorruptCatalogueError, match=storage.EMBEDDINGS):
        big.verify()


def test_an_append_hashes_only_what_it_adds_and_the_result_verifies(tmp_path):
    cat = saved(tmp_path)
    extra = np.random.default_rng(1).standard_normal((5, D)).astype(np.float32)
    cat.append(embeddings=extra, uris=[f"new{i}" for i in range(5)])
    sums = cat.manifest["checksums"]
    assert [s[:2] for s in sums["embeddings"]] == [[0, N], [N, N + 5]]
    assert [s[:2] for s in sums["uri_offsets"]] == [[0, N + 1], [N + 1, N + 6]]
    reopened = Catalogue.open(cat.path, verify=True)
    assert len(reopened) == N + 5 and reopened.uris[N] == "new0"
    scramble(cat.path / storage.EMBEDDINGS, offset=3)  # an old row
    with pytest.raises(integrity.CorruptCatalogueError, match="rows 0..20"):
        Catalogue.open(cat.path)


def test_invalid_utf8_names_the_file_and_the_row(tmp_path):
    cat = saved(tmp_path)
    start = int(cat.uris.offsets[3])
    data = bytearray((cat.path / storage.URI_BYTES).read_bytes())
    data[start] = 0xFF
    (cat.path / storage.URI_BYTES).write_bytes(bytes(data))
    quick = Catalogue.open(cat.path, verify=False)
    with pytest.raises(ValueError, match=r"uris\.utf8.*URI 3"):
        np.asarray(quick.uris)
    with pytest.raises(ValueError, match=r"uris\.utf8.*URI 3"):
        quick.uris[3]
    assert quick.uris[2] == "/photos/é2.jpg"


@pytest.mark.parametrize("name", [storage.CODES, storage.EMBEDDINGS, storage.URI_BYTES])
def test_a_file_replaced_by_a_link_is_refused(tmp_path, name):
    cat = saved(tmp_path)
    outside = tmp_path / "outside"
    outside.write_bytes((cat.path / name).read_bytes())  # even the same bytes
    (cat.path / name).unlink()
    (cat.path / name).symlink_to(outside)
    with pytest.raises(ValueError, match="symbolic link"):
        Catalogue.open(cat.path, verify=False)


def test_an_append_never_writes_through_a_link(tmp_path):
    cat = saved(tmp_path)
    outside = tmp_path / "outside.jsonl"
    outside.write_text("")
    (cat.path / storage.FAILED).symlink_to(outside)
    with pytest.raises(ValueError, match="symbolic link"):
        w = storage.CatalogueWriter(
            cat.path, code_dims=32, n_features=D, embeddings=True, uris=True, start=cat.manifest
        )
        w.add_failed([("x", "y")])
    assert outside.read_text() == ""


def with_failures(tmp_path):
    cat = saved(tmp_path)
    w = storage.CatalogueWriter(
        cat.path, code_dims=32, n_features=D, embeddings=True, uris=True, start=cat.manifest
    )
    w.add_failed([("/bad1.jpg", "truncated"), ("/bad2.jpg", "not an image")])
    w.finish(compressor=cat.manifest["compressor"], embedder=None)
    return cat.path


def test_the_failure_list_reads_only_the_counted_lines(tmp_path):
    path = with_failures(tmp_path)
    with open(path / storage.FAILED, "ab") as f:
        f.write(b'{"uri": "killed-append", "reason": "x"}\n\xff\xfe junk')
    assert [f["uri"] for f in Catalogue.open(path).failed] == ["/bad1.jpg", "/bad2.jpg"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "found no file"),
        (b"", "expected 2 lines.*found 0"),
        (b'{"uri": "/bad1.jpg", "reason": "t"}\n', "found 1"),
        (b'{"uri": "/bad1.jpg", "reason": "t"}\nnot json\n', "on line 2"),
        (b'{"uri": 5, "reason": "t"}\n{}\n', "on line 1"),
    ],
)
def test_a_damaged_failure_list_names_the_file(tmp_path, content, match):
    path = with_failures(tmp_path)
    if content is None:
        (path / storage.FAILED).unlink()
    else:
        (path / storage.FAILED).write_bytes(content)
    with pytest.raises(ValueError, match=f"failed.jsonl.*{match}"):
        _ = Catalogue.open(path).failed


def edit(path, change):
    m = json.loads((path / storage.MANIFEST).read_text())
    change(m)
    (path / storage.MANIFEST).write_text(json.dumps(m))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m: m["dims"].update(code=16), "dims.code to be 32"),
        (lambda m: m["dims"].update(embedding=8), "dims.embedding to be 16"),
        (lambda m: m["counts"].pop("uri_bytes"), "counts.uri_bytes"),
        (lambda m: m.update(identity=5), "identity"),
        (lambda m: m.update(identity={"uuid": 5}), "identity"),
        (lambda m: m["compressor"].update(mean=None), "compressor.mean"),
        (lambda m: m["compressor"].update(mean=[0.0] * 3), "compressor.mean: expected 16"),
        (lambda m: m["compressor"].update(low=[0.0] * 3), "compressor.low"),
        (lambda m: m.update(checksums=[]), "checksums"),
        (lambda m: m["checksums"].update(embeddings=[[0, 3, "x"]]), "checksums.embeddings"),
    ],
)
def test_wrong_manifest_fields_are_refused_naming_the_field(tmp_path, change, match):
    cat = saved(tmp_path)
    edit(cat.path, change)
    with pytest.raises(ValueError, match=match) as err:
        Catalogue.open(cat.path)
    assert str(cat.path / storage.MANIFEST) in str(err.value)


def test_compressor_from_dict_checks_every_array_shape():
    X = np.random.default_rng(0).standard_normal((50, D)).astype(np.float32)
    good = Catalogue.from_embeddings(X).compressor.to_dict()
    assert compressor_from_dict(good).n_features_in_ == D
    for field, value, match in [
        ("mean", [[0.0]] * D, "compressor.mean: expected a 1-d"),
        ("components", [[0.0] * D] * 3, r"compressor.components: expected shape \(32, 16\)"),
        ("scale", "x", "compressor.scale"),
    ]:
        with pytest.raises(ValueError, match=match):
            compressor_from_dict({**good, field: value})


# --- appends decide under the lock ---
@pytest.fixture(scope="module")
def embedder():
    return ClipEmbedder(register_tiny_model(), None, batch_size=4, num_workers=2)


def test_a_stale_catalogue_appends_only_images_not_yet_added(tmp_path, embedder):
    write_images(tmp_path / "imgs", 4, seed=1)
    write_images(tmp_path / "more", 3, seed=2)
    built = Catalogue.build(tmp_path / "imgs", out=tmp_path / "c", embedder=embedder)
    a = Catalogue.open(built.path, embedder=embedder)
    b = Catalogue.open(built.path, embedder=embedder)  # opened before a appends
    assert a.append(tmp_path / "more", progress=False) == 3
    assert b.append(tmp_path / "more", progress=False) == 0
    assert len(b) == 7 and len(set(np.asarray(b.uris))) == 7


def test_two_appends_of_the_same_images_at_once_add_them_once(tmp_path, embedder):
    write_images(tmp_path / "imgs", 4, seed=1)
    write_images(tmp_path / "more", 3, seed=2)
    path = Catalogue.build(tmp_path / "imgs", out=tmp_path / "c", embedder=embedder).path
    cats = [Catalogue.open(path, embedder=embedder) for _ in range(2)]
    added = []
    with output_lock(path):  # both wait for it, then run one after the other
        threads = [
            threading.Thread(target=lambda c=c: added.append(c.append(tmp_path / "more")))
            for c in cats
        ]
        for t in threads:
            t.start()
        threads[0].join(0.5)
    for t in threads:
        t.join(60)
    assert sorted(added) == [0, 3]
    assert len(set(np.asarray(Catalogue.open(path).uris))) == 7


def test_a_leftover_append_work_folder_is_removed_when_nothing_is_new(tmp_path, embedder):
    write_images(tmp_path / "imgs", 4, seed=1)
    cat = Catalogue.build(tmp_path / "imgs", out=tmp_path / "c", embedder=embedder)
    work = cat.path / appending.APPEND_WORK
    work.mkdir()  # a death after the append's commit leaves it
    (work / "chunk-0.npz").write_bytes(b"x")
    assert cat.append(tmp_path / "imgs", progress=False) == 0
    assert not work.exists()


def test_cli_info_verify_names_a_changed_file(tmp_path, capsys):
    cat = saved(tmp_path)
    assert main(["info", str(cat.path), "--verify", "--json"]) == 0
    assert storage.CODES in json.loads(capsys.readouterr().out)["verified"]
    scramble(cat.path / storage.URI_BYTES)
    assert main(["info", str(cat.path), "--verify"]) != 0
    assert storage.URI_BYTES in capsys.readouterr().err
