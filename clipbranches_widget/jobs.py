"""The widget's actions, run one at a time and in order; a refine off the main thread.

The kernel handles comm messages one at a time on its main thread: an action
that ran there (a refine waiting for the numba compile) would keep a Cancel
from arriving until it was done. So a refine runs in a worker thread, and
every message that comes while it runs (actions, label updates) waits in a
queue and runs after it, in arrival order: no click is lost or reordered.
Other actions, when nothing is queued, run at once on the main thread.

A cancel is handled at once on the main thread: it marks its target job,
and the job stops where its work can stop (``refine_cancellably``).
"""

from __future__ import annotations

import collections
import copy
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from . import warmup

__all__ = ["Cancelled", "Job", "JobQueue", "refine_cancellably"]

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """A job stopped because it was cancelled (nothing it would change has changed)."""


@dataclass
class Job:
    """One unit of work: ``run(job)``; ``key`` names it for a cancel ((view, seq))."""

    run: Callable[[Job], None]
    background: bool = False
    key: tuple = ()
    stop: threading.Event = field(default_factory=threading.Event)

    def cancelled(self) -> bool:
        return self.stop.is_set()


class JobQueue:
    """Runs jobs in submission order, never two at once.

    A job is run inline (on the caller's thread) when nothing is running or
    queued and it is not a ``background`` one; otherwise it is queued for the
    worker thread. A job submitted from inside the running job (a trait
    observer it fires) runs inline at once: it is part of that job.
    """

    def __init__(self, name: str = "clipbranches-actions"):
        self._name = name
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queue: collections.deque[Job] = collections.deque()
        self._running: Job | None = None
        self._owner: int | None = None  # thread id running the current job
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._running is not None or bool(self._queue)

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._owner == threading.get_ident():
                nested = True  # inside the running job: part of it
            else:
                nested = False
                inline = not job.background and self._running is None and not self._queue
                if inline:
                    self._running, self._owner = job, threading.get_ident()
                else:
                    self._queue.append(job)
                    if self._thread is None:
                        self._thread = threading.Thread(
                            target=self._loop, name=self._name, daemon=True
                        )
                        self._thread.start()
                    return
        if nested:
            job.run(job)
            return
        try:
            job.run(job)
        finally:
            self._done()

    def cancel(self, match: Callable[[Job], bool]) -> str:
        """Mark the running or a queued job that ``match``es as cancelled:
        "running", "queued" or "" (none: it has finished, or never came)."""
        with self._lock:
            if self._running is not None and match(self._running):
                self._running.stop.set()
                return "running"
            for job in self._queue:
                if match(job):
                    job.stop.set()  # it still runs, in turn, to answer as cancelled
                    return "queued"
        return ""

    def wait(self, timeout: float | None = None) -> bool:
        """Block until nothing runs or waits (True), or ``timeout`` s pass (False)."""
        with self._idle:
            return self._idle.wait_for(
                lambda: self._running is None and not self._queue, timeout=timeout
            )

    def _done(self) -> None:
        with self._lock:
            self._running = self._owner = None
            self._idle.notify_all()

    def _loop(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._thread = None
                    self._idle.notify_all()
                    return
                if self._running is not None:  # an inline job still runs: wait for it
                    self._idle.wait(0.05)
                    continue
                job = self._queue.popleft()
                self._running, self._owner = job, threading.get_ident()
            try:
                job.run(job)
            except Exception:  # a job answers its own errors; this is a bug
                log.exception("a widget job failed")
            finally:
                self._done()


def refine_cancellably(session, job: Job, wait_warmup: bool = True) -> None:
    """``session.refine()`` that a cancel of ``job`` can stop; raises ``Cancelled``.

    Where the work can stop: while it waits for the background compile
    (``warmup.wait``: at once), and between the steps of ``Session.refine``
    (its ``should_stop``); a cancel during a step drops the step's result.
    The refine runs on a shallow copy of the session, adopted only when not
    cancelled: a cancelled refine changes nothing (results, model, round, the
    ids it replaced).
    """
    if wait_warmup and not warmup.wait(job.cancelled):
        raise Cancelled
    if job.cancelled():
        raise Cancelled
    trial = copy.copy(session)
    try:
        trial.refine(should_stop=job.cancelled)
    except Exception:
        if job.cancelled():  # stopped between steps, however it says so
            raise Cancelled from None
        raise
    if job.cancelled():
        raise Cancelled
    vars(session).update(vars(trial))
