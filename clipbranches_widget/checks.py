"""Random checks of a refine: what labels on the pages cannot say.

The pages show the top of the ranking, so the user's labels describe the
best results and say little about the rest of them, or about the class
outside. A check draws items uniformly at random from three strata, the
unlabelled results, the candidates ranked just below the cut, and the rest
of the catalogue, for the user to label:

* the share of positives in each stratum estimates the results' precision
  and recall (``estimate``), with intervals, without any model;
* labelled, they are labels like any other for the next refine. (Used to
  recalibrate the second stage they gave the same F1 as plain labels, so
  they are not: EVALUATION.md, finding 11.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .engine.learn.twostage import member

__all__ = ["STRATA", "Draw", "draw", "estimate", "wilson"]


#: The strata of a check, and the share of its items each gets.
STRATA = {"results": 0.5, "below": 0.25, "rest": 0.25}


@dataclass(frozen=True)
class Draw:
    """One check: the round it was drawn after and, per stratum, the ids
    drawn and how many unlabelled items the stratum held."""

    round: int
    ids: dict  # stratum -> (k,) int64, sorted
    pools: dict  # stratum -> int
    n_results: int = 0
    positives: int = 0  # labelled positives among the results when drawn

    @classmethod
    def none(cls) -> Draw:
        return cls(0, {k: np.zeros(0, np.int64) for k in STRATA}, dict.fromkeys(STRATA, 0))

    def all_ids(self) -> np.ndarray:
        """Every id drawn, the results' first, then those below the cut, then the rest."""
        return np.concatenate([self.ids[k] for k in STRATA])

    def to_dict(self) -> dict:
        return {
            "round": self.round,
            "ids": {k: self.ids[k].tolist() for k in STRATA},
            "pools": dict(self.pools),
            "n_results": self.n_results,
            "positives": self.positives,
        }


def _allocate(n: int, pools: dict) -> dict:
    """Items per stratum: ``n`` split by ``STRATA``'s shares, no stratum given
    more than it holds, what one cannot take going to the others in order."""
    want = {k: min(pools[k], int(round(n * f))) for k, f in STRATA.items()}
    left = n - sum(want.values())
    for k in STRATA:
        more = min(left, pools[k] - want[k])
        want[k] += more
        left -= more
    return want


def draw(results, below, labels: dict, n_items: int, n: int, rng, round_: int) -> Draw:
    """``n`` items for a user to label, uniformly without replacement within
    each stratum: the unlabelled ``results``, the unlabelled candidates
    ranked just ``below`` the cut, and the unlabelled rest of a catalogue of
    ``n_items`` (``STRATA``: half, a quarter, a quarter, when each holds
    enough)."""
    results = np.sort(np.asarray(results, np.int64))
    labelled = np.sort(np.fromiter(labels, np.int64, len(labels)))
    below = np.sort(np.asarray(below, np.int64))
    lab_in = member(results, labelled)
    pool_in = results[~lab_in]
    pool_below = below[~member(below, labelled) & ~member(below, results)]
    # three disjoint sets: one sort (np.union1d hashes, 50x slower at 10^6)
    lab_out = labelled[~member(labelled, results)]
    taken = np.sort(np.concatenate([results, lab_out, pool_below]))
    n_rest = n_items - taken.size
    pools = {"results": pool_in.size, "below": pool_below.size, "rest": n_rest}
    if sum(pools.values()) == 0:
        raise ValueError("check: every item of the catalogue is labelled; nothing to draw")
    want = _allocate(n, pools)
    ids = {
        "results": _draw_from(pool_in, want["results"], rng),
        "below": _draw_from(pool_below, want["below"], rng),
        "rest": _draw_rest(taken, n_rest, want["rest"], rng),
    }
    positives = sum(1 for i in results[lab_in].tolist() if labels[i] > 0)
    return Draw(round_, ids, {k: int(v) for k, v in pools.items()}, int(results.size), positives)


def _draw_from(pool, k, rng) -> np.ndarray:
    """``k`` of ``pool`` uniformly without replacement, sorted: positions are
    drawn, not the pool shuffled (a million results cost microseconds)."""
    return np.sort(pool[rng.choice(pool.size, k, replace=False)])


def _draw_rest(taken, n_rest, k, rng) -> np.ndarray:
    """``k`` ids of the catalogue outside ``taken`` (sorted; ``n_rest`` such
    ids exist), uniformly without replacement: ``k`` distinct ranks among the
    free ids, each mapped to its id through the taken ones before it, so no
    list of the catalogue's ids is ever made (10^8 of them would be 800 MB)."""
    ranks = np.sort(rng.choice(n_rest, k, replace=False)).astype(np.int64)
    free_before = taken - np.arange(taken.size)  # free ids below each taken one
    return ranks + np.searchsorted(free_before, ranks, side="right")


def wilson(positives: int, n: int, z: float = 1.96) -> tuple[float, float, float]:
    """``(share, low, high)`` of positives in a uniform draw of ``n``: the
    Wilson score interval, sound at small ``n`` and at shares of 0 or 1."""
    p = positives / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(p), float(max(centre - half, 0.0)), float(min(centre + half, 1.0))


def estimate(last: Draw, labels: dict) -> dict | None:
    """Precision and recall of the results the check ``last`` was drawn from,
    from its labelled items alone (no model): ``{"precision", "recall"}``,
    each ``(estimate, low, high)`` (the bounds plug in the strata's 95 %
    Wilson bounds), ``"checked"`` (labelled of drawn) and ``"positives"``
    (per stratum). None while nothing drawn from the results is labelled
    (and some were unlabelled).

    The results hold the positives labelled when the check was drawn plus the
    results stratum's share of its pool; the class outside them is the other
    strata's shares of theirs.
    """
    got = {k: [labels[i] for i in last.ids[k].tolist() if i in labels] for k in STRATA}
    if not got["results"] and last.pools["results"]:
        return None
    share = {}
    for k, v in got.items():
        if v:
            share[k] = wilson(sum(x > 0 for x in v), len(v))
        else:  # nothing labelled: anything from none (an empty pool) to all
            share[k] = (0.0, 0.0, 1.0 if last.pools[k] else 0.0)

    def quality(p_in, out):
        tp = last.positives + p_in * last.pools["results"]
        fn = sum(r * last.pools[k] for k, r in out.items())
        return tp / max(last.n_results, 1), tp / max(tp + fn, 1e-12)

    outs = [k for k in STRATA if k != "results"]
    p = share["results"]
    mid = quality(p[0], {k: share[k][0] for k in outs})
    low = quality(p[1], {k: share[k][2] for k in outs})
    high = quality(p[2], {k: share[k][1] for k in outs})
    return {
        "precision": (mid[0], low[0], high[0]),
        "recall": (mid[1], low[1], high[1]),
        "checked": (sum(len(v) for v in got.values()), int(last.all_ids().size)),
        "positives": {k: int(sum(x > 0 for x in v)) for k, v in got.items()},
    }
