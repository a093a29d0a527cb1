"""What a session shows besides its results: a browse sample, box facets, the
labelled items and why one item matched. Plain functions over arrays, used by
``Session``; no widget code.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlparse

import numpy as np

from .results import Results

__all__ = [
    "box_facets",
    "browse",
    "display_path",
    "explain",
    "labelled",
    "rank_scores",
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
    new = int((~np.isin(res.ids, before)).sum())
    pos = np.array([i for i, v in labels.items() if v > 0], np.int64)
    kept = int(np.isin(pos, res.ids).sum())
    parts = [f"{res.count:,} match{'es' if res.count != 1 else ''}", f"{new:,} new"]
    parts.append(f"{kept} of your {n_pos} positive{'s' if n_pos != 1 else ''}")
    precision = getattr(res, "precision", None)  # the quality issue's estimate, when there
    if isinstance(precision, float):
        parts.append(f"est. precision \u2248 {precision:.2f}")
    return " \u00b7 ".join(parts)


def rank_scores(shown: Results, results: Results) -> np.ndarray:
    """One score per item of ``shown`` (rows of ``results``), never increasing in
    the order the grid shows them.

    Refined results are ranked by votes, then by closeness to the positives
    and query: the score is ``votes + closeness``, the closeness scaled to
    [0, 0.99] over all of ``results`` (so it does not change scale between
    catalogues) and floored to 2 decimals, so that a rounded score never
    overtakes the next tier. Nearest neighbours show their similarity; other
    views (browse, labelled) have no ranking score: NaN.
    """
    scores = np.asarray(shown.scores, np.float64)
    if shown.kind == "knn":
        return np.round(scores, 2) + 0.0  # + 0.0: no "-0.00"
    if shown.kind != "refined" or not shown.count:
        return np.full(shown.count, np.nan)
    all_scores = np.asarray(results.scores, np.float64)
    lo, hi = float(all_scores.min()), float(all_scores.max())
    closeness = (scores - lo) / (hi - lo) * 0.99 if hi > lo else np.zeros_like(scores)
    return np.floor((shown.votes + np.clip(closeness, 0.0, 0.99)) * 100 + 1e-6) / 100


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
