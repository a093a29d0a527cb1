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
    votes = [it["votes"] for it in w.items]
    assert [int(s) for s in scores] == votes  # votes + a closeness in [0, 0.99]
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
    """Never an empty grid while positives exist, and a summary that says why."""
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
    positives = sorted(int(i) for i, v in labels.items() if v > 0)
    assert w.total == 0 and w.box_shown == -2 and shown_ids(w)[: len(positives)] == positives
    assert "no matches" in w.summary and f"showing your {len(positives)} positives" in w.summary
