"""kill -9 at seeded random points: the previous state or the finished one,
never a third thing; a retry finishes and equals an uninterrupted run.

Each operation -- build, image append (with unreadable images, so failures
are listed), embedding append, merge, save, index build and the widget's
session save -- first runs uninterrupted in a forked child (the reference,
and its duration T). Then, per trial, a fresh copy of the starting state is
made, the operation starts in a child that is killed -9 after a seeded
random delay in [0, 1.1 T], and the target must equal the starting state or
the reference. The operation is then run again (a build or an image append
resumes) and must equal the reference, with no leftovers beside the target.

To add an operation: a ``Op`` in ``OPS`` (how to make the starting state,
the job and its arguments, how to read the target's state).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hostile_child import SUBSETS, index_state, snapshot

from clipbranches_widget import Catalogue
from clipbranches_widget.engine.search.index import BoxIndex

from images import write_images, write_truncated_jpeg

pytestmark = pytest.mark.hostile

AREA = "kill -9"
TRIALS = 3
POINTS = 5  # deterministic death points per operation
SEED = 909


@dataclass
class Op:
    name: str
    setup: Callable  # (dir, shared) -> job kwargs; makes the starting state in dir
    state: Callable  # (dir, shared) -> the target's state (snapshot-like, comparable)
    retry: str = "always"  # "always" (it resumes), or "if-previous" (not idempotent)


def _copy(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, symlinks=True)


@pytest.fixture(scope="module")
def shared(session_dir):
    root = session_dir / "killed"
    root.mkdir()
    imgs = root / "imgs"
    write_images(imgs, 36, seed=21)
    more = root / "more"
    write_images(more, 24, seed=22)
    write_truncated_jpeg(more / "broken1.jpg")
    (more / "broken2.png").write_bytes(b"not a png")
    rng = np.random.default_rng(3)
    X = rng.standard_normal((600, 24)).astype(np.float32)
    base = Catalogue.from_embeddings(X[:400], uris=[f"u{i}" for i in range(400)]).save(
        root / "emb-base"
    )
    np.save(root / "emb-more.npy", X[400:])
    part_b = Catalogue.from_embeddings(
        X[400:], uris=[f"b{i}" for i in range(200)], compressor=base.compressor
    ).save(root / "part-b")
    old = rng.integers(0, 256, (30_000, 32), dtype=np.uint8)
    new = rng.integers(0, 256, (30_000, 32), dtype=np.uint8)
    np.save(root / "new.npy", new)
    BoxIndex.build(old, root / "old-index", subsets=SUBSETS, block_size=16, progress=False)
    return {
        "root": root,
        "imgs": imgs,
        "more": more,
        "emb-base": base.path,
        "part-b": part_b.path,
        "new": new,
        "old": old,
    }


def _image_base(shared, forker):
    """A built catalogue of ``imgs`` (made once, by a child: the tiny model)."""
    base = shared["root"] / "img-base"
    if not base.exists():
        status = forker.one("build", shared["root"], source=str(shared["imgs"]), out=str(base))
        assert status["result"]["ok"], status
    return base


def _old_index_state(d, shared):
    """The index at d/idx as the state of the *new* codes; the old index is
    "previous" (BoxIndex.open refuses it for the new codes)."""
    try:
        return index_state(d / "idx", shared["new"])
    except ValueError:
        return ("previous", index_state(d / "idx", shared["old"]))


def _session_state(d, shared):
    f = d / "session.json"
    if not f.exists():
        return "absent"
    return json.loads(f.read_text())  # half a file would raise: a third thing


OPS = {
    "build": Op(
        "build",
        setup=lambda d, s, f: {"source": str(s["imgs"]), "out": str(d / "cat")},
        state=lambda d, s: snapshot(d / "cat"),
    ),
    "append_images": Op(
        "append_images",
        setup=lambda d, s, f: (
            _copy(_image_base(s, f), d / "cat"),
            {"path": str(d / "cat"), "source": str(s["more"])},
        )[1],
        state=lambda d, s: snapshot(d / "cat"),
    ),
    "append_embeddings": Op(
        "append_embeddings",
        setup=lambda d, s, f: (
            _copy(s["emb-base"], d / "cat"),
            {"path": str(d / "cat"), "npy": str(s["root"] / "emb-more.npy"), "uri_prefix": "n"},
        )[1],
        state=lambda d, s: snapshot(d / "cat"),
        retry="if-previous",
    ),
    "merge": Op(
        "merge",
        setup=lambda d, s, f: {
            "parts": [str(s["emb-base"]), str(s["part-b"])],
            "out": str(d / "m"),
        },
        state=lambda d, s: snapshot(d / "m"),
        retry="if-previous",
    ),
    "save": Op(
        "save",
        setup=lambda d, s, f: {"path": str(s["emb-base"]), "out": str(d / "saved")},
        state=lambda d, s: snapshot(d / "saved"),
        retry="if-previous",
    ),
    "index_build": Op(
        "index_build",
        setup=lambda d, s, f: (
            _copy(s["root"] / "old-index", d / "idx"),
            {"npy": str(s["root"] / "new.npy"), "out": str(d / "idx")},
        )[1],
        state=_old_index_state,
    ),
    "widget_save": Op(
        "widget_save",
        setup=lambda d, s, f: {"path": str(s["emb-base"]), "out": str(d / "session.json")},
        state=_session_state,
    ),
}

#: Names a finished operation may leave in its folder (the lock file stays by design).
ALLOWED = {"cat", "m", "saved", "idx", "session.json", ".cat.lock", ".m.lock", ".saved.lock"}


def _leftovers(d: Path) -> list[str]:
    """What is left beside the target, or hidden inside it, after a finished retry."""
    out = [n for n in os.listdir(d) if n not in ALLOWED]
    for sub in ("cat", "m", "saved", "idx"):
        if (d / sub).is_dir():
            out += [f"{sub}/{n}" for n in os.listdir(d / sub) if n.startswith(".")]
    return sorted(out)


def _state(op, d, shared):
    try:
        return op.state(d, shared)
    except Exception as e:  # noqa: BLE001 - a damaged target is the outcome
        return ("damaged", f"{type(e).__name__}: {e}")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(OPS))
def test_kill_9_leaves_the_previous_or_the_finished_state(name, shared, forker, tmp_path, outcomes):
    op = OPS[name]
    ref_dir = tmp_path / "reference"
    ref_dir.mkdir()
    kw = op.setup(ref_dir, shared, forker)
    previous = _state(op, ref_dir, shared)
    t0 = time.monotonic()
    status = forker.one(name, tmp_path, **kw)
    duration = time.monotonic() - t0  # of an uninterrupted run: the kills fall within it
    assert status["result"] and status["result"]["ok"], status
    reference = _state(op, ref_dir, shared)
    assert reference != previous
    # timed again on a copy: the first run may pay one-off imports
    timing = tmp_path / "timing"
    timing.mkdir()
    t0 = time.monotonic()
    forker.one(name, tmp_path, **op.setup(timing, shared, forker))
    duration = min(duration, time.monotonic() - t0)
    rng = np.random.default_rng([SEED, sum(map(ord, name))])
    problems = []
    for trial in range(TRIALS):
        d = tmp_path / f"t{trial}"
        d.mkdir()
        kw = op.setup(d, shared, forker)
        delay = float(rng.uniform(0, 1.1 * duration))
        forker.one(name, tmp_path, _kill_after=delay, **kw)
        what = f"{name} killed after {delay:.3f} s (of {duration:.2f} s)"
        outcome, what = _judge(op, d, shared, previous, reference, what, forker, tmp_path, kw)
        outcomes.record(AREA, outcome, what)
        if outcome != "correct" and not known_defect(name, what):
            problems.append(what)
    assert not problems, "\n".join(problems)


def _judge(op, d, shared, previous, reference, what, forker, tmp_path, kw):
    got = _state(op, d, shared)
    if got == previous or got == reference:
        outcome = "correct"
    elif isinstance(got, tuple) and got[0] == "damaged":
        return "data loss", what + f": the target is damaged: {got[1][:200]}"
    else:
        return "data loss", what + f": a third state: {str(got)[:200]}"
    if op.retry == "always" or got == previous:
        again = forker.one(op.name, tmp_path, **kw)
        final = _state(op, d, shared)
        if not (again["result"] and again["result"]["ok"]) or final != reference:
            return "data loss", what + (
                f": the retry gave {str(again['result'])[:200]} / {str(final)[:200]}"
            )
        if _leftovers(d):
            return "silent acceptance", what + f": leftovers after the retry: {_leftovers(d)}"
    return outcome, what


# Known defects, each reproduced exactly by a death point below: none left
# (add {op name: pytest.mark.xfail(strict=True, reason=...)} for a new one).
_DEATH_KNOWN: dict = {}


def known_defect(name: str, what: str) -> bool:
    """Whether a random kill met one of the defects the xfail tests reproduce (none now)."""
    return False


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=_DEATH_KNOWN.get(n, ())) for n in OPS])
def test_death_at_each_commit_point_leaves_the_previous_or_the_finished_state(
    name, shared, forker, tmp_path, outcomes
):
    """As a kill -9, but exactly before a chosen rename or fsync (os._exit there)."""
    op = OPS[name]
    ref_dir = tmp_path / "reference"
    ref_dir.mkdir()
    kw = op.setup(ref_dir, shared, forker)
    previous = _state(op, ref_dir, shared)
    status = forker.one("die_at", tmp_path, job=name, kwargs=kw, nth=0)
    assert status["result"] and status["result"]["ok"], status
    reference = _state(op, ref_dir, shared)
    calls = status["result"]["value"]
    points = sorted({int(round(x)) for x in np.linspace(1, calls, min(POINTS, calls))})
    problems = []
    for nth in points:
        d = tmp_path / f"p{nth}"
        d.mkdir()
        kw = op.setup(d, shared, forker)
        forker.one("die_at", tmp_path, job=name, kwargs=kw, nth=nth)
        what = f"{name} died before os call {nth} of {calls}"
        outcome, what = _judge(op, d, shared, previous, reference, what, forker, tmp_path, kw)
        outcomes.record(AREA, outcome, what)
        if outcome != "correct":
            problems.append(what)
    assert not problems, "\n".join(problems)
