"""Two processes writing one catalogue folder at once: one complete, valid
result, equal to a single run (or to one of the two, for writers of
different data); the loser, if any, fails with a clear error.

Both writers are forked children started together (``Forker.run`` with two
jobs), each round several times, since a race is a matter of chance. To add
a scenario: a function returning ``(jobs, check)`` to ``SCENARIOS``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hostile_child import snapshot

from clipbranches_widget import Catalogue

from images import write_images, write_truncated_jpeg

pytestmark = pytest.mark.hostile

AREA = "concurrent writers"
ROUNDS = 3


@pytest.fixture(scope="module")
def data(session_dir, forker):
    root = session_dir / "concurrent"
    root.mkdir()
    write_images(root / "imgs", 30, seed=31)
    write_images(root / "more", 16, seed=32)
    write_truncated_jpeg(root / "more" / "broken.jpg")
    rng = np.random.default_rng(4)
    X = rng.standard_normal((300, 24)).astype(np.float32)
    Catalogue.from_embeddings(X[:200], uris=[f"a{i}" for i in range(200)]).save(root / "a")
    Catalogue.from_embeddings(X[200:], uris=[f"b{i}" for i in range(100)]).save(root / "b")
    np.save(root / "x1.npy", X[:30])
    np.save(root / "x2.npy", X[30:70])
    # the single runs every concurrent result is compared with
    refs = {}
    status = forker.one("build", root, source=str(root / "imgs"), out=str(root / "ref-build"))
    assert status["result"]["ok"], status
    refs["build"] = snapshot(root / "ref-build")
    status = forker.one("build", root, source=str(root / "imgs"), out=str(root / "ref-app"))
    assert status["result"]["ok"], status
    status = forker.one(
        "append_images", root, path=str(root / "ref-app"), source=str(root / "more")
    )
    assert status["result"]["ok"], status
    refs["append_images"] = snapshot(root / "ref-app")
    return root, refs


def _died(status) -> str | None:
    if status["hang"]:
        return "hang"
    if status["signal"] is not None or status["code"] != 0 or status["result"] is None:
        return "crash"
    return None


def _job(func, result, **kwargs):
    return {"func": func, "kwargs": kwargs, "result": str(result)}


def _run_pair(forker, tmp_path, jobs):
    for k, j in enumerate(jobs):
        j["result"] = str(tmp_path / f"r{k}.json")
    return forker.run(jobs, timeout=120)


def _outcome(statuses, ok_target: bool, may_refuse=False) -> tuple[str, str]:
    died = [_died(s) for s in statuses]
    if any(d == "hang" for d in died):
        return "hang", str(statuses)
    if any(died):
        return "crash", str(statuses)
    errors = [s["result"]["error"] for s in statuses if not s["result"]["ok"]]
    if errors and not may_refuse:
        return "crash", f"a writer failed: {errors}"
    if errors and not all(("exists" in e and "'" in e) for e in errors):
        return "crash", f"an unclear refusal: {errors}"
    if not ok_target:
        return "data loss", "the result is not one complete catalogue equal to a single run"
    return ("clear error" if errors else "correct"), "; ".join(errors)


def _record(outcomes, problems, scenario, outcome, why):
    outcomes.record(AREA, outcome, f"{scenario}: {why}")
    if outcome not in ("correct", "clear error"):
        problems.append(f"{scenario}: {outcome}: {why}")


@pytest.mark.slow
def test_two_builds_of_one_out(data, forker, tmp_path, outcomes):
    root, refs = data
    problems = []
    for r in range(ROUNDS):
        out = tmp_path / f"out{r}"
        jobs = [_job("build", "", source=str(root / "imgs"), out=str(out)) for _ in range(2)]
        st = _run_pair(forker, tmp_path, jobs)
        try:
            same = snapshot(out) == refs["build"]
        except Exception:  # noqa: BLE001 - a damaged result
            same = False
        _record(outcomes, problems, "two builds", *_outcome(st, same))
    assert not problems, problems


def test_two_saves_to_one_path(data, forker, tmp_path, outcomes):
    root, _ = data
    problems = []
    candidates = [snapshot(root / "a"), snapshot(root / "b")]
    for overwrite in (False, True):
        for r in range(ROUNDS):
            out = tmp_path / f"saved-{overwrite}-{r}"
            jobs = [
                _job("save", "", path=str(root / p), out=str(out), overwrite=overwrite)
                for p in ("a", "b")
            ]
            st = _run_pair(forker, tmp_path, jobs)
            try:
                got = snapshot(out)
            except Exception:  # noqa: BLE001
                got = None
            outcome = _outcome(st, got in candidates, may_refuse=not overwrite)
            _record(outcomes, problems, f"two saves (overwrite={overwrite})", *outcome)
    assert not problems, problems


def test_two_merges_to_one_out(data, forker, tmp_path, outcomes):
    root, _ = data
    problems = []
    for r in range(ROUNDS):
        out = tmp_path / f"m{r}"
        parts = [str(root / "a"), str(root / "a")]
        jobs = [_job("merge", "", parts=parts, out=str(out)) for _ in range(2)]
        st = _run_pair(forker, tmp_path, jobs)
        ref = Catalogue.merge(parts, tmp_path / f"ref{r}")
        try:
            same = snapshot(out) == snapshot(ref.path)
        except Exception:  # noqa: BLE001
            same = False
        _record(outcomes, problems, "two merges", *_outcome(st, same, may_refuse=True))
    assert not problems, problems


def test_two_embedding_appends_keep_both(data, forker, tmp_path, outcomes):
    """Two appends of different rows: both land, whole, in one order or the other."""
    root, _ = data
    problems = []
    orders = []  # the two single runs, one append after the other
    for k, order in enumerate((((1, "p"), (2, "q")), ((2, "q"), (1, "p")))):
        ref = tmp_path / f"ref{k}"
        Catalogue.open(root / "a").save(ref)
        for x, prefix in order:
            st = forker.one(
                "append_embeddings",
                tmp_path,
                path=str(ref),
                npy=str(root / f"x{x}.npy"),
                uri_prefix=prefix,
            )
            assert st["result"]["ok"], st
        orders.append(snapshot(ref))
    for r in range(ROUNDS):
        cat = tmp_path / f"cat{r}"
        Catalogue.open(root / "a").save(cat)
        jobs = [
            _job("append_embeddings", "", path=str(cat), npy=str(root / f"x{k}.npy"), uri_prefix=p)
            for k, p in ((1, "p"), (2, "q"))
        ]
        st = _run_pair(forker, tmp_path, jobs)
        try:
            same = snapshot(cat) in orders
        except Exception:  # noqa: BLE001
            same = False
        _record(outcomes, problems, "two embedding appends", *_outcome(st, same))
    assert not problems, problems


def test_two_image_appends_of_the_same_images_add_them_once(data, forker, tmp_path, outcomes):
    root, refs = data
    problems = []
    for r in range(2):
        cat = tmp_path / f"cat{r}"
        st = forker.one("build", tmp_path, source=str(root / "imgs"), out=str(cat))
        assert st["result"]["ok"], st
        jobs = [
            _job("append_images", "", path=str(cat), source=str(root / "more")) for _ in range(2)
        ]
        st = _run_pair(forker, tmp_path, jobs)
        try:
            got = snapshot(cat)
            same = got == refs["append_images"]
        except Exception as e:  # noqa: BLE001
            got, same = e, False
        outcome, why = _outcome(st, same)
        if not same and isinstance(got, dict):
            why += f" ({got['n']} items, {len(set(got['uris']))} distinct URIs, "
            why += f"{refs['append_images']['n']} in a single run)"
        _record(outcomes, problems, "two image appends", outcome, why)
    assert not problems, problems
