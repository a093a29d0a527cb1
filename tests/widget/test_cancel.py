# ruff: noqa: F811
"""A refine runs in a worker thread, so a cancel reaches it (issue 17 item 3).

The waits here are gates the test opens itself (threading.Event): the refine
is held at a known point (the wait for the background compile, or inside the
refine) while the test sends the messages a user would, then released.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from test_widget import Front, cifar, shown_ids  # noqa: F401

from clipbranches_widget import ClipBranches, Session, warmup

LONG = 60  # seconds: a deadline for a gate, never a measured duration


def send(front: Front, action: str, seq: int, state: dict | None = None, **extra) -> str:
    """An action as the front end sends it, without waiting for its answer."""
    front.n += 1
    req = f"t-{front.n}"
    if state is not None:
        front.from_front.extend(state.items())
        extra["state"] = state
    content = {"type": "action", "action": action, "req": req, "seq": seq, "view": "v1", **extra}
    front.w._handle_msg(
        {"content": {"data": {"method": "custom", "content": content}}, "buffers": []}
    )
    return req


def ack_of(front: Front, req: str) -> dict | None:
    acks = [m["content"] for m, _ in front.sent if m.get("method") == "custom"]
    acks = [a for a in acks if a.get("req") == req]
    assert len(acks) <= 1, acks
    return acks[0] if acks else None


class Gate:
    """Holds the worker at one point until the test opens it."""

    def __init__(self):
        self.entered, self.open = threading.Event(), threading.Event()

    def hold(self):
        self.entered.set()
        assert self.open.wait(LONG), "the test never opened the gate"


@pytest.fixture
def cold(monkeypatch):
    """The background compile "still running": a refine waits on it at the gate."""
    gate = Gate()

    def wait(stop=None, interval=0.05):
        gate.hold()
        return not (stop and stop())

    monkeypatch.setattr(warmup, "is_warm", lambda: False)
    monkeypatch.setattr(warmup, "wait", wait)
    return gate


def searched(cat, classes, page_size=10):
    w = ClipBranches(cat, k=40, page_size=page_size)
    front = Front(w)
    assert front.act("search", seq=1, view="v1", state={"user_query": "ship"})["ok"]
    front.from_front.append(("user_query", "ship"))
    knn = w.session.results.ids[:20].tolist()
    labels = {str(i): 1 if classes[i] == "ship" else -1 for i in knn}
    return w, front, labels


def snapshot(w):
    s = w.session
    return {
        "results": s.results,
        "model": s.model,
        "rounds": s.rounds,
        "items": shown_ids(w),
        "page_shown": w.page_shown,
        "user_page": w.user_page,
        "summary": w.summary,
        "kind": w.kind,
        "total": w.total,
    }


def test_a_refine_waiting_on_the_compile_shows_it_and_is_cancelled(cifar, cold):
    cat, classes = cifar
    w, front, labels = searched(cat, classes)
    front.update(user_page=2)  # the user is on page 3
    assert front.act("page", seq=2, view="v1", state={"user_page": 2})["ok"]
    before = snapshot(w)
    req = send(front, "refine", 3, {"user_labels": labels, "user_page": 0, "user_box": -1})
    assert cold.entered.wait(LONG)
    # the progress state, sent while the refine waits
    assert w.status == "refine: the first refine compiles once"
    statuses = [m["state"]["status"] for m, _ in front.updates() if "status" in m["state"]]
    assert statuses[-1] == "refine: the first refine compiles once"
    assert ack_of(front, req) is None  # still waiting
    # the cancel is answered at once, on this (the main) thread, while the refine waits
    cancel = send(front, "cancel", 4, target=3)
    assert ack_of(front, cancel) == {
        "type": "ack",
        "req": cancel,
        "seq": 4,
        "action": "cancel",
        "ok": True,
        "found": "running",
    }
    cold.open.set()
    assert w.wait(LONG)
    ack = ack_of(front, req)
    assert ack["cancelled"] is True and not ack["ok"] and ack["error"] == "refine cancelled"
    # nothing changed: results, model, round, the page shown and asked for
    after = snapshot(w)
    assert after == before, (before, after)
    assert w.labels == {int(k): v for k, v in labels.items()}  # the labels it carried stay
    assert w.status == "ready" and w.error == ""
    assert w.reply == {"view": "v1", "seq": 3, "action": "refine", "ok": False, "cancelled": True}
    # the front end puts back its own page too (it had set page 0 for the refine)
    front.update(user_page=2, user_box=-1)
    assert snapshot(w) == before
    front.assert_python_wrote_no_user_key()


def test_clicks_during_a_waiting_refine_run_after_it_in_order(cifar, cold):
    cat, classes = cifar
    w, front, labels = searched(cat, classes, page_size=3)
    req = send(front, "refine", 2, {"user_labels": labels, "user_page": 0, "user_box": -1})
    assert cold.entered.wait(LONG)
    # a label and a page turn while the refine waits: queued, none lost
    extra = {**labels, str(shown_ids(w)[0]): -1}
    front.w._handle_msg(
        {
            "content": {
                "data": {"method": "update", "state": {"user_labels": extra}, "buffer_paths": []}
            },
            "buffers": [],
        }
    )
    front.from_front.append(("user_labels", extra))
    page = send(front, "page", 3, {"user_labels": extra, "user_page": 1})
    assert ack_of(front, page) is None
    assert w.labels == {int(k): v for k, v in labels.items()}  # applied after the refine
    cold.open.set()
    assert w.wait(LONG)
    assert ack_of(front, req)["ok"] and ack_of(front, page)["ok"]
    assert w.rounds == 1 and w.kind == "refined"
    # the model trained on the labels the refine carried, not the later one
    replay = Session(cat)
    replay.set_labels({int(k): v for k, v in labels.items()})
    replay.refine()
    assert w.model.boxes_ == replay.model.boxes_
    assert w.labels == {int(k): v for k, v in extra.items()}
    assert w.page_shown == 1 and w.reply["seq"] == 3
    front.assert_python_wrote_no_user_key()


def test_a_cancel_during_the_refine_itself_drops_its_result(cifar, monkeypatch):
    cat, classes = cifar
    w, front, labels = searched(cat, classes)
    before = snapshot(w)
    gate = Gate()
    refine = Session.refine

    def held(self, *args, **kwargs):
        gate.hold()
        return refine(self, *args, **kwargs)

    monkeypatch.setattr(warmup, "wait", lambda stop=None, interval=0.05: True)
    monkeypatch.setattr(Session, "refine", held)
    req = send(front, "refine", 2, {"user_labels": labels, "user_page": 0, "user_box": -1})
    assert gate.entered.wait(LONG)
    assert ack_of(front, send(front, "cancel", 3, target=2))["found"] == "running"
    gate.open.set()  # the refine stops after its next step (should_stop); nothing is adopted
    assert w.wait(LONG)
    assert ack_of(front, req)["cancelled"] is True
    assert snapshot(w) == before and w.model is None and w.session.rounds == 0
    # the next refine (no cancel) is the one these labels give
    assert front.act("refine", seq=4, view="v1", state={"user_labels": labels})["ok"]
    assert w.rounds == 1 and w.kind == "refined" and w.reply["seq"] == 4


def test_a_queued_refine_is_cancelled_before_it_starts(cifar, cold):
    cat, classes = cifar
    w, front, labels = searched(cat, classes)
    first = send(front, "refine", 2, {"user_labels": labels, "user_page": 0})
    assert cold.entered.wait(LONG)
    second = send(front, "refine", 3, {"user_labels": labels, "user_page": 0})
    assert ack_of(front, send(front, "cancel", 4, target=3))["found"] == "queued"
    cold.open.set()
    assert w.wait(LONG)
    assert ack_of(front, first)["ok"] and ack_of(front, second)["cancelled"] is True
    assert w.rounds == 1 and w.kind == "refined"


def test_a_cancel_too_late_or_malformed_says_so(cifar):
    cat, classes = cifar
    w, front, labels = searched(cat, classes)
    assert front.act("refine", seq=2, view="v1", state={"user_labels": labels})["ok"]
    late = ack_of(front, send(front, "cancel", 3, target=2))
    assert late["ok"] and late["found"] == ""  # it had finished: nothing to cancel
    assert w.rounds == 1 and w.kind == "refined"
    bad = ack_of(front, send(front, "cancel", 4, target="2"))
    assert not bad["ok"] and "expected the sequence number" in bad["error"]


def test_the_widget_marks_new_and_rejected_the_way_the_summary_counts(cifar):
    """One definition: the summary's "N new" is the number of "new" badges over
    every page, "k of your m positives" the positives the details call accepted,
    and the details of every other positive say it is not accepted."""
    cat, classes = cifar
    w, front, _ = searched(cat, classes)
    knn = w.session.results.ids.tolist()
    ships = [i for i in knn if classes[i] == "ship"]
    others = [int(np.flatnonzero(classes == c)[0]) for c in ("cat", "frog", "truck", "bird")]
    labels = {str(i): 1 for i in ships + others}
    labels.update({str(i): -1 for i in knn if classes[i] != "ship"})
    assert front.act("refine", seq=2, view="v1", state={"user_labels": labels})["ok"]
    badges = {}
    for page in range(w.page_count):
        assert front.act("page", seq=3 + page, view="v1", state={"user_page": page})["ok"]
        badges.update({it["id"]: it["badge"] for it in w.items})
    assert list(badges) == w.session.results.ids.tolist()
    n_new = sum(b == "new" for b in badges.values())
    assert f" \u00b7 {n_new:,} new \u00b7 " in w.summary, w.summary
    positives = [int(i) for i, v in labels.items() if v > 0]
    verdicts = {i: front.act("detail", id=i)["detail"] for i in positives}
    accepted = [i for i, d in verdicts.items() if d["verdict"] == "accepted"]
    rejected = [i for i, d in verdicts.items() if d["verdict"] == "rejected"]
    assert sorted(accepted + rejected) == sorted(positives)
    assert rejected and f"{len(accepted)} of your {len(positives)} positives" in w.summary
    assert {i for i, b in badges.items() if b == "rejected"} == set(rejected)
    assert set(accepted) == set(w.session.results.info["accepted_ids"].tolist())
    cut = verdicts[rejected[0]]["cut"]
    assert cut == min(w.session.results.info["cut"], 0.5)
    for i in rejected:  # not accepted: outside every box, or scored below the cut
        d = verdicts[i]
        assert not d["boxes"] or d["score"] < cut, d
    for i in accepted:
        d = verdicts[i]
        assert d["boxes"] and d["score"] >= cut, d
