"""A ranked result set, as a session returns it (no widget code)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .engine.store.catalogue import Catalogue

__all__ = ["Results"]


@dataclass
class Results:
    """A ranked result set: ``ids`` with their ``votes`` and ``scores``.

    ``kind`` is "knn" (nearest neighbours of the query), "refined" (every
    item the model accepts), "browse" (a random sample before any search),
    "labelled" (the labelled items), "check" (a random check's items), "near"
    (the candidates just below a refine's cut) or "empty"; ``path`` says how the
    catalogue was searched; ``timings`` are in milliseconds. ``info``: what a
    refine says of its set (``Session.refine``): ``n_positives`` (labelled
    positives, all in the set), ``accepted_positives`` (those the model itself
    accepts), ``expected_precision`` of the items it adds and
    ``expected_class_size`` (from its calibrated scores), ``fallback`` (None,
    or why the set is not the model's).
    """

    ids: np.ndarray
    votes: np.ndarray
    scores: np.ndarray
    kind: str
    path: str = ""
    timings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @classmethod
    def empty(cls) -> Results:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), "empty")

    @property
    def count(self) -> int:
        return int(self.ids.shape[0])

    def __len__(self) -> int:
        return self.count

    def subset(self, keep, kind: str | None = None) -> Results:
        """The rows selected by ``keep`` (a mask or indices), in the same order."""
        return Results(
            self.ids[keep],
            self.votes[keep],
            self.scores[keep],
            self.kind if kind is None else kind,
            self.path,
            self.timings,
            self.info,
        )

    def page(self, number: int, size: int) -> Results:
        n_pages = max(1, -(-self.count // size))
        if not 0 <= number < n_pages:
            raise IndexError(f"page: expected a page number in 0..{n_pages - 1}, got {number}")
        return self.subset(slice(number * size, (number + 1) * size))

    def to_frame(self, catalogue: Catalogue | None = None, labels: dict | None = None):
        df = pd.DataFrame({"id": self.ids, "votes": self.votes, "score": self.scores})
        if catalogue is not None:
            df.insert(
                1,
                "uri",
                [catalogue.uri(int(i)) for i in self.ids] if catalogue.uris is not None else None,
            )
        if labels is not None:
            df["label"] = [labels.get(int(i), 0) for i in self.ids]
        return df
