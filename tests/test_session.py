import json

import numpy as np
import pytest

from clipbranches_widget import Catalogue, Session
from clipbranches_widget.engine.learn.twostage import StageParams


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
    # the boxes alone (no second stage): every accepted item, ranked by votes
    s = Session(cat, k=60, page_size=60, classifier={}, stage=None)
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


@pytest.mark.parametrize("stage", [None, StageParams(combine="mean", logistic_weight=1.0)])
def test_a_saved_session_replays_with_its_own_stage(rng, tmp_path, stage):
    cat, which = catalogue(rng, 2000)
    s = Session(cat, random_state=1, stage=stage)
    s.search([3])
    for i in s.page(0).ids.tolist():
        s.label([i], 1 if which[i] == which[3] else -1)
    res = s.refine()
    t = Session.from_dict(json.loads(json.dumps(s.to_dict())), cat)
    assert t.stage == stage
    np.testing.assert_array_equal(t.results.ids, res.ids)
    np.testing.assert_array_equal(t.results.scores, res.scores)
    data = s.to_dict()
    data["params"]["stage"] = {"combine": "median"}
    with pytest.raises(ValueError, match="params: combine: expected 'cv' or 'mean'"):
        Session.from_dict(data, cat)


# ---------------------------------------------------------------------------- views
def refined_session(rng, n=2000, **kw):
    cat, which = catalogue(rng, n)
    s = Session(cat, k=40, random_state=3, **kw)
    s.search([int(np.flatnonzero(which == 1)[0])])
    for i in s.page(0).ids.tolist():
        s.label([i], 1 if which[i] == 1 else -1)
    s.refine()
    return cat, which, s


def test_reset_clears_labels_model_results_query_and_rounds(rng):
    cat, _, s = refined_session(rng)
    s.refine()
    assert s.rounds == 2 and s.labels and s.model is not None
    s.reset()
    assert s.labels == {} and s.model is None and s.query is None and s.query_vector is None
    assert s.results.kind == "empty" and s.rounds == 0 and s.facets() == []
    assert s.current().kind == "browse"
    s.label([0], 1)
    s.refine()
    assert s.rounds == 1  # the counter starts over too


def test_browse_is_a_fixed_random_sample_before_any_search(rng, monkeypatch):
    import clipbranches_widget.session_views as session_module

    cat, _ = catalogue(rng, 300)
    s = Session(cat, random_state=5)
    a = s.current()
    assert a.kind == "browse" and sorted(a.ids.tolist()) == list(range(300))
    assert a.ids.tolist() != list(range(300))  # shuffled: folders are often sorted by class
    np.testing.assert_array_equal(Session(cat, random_state=5).current().ids, a.ids)
    monkeypatch.setattr(session_module, "BROWSE_MAX", 50)
    b = Session(cat).current()
    assert b.count == 50 and len(set(b.ids.tolist())) == 50
    s.search([3])
    assert s.current() is s.results


def test_facets_and_box_views_follow_the_model(rng):
    cat, _, s = refined_session(rng, classifier={}, stage=None)  # the boxes alone
    boxes = s.model.boxes_
    inside = boxes.contains(cat.codes[s.results.ids])
    facets = s.facets()
    assert [f["box"] for f in facets] == list(range(boxes.n_boxes))
    assert [f["count"] for f in facets] == inside.sum(axis=0).tolist()
    assert all(f["dims"] == [int(j) for j in boxes.dims[f["box"]]] for f in facets)
    shown, box = s.view(0)
    assert box == 0
    np.testing.assert_array_equal(shown.ids, s.results.ids[inside[:, 0]])  # rank order kept
    assert s.view(boxes.n_boxes) == (s.results, -1)  # a box that does not exist: all
    assert s.view(-1)[0] is s.results


def test_labelled_view_lists_every_label_positives_first(rng):
    cat, _, s = refined_session(rng)
    shown, box = s.view(-2)
    assert box == -2 and shown.kind == "labelled"
    labels = s.labels
    assert sorted(shown.ids.tolist()) == sorted(labels)
    values = [labels[i] for i in shown.ids.tolist()]
    assert values == sorted(values, reverse=True)
    np.testing.assert_array_equal(shown.votes, s.model.boxes_.votes(cat.codes[shown.ids]))
    s.reset()
    assert s.labelled().count == 0


def test_explain_says_why_an_item_matched(rng):
    cat, _, s = refined_session(rng)
    top = int(s.results.ids[0])
    d = s.explain(top)
    inside = np.flatnonzero(s.model.boxes_.contains(cat.codes[[top]])[0]).tolist()
    assert d["rank"] == 0 and d["id"] == top and d["uri"] == cat.uri(top)
    assert [b["box"] for b in d["boxes"]] == inside and d["votes"] == len(inside)
    for b in d["boxes"]:
        for j, (lo, hi) in b["bounds"].items():
            assert lo <= b["code"][j] <= hi
    assert d["similarity"] == pytest.approx(float(cat.vector([top])[0] @ s.query_vector))
    outside = int(np.flatnonzero(s.model.predict(cat.codes) == 0)[0])
    d = s.explain(outside)
    assert d["rank"] is None and d["boxes"] == [] and d["votes"] == 0
    json.dumps(d)  # plain JSON for the front end
    with pytest.raises(IndexError, match="expected ids in 0.."):
        s.explain(len(cat))


# ---------------------------------------------------------------------------- hostile input
def test_huge_k_is_refused_not_allocated(rng, tmp_path):
    cat, _ = catalogue(rng, 50)
    with pytest.raises(ValueError, match=r"k: expected a positive integer no larger than"):
        Session(cat, k=10**9)
    with pytest.raises(ValueError, match=r"k: expected a positive integer"):
        Session(cat, k=True)
    s = Session(cat)
    with pytest.raises(ValueError, match=r"k: expected a positive integer no larger than"):
        s.search([0], k=10**9)
    assert s.search([0], k=1000).count == 50  # at most the catalogue
    data = s.to_dict()
    data["params"]["k"] = 10**9  # from a session file: the same check
    with pytest.raises(ValueError, match=r"k: expected a positive integer no larger than"):
        Session.from_dict(data, cat)


def test_a_session_does_not_load_on_another_catalogue_of_the_same_size(rng):
    a, _ = catalogue(rng, 200)
    b, _ = catalogue(rng, 200)
    s = Session(a)
    s.search([1])
    s.label([1, 2], 1)
    s.refine()
    data = json.loads(json.dumps(s.to_dict()))
    assert Session.from_dict(data, a).labels == s.labels
    with pytest.raises(ValueError, match="saved for another catalogue of the same size"):
        Session.from_dict(data, b)
    # same codes, other URIs: another catalogue too
    c = Catalogue.from_embeddings(a.embeddings, uris=[f"other/{i}.jpg" for i in range(200)])
    with pytest.raises(ValueError, match="saved for another catalogue"):
        Session.from_dict(data, c)


def test_numpy_label_values_still_save(rng):
    cat, _ = catalogue(rng, 30)
    s = Session(cat)
    s.label([1], np.int64(1))
    s.label(np.array([2]), np.int32(-1))
    assert json.loads(json.dumps(s.to_dict()))["labels"] == {"1": 1, "2": -1}
    for bad in (True, 1.0, 1.5, "1", None):
        with pytest.raises(ValueError, match=r"expected \+1, -1 or 0"):
            s.label([3], bad)
    assert s.labels == {1: 1, 2: -1}


def test_labels_are_validated_strictly(rng):
    from clipbranches_widget.session import labels_from_json

    assert labels_from_json({"5": 1, "0": -1, 7: 1}) == {5: 1, 0: -1, 7: 1}
    for bad in ({"5": 1.5}, {"5": True}, {"5": "1"}, {"1_0": 1}, {" 5": 1}, {"5.0": 1}):
        with pytest.raises(ValueError, match="labels: expected"):
            labels_from_json(bad)
    with pytest.raises(TypeError, match="labels: expected an object"):
        labels_from_json([1, 2])
    cat, _ = catalogue(rng, 30)
    s = Session(cat)
    s.set_labels({3: 1})
    for bad in ({"1_0": 1}, {4: 1.5}, {4: 1, 99: 1}):
        with pytest.raises((ValueError, IndexError)):
            s.set_labels(bad)
        assert s.labels == {3: 1}  # validated before anything changes


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: d.update(labels={"1_0": 1}), "expected decimal item ids"),
        (lambda d: d.update(labels={"3": 1.5}), "expected values"),
        (lambda d: d.update(labels=[1]), "labels: expected an object"),
        (lambda d: d.update(rounds="2"), "rounds: expected a round count"),
        (lambda d: d.update(rounds=0), "rounds: expected a count of at least 1"),
        (lambda d: d.update(kind="weird"), "kind: expected one of"),
        (lambda d: d.update(query_vector=[1.0, 2.0]), "query_vector: expected 24 finite"),
        (lambda d: d.update(query_vector=["x"] * 24), "query_vector: expected a list of numbers"),
        (lambda d: d.update(query={"a": 1}), "query: expected a text or item ids"),
        (lambda d: d.pop("params"), "the field 'params' is missing"),
        (lambda d: d["params"].pop("k"), "params: the field 'k' is missing"),
        (lambda d: d.update(n_items="3000"), "n_items: expected an item count"),
    ],
)
def test_a_damaged_session_file_fails_naming_the_field(rng, damage, message):
    cat, _ = catalogue(rng, 100)
    s = Session(cat)
    s.search([4])
    s.label([4, 5], 1)
    s.refine()
    data = json.loads(json.dumps(s.to_dict()))
    damage(data)
    with pytest.raises(ValueError, match=message):
        Session.from_dict(data, cat)
    with pytest.raises(ValueError, match="expected a JSON object"):
        Session.from_dict([], cat)


# ---------------------------------------------------------------------------- issue 17
def test_round_summary_says_what_refine_did(rng):
    cat, which = catalogue(rng, 2000)
    s = Session(cat, k=40, random_state=3, classifier={}, stage=None)  # the boxes alone
    assert s.summary() == "2,000 images \u00b7 no search yet"
    s.search([int(np.flatnonzero(which == 1)[0])])
    assert s.summary() == "40 images nearest to your examples"
    knn = set(s.results.ids.tolist())
    for i in s.page(0).ids.tolist():
        s.label([i], 1 if which[i] == 1 else -1)
    res = s.refine()
    n_pos = sum(v > 0 for v in s.labels.values())
    kept = sum(1 for i in s.labels if s.labels[i] > 0 and i in set(res.ids.tolist()))
    new = sum(1 for i in res.ids.tolist() if i not in knn)
    assert s.summary() == (
        f"{res.count:,} matches \u00b7 {new:,} new \u00b7 {kept} of your {n_pos} positives"
    )


def test_never_an_empty_view_while_positives_exist(rng):
    cat, _ = catalogue(rng, 300)
    s = Session(cat)
    s.label([3, 4], 1)
    s.label([5], -1)
    s.results = s.results.__class__(  # a refine that accepted nothing
        np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), "refined"
    )
    s.rounds = 1
    shown, box = s.view(-1)
    assert box == -2 and shown.ids.tolist() == [3, 4, 5]  # positives first
    assert "no matches" in s.summary() and "showing your 2 positives" in s.summary()


def test_kernels_compile_in_the_background():
    from clipbranches_widget import warmup

    thread = warmup.start(32)
    assert warmup.start(32) is thread  # once per process
    thread.join(600)
    assert warmup.is_warm()


@pytest.mark.parametrize("stop_at", [1, 2])
def test_a_refine_stopped_between_steps_changes_nothing(rng, stop_at):
    from clipbranches_widget.session import RefineCancelled

    cat, which = catalogue(rng, 1000)
    s = Session(cat)
    s.search([0])
    s.label(np.flatnonzero(which == which[0])[:5], 1)
    s.label(np.flatnonzero(which != which[0])[:5], -1)
    before = (s.labels, s.results, s.model, s.rounds)
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) >= stop_at

    after = "the fit" if stop_at == 1 else "the search"
    with pytest.raises(RefineCancelled, match=f"cancelled after {after}; nothing changed"):
        s.refine(should_stop=should_stop)
    assert (s.labels, s.results, s.model, s.rounds) == before
    with pytest.raises(TypeError, match="should_stop: expected a callable or None, got int"):
        s.refine(should_stop=1)
    assert s.refine(should_stop=lambda: False).kind == "refined" and s.rounds == 1
