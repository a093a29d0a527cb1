# ruff: noqa: F811
"""Actions carry their state: simulated front-end messages, arriving in the
orders a busy kernel and ipywidgets' throttled state updates produce.

ipywidgets holds back a state update while an earlier one is unanswered,
but sends custom messages at once: an action can reach the kernel before
the update of the click that preceded it (issue 17). Each action therefore
carries the front-end state it acts on and a sequence number; the reply
(the ``reply`` trait and the ack) names the sequence number it answers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# the fixture `cifar` comes from test_widget (pytest resolves it by the argument name)
from test_widget import Front, cifar, shown_ids  # noqa: F401

from clipbranches_widget import ClipBranches, Session, views


def act(front: Front, action: str, seq: int, state: dict | None = None, **extra) -> dict:
    """An action as the current front end sends it: with its state and number."""
    if state is not None:
        front.from_front.extend(state.items())  # the front end's intent, not Python's
        extra["state"] = state
    return front.act(action, seq=seq, view="v1", **extra)


def replay(cat, labels: dict) -> Session:
    s = Session(cat)
    s.set_labels(labels)
    s.refine()
    return s


def test_refine_trains_on_the_labels_it_carries_not_the_late_updates(cifar):
    """Keys →1 →1 →1 →2 r pressed with no waits: the model sees all 4 labels."""
    cat, _ = cifar
    w = ClipBranches(cat)
    front = Front(w)
    ids = shown_ids(w)
    # only the first label's update got out before the refine; the rest were held back
    front.label({ids[0]: 1})
    labels = {str(ids[0]): 1, str(ids[1]): 1, str(ids[2]): 1, str(ids[3]): -1}
    ack = act(front, "refine", 5, {"user_labels": labels, "user_page": 0, "user_box": -1})
    assert ack["ok"] and ack["seq"] == 5, ack
    assert w.labels == {int(k): v for k, v in labels.items()}
    assert w.model.boxes_ == replay(cat, w.labels).model.boxes_
    assert w.reply == {"view": "v1", "seq": 5, "action": "refine", "ok": True}
    # the held-back update arrives afterwards with the same labels: nothing changes
    front.update(user_labels=labels)
    assert w.labels == {int(k): v for k, v in labels.items()} and w.error == ""
    front.assert_python_wrote_no_user_key()


def test_a_page_action_turns_the_page_it_carries(cifar):
    """`1` then `n` quickly: the label and the page both arrive inside the action."""
    cat, _ = cifar
    w = ClipBranches(cat, page_size=50)
    front = Front(w)
    first = shown_ids(w)
    ack = act(front, "page", 1, {"user_labels": {str(first[0]): 1}, "user_page": 1})
    assert ack["ok"] and w.page_shown == 1 and shown_ids(w) != first
    assert w.labels == {first[0]: 1} and w.reply["seq"] == 1
    # Next clicked while the kernel was busy: queued actions are applied in order
    for seq, page in ((2, 2), (3, 3), (4, 4)):
        assert act(front, "page", seq, {"user_page": page})["ok"]
    assert w.page_shown == 4 and w.reply["seq"] == 4
    # ... and the held-back state updates that follow them change nothing
    front.update(user_page=4)
    assert w.page_shown == 4 and w.user_page == 4
    front.assert_python_wrote_no_user_key()


def test_action_state_is_never_echoed_to_the_front_end(cifar):
    cat, _ = cifar
    w = ClipBranches(cat)
    front = Front(w)
    before = len(front.sent)
    act(front, "page", 1, {"user_page": 2, "user_selection": [3, 4], "user_box": -1})
    for msg, _ in front.sent[before:]:
        if msg.get("method") in ("update", "echo_update"):
            assert not set(msg["state"]) & {"user_page", "user_selection", "user_box"}, msg
    assert (w.user_page, w.user_selection) == (2, [3, 4])


def test_every_search_action_uses_its_own_state(cifar):
    cat, classes = cifar
    w = ClipBranches(cat, k=20)
    front = Front(w)
    assert act(front, "search", 1, {"user_query": "ship", "user_page": 0})["ok"]
    assert w.kind == "knn" and w.session.query == "ship"
    ship = [i for i in shown_ids(w) if classes[i] == "ship"]
    ack = act(front, "more", 2, {"user_selection": ship[:2], "user_page": 0, "user_box": -1})
    assert ack["ok"] and w.session.query == ship[:2]
    front.assert_python_wrote_no_user_key()


def test_a_malformed_action_state_changes_nothing(cifar):
    cat, _ = cifar
    w = ClipBranches(cat)
    front = Front(w)
    front.label({3: 1})
    for extra, why in (
        ({"state": {"user_labels": {"x": 1}, "user_page": 2}}, "expected decimal item ids"),
        ({"state": {"user_labels": {"4": 5}}}, "expected values +1 or -1"),
        ({"state": {"user_page": "two"}}, "state: user_page"),
        ({"state": {"user_selection": ["a"]}}, "state: user_selection"),
        ({"state": {"items": []}}, "state: unknown keys ['items']"),
        ({"state": [1, 2]}, "state: expected an object"),
        ({"seq": "7"}, "seq: expected a non-negative integer"),
        ({"seq": True}, "seq: expected a non-negative integer"),
        ({"view": 5}, "view: expected a short text"),
    ):
        front.n += 1
        msg = {"type": "action", "action": "page", "req": f"bad-{front.n}", "seq": 9, **extra}
        before = len(front.sent)
        front.w._handle_msg(
            {"content": {"data": {"method": "custom", "content": msg}}, "buffers": []}
        )
        (ack,) = [m["content"] for m, _ in front.sent[before:] if m.get("method") == "custom"]
        assert not ack["ok"] and why in ack["error"], (extra, ack)
        assert w.labels == {3: 1} and w.user_page == 0 and w.user_selection == []


def test_a_failed_action_still_answers_its_sequence_number(cifar):
    """The front end waits for the reply to its latest action: a failure is one too."""
    cat, _ = cifar
    w = ClipBranches(cat)
    front = Front(w)
    ack = act(front, "refine", 3, {"user_labels": {"1": -1}})
    assert not ack["ok"] and ack["seq"] == 3 and "at least one positive" in w.error
    assert w.reply == {"view": "v1", "seq": 3, "action": "refine", "ok": False}
    assert w.labels == {1: -1}  # the carried labels were applied, then refine refused
    ack = act(front, "detail", 4, id=2)  # read-only: no reply trait change
    assert ack["ok"] and ack["seq"] == 4 and w.reply["seq"] == 3


def test_rank_scores_are_one_number_per_item_in_grid_order(cifar):
    cat, classes = cifar
    w = ClipBranches(cat, k=40, page_size=300)
    front = Front(w)
    assert all(it["score"] is None for it in w.items)  # browsing: no ranking score
    act(front, "search", 1, {"user_query": "cat"})
    sims = [it["score"] for it in w.items]
    assert sims == sorted(sims, reverse=True) and all(s != 0 or str(s) == "0.0" for s in sims)
    labels = {str(i): 1 if classes[i] == "cat" else -1 for i in shown_ids(w)}
    act(front, "refine", 2, {"user_labels": labels})
    scores = [it["score"] for it in w.items]
    assert len(scores) == w.total > 1 and scores == sorted(scores, reverse=True)
    assert all(round(s, 2) == s for s in scores)
    d = front.act("detail", id=w.items[0]["id"])["detail"]
    assert d["rank_score"] == scores[0]


def test_search_without_a_text_encoder_says_what_to_do(cifar):
    cat, _ = cifar
    plain = type(cat).from_embeddings(cat.embeddings.copy(), uris=list(cat.uris))
    w = ClipBranches(plain)
    front = Front(w)
    assert w.text_search is False
    ack = act(front, "search", 1, {"user_query": "ship"})
    assert not ack["ok"] and "no text encoder" in w.error and "More like these" in w.error


def test_export_action_writes_the_results_beside_the_notebook(tmp_path, cifar, monkeypatch):
    cat, _ = cifar
    monkeypatch.chdir(tmp_path)
    w = ClipBranches(cat, k=25)
    front = Front(w)
    ack = front.act("export", format="csv")
    assert not ack["ok"] and "search or refine first" in ack["error"]
    act(front, "search", 1, {"user_query": "dog"})
    n_updates = len(front.updates())
    paths = [front.act("export", format=f)["path"] for f in ("csv", "csv", "parquet")]
    assert len(set(paths)) == 3 and len(front.updates()) == n_updates  # answers in the ack
    df = pd.read_csv(paths[0])
    np.testing.assert_array_equal(df["id"], w.session.results.ids)
    assert len(pd.read_parquet(paths[2])) == 25
    ack = front.act("export", format="xlsx")
    assert not ack["ok"] and "expected the format" in ack["error"]


def test_details_show_a_normalised_path(tmp_path, cifar, monkeypatch):
    cat, _ = cifar
    monkeypatch.chdir(tmp_path)
    assert views.display_path("a/../b/./c.jpg") == str(tmp_path / "b" / "c.jpg")
    assert views.display_path("file:///data/x/../y.jpg") == "/data/y.jpg"
    assert views.display_path("https://h/a/../b.jpg") == "https://h/a/../b.jpg"
    assert views.display_path(None) is None
    w = ClipBranches(cat)
    d = Front(w).act("detail", id=4)["detail"]
    assert d["path"] == views.display_path(cat.uri(4)) and ".." not in d["path"]


def test_a_refine_that_accepts_nothing_shows_the_positives(cifar, monkeypatch):
    """Never an empty grid while positives exist (the session keeps them in the
    results, or the widget shows the labelled view), and a summary that says so."""
    cat, classes = cifar
    w = ClipBranches(cat, k=30)
    front = Front(w)
    act(front, "search", 1, {"user_query": "ship"})
    labels = {str(i): 1 if classes[i] == "ship" else -1 for i in shown_ids(w)[:12]}
    search = cat.search_boxes

    def nothing(boxes, **kwargs):
        found = search(boxes, **kwargs)
        found.ids, found.votes = found.ids[:0], found.votes[:0]
        return found

    monkeypatch.setattr(cat, "search_boxes", nothing)
    assert act(front, "refine", 2, {"user_labels": labels, "user_page": 0, "user_box": -1})["ok"]
    positives = {int(i) for i, v in labels.items() if v > 0}
    assert len(w.items) > 0 and positives <= set(shown_ids(w)), (positives, shown_ids(w))
    assert f"your {len(positives)} positives" in w.summary, w.summary


def test_rank_scores_of_a_votes_first_ranking_add_the_closeness():
    """Ranked by votes, then closeness: the one score is votes + closeness (0-0.99)."""
    ids = np.arange(6)
    votes = np.array([3, 3, 2, 2, 1, 1])
    scores = np.array([46.71, 59.59, -3.0, 80.0, 10.0, 9.0], np.float32)  # out of order
    res = views.Results(ids, votes, scores, "refined")
    out = views.rank_scores(res, res).tolist()
    assert out[0] == 3 + np.floor((46.71 + 3) / 83 * 0.99 * 100) / 100
    assert [int(x) for x in out] == votes.tolist() and out[3] == 2.99 and out[2] == 2.0
    page = res.subset(slice(2, 4))  # a page is scaled like the whole set
    assert views.rank_scores(page, res).tolist() == out[2:4]
    knn = views.Results(ids, np.zeros(6, int), np.array([0.9, 0.5, 0.2, 0.0, -0.0, -0.001]), "knn")
    sims = views.rank_scores(knn, knn).tolist()
    assert sims == [0.9, 0.5, 0.2, 0.0, 0.0, -0.01]
    assert "-0.0," not in str(sims)  # no negative zero, shown as "-0.00"
    browse = views.Results(ids, np.zeros(6, int), np.full(6, np.nan), "browse")
    assert np.isnan(views.rank_scores(browse, browse)).all()


def _summary(res, labels, before):
    marks = views.RoundMarks.of(res, labels, before)
    return views.summary(res, labels, n_items=10, query=None, rounds=1, marks=marks)


def test_the_round_summary_says_which_positives_the_model_accepts():
    res = views.Results(
        np.array([1, 2, 3, 9]),
        np.ones(4, int),
        np.linspace(1, 0, 4),
        "refined",
        info={"accepted_ids": np.array([2]), "expected_precision": 0.8, "cut": 0.4},
    )
    labels = {1: 1, 2: 1, 3: 1, 7: -1}
    # new: not among before (9), and not a positive the model rejects (1, 3): only 2
    assert _summary(res, labels, np.array([9])) == (
        "4 matches \u00b7 1 new \u00b7 1 of your 3 positives accepted \u00b7 all 3 shown"
        " \u00b7 est. precision \u2248 0.80"
    )
    # a round whose scores were not recalibrated says its estimate is rough
    res.info = dict(res.info, combination={"ks": (10,), "logistic_weight": 0.5})
    assert _summary(res, labels, np.array([9])).endswith(
        "est. precision \u2248 0.80 (uncalibrated)"
    )
    res.info["combination"]["platt"] = (-1.0, 2.0)
    assert _summary(res, labels, np.array([9])).endswith("est. precision \u2248 0.80")
    # only the positives themselves: no estimate of the items added, since none are
    only = views.Results(
        res.ids[:3],
        res.votes[:3],
        res.scores[:3],
        "refined",
        info={"accepted_ids": np.zeros(0, np.int64), "expected_precision": 0.0},
    )
    text = _summary(only, labels, np.array([9]))
    assert "precision" not in text and "0 of your 3 positives accepted" in text
    assert "0 new" in text  # every one of them rejected: none is "new"
    res.info = {"accepted_ids": np.array([1, 2, 3]), "fallback": "no box kept: the positives"}
    text = _summary(res, labels, np.array([9]))
    assert text.endswith("3 of your 3 positives \u00b7 no box kept: the positives")
    assert "3 new" in text


# ---------------------------------------------------------------- badges (issue 17 item 5)
def test_accepted_positives_are_the_models_own_ids_and_the_rest_are_rejected():
    res = views.Results(
        np.array([5, 1, 2, 9, 3]),
        np.array([2, 1, 0, 1, 1]),  # 2 is outside every box
        np.array([0.9, 0.8, 0.7, 0.6, 0.2]),
        "refined",
        info={"accepted_ids": np.array([1, 5]), "cut": 0.7},
    )
    labels = {1: 1, 2: 1, 3: 1, 4: 1, 9: -1}  # 4 is not in the results at all
    # the model accepts 1 (5 is not a positive); 3 is in a box but scored below the cut
    assert views.accepted_positives(res, labels).tolist() == [1]
    assert views.rejected_positives(res, labels).tolist() == [2, 3, 4]
    assert views.acceptance_cut(res) == 0.5  # twostage: min(cut, 0.5)
    res.info = {}  # boxes alone: every positive inside a box is accepted
    assert views.rejected_positives(res, labels).tolist() == [2, 4]
    assert views.acceptance_cut(res) is None
    knn = views.Results(res.ids, np.zeros(5, int), res.scores, "knn")
    assert views.rejected_positives(knn, labels).tolist() == []  # only a refine rejects
    res.info = {"accepted_ids": np.array([1])}
    marks = views.RoundMarks.of(res, labels, before=np.array([5]))
    assert marks.badges([5, 2, 1, 9]) == ["", "rejected", "new", "new"]
    assert marks.badges([5, 2, 1, 9], labelled_view=True) == ["", "rejected", "", ""]
    assert [marks.verdict(i, labels.get(i, 0)) for i in (1, 2, 9)] == ["accepted", "rejected", ""]
    unknown = views.RoundMarks.of(res, labels, before=None)
    assert unknown.badges([5, 1]) == ["", ""] and unknown.new([5, 1]).sum() == 0
    assert views.RoundMarks.of(knn, labels, np.array([5])).badges([1, 2]) == ["", ""]


def test_refine_badges_new_items_and_rejected_positives(cifar):
    cat, classes = cifar
    w = ClipBranches(cat, k=40, page_size=500)
    front = Front(w)
    assert act(front, "search", 1, {"user_query": "ship"})["ok"]
    assert all(it["badge"] == "" for it in w.items)  # neighbours: no round yet
    knn = set(w.session.results.ids.tolist())
    # positives also outside the neighbours (one of each other class: likely rejected)
    ships = [i for i in shown_ids(w) if classes[i] == "ship"]
    others = [int(np.flatnonzero(classes == c)[0]) for c in ("cat", "frog", "truck")]
    labels = {i: 1 for i in ships + others}
    labels.update({i: -1 for i in shown_ids(w) if classes[i] != "ship"})
    ack = act(front, "refine", 2, {"user_labels": {str(i): v for i, v in labels.items()}})
    assert ack["ok"], ack
    res = w.session.results
    shown = {it["id"]: it["badge"] for it in w.items}
    assert list(shown) == res.ids.tolist()  # one page: everything
    rejected = {i for i, b in shown.items() if b == "rejected"}
    new = {i for i, b in shown.items() if b == "new"}
    positives = {i for i, v in labels.items() if v > 0}
    assert rejected <= positives and positives <= set(shown)  # every positive is shown
    assert rejected, "the model should reject some of the off-class positives"
    accepted = set(res.info["accepted_ids"].tolist())
    assert positives - rejected == accepted and len(accepted) == res.info["accepted_positives"]
    assert new == set(shown) - knn - rejected and new  # new: not among the neighbours
    assert f"{len(new):,} new" in w.summary  # the summary counts the badges
    assert f"{len(accepted)} of your {len(positives)} positives" in w.summary
    # the labelled view marks only the rejected (the user has seen every labelled item)
    assert act(front, "page", 3, {"user_box": -2})["ok"]
    assert {it["id"] for it in w.items if it["badge"] == "rejected"} == rejected
    assert all(it["badge"] != "new" for it in w.items)
    # a second round: new is measured against the first round's results
    assert act(front, "page", 4, {"user_box": -1})["ok"]
    first = set(res.ids.tolist())
    labels.update({i: -1 for i in list(new)[:3]})
    ack = act(front, "refine", 5, {"user_labels": {str(i): v for i, v in labels.items()}})
    assert ack["ok"], ack
    again = {it["id"]: it["badge"] for it in w.items}
    assert {i for i, b in again.items() if b == "new"} == set(again) - first - {
        i for i, b in again.items() if b == "rejected"
    }
    front.assert_python_wrote_no_user_key()


def test_the_check_facet_shows_a_random_check_and_its_estimate(cifar):
    """The "check 20" chip: the kernel draws 20 items once per result set,
    shows them, and the summary estimates precision as they are labelled."""
    cat, classes = cifar
    w = ClipBranches(cat, k=40)
    front = Front(w)
    assert act(front, "search", 1, {"user_query": "ship"})["ok"]
    ack = act(front, "check", 2, {"user_box": -3})
    assert not ack["ok"] and "expected refined results" in ack["error"]  # nothing to check yet
    labels = {str(i): 1 if classes[i] == "ship" else -1 for i in shown_ids(w)}
    assert act(front, "refine", 3, {"user_labels": labels, "user_box": -1})["ok"]
    res = w.session.results
    assert act(front, "check", 4, {"user_box": -3, "user_page": 0})["ok"]
    drawn = shown_ids(w)
    assert w.box_shown == -3 and len(drawn) == 20 == w.shown_total
    assert not set(drawn) & {int(k) for k in labels}  # unlabelled items only
    pools = w.session.current_check().pools
    assert len(set(drawn) & set(res.ids.tolist())) == min(10, pools["results"])  # half, if there
    assert w.summary.startswith("check: label these random items")  # first: the line is cut
    assert all(it["badge"] == "" for it in w.items)  # not this round's finds: no "new"
    # labelled (the front end's own key): the summary follows without an action
    labels = {**labels, **{str(i): 1 if classes[i] == "ship" else -1 for i in drawn}}
    front.label({int(k): v for k, v in labels.items()})
    assert w.summary.startswith("check 20 of 20: precision \u2248")
    # asked again, the same items; the other views are unchanged
    assert act(front, "check", 5, {"user_box": -3})["ok"] and shown_ids(w) == drawn
    assert act(front, "page", 6, {"user_box": -1})["ok"] and w.total == res.count
    front.assert_python_wrote_no_user_key()


def test_the_near_miss_facet_shows_the_candidates_just_below_the_cut(cifar):
    """The "near misses" chip: the candidates the refine ranked next below its
    cut, best first, none of them a result, with their own scores."""
    cat, classes = cifar
    w = ClipBranches(cat, k=40)
    front = Front(w)
    assert act(front, "search", 1, {"user_query": "ship"})["ok"]
    labels = {str(i): 1 if classes[i] == "ship" else -1 for i in shown_ids(w)}
    assert act(front, "refine", 2, {"user_labels": labels, "user_box": -1})["ok"]
    res = w.session.results
    near = np.asarray(res.info["below_cut"])
    assert near.size >= 1 and not np.isin(near, res.ids).any()
    assert act(front, "page", 3, {"user_box": -4, "user_page": 0})["ok"]
    assert w.box_shown == -4 and w.shown_total == near.size and w.total == res.count
    assert shown_ids(w) == near[: w.session.page_size].tolist()  # in rank order
    scores = [it["score"] for it in w.items]
    assert scores == sorted(scores, reverse=True)  # best first
    kept = res.scores[~np.isin(res.ids, [int(k) for k in labels])]
    if kept.size:  # below every item the refine added
        assert max(scores) <= float(kept.min()) + 1e-6
    assert all(it["badge"] == "" for it in w.items)  # not results: no "new"
    assert act(front, "page", 4, {"user_box": -1})["ok"]
    assert shown_ids(w)[:5] == res.ids[:5].tolist()
    front.assert_python_wrote_no_user_key()
