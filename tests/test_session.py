import json

import numpy as np
import pytest

from clipbranches_widget import Catalogue, Session


def catalogue(rng, n, d=24, clusters=8):
    centres = rng.standard_normal((clusters, d)) * 3
    which = rng.integers(0, clusters, n)
    X = (centres[which] + rng.standard_normal((n, d))).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return Catalogue.from_embeddings(X, uris=[f"img/{i}.jpg" for i in range(n)]), which


def test_round_on_ten_items(rng):
    cat, which = catalogue(rng, 10)
    s = Session(cat, k=5)
    res = s.search([0])
    assert res.count == 5 and res.kind == "knn" and res.ids[0] == 0
    s.label([0], 1)
    s.label([1], -1)
    res = s.refine()
    assert res.kind == "refined" and 0 in res.ids.tolist()
    assert res.count == len(set(res.ids.tolist()))
    assert s.page(0).count == res.count


def test_refine_then_page_through_everything(rng):
    cat, which = catalogue(rng, 5000)
    s = Session(cat, k=60, page_size=60)
    s.search([int(np.flatnonzero(which == 2)[0])])
    for i in s.page(0).ids.tolist():
        s.label([i], 1 if which[i] == 2 else -1)
    res = s.refine()
    assert res.count > 60  # more than one page: the complete set, not a top-k
    pages = np.concatenate([s.page(p).ids for p in range(s.n_pages)])
    np.testing.assert_array_equal(pages, res.ids)
    # every accepted item, exactly: the same as the model's own predict
    np.testing.assert_array_equal(np.sort(res.ids), np.flatnonzero(s.model.predict(cat.codes)))
    assert np.all(np.diff(res.votes) <= 0)
    precision = (which[res.ids] == 2).mean()
    assert precision > 0.8
    with pytest.raises(IndexError, match="page number"):
        s.page(s.n_pages)
    df = res.to_frame(cat, s.labels)
    assert list(df.columns) == ["id", "uri", "votes", "score", "label"]


def test_failed_refine_keeps_labels_and_results(rng):
    cat, _ = catalogue(rng, 200)
    s = Session(cat)
    before = s.search([5])
    s.label([1, 2], -1)
    with pytest.raises(ValueError, match="at least one positive label; got 0 positives and 2"):
        s.refine()
    assert s.labels == {1: -1, 2: -1}
    assert s.results is before
    with pytest.raises(ValueError, match=r"expected \+1, -1 or 0"):
        s.label([3], 5)
    with pytest.raises(IndexError, match="expected ids in 0..199"):
        s.label([200], 1)
    with pytest.raises(ValueError, match="no text encoder"):
        s.search("a cat")


def test_background_never_contains_labelled_items(rng):
    cat, _ = catalogue(rng, 300)
    s = Session(cat, n_background=250)
    s.label(np.arange(0, 300, 3), 1)
    ids, y, w = s.training_set()
    labelled = set(s.labels)
    bg = ids[len(labelled) :]
    assert not labelled & set(bg.tolist()) and (y[len(labelled) :] == 0).all()
    assert len(bg) == 200  # all unlabelled items when fewer than asked for
    assert (w[: len(labelled)] == 1).all() and (w[len(labelled) :] == 0.5).all()


def test_save_and_load_replays_exactly(rng, tmp_path):
    cat, which = catalogue(rng, 3000)
    s = Session(cat, random_state=4)
    s.search([7])
    for i in s.page(0).ids.tolist():
        s.label([i], 1 if which[i] == which[7] else -1)
    s.refine()
    s.label([int(s.results.ids[-1])], -1)
    res = s.refine()
    path = tmp_path / "session.json"
    path.write_text(json.dumps(s.to_dict()))
    t = Session.from_dict(json.loads(path.read_text()), cat)
    np.testing.assert_array_equal(t.results.ids, res.ids)
    np.testing.assert_array_equal(t.results.votes, res.votes)
    assert t.labels == s.labels and t.model.boxes_ == s.model.boxes_
    other, _ = catalogue(rng, 10)
    with pytest.raises(ValueError, match="saved for a catalogue of 3000 items"):
        Session.from_dict(s.to_dict(), other)
