"""What a session shows besides its results: a browse sample, box facets, the
labelled items, why one item matched, and a round's badges (new items,
rejected positives). Plain functions over arrays, used by ``Session`` and the
widget; no widget code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

import numpy as np

from .results import Results

__all__ = [
    "RoundMarks",
    "acceptance_cut",
    "accepted_positives",
    "box_facets",
    "browse",
    "display_path",
    "explain",
    "labelled",
    "near_misses",
    "rank_scores",
    "rejected_positives",
    "summary",
]


def browse(n: int, seed: int, max_items: int) -> Results:
    """The catalogue in a fixed random order, so a first page shows variety
    (folders are often sorted by class); beyond ``max_items`` a random sample,
    never a permutation of all of a huge catalogue."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n) if n <= max_items else rng.choice(n, max_items, replace=False)
    m = order.shape[0]
    return Results(
        order.astype(np.int64),
        np.zeros(m, np.int64),
        np.full(m, np.nan, np.float32),
        "browse",
        "browse",
    )


def box_facets(boxes, inside: np.ndarray) -> list[dict]:
    """Per box of the model: how many results it holds and the dims it constrains."""
    return [
        {"box": b, "count": int(c), "dims": [int(j) for j in boxes.dims[b]]}
        for b, c in enumerate(inside.sum(axis=0).tolist())
    ]


def labelled(labels: dict, boxes, codes) -> Results:
    """Every labelled item, positives first, with its votes under ``boxes`` (or 0):
    labels stay reviewable when the results no longer show them."""
    ids = np.array(sorted(labels, key=lambda i: (-labels[i], i)), np.int64)
    votes = (
        boxes.votes(codes[ids]).astype(np.int64)
        if boxes is not None and ids.size
        else np.zeros(ids.size, np.int64)
    )
    return Results(ids, votes, np.full(ids.size, np.nan, np.float32), "labelled")


def checked(ids) -> Results:
    """The items of a random check, in the order drawn (results, just below
    the cut, the rest: the order stays, so no cell moves as they are labelled)."""
    ids = np.asarray(ids, np.int64)
    return Results(
        ids, np.zeros(ids.size, np.int64), np.full(ids.size, np.nan, np.float32), "check"
    )


def near_misses(results: Results) -> Results:
    """The unlabelled candidates a refine ranked just below its cut
    (``info["below_cut"]``, at least a page of them), in rank order with their
    scores: the items a label moves the cut most for, so the page to label
    after the results. Empty for results that have no cut."""
    ids = results.info.get("below_cut")
    ids = np.zeros(0, np.int64) if ids is None else np.asarray(ids, np.int64)
    scores = results.info.get("below_scores")
    if scores is None or len(scores) != ids.size:
        scores = np.full(ids.size, np.nan, np.float32)
    return Results(ids, np.zeros(ids.size, np.int64), np.asarray(scores, np.float32), "near")


def check_summary(est) -> str:
    """The random check in words: how much is labelled and, once some is,
    the precision with its interval and the recall's interval
    (``checks.estimate``). A few items outside the results rarely hold a
    positive, so the recall's point estimate is mostly 1.0; its bounds say
    what the check knows."""
    if est is None:
        return "check: label these random items to estimate precision and recall"
    done, drawn = est["checked"]
    p, r = est["precision"], est["recall"]
    return (
        f"check {done} of {drawn}: precision \u2248 {p[0]:.2f} ({p[1]:.2f}\u2013{p[2]:.2f}), "
        f"recall {r[1]:.2f}\u2013{r[2]:.2f}"
    )


def explain(i: int, *, catalogue, results: Results, boxes, labels: dict, query_vector) -> dict:
    """Why item ``i`` is shown: rank, votes, score, similarity and the boxes containing it."""
    where = np.flatnonzero(results.ids == i)
    uri = catalogue.uri(i)
    inside_boxes = []
    if boxes is not None:
        code = catalogue.codes[i]
        inside = boxes.contains(code[None, :])[0]
        for b in np.flatnonzero(inside).tolist():
            bounds = boxes.bounds(b)
            inside_boxes.append(
                {
                    "box": b,
                    "bounds": {str(j): [int(v) for v in lh] for j, lh in bounds.items()},
                    "code": {str(j): int(code[j]) for j in bounds},
                }
            )
    similarity = None
    if query_vector is not None:
        similarity = float(catalogue.vector([i])[0] @ query_vector)
    found = bool(where.size)
    return {
        "id": i,
        "uri": uri,
        "name": os.path.basename(uri) if uri else f"#{i}",
        "label": labels.get(i, 0),
        "rank": int(where[0]) if found else None,
        "votes": int(results.votes[where[0]])
        if found
        else (len(inside_boxes) if boxes is not None else None),
        "score": float(results.scores[where[0]]) if found else None,
        "similarity": similarity,
        "n_boxes": 0 if boxes is None else boxes.n_boxes,
        "boxes": inside_boxes,
        "kind": results.kind,
    }


def summary(res: Results, labels: dict, *, n_items: int, query, rounds: int, marks) -> str:
    """What the last step did, in words: "148 matches · 37 new · 5 of your 5 positives".

    ``marks``: the round's :class:`RoundMarks`, the same the badges and the
    details use, so the counts here are the badges' counts."""
    n_pos = sum(1 for v in labels.values() if v > 0)
    if res.kind == "empty":
        return f"{n_items:,} images \u00b7 no search yet"
    if res.kind == "knn":
        what = f"\u201c{query}\u201d" if isinstance(query, str) else "your examples"
        return f"{res.count:,} images nearest to {what}"
    if res.count == 0:
        return (
            f"no matches in round {rounds}: the model accepts none of the catalogue "
            f"\u00b7 showing your {n_pos} positive{'s' if n_pos != 1 else ''} instead"
        )
    info = getattr(res, "info", None) or {}
    new = int(marks.new(res.ids).sum())
    n_pos = marks.n_positives
    kept = int(marks.accepted.size)
    parts = [f"{res.count:,} match{'es' if res.count != 1 else ''}", f"{new:,} new"]
    positives = f"{kept} of your {n_pos} positive{'s' if n_pos != 1 else ''}"
    if kept < n_pos:
        # the session shows every positive, also those the model rejects: say which is which
        positives += f" accepted \u00b7 all {n_pos} shown"
    parts.append(positives)
    # the estimate is of the items the model adds: none added, nothing to estimate
    precision = info.get("expected_precision")
    added = int((~np.isin(res.ids, np.fromiter(labels, np.int64, len(labels)))).sum())
    if added and isinstance(precision, (float, int)) and np.isfinite(precision):
        # scores not recalibrated this round (too few labelled negatives, or
        # the labels hold most of the estimated class) are rough: EVALUATION.md
        # finding 8, mean error 0.15-0.40 against 0.09-0.22 recalibrated
        combination = info.get("combination")
        rough = isinstance(combination, dict) and "platt" not in combination
        parts.append(f"est. precision \u2248 {precision:.2f}{' (uncalibrated)' if rough else ''}")
    if info.get("fallback"):
        parts.append(str(info["fallback"]))
    return " \u00b7 ".join(parts)


def accepted_positives(res: Results, labels: dict) -> np.ndarray:
    """The labelled positives a refine's model itself accepts (sorted ids).

    ``res.info["accepted_ids"]`` when the refine says (the two-stage refine:
    inside a box and scored at or above its cut); otherwise (boxes alone)
    the positives inside a box (votes > 0). ``labels``: the labels the
    refine was trained on."""
    pos = np.sort(np.fromiter((i for i, v in labels.items() if v > 0), np.int64))
    if res.kind != "refined" or not pos.size:
        return np.zeros(0, np.int64)
    ids = (res.info or {}).get("accepted_ids")
    if ids is None:
        ids = res.ids[np.asarray(res.votes) > 0]
    return np.intersect1d(pos, np.asarray(ids, np.int64))


def rejected_positives(res: Results, labels: dict) -> np.ndarray:
    """The labelled positives a refine's model does not accept (sorted ids):
    every positive not in :func:`accepted_positives` (shown anyway)."""
    pos = np.sort(np.fromiter((i for i, v in labels.items() if v > 0), np.int64))
    if res.kind != "refined" or not pos.size:
        return np.zeros(0, np.int64)
    return np.setdiff1d(pos, accepted_positives(res, labels))


def acceptance_cut(res: Results) -> float | None:
    """The score a refine's item needs to be accepted (None: no such cut).

    The two-stage refine accepts a positive inside a box when its score is
    at least ``min(info["cut"], 0.5)`` (engine/learn/twostage.py
    ``refine_set``); ``info["accept_cut"]``, when a refine gives it, wins."""
    info = res.info or {}
    cut = info.get("accept_cut", info.get("cut"))
    if not isinstance(cut, (int, float)) or isinstance(cut, bool) or not np.isfinite(cut):
        return None
    return float(cut) if "accept_cut" in info else min(float(cut), 0.5)


@dataclass(frozen=True)
class RoundMarks:
    """What one result set says of each item: the one definition behind the
    round summary's counts, the grid's badges and the details.

    ``accepted`` / ``rejected``: sorted ids of the positives (those the
    results were refined on) the model accepts / does not accept;
    ``before``: sorted ids of the results the refine replaced (None:
    unknown); ``cut``: the acceptance cut (``acceptance_cut``).
    """

    kind: str
    accepted: np.ndarray
    rejected: np.ndarray
    before: np.ndarray | None
    cut: float | None = None

    @classmethod
    def of(cls, res: Results, labels: dict, before) -> RoundMarks:
        return cls(
            res.kind,
            accepted_positives(res, labels),
            rejected_positives(res, labels),
            None if before is None else np.sort(np.asarray(before, np.int64)),
            acceptance_cut(res),
        )

    @property
    def n_positives(self) -> int:
        return int(self.accepted.size + self.rejected.size)

    def new(self, ids) -> np.ndarray:
        """Per id: a result of this round that was not among ``before``, and
        not one of your positives the model rejects (that one is "rejected")."""
        ids = np.asarray(ids, np.int64)
        if self.kind != "refined" or self.before is None:
            return np.zeros(ids.size, bool)
        return ~np.isin(ids, self.before) & ~np.isin(ids, self.rejected)

    def badges(self, ids, *, labelled_view: bool = False) -> list[str]:
        """Per id: "rejected", "new" or "". The labelled view (what the user
        has seen) gets no "new"; only a refine's results get badges."""
        ids = np.asarray(ids, np.int64)
        if self.kind != "refined":
            return [""] * ids.size
        rej = np.isin(ids, self.rejected)
        new = np.zeros(ids.size, bool) if labelled_view else self.new(ids)
        return ["rejected" if r else "new" if n else "" for r, n in zip(rej.tolist(), new.tolist())]

    def verdict(self, i: int, label: int) -> str:
        """For the details: "accepted" (a positive the model accepts),
        "rejected" (one it does not) or "" (not a positive, or no refine)."""
        if self.kind != "refined" or label <= 0:
            return ""
        if np.isin(i, self.accepted):
            return "accepted"
        return "rejected" if np.isin(i, self.rejected) else ""


def rank_scores(shown: Results, results: Results) -> np.ndarray:
    """One score per item of ``shown`` (rows of ``results``), never increasing in
    the order the grid shows them, floored to 2 decimals (rounding never
    makes a later item look better).

    When ``results`` are ordered by their scores (nearest neighbours, a
    refine's calibrated scores) that score is shown. When they are ranked by
    votes first, then closeness to the positives and query, the score is
    ``votes + closeness``, the closeness scaled to [0, 0.99] over all of
    ``results`` (so its scale does not change between catalogues). The near
    misses show their own scores; views without a ranking (browse, labelled,
    check) get NaN.
    """
    scores = np.asarray(shown.scores, np.float64)
    if shown.kind == "near":  # the refine's own scores, below its cut
        return np.floor(scores * 100 + 1e-6) / 100 + 0.0
    if shown.kind not in ("knn", "refined") or not shown.count:
        return np.full(shown.count, np.nan)
    all_scores = np.asarray(results.scores, np.float64)
    if not np.isfinite(all_scores).all() or (np.diff(all_scores) <= 1e-9).all():
        out = scores
    else:
        lo, hi = float(all_scores.min()), float(all_scores.max())
        closeness = (scores - lo) / (hi - lo) * 0.99 if hi > lo else np.zeros_like(scores)
        out = shown.votes + np.clip(closeness, 0.0, 0.99)
    return np.floor(out * 100 + 1e-6) / 100 + 0.0  # + 0.0: never "-0.00"


def display_path(uri) -> str | None:
    """``uri`` as a person reads it: a local path made absolute and normalised
    (no "notebooks/../../shared/..."), a URL as it is."""
    if uri is None:
        return None
    uri = str(uri)
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return os.path.normpath(unquote(parsed.path))
    if parsed.scheme == "" or len(parsed.scheme) == 1:  # a plain or Windows drive path
        return os.path.normpath(os.path.abspath(uri))
    return uri
