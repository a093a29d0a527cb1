"""What a session shows: browse, box facets, the labelled view, summaries, explanations.

A mixin of ``Session``: it reads the session's state (results, model, labels)
and computes the views with the pure functions of ``views.py``; it never
changes what the session learned.
"""

from __future__ import annotations

from . import views
from .results import Results

__all__ = ["ALL_BOXES", "BROWSE_MAX", "CHECK_VIEW", "LABELLED_VIEW", "NEAR_VIEW", "SessionViews"]

BROWSE_MAX = 100_000  # items shown before the first search (a random sample beyond that)
ALL_BOXES = -1  # view(): every result
LABELLED_VIEW = -2  # view(): the labelled items instead of the results
CHECK_VIEW = -3  # view(): the items of the random check of these results
NEAR_VIEW = -4  # view(): the candidates a refine ranked just below its cut


class SessionViews:
    def current(self) -> Results:
        """The results, or before any search a fixed random browse of the catalogue."""
        if self.results.kind != "empty":
            return self.results
        if self._browse is None:
            self._browse = views.browse(len(self.catalogue), self.random_state, BROWSE_MAX)
        return self._browse

    def _inside(self):
        """(n_results, n_boxes) bool: which box holds which result (cached per result set)."""
        res = self.results
        if res.kind != "refined" or self.model is None:
            return None
        if self._facets is None or self._facets[0] is not res:
            self._facets = (res, self.model.boxes_.contains(self.catalogue.codes[res.ids]))
        return self._facets[1]

    def facets(self) -> list[dict]:
        """Per box of the model: ``{"box", "count", "dims"}`` of the refined results."""
        inside = self._inside()
        return [] if inside is None else views.box_facets(self.model.boxes_, inside)

    def labelled(self) -> Results:
        """Every labelled item, positives first, with its votes under the model."""
        boxes = None if self.model is None else self.model.boxes_
        return views.labelled(self._labels, boxes, self.catalogue.codes)

    def view(self, box: int = ALL_BOXES) -> tuple[Results, int]:
        """``(shown, box)``: the current results, one box's items (in rank order),
        the labelled items (``LABELLED_VIEW``) or the random check of these
        results (``CHECK_VIEW``, once drawn), or the near misses of a refine
        (``NEAR_VIEW``: the candidates ranked just below its cut, the page to
        label next); ``box`` is what was applied (``ALL_BOXES`` when the asked
        box does not exist)."""
        inside = self._inside()
        if inside is not None and 0 <= box < inside.shape[1]:
            return self.results.subset(inside[:, box]), box
        if box == CHECK_VIEW and self.current_check() is not None:
            return views.checked(self.current_check().all_ids()), CHECK_VIEW
        if box == NEAR_VIEW and self.results.kind == "refined":
            return views.near_misses(self.results), NEAR_VIEW
        if box == LABELLED_VIEW or self._nothing_accepted():
            # never an empty grid while positives exist: they stay in view
            return self.labelled(), LABELLED_VIEW
        return self.current(), ALL_BOXES

    def _nothing_accepted(self) -> bool:
        return self.results.kind == "refined" and self.results.count == 0 and self.n_positives > 0

    @property
    def n_positives(self) -> int:
        return sum(1 for v in self._labels.values() if v > 0)

    def marks(self) -> views.RoundMarks:
        """The round's marks (accepted and rejected positives, new items): one
        definition for the summary, the badges and the details. Made once per
        result set, with the labels it was refined on (a refine's results are
        shown at once), so later label changes do not re-mark them."""
        cached = getattr(self, "_marks", None)
        if cached is None or cached[0] is not self.results:
            before = getattr(self, "_before", None)
            cached = (self.results, views.RoundMarks.of(self.results, self._labels, before))
            self._marks = cached
        return cached[1]

    def badges(self, ids, *, labelled_view: bool = False) -> list[str]:
        """Per id: "new", "rejected" or "" (``RoundMarks.badges``)."""
        return self.marks().badges(ids, labelled_view=labelled_view)

    def summary(self) -> str:
        """What the last step did, in words: "148 matches · 37 new · 5 of your 5
        positives", and what a labelled random check says of it."""
        text = views.summary(
            self.results,
            self._labels,
            n_items=len(self.catalogue),
            query=self.query,
            rounds=self.rounds,
            marks=self.marks(),
        )
        if self.current_check() is not None:  # first: the line does not wrap
            text = views.check_summary(self.checked_quality()) + " \u00b7 " + text
        return text

    def explain(self, i: int) -> dict:
        """Why item ``i`` is shown: rank, votes, score, similarity, the boxes holding it."""
        i = int(self.catalogue.check_ids([i])[0])
        detail = views.explain(
            i,
            catalogue=self.catalogue,
            results=self.results,
            boxes=None if self.model is None else self.model.boxes_,
            labels=self._labels,
            query_vector=self.query_vector,
        )
        # the same verdict as the badge and the summary's count (RoundMarks)
        marks = self.marks()
        detail["verdict"] = marks.verdict(i, detail["label"])
        detail["cut"] = marks.cut
        return detail
