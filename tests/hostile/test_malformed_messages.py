"""Malformed front-end messages: never an exception, never corrupted labels,
always an error the user sees.

The widget is fed seeded random comm messages -- state updates and actions
with wrong types, missing fields, huge numbers, negative ids, NaN, nested
junk and unknown actions -- exactly as a front end would put them on the
comm (``w._handle_msg``). After each message:

* nothing escaped: ``_handle_msg`` did not raise and ipywidgets logged no
  "Exception in widget method" (in a kernel: a traceback in the notebook);
* the session's labels are exactly the last valid labels sent (a test-side
  model of the rules: decimal ids in range, values +1 / -1);
* a message the model calls invalid showed an error: the ``error`` trait, a
  refused ack, or (a message no one can answer: no request id) a logged
  warning.

To extend: add values to the pools below; ``valid_*`` is the rule an input
is judged by.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
from PIL import Image

from clipbranches_widget import Catalogue, ClipBranches
from clipbranches_widget.widget import FRONTEND_KEYS

pytestmark = pytest.mark.hostile

AREA = "widget messages"
N = 40
ACTIONS = ("search", "more", "refine", "reset", "page", "detail", "export")
_ID = re.compile(r"(0|[1-9][0-9]*)\Z")


class Words:
    """A text encoder for tests: any text maps to a fixed vector of its own."""

    def __init__(self, d):
        self.d = d

    def embed_text(self, texts):
        out = []
        for t in texts:
            rng = np.random.default_rng(sum(map(ord, t)) % 2**32)
            out.append(rng.standard_normal(self.d))
        return np.asarray(out, np.float32)


@pytest.fixture
def widget(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the export action writes into the working folder
    rng = np.random.default_rng(0)
    uris = []
    for i in range(N):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(p)
        uris.append(str(p))
    X = rng.standard_normal((N, 24)).astype(np.float32)
    cat = Catalogue.from_embeddings(X, uris=uris, embedder=Words(24))
    w = ClipBranches(cat, page_size=12)
    sent = []
    w._send = lambda msg, buffers=None: sent.append(msg)
    return w, sent


def update(state):
    return {
        "content": {"data": {"method": "update", "state": state, "buffer_paths": []}},
        "buffers": [],
    }


def custom(content):
    return {"content": {"data": {"method": "custom", "content": content}}, "buffers": []}


# ---------------------------------------------------------------- the pools
NAN, INF = float("nan"), float("inf")
JUNK = [
    None, True, False, 0, -1, 1, 7, 2**63, -(2**63) - 1, 10**100, 1.5, -0.0, NAN, INF, -INF,
    "", "x", "5", "-1", "1_0", " 5", "\u0663", "a" * 5000, [], [1], [[[]]], [None, "a"],
    {}, {"5": 1}, {"a": {"b": [None, {"c": NAN}]}},
]  # fmt: skip
LABEL_KEYS = ["0", "5", str(N - 1), str(N), "-1", "1_0", " 5", "5.0", "\u0663", "", "x",
              "99999999999999999999999", "007"]  # fmt: skip
LABEL_VALUES = [1, -1, 0, 2, -2, 1.5, 1.0, True, False, "1", None, NAN, [1], {}, 10**30]


def nested(depth):
    x = []
    for _ in range(depth):
        x = [x, {"k": x}] if depth < 12 else [x]
    return x


def valid_labels(v) -> bool:
    if not isinstance(v, dict):
        return False
    for k, x in v.items():
        if not (isinstance(k, str) and _ID.match(k) and int(k) < N):
            return False
        if isinstance(x, bool) or not isinstance(x, int) or x not in (1, -1):
            return False
    return True


def valid_value(key, v) -> bool:
    """Whether the front end may set ``key`` to ``v`` (ranges are checked on use)."""
    is_int = isinstance(v, int) and not isinstance(v, bool)
    if key == "user_labels":
        return valid_labels(v)
    if key in ("user_page", "user_box"):
        return is_int  # any page or box: clamped or refused when used
    if key == "user_query":
        return isinstance(v, str)
    if key == "user_selection":
        return isinstance(v, list) and all(
            isinstance(i, int) and not isinstance(i, bool) for i in v
        )
    return False  # not a front-end key


def random_labels(rng):
    if rng.random() < 0.5:  # valid
        ids = rng.choice(N, int(rng.integers(0, 6)), replace=False)
        return {str(int(i)): int(rng.choice([1, -1])) for i in ids}
    out = {}
    for _ in range(int(rng.integers(1, 4))):
        k = LABEL_KEYS[int(rng.integers(len(LABEL_KEYS)))]
        out[k] = LABEL_VALUES[int(rng.integers(len(LABEL_VALUES)))]
    return out


def random_value(rng, key):
    r = rng.random()
    if key == "user_labels" and r < 0.7:
        return random_labels(rng)
    if r < 0.35:  # a plausible value
        return {
            "user_page": int(rng.integers(-3, 6)),
            "user_box": int(rng.integers(-3, 4)),
            "user_query": "a red bus",
            "user_selection": [int(i) for i in rng.integers(-2, N + 2, 3)],
        }.get(key, 0)
    if r < 0.4:
        return nested(int(rng.integers(2, 200)))
    return JUNK[int(rng.integers(len(JUNK)))]


def random_state(rng, *, allow_unknown=True):
    keys = list(FRONTEND_KEYS) + (["nonexistent", "items", "n_items"] if allow_unknown else [])
    state = {}
    for _ in range(int(rng.integers(1, 3))):
        k = keys[int(rng.integers(len(keys)))]
        state[k] = random_value(rng, k)
    return state


def pick(rng, pool):
    return pool[int(rng.integers(len(pool)))]


def random_action(rng) -> tuple[dict, bool]:
    """``(content, valid)`` of a random action message."""
    content = {"type": "action"}
    valid = True
    r = rng.random()
    action = pick(rng, ACTIONS) if r < 0.75 else pick(rng, ["", None, 5, "_show", "Search", ["x"]])
    valid &= action in ACTIONS
    content["action"] = action
    req = f"r{rng.integers(1 << 30)}" if rng.random() < 0.9 else pick(rng, [None, True, 1.5, []])
    if req is not None or rng.random() < 0.5:
        content["req"] = req
    # no usable request id: nobody to answer, the widget logs why it ignored it
    valid &= isinstance(req, (str, int)) and not isinstance(req, bool)
    if rng.random() < 0.5:
        seq = (
            int(rng.integers(0, 9))
            if rng.random() < 0.6
            else pick(rng, [-2, 1.5, True, None, "3", 2**70])
        )
        content["seq"] = seq
        valid &= isinstance(seq, int) and not isinstance(seq, bool) and seq >= -1
    if rng.random() < 0.3:
        view = pick(rng, ["", "v1", 5, None, "x" * 100])
        content["view"] = view
        valid &= isinstance(view, str) and len(view) <= 64
    if rng.random() < 0.5:
        state = random_state(rng) if rng.random() < 0.8 else pick(rng, [None, [], "x", 5])
        content["state"] = state
        valid &= isinstance(state, dict) and all(valid_value(k, v) for k, v in state.items())
    if action == "detail":
        i = int(rng.integers(0, N)) if rng.random() < 0.4 else pick(rng, JUNK + [N, -5, 10**20])
        content["id"] = i
        valid &= isinstance(i, int) and not isinstance(i, bool) and 0 <= i < N
    if action == "export" and rng.random() < 0.7:
        fmt = pick(rng, ["csv", "parquet", "xlsx", None, 5, "../../x", "csv\0"])
        content["format"] = fmt
        valid &= fmt in ("csv", "parquet")
    if rng.random() < 0.1:
        content["extra"] = nested(50)
    return content, valid


def random_message(rng) -> tuple[dict, bool, str, object]:
    """``(msg, valid, kind, action)``: kind "update", "action" or "junk"."""
    r = rng.random()
    if r < 0.45:
        state = random_state(rng)
        valid = all(valid_value(k, v) for k, v in state.items())
        return update(state), valid, "update", None
    if r < 0.93:
        content, valid = random_action(rng)
        return custom(content), valid, "action", content.get("action")
    # not an action at all, or a malformed comm payload
    junk = pick(
        rng,
        [
            custom({"type": "nope"}),
            custom([1, 2]),
            custom(None),
            custom({"action": "search", "req": "r"}),  # no type
            {"content": {"data": {"method": "update", "state": [1, 2]}}, "buffers": []},
            {"content": {"data": {"method": "update", "state": "x"}}, "buffers": []},
            {"content": {"data": {"method": "bogus"}}, "buffers": []},
        ],
    )
    return junk, False, "junk", None


def expected_labels(w, msg, valid, kind, action, labels):
    """The session's labels after ``msg`` (call before sending it)."""
    data = msg["content"]["data"]
    if kind == "update":
        new = data["state"].get("user_labels", w.user_labels)
        # applied key by key; traitlets reports (and the widget applies) real changes only
        if "user_labels" in data["state"] and valid_labels(new) and new != w.user_labels:
            return {int(i): v for i, v in new.items()}
        return labels
    if kind == "action" and valid and action not in ("detail", "export"):
        state = data["content"].get("state") or {}
        if "user_labels" in state:
            labels = {int(i): v for i, v in state["user_labels"].items()}
        return {} if action == "reset" else labels
    return labels


class Watch(logging.Handler):
    """Collects what the widget and ipywidgets log while a message is handled."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def watch():
    h = Watch()
    root = logging.getLogger()
    root.addHandler(h)
    old = root.level
    root.setLevel(logging.INFO)
    yield h
    root.removeHandler(h)
    root.setLevel(old)


def handle(w, sent, watch, msg) -> tuple[str, str]:
    """``(what escaped or "", the error shown or "")`` after one message."""
    w.error = ""
    before = len(sent)
    watch.records.clear()
    try:
        w._handle_msg(msg)
    except Exception as e:  # noqa: BLE001 - the outcome under test
        return f"raised {type(e).__name__}: {e}", ""
    # a refine runs in a worker thread, and what arrives meanwhile waits for
    # it: judge the outcome once every message so far has been handled
    assert w.wait(600), "the widget did not finish handling a message"
    for r in watch.records:
        if r.levelno >= logging.WARNING and (
            r.exc_info or "Exception in widget method" in r.getMessage()
        ):
            return f"logged {r.getMessage()[:200]}", ""
    acks = [m["content"] for m in sent[before:] if m.get("method") == "custom"]
    shown = w.error or next((a.get("error", "") for a in acks if not a.get("ok", True)), "")
    if not shown:
        shown = next((r.getMessage() for r in watch.records if r.levelno >= logging.WARNING), "")
    return "", shown


def test_random_messages_never_escape_nor_corrupt_labels(widget, watch, outcomes):
    w, sent = widget
    rng = np.random.default_rng(16)
    labels: dict[int, int] = {}
    bad = []
    for k in range(400):
        msg, valid, kind, action = random_message(rng)
        labels = expected_labels(w, msg, valid, kind, action, labels)
        escaped, shown = handle(w, sent, watch, msg)
        what = f"#{k} {str(msg['content']['data'])[:200]}"
        if escaped:
            outcome = "crash"
            what += f" -> {escaped}"
        elif w.labels != labels or any(v not in (1, -1) for v in w.labels.values()):
            outcome = "data loss"
            what += f" -> labels {w.labels} expected {labels}"
        elif valid:
            outcome = "correct"
        elif shown:
            outcome = "clear error"
        else:
            outcome = "silent acceptance"
        outcomes.record(AREA, outcome, what)
        if outcome not in ("correct", "clear error") and not known_defect(msg):
            bad.append((outcome, what))
    # the widget still works after all that
    w._handle_msg(update({"user_labels": {"1": 1, "2": -1}}))
    assert w.wait(600) and w.labels == {1: 1, 2: -1}
    assert not bad, "\n".join(f"{o}: {m}" for o, m in bad[:60])


# ---------------------------------------------------------------- known defects
PYTHON_OWNED = ("n_items", "total", "page_size", "kind", "status", "error", "items", "reply")


def known_defect(msg) -> str:
    """Which xfail test below reproduces what ``msg`` meets ("" for none)."""
    data = msg["content"]["data"]
    state = data.get("state") if data.get("method") == "update" else None
    if data.get("method") == "update" and not isinstance(state, dict):
        return "state not an object"
    if isinstance(state, dict):
        if set(state) - set(FRONTEND_KEYS):
            return "not a front-end key"
        if any(isinstance(state.get(k), bool) for k in ("user_page", "user_box")):
            return "bool as int"
    content = data.get("content")
    if isinstance(content, dict) and content.get("action") in ("detail", "export"):
        st = content.get("state")
        if isinstance(st, dict) and not all(valid_value(k, v) for k, v in st.items()):
            return "read-only action state"
    return ""


def _escapes_or_silent(widget, watch, msg, labels=None):
    w, sent = widget
    if labels is not None:
        w._handle_msg(update({"user_labels": labels}))
    escaped, shown = handle(w, sent, watch, msg)
    return escaped, shown, w


@pytest.mark.parametrize("state", [[1, 2], "x", 5, None])
def test_an_update_whose_state_is_not_an_object_shows_an_error(widget, watch, state):
    msg = {"content": {"data": {"method": "update", "state": state}}, "buffers": []}
    escaped, shown, _ = _escapes_or_silent(widget, watch, msg)
    assert not escaped and shown


@pytest.mark.parametrize(
    "state", [{"n_items": 1}, {"total": -5}, {"kind": "refined"}, {"page_size": 0}]
)
def test_an_update_of_a_python_owned_key_is_refused(widget, watch, state):
    key, w = next(iter(state)), widget[0]
    before = getattr(w, key)
    escaped, shown, w = _escapes_or_silent(widget, watch, update(state))
    assert not escaped and shown and getattr(w, key) == before


def test_an_update_of_an_unknown_key_shows_an_error(widget, watch):
    escaped, shown, _ = _escapes_or_silent(widget, watch, update({"nonexistent": 0}))
    assert not escaped and shown


@pytest.mark.parametrize("state", [{"user_page": False}, {"user_box": True}])
def test_a_bool_page_or_box_is_refused(widget, watch, state):
    escaped, shown, w = _escapes_or_silent(widget, watch, update(state))
    key = next(iter(state))
    assert not escaped and shown and not isinstance(getattr(w, key), bool)
    assert getattr(w, key) == {"user_page": 0, "user_box": -1}[key]


def test_a_read_only_action_with_a_malformed_state_says_so(widget, watch):
    content = {
        "type": "action",
        "action": "detail",
        "req": "r1",
        "id": 3,
        "state": {"user_labels": {"1_0": 2}},
    }
    escaped, shown, w = _escapes_or_silent(widget, watch, custom(content), labels={"4": 1})
    assert not escaped and shown and w.labels == {4: 1}
