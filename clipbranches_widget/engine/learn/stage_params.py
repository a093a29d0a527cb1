"""How the second stage of a refine scores its candidates: ``StageParams``,
checked at construction (a session file's stage is user input)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, fields

import numpy as np

__all__ = ["DEFAULT_STAGE", "StageParams"]


@dataclass(frozen=True)
class StageParams:
    """How the second stage scores the candidates.

    ``combine``: "cv" (the default: neighbourhood size from ``k_grid`` and
    logistic share from ``mix_grid`` with the lowest leave-one-out Brier score
    on the training items, each round) or "mean" (votes over ``ks`` and the
    fixed share ``logistic_weight``: 0 votes only, 1 logistic only);
    ``lam``: L2 penalty of the logistic; ``calibrate``: recalibrate the
    combined score on the out-of-sample scores of the labelled items and of
    the background items among the candidates (Platt), when at least
    ``min_calibration`` positives and as many negatives are labelled and the
    labelled positives are at most ``calibration_share`` of the expected
    class size (later, the labels overstate the unlabelled candidates' share
    of positives). Candidates vote by their exact K nearest training items
    up to ``exact_limit`` of them; beyond, by the weighted positive share of
    the training items in their own leaf of the k-d tree (a descent, no
    distances: on 10M items with 250k candidates the votes took 50 ms, the
    leaf shares take a few, and the refine benchmark's F1 is the same).
    ``background_steps``: how many times the background sample's targets
    become the previous fit's out-of-sample probabilities before the final
    fit (EM steps of positive-unlabelled learning; 0, the default: the
    background stays negative). ``cut``: the unlabelled candidates kept
    maximise the expected F1 of the whole result set, the labelled positives
    counted ("set", the default), or of the added items alone ("added").
    ``label_frequency``: before the cut, divide the scores and the class size
    outside the candidates by c, the mean out-of-sample score of the labelled
    positives (Elkan and Noto's label frequency, from at least
    ``min_calibration`` positives): the background is unlabelled yet fitted
    as negative, so every score under-counts the positives by about that
    factor; the scores shown and ranked on stay as they are. EVALUATION.md
    measures each option (finding 12): the correction and the whole-set cut
    together are the first pair of settings at least as good as every
    alternative on every set and round; either alone is too strict (the
    whole-set cut) or too loose late (the added items' cut).
    """

    combine: str = "cv"
    k_grid: tuple = ((5,), (10,))
    mix_grid: tuple = (0.0, 0.25, 0.5, 0.75, 1.0)
    ks: tuple = (10,)
    logistic_weight: float = 0.5
    lam: float = 1.0
    calibrate: bool = True
    min_calibration: int = 5
    calibration_share: float = 0.5
    exact_limit: int = 10_000
    background_steps: int = 0
    cut: str = "set"
    label_frequency: bool = True

    def __post_init__(self):
        if self.combine not in ("cv", "mean"):
            raise ValueError(f"combine: expected 'cv' or 'mean', got {self.combine!r}")
        if self.cut not in ("set", "added"):
            raise ValueError(f"cut: expected 'set' or 'added', got {self.cut!r:.80}")
        if not _real(self.logistic_weight) or not 0 <= self.logistic_weight <= 1:
            raise ValueError(f"logistic_weight: expected 0..1, got {self.logistic_weight!r}")
        # lists (a JSON file's) become tuples: the dataclass stays hashable
        grid = tuple(_ks("k_grid", k) for k in _seq(self.k_grid, "k_grid"))
        object.__setattr__(self, "k_grid", grid)
        object.__setattr__(self, "ks", _ks("ks", self.ks))
        mix = tuple(_seq(self.mix_grid, "mix_grid"))
        if not mix or not all(_real(g) and 0 <= g <= 1 for g in mix):
            raise ValueError(f"mix_grid: expected shares in 0..1, got {self.mix_grid!r}")
        object.__setattr__(self, "mix_grid", tuple(float(g) for g in mix))
        if not self.k_grid:
            raise ValueError("k_grid: expected at least one neighbourhood, got none")
        if not _real(self.lam) or not self.lam > 0:
            raise ValueError(f"lam: expected a positive number, got {self.lam!r}")
        if not _real(self.calibration_share) or not 0 < self.calibration_share <= 1:
            raise ValueError(f"calibration_share: expected (0, 1], got {self.calibration_share!r}")
        for name in ("calibrate", "label_frequency"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected True or False, got {getattr(self, name)!r:.80}")
        for name in ("min_calibration", "exact_limit"):
            if not _count(getattr(self, name)):
                raise ValueError(
                    f"{name}: expected a non-negative integer, got {getattr(self, name)!r}"
                )
        if not _count(self.background_steps, 10):
            raise ValueError(
                f"background_steps: expected an integer in 0..10, got {self.background_steps!r:.80}"
            )

    def to_dict(self) -> dict:
        """Plain JSON data (a session file stores the stage it refined with)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data) -> StageParams:
        """The parameters of ``to_dict``, checked (a file is user input)."""
        if not isinstance(data, dict):
            raise ValueError(f"stage: expected an object, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"stage: unknown parameters {unknown}")
        # files written before the label-frequency correction replay as they were
        return cls(**{"label_frequency": False, **data})


def _real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v)


def _count(v, most=None) -> bool:
    """A non-negative integer (not a bool), at most ``most`` when given."""
    ok = isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0
    return ok and (most is None or v <= most)


def _seq(v, name):
    if isinstance(v, (str, bytes)) or not isinstance(v, (tuple, list)):
        raise ValueError(f"{name}: expected a list, got {v!r:.80}")
    return v


def _ks(name, ks) -> tuple:
    """A neighbourhood: a non-empty tuple of positive integers."""
    ks = tuple(_seq(ks, name))
    if not ks or not all(
        isinstance(k, numbers.Integral) and not isinstance(k, bool) and 0 < k <= 1000 for k in ks
    ):
        raise ValueError(f"{name}: expected neighbour counts in 1..1000, got {ks!r:.80}")
    return tuple(int(k) for k in ks)


def _plain(v):
    return [_plain(x) for x in v] if isinstance(v, tuple) else v


DEFAULT_STAGE = StageParams()
