"""Thread-count control for numba kernels (the ``n_jobs`` of our estimators)."""

from __future__ import annotations

import contextlib
import os

import numba

__all__ = ["effective_n_jobs", "numba_threads"]


def effective_n_jobs(n_jobs: int | None) -> int:
    """sklearn semantics: None -> all cores, -1 -> all, -2 -> all but one, k -> k."""
    limit = numba.config.NUMBA_NUM_THREADS
    if n_jobs is None:
        return limit
    n_jobs = int(n_jobs)
    if n_jobs == 0:
        raise ValueError("n_jobs: expected a non-zero integer or None, got 0")
    if n_jobs < 0:
        return max(1, limit + 1 + n_jobs)
    return min(n_jobs, limit)


@contextlib.contextmanager
def numba_threads(n_jobs: int | None):
    """Run numba parallel kernels in this block with ``n_jobs`` threads."""
    old = numba.get_num_threads()
    numba.set_num_threads(effective_n_jobs(n_jobs))
    try:
        yield
    finally:
        numba.set_num_threads(old)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
