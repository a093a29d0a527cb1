"""The widget from the Python side: simulated front-end updates and actions.

A front end talks to the kernel through two kinds of comm messages: state
updates (``method: update``) for the keys it owns, and custom messages for
actions. These tests send exactly those messages to ``ClipBranches`` and
check the traits, the acks, what goes back over the comm, and that Python
never writes a key the front end owns. The catalogue is a few hundred real
CIFAR-10 test images (the sample committed under tests/data).
"""

from __future__ import annotations

import io
import json
import pathlib
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipbranches_widget import Catalogue, ClipBranches, Session
from clipbranches_widget.thumbnails import Thumbnailer, full_image, local_path
from clipbranches_widget.widget import FRONTEND_KEYS

from images import CLASSES, PER_CLASS, sample_dir

ROOT = pathlib.Path(__file__).resolve().parents[2]


def pixel_features(paths) -> np.ndarray:
    """8x8 RGB pixels, centred and L2-normalised: a crude but real image embedding."""
    X = np.stack(
        [np.asarray(Image.open(p).convert("RGB").resize((8, 8)), np.float32).ravel() for p in paths]
    )
    X -= X.mean(axis=0)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


class ClassPrototypes:
    """A text encoder for tests: a class name maps to the mean embedding of its images.

    Stands in for CLIP's text tower (no weights offline); unknown words fail
    the way a real encoder's errors would reach the widget.
    """

    def __init__(self, X, classes):
        self.vectors = {c: X[classes == c].mean(axis=0) for c in np.unique(classes)}

    def embed_text(self, texts):
        out = []
        for t in texts:
            if t not in self.vectors:
                raise ValueError(f"unknown word {t!r}")
            out.append(self.vectors[t])
        return np.stack(out).astype(np.float32)


@pytest.fixture(scope="module")
def cifar():
    d = sample_dir()
    paths = [str(d / c / f"{k:04d}.jpg") for c in CLASSES for k in range(PER_CLASS)]
    classes = np.repeat(np.array(CLASSES), PER_CLASS)
    X = pixel_features(paths)
    cat = Catalogue.from_embeddings(X, uris=paths, embedder=ClassPrototypes(X, classes))
    return cat, classes


class Front:
    """Plays the front end: sends updates and actions, records what Python sends."""

    def __init__(self, w: ClipBranches):
        self.w = w
        self.sent = []  # (msg, buffers) Python put on the comm
        self.changes = []  # (name, new) of every front-end-owned key change
        self.from_front = []  # (name, value) the simulated front end sent
        w._send = lambda msg, buffers=None: self.sent.append((msg, buffers or []))
        w.observe(lambda c: self.changes.append((c["name"], c["new"])), names=list(FRONTEND_KEYS))
        self.initial = {k: getattr(w, k) for k in FRONTEND_KEYS}
        self.n = 0

    def update(self, **state):
        self.from_front.extend(state.items())
        self.w._handle_msg(
            {
                "content": {"data": {"method": "update", "state": state, "buffer_paths": []}},
                "buffers": [],
            }
        )
        assert self.w.wait(300), "a state update was not applied"

    def act(self, action, **extra) -> dict:
        self.n += 1
        req = f"test-{self.n}"
        before = len(self.sent)
        self.w._handle_msg(
            {
                "content": {
                    "data": {
                        "method": "custom",
                        "content": {"type": "action", "action": action, "req": req, **extra},
                    }
                },
                "buffers": [],
            }
        )
        # a refine runs in a worker thread: wait until it (and all queued) answered
        assert self.w.wait(300), f"{action}: no answer"
        acks = [
            (m["content"], b)
            for m, b in self.sent[before:]
            if m.get("method") == "custom" and m["content"].get("req") == req
        ]
        assert len(acks) == 1, f"expected one ack for {action}, got {len(acks)}"
        ack, buffers = acks[0]
        return {**ack, "buffers": buffers}

    def updates(self, since=0):
        return [(m, b) for m, b in self.sent[since:] if m.get("method") == "update"]

    def label(self, labels: dict):
        self.update(user_labels={str(k): v for k, v in labels.items()})

    def assert_python_wrote_no_user_key(self):
        for msg, _ in self.updates():
            assert not set(msg["state"]) & set(FRONTEND_KEYS), (
                f"Python sent a front-end-owned key: {sorted(msg['state'])}"
            )
        # every change of a user_* trait came from the front end, in order
        last = dict(self.initial)
        expected = []
        for k, v in self.from_front:
            if last[k] != v:  # traitlets reports real changes only
                expected.append((k, v))
                last[k] = v
        assert self.changes == expected


def shown_ids(w):
    return [it["id"] for it in w.items]


# ---------------------------------------------------------------------------- the round trip
def test_first_view_browses_the_catalogue_with_binary_thumbnails(cifar):
    cat, _ = cifar
    w = ClipBranches(cat, page_size=48)
    assert w.kind == "browse" and w.total == len(cat) and w.page_count == -(-len(cat) // 48)
    assert len(w.items) == 48 and len(set(shown_ids(w))) == 48
    # a fixed random order: several classes on the first page, not one folder
    assert len({cat.uri(i).split("/")[-2] for i in shown_ids(w)}) >= 5
    it = w.items[0]
    im = Image.open(io.BytesIO(it["thumb"]))
    assert (im.width, im.height) == (it["w"], it["h"]) == (32, 32)
    assert it["mime"] == "image/jpeg" and it["name"].endswith(".jpg")
    # over the comm the thumbnails travel as binary buffers, never inside the JSON
    front = Front(w)
    w.send_state("items")
    ((msg, buffers),) = front.updates()
    assert len(buffers) == 48 and msg["buffer_paths"][0] == ["items", 0, "thumb"]
    assert "thumb" not in msg["state"]["items"][0]
    assert "/9j/" not in json.dumps(msg["state"])  # base64 JPEG signature
    assert bytes(buffers[0]) == it["thumb"]


def test_browsing_a_huge_catalogue_samples_it(cifar, monkeypatch):
    import clipbranches_widget.session_views as session_module

    cat, _ = cifar
    monkeypatch.setattr(session_module, "BROWSE_MAX", 50)
    w = ClipBranches(cat, page_size=20)
    assert w.kind == "browse" and w.total == 50 and w.page_count == 3 and w.n_items == len(cat)
    ids = w.session.current().ids
    assert len(set(ids.tolist())) == 50 and ids.max() < len(cat)


def test_search_label_refine_page_through_everything(cifar):
    cat, classes = cifar
    w = ClipBranches(cat, k=40, page_size=10)
    front = Front(w)
    front.update(user_query="ship", user_page=0)
    ack = front.act("search")
    assert ack["ok"] and ack["action"] == "search"
    assert w.kind == "knn" and w.total == 40 and w.page_count == 4 and len(w.items) == 10
    np.testing.assert_array_equal(shown_ids(w), w.session.results.ids[:10])
    assert "search_ms" in w.timings and "thumbs_ms" in w.timings
    assert w.error == "" and w.status == "ready"

    # the user pages through the neighbours and clicks: ships positive, the rest negative
    labels = {}
    for p in range(3):
        front.update(user_page=p)
        assert front.act("page")["ok"] and w.page_shown == p
        labels.update({i: (1 if classes[i] == "ship" else -1) for i in shown_ids(w)})
        front.label(labels)
    assert w.labels == labels and sum(v > 0 for v in labels.values()) >= 5
    front.update(user_page=0)
    ack = front.act("refine")
    assert ack["ok"], ack
    assert w.kind == "refined" and w.rounds == 1 and w.n_boxes == w.model.boxes_.n_boxes > 0
    res = w.session.results
    assert res.count > 10  # more than one page
    assert w.total == res.count and w.page_count == -(-res.count // 10)
    assert {"fit_ms", "search_ms", "rank_ms", "total_ms", "thumbs_ms"} <= set(w.timings)
    assert w.search_path == res.path

    # page through all of it: every result, once, in rank order
    seen = []
    for p in range(w.page_count):
        front.update(user_page=p)
        assert front.act("page")["ok"]
        assert w.page_shown == p
        seen += shown_ids(w)
        np.testing.assert_array_equal(
            [it["votes"] for it in w.items], res.votes[p * 10 : (p + 1) * 10]
        )
    np.testing.assert_array_equal(seen, res.ids)
    # every result is a labelled positive or a box match the second stage kept
    accepted = set(np.flatnonzero(w.model.predict(cat.codes)).tolist())
    positives = {i for i, v in w.labels.items() if v > 0}
    assert positives <= set(res.ids.tolist()) <= accepted | positives
    # a page past the end shows the last one (the front end owns the number it asked for)
    front.update(user_page=999)
    front.act("page")
    assert w.page_shown == w.page_count - 1 and w.user_page == 999

    df = w.results
    assert list(df.columns) == ["id", "uri", "votes", "score", "label"]
    assert len(df) == res.count and df["uri"].iloc[0] == cat.uri(int(res.ids[0]))
    front.assert_python_wrote_no_user_key()


def test_results_arrive_in_one_state_message_per_action(cifar):
    cat, _ = cifar
    w = ClipBranches(cat, k=30)
    front = Front(w)
    front.update(user_query="ship")
    front.act("search")
    ups = [m["state"] for m, _ in front.updates()]
    # first "searching" (status only, so the front end can show it), then all results at once
    assert ups[0] == {"status": "search"}
    assert {"items", "total", "kind", "timings", "status"} <= set(ups[-1])
    assert ups[-1]["status"] == "ready" and ups[-1]["total"] == 30
    assert not any("items" in s for s in ups[:-1])


def test_more_like_these_uses_the_selection_then_the_positives(cifar):
    cat, classes = cifar
    w = ClipBranches(cat, k=20)
    front = Front(w)
    ack = front.act("more")
    assert not ack["ok"] and "select some images" in ack["error"] and "select" in w.error
    front.update(user_selection=[5])
    assert front.act("more")["ok"]
    assert w.kind == "knn" and shown_ids(w)[0] == 5 and w.error == ""
    front.update(user_selection=[], user_labels={"7": 1, "8": -1})
    assert front.act("more")["ok"]
    assert shown_ids(w)[0] == 7 and w.session.query == [7]
    front.assert_python_wrote_no_user_key()


def test_box_facets_count_and_filter_the_results(cifar):
    cat, classes = cifar
    w = ClipBranches(cat, k=60, page_size=4)
    front = Front(w)
    assert w.facets == [] and w.box_shown == -1
    front.update(user_query="truck")
    front.act("search")
    front.label({i: (1 if classes[i] == "truck" else -1) for i in w.session.results.ids})
    front.act("refine")
    res, boxes = w.session.results, w.model.boxes_
    inside = boxes.contains(cat.codes[res.ids])
    assert [f["box"] for f in w.facets] == list(range(boxes.n_boxes))
    assert [f["count"] for f in w.facets] == inside.sum(axis=0).tolist()
    assert [tuple(f["dims"]) for f in w.facets] == list(boxes.dims)
    b = int(np.argmax(inside.sum(axis=0)))
    front.update(user_box=b, user_page=0)
    assert front.act("page")["ok"]
    assert w.box_shown == b and w.shown_total == inside[:, b].sum() and w.total == res.count
    seen = []
    for p in range(w.page_count):
        front.update(user_page=p)
        front.act("page")
        seen += shown_ids(w)
    np.testing.assert_array_equal(seen, res.ids[inside[:, b]])  # that box's items, in rank order
    assert boxes.contains(cat.codes[seen])[:, b].all()
    front.update(user_box=boxes.n_boxes + 3)  # a box that does not exist: everything
    front.act("page")
    assert w.box_shown == -1 and w.shown_total == w.total
    front.assert_python_wrote_no_user_key()


def test_labelled_view_lists_every_label_positives_first(cifar):
    cat, classes = cifar
    w = ClipBranches(cat, k=30, page_size=4)
    front = Front(w)
    front.update(user_query="horse")
    front.act("search")
    knn = w.session.results.ids
    labels = {int(i): (1 if classes[i] == "horse" else -1) for i in knn[:10]}
    front.label(labels)
    front.act("refine")
    front.update(user_box=-2, user_page=0)
    front.act("page")
    assert w.box_shown == -2 and w.shown_total == 10 and w.total == w.session.results.count
    seen = []
    for p in range(w.page_count):
        front.update(user_page=p)
        front.act("page")
        seen += [(it["id"], it["votes"]) for it in w.items]
    expected = sorted(labels, key=lambda i: (-labels[i], i))
    assert [i for i, _ in seen] == expected
    np.testing.assert_array_equal([v for _, v in seen], w.model.boxes_.votes(cat.codes[expected]))
    front.assert_python_wrote_no_user_key()


# ---------------------------------------------------------------------------- errors keep labels
def test_failed_refine_shows_the_error_and_keeps_labels_and_grid(cifar):
    cat, _ = cifar
    w = ClipBranches(cat, k=20)
    front = Front(w)
    front.update(user_query="dog")
    front.act("search")
    grid = shown_ids(w)
    front.label({grid[0]: -1, grid[1]: -1})
    ack = front.act("refine")
    assert not ack["ok"] and "at least one positive" in ack["error"]
    assert "refine failed" in w.error and "at least one positive" in w.error
    assert w.status == "ready"
    assert w.labels == {grid[0]: -1, grid[1]: -1}
    assert w.user_labels == {str(grid[0]): -1, str(grid[1]): -1}
    assert shown_ids(w) == grid and w.kind == "knn"  # the grid is not blanked
    # the next successful action clears the error
    front.label({grid[0]: 1, grid[1]: -1})
    assert front.act("refine")["ok"] and w.error == ""
    front.assert_python_wrote_no_user_key()


def test_text_errors_and_bad_labels_reach_the_widget(cifar):
    cat, _ = cifar
    w = ClipBranches(cat)
    front = Front(w)
    front.update(user_query="   ")
    ack = front.act("search")
    assert not ack["ok"] and "type a query" in w.error
    front.update(user_query="zebra")
    ack = front.act("search")
    assert not ack["ok"] and "unknown word 'zebra'" in w.error
    front.label({3: 1})
    front.update(user_labels={"3": 1, str(len(cat) + 5): 1})  # an id the catalogue lacks
    assert "labels:" in w.error and "expected ids in 0.." in w.error
    assert w.labels == {3: 1}  # the session keeps the last valid labels
    front.update(user_labels={"3": 7})
    assert "expected values +1 or -1" in w.error
    ack = front.act("explode")
    assert not ack["ok"] and "unknown action 'explode'" in ack["error"]
    before = len(front.updates())
    ack = front.act("detail", id="three")
    assert not ack["ok"] and "integer item id" in ack["error"]
    ack = front.act("detail", id=len(cat))
    assert not ack["ok"] and "expected ids in 0.." in ack["error"]
    assert len(front.updates()) == before  # details answer in the ack, nothing shared changes
    front.assert_python_wrote_no_user_key()


def test_broken_image_is_reported_in_its_cell_not_the_grid(tmp_path, cifar):
    cat, _ = cifar
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    uris = list(cat.uris[:20]) + [str(bad), str(tmp_path / "missing.jpg")]
    X = cat.embeddings[:22].copy()
    small = Catalogue.from_embeddings(X, uris=uris)
    w = ClipBranches(small)
    items = {it["id"]: it for it in w.items}
    assert items[20]["thumb"] is None and "could not read" in items[20]["problem"]
    assert items[21]["thumb"] is None and "no file at" in items[21]["problem"]
    assert sum(it["thumb"] is not None for it in w.items) == 20
    detail, image = w.explain(21)
    assert image is None and "no file at" in detail["problem"]


# ---------------------------------------------------------------------------- lightbox
def test_detail_explains_why_an_item_matched(cifar):
    cat, classes = cifar
    w = ClipBranches(cat, k=40)
    front = Front(w)
    front.update(user_query="airplane")
    front.act("search")
    front.label({i: (1 if classes[i] == "airplane" else -1) for i in shown_ids(w)[:15]})
    front.act("refine")
    top = shown_ids(w)[0]
    n_updates = len(front.updates())
    ack = front.act("detail", id=top)
    assert len(front.updates()) == n_updates  # read-only: no state message
    d = ack["detail"]
    assert ack["ok"] and d["id"] == top and d["uri"] == cat.uri(top) and d["rank"] == 0
    inside = np.flatnonzero(w.model.boxes_.contains(cat.codes[[top]])[0]).tolist()
    assert [b["box"] for b in d["boxes"]] == inside and d["votes"] == len(inside) > 0
    for b in d["boxes"]:
        for j, (lo, hi) in b["bounds"].items():
            assert lo <= b["code"][j] <= hi == int(w.model.boxes_.upper[b["box"], int(j)])
    assert d["n_boxes"] == w.n_boxes and d["label"] == w.labels.get(top, 0)
    assert d["similarity"] == pytest.approx(float(cat.vector([top])[0] @ w.session.query_vector))
    (image,) = ack["buffers"]
    im = Image.open(io.BytesIO(image))
    assert im.size == (d["width"], d["height"]) == (32, 32)
    # an item the model rejects: no rank, no box
    outside = int(np.flatnonzero(w.model.predict(cat.codes) == 0)[0])
    d = front.act("detail", id=outside)["detail"]
    assert d["rank"] is None and d["boxes"] == [] and d["votes"] == 0


# ---------------------------------------------------------------------------- Python access
def test_export_table_and_folder(tmp_path, cifar):
    cat, classes = cifar
    w = ClipBranches(cat, k=12)
    front = Front(w)
    front.update(user_query="frog")
    front.act("search")
    ids = w.session.results.ids
    w.export(tmp_path / "r.csv")
    w.export(tmp_path / "r.parquet")
    for df in (pd.read_csv(tmp_path / "r.csv"), pd.read_parquet(tmp_path / "r.parquet")):
        np.testing.assert_array_equal(df["id"], ids)
        assert df["uri"].tolist() == [cat.uri(int(i)) for i in ids]
    out = w.export(tmp_path / "frogs")
    files = sorted(p.name for p in out.iterdir() if p.suffix == ".jpg")
    assert len(files) == 12 and files[0] == f"0000_{ids[0]}.jpg"
    assert (out / files[3]).read_bytes() == pathlib.Path(cat.uri(int(ids[3]))).read_bytes()
    with pytest.raises(FileExistsError, match="not empty"):
        w.export(out)
    with pytest.raises(ValueError, match=r"expected a \.csv or \.parquet file or a folder"):
        w.export(tmp_path / "r.xlsx")


def test_save_and_load_restore_the_exact_results(tmp_path, cifar):
    cat, classes = cifar
    w = ClipBranches(cat, k=40, page_size=2)  # small pages: a refine's few results still page
    front = Front(w)
    front.update(user_query="truck")
    front.act("search")
    front.label({i: (1 if classes[i] == "truck" else -1) for i in w.session.results.ids[:16]})
    front.act("refine")
    front.update(user_page=1, user_selection=[int(shown_ids(w)[0])])
    front.act("page")
    assert w.page_shown == 1
    w.save(tmp_path / "s.json")

    w2 = ClipBranches.load(tmp_path / "s.json", cat)
    a, b = w.session.results, w2.session.results
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.votes, b.votes)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert w2.model.boxes_ == w.model.boxes_ and w2.labels == w.labels
    assert (w2.user_page, w2.user_query, w2.user_selection) == (1, "truck", w.user_selection)
    assert w2.kind == "refined" and w2.page_shown == 1 and shown_ids(w2) == shown_ids(w)
    pd.testing.assert_frame_equal(w.results, w2.results)

    other = Catalogue.from_embeddings(cat.embeddings[:50].copy(), uris=list(cat.uris[:50]))
    with pytest.raises(ValueError, match="saved for a catalogue of 300 items, got one of 50"):
        ClipBranches.load(tmp_path / "s.json", other)


def test_reset_starts_over(cifar):
    cat, _ = cifar
    w = ClipBranches(cat, k=20)
    front = Front(w)
    front.update(user_query="bird")
    front.act("search")
    front.label({shown_ids(w)[0]: 1})
    front.act("refine")
    # the front end clears its own keys, then asks Python to drop the results
    front.update(user_labels={}, user_query="", user_selection=[], user_page=0, user_box=-1)
    assert front.act("reset")["ok"]
    assert w.kind == "browse" and w.model is None and w.labels == {} and w.total == len(cat)
    assert w.results.empty
    front.assert_python_wrote_no_user_key()


def test_construction_errors(cifar):
    cat, _ = cifar
    with pytest.raises(TypeError, match="expected a Catalogue or a Session, got list"):
        ClipBranches([1, 2])
    with pytest.raises(TypeError, match=r"session options \['k'\] only apply"):
        ClipBranches(Session(cat), k=5)
    with pytest.raises(ValueError, match="size: expected an integer of at least 8"):
        ClipBranches(cat, thumb_size=2)


# ---------------------------------------------------------------------------- thumbnails
def test_thumbnails_keep_aspect_ratio_and_are_cached(tmp_path):
    wide = tmp_path / "wide.png"
    Image.new("RGB", (600, 200), (200, 30, 30)).save(wide)
    rgba = tmp_path / "alpha.png"
    Image.new("RGBA", (50, 100), (0, 0, 255, 128)).save(rgba)
    t = Thumbnailer(120)
    a = t.get(str(wide))
    assert (a.width, a.height) == (120, 40) and a.mime == "image/jpeg"
    assert Image.open(io.BytesIO(a.data)).size == (120, 40)
    assert t.get(str(wide)) is a and (t.hits, t.misses) == (1, 1)
    b = t.get(wide.as_uri())  # file:// URL
    assert (b.width, b.height) == (120, 40)
    c = t.get(str(rgba))  # small: not enlarged; alpha: PNG
    assert (c.width, c.height) == (50, 100) and c.mime == "image/png"
    assert Image.open(io.BytesIO(c.data)).mode == "RGBA"
    # small enough and browser-readable: the file's own bytes (checked, not re-encoded)
    jpg = tmp_path / "small.jpg"
    Image.new("RGB", (40, 30), (10, 200, 10)).save(jpg, quality=70)
    assert t.get(str(jpg)).data == jpg.read_bytes()
    bmp = tmp_path / "small.bmp"  # not a browser format: re-encoded
    Image.new("RGB", (40, 30), (10, 200, 10)).save(bmp)
    d = t.get(str(bmp))
    assert d.mime == "image/jpeg" and Image.open(io.BytesIO(d.data)).size == (40, 30)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(jpg.read_bytes()[:200])
    assert "could not read" in t.try_get(str(truncated))[1]
    small = Thumbnailer(16, max_items=2)
    for p in (wide, rgba, wide.as_uri()):
        small.get(str(p))
    assert len(small) == 2
    assert full_image(str(wide), max_side=300).width == 300
    with pytest.raises(ValueError, match="expected a local path or file:// URL"):
        local_path("https://example.com/a.jpg")
    thumb, problem = t.try_get(str(tmp_path / "nope.png"))
    assert thumb is None and "no file at" in problem


# ---------------------------------------------------------------------------- the bundle
def test_committed_bundle_is_built_from_the_sources(tmp_path):
    """The shipped static/widget.js and .css equal a fresh esbuild of js/src."""
    esbuild = ROOT / "js" / "node_modules" / ".bin" / "esbuild"
    if not esbuild.exists():
        pytest.skip(
            "js/node_modules is missing: run `npm ci --prefix js` (node and npm) to "
            "check the shipped bundle against its TypeScript sources"
        )
    package = json.loads((ROOT / "js" / "package.json").read_text())
    cmd = package["scripts"]["build"].split()
    assert cmd[0] == "esbuild"
    cmd = [str(esbuild)] + [
        a if not a.startswith("--outfile=") else f"--outfile={tmp_path}/widget.js" for a in cmd[1:]
    ]
    subprocess.run(cmd, cwd=ROOT / "js", check=True, capture_output=True, timeout=60)
    for name in ("widget.js", "widget.css"):
        shipped = ROOT / "clipbranches_widget" / "static" / name
        assert shipped.read_bytes() == (tmp_path / name).read_bytes(), (
            f"{shipped} is stale: rebuild with `npm run build --prefix js` and commit it"
        )
    assert shutil.which("node") is not None


def test_catalogue_of_http_urls_gets_thumbnails_and_exports(tmp_path, cifar):
    """A catalogue built from URLs: the kernel fetches them (here from 127.0.0.1)."""
    import functools
    import http.server
    import threading

    cat, _ = cifar
    site = tmp_path / "site"
    site.mkdir()
    for k in range(6):
        shutil.copy(cat.uris[k], site / f"{k}.jpg")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        uris = [f"{base}/{k}.jpg" for k in range(6)] + [f"{base}/missing.jpg"]
        web = Catalogue.from_embeddings(cat.embeddings[:7].copy(), uris=uris)
        w = ClipBranches(web)
        items = {it["id"]: it for it in w.items}
        assert all(items[k]["thumb"] is not None for k in range(6))
        assert Image.open(io.BytesIO(items[3]["thumb"])).size == (32, 32)
        assert items[6]["thumb"] is None and "could not fetch" in items[6]["problem"]
        front = Front(w)
        front.update(user_selection=[0])
        front.act("more")
        with pytest.raises(OSError, match="could not fetch .*missing.jpg"):
            w.export(tmp_path / "broken")  # a copy that cannot be made is an error, not a gap
        six = ClipBranches(Catalogue.from_embeddings(cat.embeddings[:6].copy(), uris=uris[:6]))
        f6 = Front(six)
        f6.update(user_selection=[0])
        assert f6.act("more")["ok"] and six.total == 6
        out = six.export(tmp_path / "copies")
        names = sorted(p.name for p in out.glob("*.jpg"))
        assert len(names) == 6 and names[0] == "0000_0.jpg"
        assert (out / names[0]).read_bytes() == (site / "0.jpg").read_bytes()
    finally:
        server.shutdown()


# ---------------------------------------------------------------------------- hostile front end
def test_front_end_labels_are_validated_strictly(cifar):
    cat, _ = cifar
    w = ClipBranches(cat)
    front = Front(w)
    front.label({3: 1})
    assert w.labels == {3: 1} and w.error == ""
    for bad, why in (
        ({"5": 1.5}, "expected values +1 or -1"),
        ({"5": True}, "expected values +1 or -1"),
        ({"1_0": 1}, "expected decimal item ids"),
        ({"5.0": -1}, "expected decimal item ids"),
    ):
        front.update(user_labels=bad)
        assert why in w.error and w.error.startswith("labels:"), (bad, w.error)
        assert w.labels == {3: 1}  # unchanged
    front.label({3: 1, 4: -1})
    assert w.labels == {3: 1, 4: -1}
    front.assert_python_wrote_no_user_key()


def test_malformed_messages_get_an_error_ack_never_an_exception(cifar):
    cat, _ = cifar
    w = ClipBranches(cat)
    front = Front(w)
    for extra in ({"action": ["search"]}, {"action": None}, {"action": {"a": 1}}):
        front.n += 1
        before = len(front.sent)
        w._handle_msg(
            {
                "content": {
                    "data": {
                        "method": "custom",
                        "content": {"type": "action", "req": f"bad-{front.n}", **extra},
                    }
                },
                "buffers": [],
            }
        )
        (ack,) = [m["content"] for m, _ in front.sent[before:] if m.get("method") == "custom"]
        assert ack["ok"] is False and "unknown action" in ack["error"]
    for content in ("hello", [1, 2], {"type": "action", "action": "search"}, {"type": 7}):
        before = len(front.sent)
        w._handle_msg(
            {"content": {"data": {"method": "custom", "content": content}}, "buffers": []}
        )
        assert len(front.sent) == before  # nothing to answer (no request id): ignored, logged
    for bad_id in (True, 2.5, None, [1]):
        ack = front.act("detail", id=bad_id)
        assert not ack["ok"] and "integer item id" in ack["error"]
    # a state update of the wrong type: shown, the key keeps its value
    front.update(user_page="three")
    assert w.user_page == 0 and "user_page" in w.error
    front.update(user_selection=["a"])
    assert w.user_selection == [] and "user_selection" in w.error
    assert front.act("page")["ok"] and w.error == ""


def test_a_widget_session_does_not_load_on_another_catalogue_of_the_same_size(tmp_path, cifar):
    cat, classes = cifar
    w = ClipBranches(cat, k=20)
    front = Front(w)
    front.update(user_query="ship")
    front.act("search")
    front.label({i: 1 for i in shown_ids(w)[:3]})
    front.act("refine")
    w.session.label([5], np.int64(-1))  # numpy values must not break save()
    w.save(tmp_path / "s.json")
    assert ClipBranches.load(tmp_path / "s.json", cat).labels == w.labels
    X = cat.embeddings[::-1].copy()  # same size, other items
    other = Catalogue.from_embeddings(X, uris=list(cat.uris[::-1]))
    with pytest.raises(ValueError, match="saved for another catalogue of the same size"):
        ClipBranches.load(tmp_path / "s.json", other)
    data = json.loads((tmp_path / "s.json").read_text())
    data["view"]["user_page"] = "x"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="load: view"):
        ClipBranches.load(tmp_path / "bad.json", cat)


def test_reset_also_restarts_the_round_counter(cifar):
    cat, _ = cifar
    w = ClipBranches(cat, k=20)
    front = Front(w)
    front.update(user_query="bird")
    front.act("search")
    front.label({shown_ids(w)[0]: 1})
    front.act("refine")
    front.act("refine")
    assert w.rounds == 2
    front.update(user_labels={}, user_query="", user_selection=[], user_page=0, user_box=-1)
    assert front.act("reset")["ok"] and w.rounds == 0 and w.session.rounds == 0
    front.assert_python_wrote_no_user_key()


def test_the_round_summary_reaches_the_front_end(cifar):
    cat, classes = cifar
    w = ClipBranches(cat, k=30)
    front = Front(w)
    assert w.summary == "300 images \u00b7 no search yet"
    front.update(user_query="ship")
    front.act("search")
    assert w.summary == "30 images nearest to \u201cship\u201d"
    front.label({i: (1 if classes[i] == "ship" else -1) for i in shown_ids(w)[:10]})
    front.act("refine")
    assert w.summary.startswith(f"{w.total:,} match") and "of your" in w.summary
    front.assert_python_wrote_no_user_key()
