"""Compile the numba kernels of a refine ahead of time, in a background thread.

The first refine of a process otherwise spends most of its time compiling
(about 20 s, issue 17); a session starts this when it is created, so the
compilation overlaps with the user's first labelling. Once per process;
failures are logged, never raised (the real refine compiles what is missing).
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from .engine import DecisionBranchesClassifier, scan
from .engine.learn.rescore import knn_order, linear_scores

__all__ = ["is_warm", "start"]

log = logging.getLogger(__name__)

_lock = threading.Lock()
_thread: threading.Thread | None = None


def _run(n_features: int) -> None:
    try:
        rng = np.random.default_rng(0)
        codes = rng.integers(0, 256, (256, n_features), dtype=np.uint8)
        y = (codes[:, 0] > 127).astype(np.int64)
        model = DecisionBranchesClassifier(random_state=0).fit(
            codes, y, sample_weight=np.ones(y.size)
        )
        scan(codes, model.boxes_)
        # the second stage's kernels (issue 15)
        ids = np.arange(16)
        knn_order(codes, ids, codes[:64], np.ones(n_features, np.int32), 5, exclude=ids)
        linear_scores(codes, ids, np.ones(n_features), 0.0)
        log.debug("warm-up: refine kernels compiled")
    except Exception as e:  # a warm-up must never break a session
        log.debug("warm-up failed: %s", e)


def start(n_features: int) -> threading.Thread:
    """Start compiling (once per process); returns the thread (join it to wait)."""
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(
                target=_run, args=(int(n_features),), name="clipbranches-warmup", daemon=True
            )
            _thread.start()
        return _thread


def is_warm() -> bool:
    """True once the warm-up has finished (or was never needed)."""
    return _thread is not None and not _thread.is_alive()
