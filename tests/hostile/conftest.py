"""The hostile-input suite: shared fixtures and the outcome count.

Every hostile input a test tries is recorded with ``outcomes.record(area,
outcome, what)``, where ``outcome`` is one of ``OUTCOMES``; a session prints
the counts per area at the end (the table an issue's closing note quotes).
Only "clear error" and "correct" are acceptable: a test asserts that it
recorded nothing else (``outcomes.bad(area)``).

``forker`` runs risky work in forked children of a helper process
(``hostile_child.py``): a segfault, a hang or a kill -9 ends that child only.
"""

from __future__ import annotations

import collections
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

#: The outcomes of one hostile input, in the order the summary prints them.
OUTCOMES = ("clear error", "correct", "crash", "silent acceptance", "data loss", "hang")
GOOD = ("clear error", "correct")


class Outcomes:
    def __init__(self):
        self.counts = collections.defaultdict(collections.Counter)  # area -> outcome -> n
        self.examples = collections.defaultdict(list)  # (area, outcome) -> first few inputs

    def record(self, area: str, outcome: str, what: str = "") -> str:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome: expected one of {OUTCOMES}, got {outcome!r}")
        self.counts[area][outcome] += 1
        if outcome not in GOOD and len(self.examples[area, outcome]) < 5:
            self.examples[area, outcome].append(what[:300])
        return outcome

    def bad(self, area: str) -> dict:
        """``{outcome: [inputs]}`` of the unacceptable outcomes recorded for ``area``."""
        return {o: ex for (a, o), ex in self.examples.items() if a == area and ex}


_OUTCOMES = Outcomes()


@pytest.fixture(scope="session")
def outcomes() -> Outcomes:
    return _OUTCOMES


@pytest.fixture
def tmp_path():
    """A private temporary folder, removed after the test.

    Not pytest's: a concurrent pytest session of the same user prunes old
    ``pytest-of-<user>/pytest-N`` folders, which would delete files under a
    child that is still writing them (seen as a missing result).
    """
    with tempfile.TemporaryDirectory(prefix="clipbranches-hostile-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def session_dir():
    with tempfile.TemporaryDirectory(prefix="clipbranches-hostile-session-") as d:
        yield Path(d)


def pytest_terminal_summary(terminalreporter):
    counts = _OUTCOMES.counts
    if not counts:
        return
    tr = terminalreporter
    tr.section("hostile inputs: outcomes")
    width = max(len(a) for a in counts) + 2
    tr.write_line("area".ljust(width) + "".join(f"{o:>19}" for o in ("tried", *OUTCOMES)))
    total = collections.Counter()
    for area in sorted(counts):
        c = counts[area]
        total.update(c)
        tried = sum(c.values())
        tr.write_line(area.ljust(width) + f"{tried:>19}" + "".join(f"{c[o]:>19}" for o in OUTCOMES))
    tr.write_line(
        "all".ljust(width)
        + f"{sum(total.values()):>19}"
        + "".join(f"{total[o]:>19}" for o in OUTCOMES)
    )
    tr.write_line(
        "crash: a signal, a traceback, or an error naming neither the file nor the "
        "parameter; silent acceptance: bad input taken (or wrong data read) without a word; "
        "data loss: a result that is neither the previous state nor a complete run"
    )
    for (area, outcome), ex in sorted(_OUTCOMES.examples.items()):
        for e in ex:
            tr.write_line(f"  {area} / {outcome}: {e}")


# ---------------------------------------------------------------- forked children


class Forker:
    """Runs jobs of ``hostile_child.JOBS`` in forked children of one helper process."""

    def __init__(self, log: Path):
        env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="2", MKL_NUM_THREADS="1")
        env["PYTHONPATH"] = os.pathsep.join(
            [str(HERE), str(HERE.parent), env.get("PYTHONPATH", "")]
        )
        self._log = open(log, "ab")  # noqa: SIM115 - open for the whole session
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "hostile_child.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            bufsize=0,
        )
        self._buf = b""

    def _line(self, timeout: float) -> dict | None:
        """The next JSON line from the helper, or None after ``timeout`` seconds.

        Read from the raw pipe with a buffer of our own: a buffered reader
        may hold a line that ``select`` then never reports.
        """
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            data = os.read(fd, 1 << 16)
            if not data:
                raise RuntimeError(f"the helper process died (rc {self.proc.poll()})")
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def run(self, jobs, *, kill_after: float | None = None, timeout: float = 60.0) -> list[dict]:
        """Run ``jobs`` (``{"func", "kwargs", "result"}``) at once; with
        ``kill_after``, kill -9 them after that many seconds.

        Returns per job ``{"signal", "code", "hang", "result"}``: ``signal``
        the one that ended it (None when it exited), ``hang`` True when it was
        still running after ``timeout`` (and was then killed).
        """
        cmd = {"jobs": jobs, "kill_after": kill_after, "timeout": timeout}
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        # the helper kills (its own, unreaped) children: never a reused pid
        done = self._line(timeout + 120)
        if done is None:
            raise RuntimeError("the helper process stopped answering")
        hang = done["hang"]
        out = []
        for job, status in zip(jobs, done["statuses"]):
            result = None
            if job.get("result") and os.path.exists(job["result"]):
                with open(job["result"]) as f:
                    result = json.load(f)
                os.unlink(job["result"])
            out.append(
                {
                    "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                    "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                    "hang": hang,
                    "result": result,
                }
            )
        return out

    def one(self, func: str, result_dir: Path, **kwargs) -> dict:
        """Run one job to its end (timeout 60 s); its status and result."""
        timeout = kwargs.pop("_timeout", 60.0)
        kill_after = kwargs.pop("_kill_after", None)
        job = {"func": func, "kwargs": kwargs, "result": str(result_dir / f"{func}.json")}
        return self.run([job], kill_after=kill_after, timeout=timeout)[0]

    @staticmethod
    def died(status: dict) -> str | None:
        """ "crash" / "hang" for a child that died of a signal or never ended, else None."""
        if status["hang"]:
            return "hang"
        if status["signal"] is not None or status["code"] != 0 or status["result"] is None:
            return "crash"
        return None

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture(scope="session")
def forker(session_dir):
    log = session_dir / "children.log"
    f = Forker(log)
    yield f
    f.close()
