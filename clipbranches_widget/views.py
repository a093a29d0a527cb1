"""What a session shows besides its results: a browse sample, box facets, the
labelled items, why one item matched, and a round's badges (new items,
rejected positives). Plain functions over arrays, used by ``Session`` and the
widget; no widget code.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlparse

import numpy as np

from .results import Results

__all__ = [
    "RoundBadges",
    "badges",
    "box_facets",
    "browse",
    "display_path",
    "explain",
    "labelled",
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


def summary(res: Results, labels: dict, *, n_items: int, query, rounds: int, before) -> str:
    """What the last step did, in words: "148 matches · 37 new · 5 of your 5 positives"."""
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
    new = int((~np.isin(res.ids, before)).sum())
    pos = np.array([i for i, v in labels.items() if v > 0], np.int64)
    # the positives the model itself accepts (a refine keeps every positive in view)
    accepted = info.get("accepted_positives")
    kept = accepted if isinstance(accepted, int) else int(np.isin(pos, res.ids).sum())
    parts = [f"{res.count:,} match{'es' if res.count != 1 else ''}", f"{new:,} new"]
    positives = f"{kept} of your {n_pos} positive{'s' if n_pos != 1 else ''}"
    if isinstance(accepted, int) and accepted < n_pos:
        # the session shows every positive, also those the model rejects: say which is which
        positives += f" accepted \u00b7 all {n_pos} shown"
    parts.append(positives)
    # the estimate is of the items the model adds: none added, nothing to estimate
    precision = info.get("expected_precision")
    added = int((~np.isin(res.ids, np.fromiter(labels, np.int64, len(labels)))).sum())
    if added and isinstance(precision, (float, int)) and np.isfinite(precision):
        parts.append(f"est. precision \u2248 {precision:.2f}")
    if info.get("fallback"):
        parts.append(str(info["fallback"]))
    return " \u00b7 ".join(parts)


def rejected_positives(res: Results, labels: dict) -> np.ndarray:
    """The labelled positives a refine's model does not accept (sorted ids).

    A refine shows every positive, also those its model rejects. Accepted
    are the positives inside a box (votes > 0); when ``res.info`` says how
    many the model accepts (``accepted_positives``: its score cut keeps the
    best-scored), only that many of them, best score first. ``labels``: the
    labels the refine was trained on.
    """
    pos = np.sort(np.fromiter((i for i, v in labels.items() if v > 0), np.int64))
    if res.kind != "refined" or not pos.size:
        return np.zeros(0, np.int64)
    rows = np.flatnonzero(np.isin(res.ids, pos) & (np.asarray(res.votes) > 0))
    n = (res.info or {}).get("accepted_positives")
    if isinstance(n, int) and not isinstance(n, bool) and 0 <= n < rows.size:
        best = np.argsort(-np.asarray(res.scores, np.float64)[rows], kind="stable")
        rows = rows[best[:n]]
    return np.setdiff1d(pos, res.ids[rows])


def badges(ids, *, before, rejected) -> list[str]:
    """Per id: "rejected" (a positive the model does not accept), "new" (not in
    ``before``, the previous round's result ids, sorted; None: unknown, no
    badge) or ""."""
    ids = np.asarray(ids, np.int64)
    rej = np.isin(ids, rejected)
    new = np.zeros(ids.size, bool) if before is None else ~np.isin(ids, before)
    return ["rejected" if r else "new" if n else "" for r, n in zip(rej.tolist(), new.tolist())]


class RoundBadges:
    """The badges of the results a viewer shows, round after round: "new" for
    an item not among the result set shown before, "rejected" for a positive
    the model does not accept. Only a refine's results get badges; the
    labelled view (what the user has seen) only "rejected"."""

    def __init__(self):
        self._res = None  # the result set the badges are for
        self._before = None  # sorted ids of the one shown before it (None: not seen)
        self._rejected = np.zeros(0, np.int64)

    def __call__(self, res: Results, labels: dict, ids, *, labelled_view: bool) -> list[str]:
        if res is not self._res:
            # a new result set: ``labels`` are the ones it was refined on, as
            # it is shown at once
            self._before = None if self._res is None else np.sort(self._res.ids)
            self._res, self._rejected = res, rejected_positives(res, labels)
        if res.kind != "refined":
            return [""] * len(ids)
        before = None if labelled_view else self._before
        return badges(ids, before=before, rejected=self._rejected)


def rank_scores(shown: Results, results: Results) -> np.ndarray:
    """One score per item of ``shown`` (rows of ``results``), never increasing in
    the order the grid shows them, floored to 2 decimals (rounding never
    makes a later item look better).

    When ``results`` are ordered by their scores (nearest neighbours, a
    refine's calibrated scores) that score is shown. When they are ranked by
    votes first, then closeness to the positives and query, the score is
    ``votes + closeness``, the closeness scaled to [0, 0.99] over all of
    ``results`` (so its scale does not change between catalogues). Views
    without a ranking (browse, labelled) get NaN.
    """
    scores = np.asarray(shown.scores, np.float64)
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
