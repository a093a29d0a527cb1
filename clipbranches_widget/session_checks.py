"""Random checks of a session's results (``checks.py``): draw, estimate.

A mixin of ``Session``: it reads the session's results and labels and keeps
the last draw (``_last_check``); it never changes labels or results.
"""

from __future__ import annotations

import numpy as np

from . import checks
from .engine._validation import check_positive_int

__all__ = ["MAX_CHECK", "SessionChecks"]

#: Items of one random check (``Session.check``).
MAX_CHECK = 1_000


class SessionChecks:
    def check(self, n: int = 20) -> np.ndarray:
        """Draw ``n`` unlabelled items at random for the user to label: half
        from the refined results, a quarter from the candidates ranked just
        below the cut, a quarter from the rest of the catalogue
        (``checks.draw``); the ids, in that order.

        The pages show the top of the ranking, so their labels cannot say how
        precise the rest of the results is, or how much of the class lies
        outside. Labelled, a check estimates both without any model
        (``checked_quality``); its items are labels like any other for the
        next refine (EVALUATION.md, finding 11).
        """
        n = check_positive_int("n", n, maximum=MAX_CHECK)
        if self.results.kind != "refined":
            raise ValueError(
                f"check: expected refined results to draw from, got {self.results.kind!r} results"
            )
        # seeded by the round: a replayed session draws the same check
        rng = np.random.default_rng([self.random_state, self.rounds])
        below = self.results.info.get("below_cut")
        below = np.zeros(0, np.int64) if below is None else below
        drawn = checks.draw(
            self.results.ids, below, self._labels, len(self.catalogue), n, rng, self.rounds
        )
        self._last_check = drawn
        return drawn.all_ids()

    def checked_quality(self) -> dict | None:
        """Precision and recall of the current results estimated from the
        labelled items of the last ``check`` (``checks.estimate``), or None
        when no check of these results is labelled yet."""
        last = self.current_check()
        return None if last is None else checks.estimate(last, self._labels)

    def current_check(self):
        """The random check drawn from the current results, or None."""
        last = self._last_check
        fresh = last.round == self.rounds and self.results.kind == "refined"
        return last if fresh and last.all_ids().size else None
