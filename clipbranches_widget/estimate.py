"""A quality estimate a user can read: precision and recall cross-validated on the labels.

The user's labels are the only ground truth a session has. ``cross_validate``
splits them into stratified folds, refines once per fold on the other folds
(the same settings, background and round as the session's refine), and asks
whether each held-out labelled item is in that fold's result set. Held-out
items are unlabelled to the fold's model, so their labelled positives do not
count for it.

What it measures: the refine's precision and recall on items *like the
labelled ones*. Users label what the grid showed them, the items nearest the
query and the boundary, which are harder than a random catalogue item; the
estimate is therefore pessimistic for precision on easy concepts, and says
nothing about positives nobody looked at.
"""

from __future__ import annotations

import time

import numpy as np

from .engine.learn.twostage import member

__all__ = ["cross_validate", "fork"]


def fork(session, labels: dict):
    """A session like ``session`` (its class, settings, background sample,
    query and round) with other ``labels``."""
    s = type(session)(
        session.catalogue,
        k=session.k,
        page_size=session.page_size,
        n_background=session.n_background,
        background_weight=session.background_weight,
        random_state=session.random_state,
        classifier=session.classifier_params,
        n_jobs=session.n_jobs,
        stage=session.stage,
    )
    s._background = session._background
    s.query, s.query_vector = session.query, session.query_vector
    s.rounds = max(session.rounds - 1, 0)  # the round of the last refine
    s.set_labels(labels)
    return s


def _folds(y: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """A fold number per label, each class dealt round-robin after a shuffle."""
    rng = np.random.default_rng(seed)
    fold = np.empty(y.size, np.int64)
    for cls in (True, False):
        where = rng.permutation(np.flatnonzero(y == cls))
        fold[where] = np.arange(where.size) % n_folds
    return fold


def cross_validate(session, folds: int = 5) -> dict:
    """``{"precision", "recall", "f1", "folds", "n_labels", "tp", "fp", "fn", "ms"}``
    of ``session``'s refine, cross-validated on its labels (see the module).

    Needs at least two positive labels (each fold keeps one to train on);
    ``folds`` is capped by the number of positives. The session itself is
    not changed.
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds: expected an integer of at least 2, got {folds!r}")
    labels = session.labels
    ids = np.fromiter(labels, np.int64, len(labels))
    y = np.array([labels[i] > 0 for i in ids.tolist()], bool)
    if y.sum() < 2:
        raise ValueError(
            f"cross_validate needs at least 2 positive labels, got {int(y.sum())}: "
            "label more items positive first"
        )
    t0 = time.perf_counter()
    n_folds = min(folds, int(y.sum()))
    fold = _folds(y, n_folds, session.random_state + session.rounds)
    tp = fp = fn = 0
    for f in range(n_folds):
        held = fold == f
        sub = fork(session, {int(i): labels[int(i)] for i in ids[~held]})
        accepted = member(ids[held], np.sort(sub.refine().ids))
        tp += int((accepted & y[held]).sum())
        fp += int((accepted & ~y[held]).sum())
        fn += int((~accepted & y[held]).sum())
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn)
    f1 = 2 * tp / (2 * tp + fp + fn)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "folds": n_folds,
        "n_labels": int(ids.size),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "ms": (time.perf_counter() - t0) * 1e3,
    }
