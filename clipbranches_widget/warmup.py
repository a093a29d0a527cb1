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
from .engine.codes.pca import identity_compressor
from .engine.learn.twostage import DEFAULT_STAGE, StageParams, refine_set
from .engine.store.catalogue import Catalogue

__all__ = ["is_warm", "start", "wait"]

log = logging.getLogger(__name__)

_lock = threading.Lock()
_thread: threading.Thread | None = None


def _refine_once(codes, y, classifier: dict, stage: StageParams) -> None:
    """One refine of a session on ``codes`` (classes ``y``, the first 40
    labelled): fit, search, second stage."""
    cat = Catalogue(codes, compressor=identity_compressor(codes.shape[1]))
    labels = {i: (1 if y[i] else -1) for i in range(40)}
    ids = np.arange(codes.shape[0])
    w = np.where(ids < 40, 1.0, 0.5)
    model = DecisionBranchesClassifier(random_state=0, **classifier).fit(codes, y, sample_weight=w)
    found = cat.search_boxes(model.boxes_)
    ref = codes[y == 1].mean(axis=0)
    refine_set(cat, found, ids, y, w, model.boxes_.n_boxes, labels, ref, None, 60, stage)


def _run(n_features: int, classifier: dict, readonly: bool) -> None:
    try:
        rng = np.random.default_rng(0)
        codes = rng.integers(0, 256, (512, n_features), dtype=np.uint8)
        # numba compiles a kernel per array type, and a catalogue on disk is a
        # read-only memory map: warm the kind of array the session will use
        codes.setflags(write=not readonly)
        # exact neighbours, then the leaf-only neighbours of large candidate sets
        y = (codes[:, 0] > 127).astype(np.int64)
        for stage in (DEFAULT_STAGE, StageParams(exact_limit=0)):
            _refine_once(codes, y, classifier, stage)
        # a model of a single box: the scan has a kernel of its own for one
        one = DecisionBranchesClassifier(random_state=0, max_boxes=1).fit(codes, y)
        scan(codes, one.boxes_)
        log.debug("warm-up: refine kernels compiled")
    except Exception as e:  # a warm-up must never break a session
        log.debug("warm-up failed: %s", e)


def start(
    n_features: int, classifier: dict | None = None, readonly: bool = False
) -> threading.Thread:
    """Start compiling (once per process) what a refine with ``classifier``
    (DecisionBranchesClassifier keywords) on ``n_features``-d codes runs;
    returns the thread (join it to wait)."""
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(
                target=_run,
                args=(int(n_features), dict(classifier or {}), bool(readonly)),
                name="clipbranches-warmup",
                daemon=True,
            )
            _thread.start()
        return _thread


def is_warm() -> bool:
    """True once the warm-up has finished (or was never needed)."""
    return _thread is not None and not _thread.is_alive()


def wait(stop=None, interval: float = 0.05) -> bool:
    """Wait for the warm-up to finish: True once it has (or when none was
    started), False as soon as ``stop()`` is true (checked every ``interval`` s)."""
    thread = _thread
    if thread is None:
        return True
    while thread.is_alive():
        if stop is not None and stop():
            return False
        thread.join(interval)
    return True
