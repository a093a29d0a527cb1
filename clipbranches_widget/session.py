"""A search session: seed, label, refine, page. No widget code.

The widget (``widget.py``) only translates front-end messages into calls on a
``Session`` and its ``Results`` into traits; everything here works from a
plain script.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from .engine.learn.branches import DecisionBranchesClassifier
from .engine.search.ranking import code_scores, rank
from .engine.store.catalogue import Catalogue

__all__ = ["Results", "Session"]

log = logging.getLogger(__name__)

SESSION_FORMAT = 1


@dataclass
class Results:
    """A ranked result set: ``ids`` with their ``votes`` and ``scores``.

    ``kind`` is "knn" (nearest neighbours of the query), "refined" (every
    item the model accepts) or "empty"; ``path`` says how the catalogue was
    searched; ``timings`` are in milliseconds.
    """

    ids: np.ndarray
    votes: np.ndarray
    scores: np.ndarray
    kind: str
    path: str = ""
    timings: dict = field(default_factory=dict)

    @classmethod
    def empty(cls) -> Results:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), "empty")

    @property
    def count(self) -> int:
        return int(self.ids.shape[0])

    def __len__(self) -> int:
        return self.count

    def page(self, number: int, size: int) -> Results:
        n_pages = max(1, -(-self.count // size))
        if not 0 <= number < n_pages:
            raise IndexError(f"page: expected a page number in 0..{n_pages - 1}, got {number}")
        s = slice(number * size, (number + 1) * size)
        return Results(
            self.ids[s], self.votes[s], self.scores[s], self.kind, self.path, self.timings
        )

    def to_frame(self, catalogue: Catalogue | None = None, labels: dict | None = None):
        import pandas as pd

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


def _describe_query(query):
    """What to remember of a query: its text, its example ids, or None (a vector)."""
    if isinstance(query, str):
        return query
    q = np.asarray(query)
    return None if q.dtype.kind == "f" else [int(i) for i in np.atleast_1d(q)]


class Session:
    """Seed a search, collect labels, refine over the whole catalogue, page.

    Parameters
    ----------
    catalogue : Catalogue
    k : int, default 60
        Nearest neighbours shown by a search.
    page_size : int, default 60
    n_background : int, default 1000
        Random unlabelled catalogue items added to every fit as negatives
        (never a labelled item).
    background_weight : float, default 0.5
        Sample weight of background negatives (labelled items weigh 1): some
        background items are unlabelled positives, so they count less, and
        they never limit a box's margin (see ``cap_weight``).
    random_state : int, default 0
        Seeds the background sample and the classifier: a session replays
        exactly.
    classifier : dict, optional
        Keyword arguments of ``DecisionBranchesClassifier``.
    """

    def __init__(
        self,
        catalogue: Catalogue,
        *,
        k: int = 60,
        page_size: int = 60,
        n_background: int = 1000,
        background_weight: float = 0.5,
        random_state: int = 0,
        classifier: dict | None = None,
        n_jobs=None,
    ):
        if not isinstance(catalogue, Catalogue):
            raise TypeError(f"catalogue: expected a Catalogue, got {type(catalogue).__name__}")
        for name, value in (("k", k), ("page_size", page_size)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if n_background < 0:
            raise ValueError(f"n_background: expected a non-negative integer, got {n_background}")
        self.catalogue = catalogue
        self.k = int(k)
        self.page_size = int(page_size)
        self.n_background = int(n_background)
        if not 0 < background_weight <= 1:
            raise ValueError(
                f"background_weight: expected a value in (0, 1], got {background_weight}"
            )
        self.background_weight = float(background_weight)
        self.random_state = int(random_state)
        self.classifier_params = dict(classifier or {})
        DecisionBranchesClassifier(**self.classifier_params)  # reject unknown keys now
        self.n_jobs = n_jobs
        self._labels: dict[int, int] = {}
        self.query = None  # what the user searched for (text, ids or None)
        self.query_vector = None  # (d,) float32 embedding of the query
        self.model: DecisionBranchesClassifier | None = None
        self.results = Results.empty()
        self.rounds = 0
        self._background = None

    # --- labels ---
    @property
    def labels(self) -> dict[int, int]:
        """``{id: +1 | -1}`` (a copy)."""
        return dict(self._labels)

    def label(self, ids, value: int) -> None:
        """Mark items positive (+1), negative (-1) or unlabelled (0)."""
        if value not in (1, -1, 0):
            raise ValueError(f"label: expected +1, -1 or 0, got {value!r}")
        ids = self.catalogue.check_ids(ids)
        for i in ids.tolist():
            if value == 0:
                self._labels.pop(i, None)
            else:
                self._labels[i] = value

    def set_labels(self, labels: dict) -> None:
        """Replace all labels by ``{id: +1 | -1}`` (validated before anything changes)."""
        clean = {}
        for i, v in dict(labels).items():
            if v not in (1, -1):
                raise ValueError(f"labels: expected values +1 or -1, got {v!r} for id {i}")
            clean[int(self.catalogue.check_ids([int(i)])[0])] = int(v)
        self._labels = clean

    # --- search ---
    def search(self, query, k: int | None = None) -> Results:
        """Nearest neighbours of a text, a vector, or example item ids."""
        t0 = time.perf_counter()
        k = self.k if k is None else k
        vector = self._query_vector(query)
        scores, ids = self.catalogue.seeder.search(vector, k)
        keep = ids >= 0
        self.query = _describe_query(query)
        self.query_vector = vector
        ms = (time.perf_counter() - t0) * 1e3
        self.results = Results(
            ids[keep],
            np.zeros(int(keep.sum()), np.int64),
            scores[keep],
            "knn",
            "knn",
            {"search_ms": ms, "total_ms": ms},
        )
        return self.results

    def _query_vector(self, query) -> np.ndarray:
        if isinstance(query, str):
            if not query.strip():
                raise ValueError("query: expected a non-empty text, got an empty string")
            v = np.asarray(self.catalogue.embed_text([query]), np.float32)[0]
        else:
            q = np.asarray(query)
            if q.dtype.kind == "f":
                if q.ndim != 1 or q.shape[0] != self.catalogue.n_features:
                    raise ValueError(
                        f"query: expected a vector of {self.catalogue.n_features} "
                        f"floats, got an array of shape {q.shape}"
                    )
                v = q.astype(np.float32)
            elif q.dtype.kind in "iu" and q.size:
                v = self.catalogue.vector(q).mean(axis=0)  # "more like these"
            else:
                raise TypeError(
                    "query: expected a text, a float vector or example item ids, "
                    f"got {type(query).__name__}"
                )
        if not np.isfinite(v).all():
            raise ValueError("query: the query vector contains NaN or inf")
        norm = np.linalg.norm(v)
        return v / norm if norm > 0 else v

    # --- refine ---
    def _background_ids(self) -> np.ndarray:
        if self._background is None:
            n = len(self.catalogue)
            rng = np.random.default_rng(self.random_state)
            take = min(n, self.n_background + 256)  # spare ones replace labelled items
            self._background = np.sort(rng.choice(n, take, replace=False))
        bg = self._background
        if self._labels:
            bg = bg[~np.isin(bg, np.fromiter(self._labels, np.int64))]
        return bg[: self.n_background]

    def training_set(self):
        """(ids, y, weights): labelled items then background negatives."""
        ids = np.fromiter(self._labels, np.int64, len(self._labels))
        y = np.array([1 if self._labels[i] > 0 else 0 for i in ids.tolist()], np.int64)
        bg = self._background_ids()
        w = np.concatenate([np.ones(ids.size), np.full(bg.size, self.background_weight)])
        return np.concatenate([ids, bg]), np.concatenate([y, np.zeros(bg.size, np.int64)]), w

    def refine(self) -> Results:
        """Fit decision branches on the labels and return every accepted item.

        Labels are never modified here: a failed refine leaves them intact.
        """
        n_pos = sum(1 for v in self._labels.values() if v > 0)
        if n_pos == 0:
            raise ValueError(
                f"refine needs at least one positive label; got 0 positives and "
                f"{len(self._labels)} negatives"
            )
        t0 = time.perf_counter()
        ids, y, weights = self.training_set()
        params = {
            "random_state": self.random_state + self.rounds,
            "n_jobs": self.n_jobs,
            **self.classifier_params,
        }
        model = DecisionBranchesClassifier(**params).fit(
            self.catalogue.codes[ids], y, sample_weight=weights
        )
        t1 = time.perf_counter()
        found = self.catalogue.search_boxes(model.boxes_, n_jobs=self.n_jobs)
        t2 = time.perf_counter()
        scores = code_scores(
            self.catalogue.codes, found.ids, self.catalogue.compressor, self._reference()
        )
        order = rank(found.ids, found.votes, scores)
        t3 = time.perf_counter()
        self.model = model
        self.rounds += 1
        self.results = Results(
            found.ids[order],
            found.votes[order].astype(np.int64),
            scores[order],
            "refined",
            found.path,
            {
                "fit_ms": (t1 - t0) * 1e3,
                "search_ms": (t2 - t1) * 1e3,
                "rank_ms": (t3 - t2) * 1e3,
                "total_ms": (t3 - t0) * 1e3,
            },
        )
        log.info(
            "refine: %d results from %d boxes in %.1f ms",
            self.results.count,
            model.boxes_.n_boxes,
            self.results.timings["total_ms"],
        )
        return self.results

    def _reference(self) -> np.ndarray:
        """Point in code space that ranks ties: query and positives, averaged."""
        comp = self.catalogue.compressor
        pos = [i for i, v in self._labels.items() if v > 0]
        z = [comp.dequantize(self.catalogue.codes[pos]).mean(axis=0)] if pos else []
        if self.query_vector is not None:
            # a text query goes through the compressor's text head, when it has one
            text = isinstance(self.query, str) and hasattr(comp, "project_text")
            z.append((comp.project_text if text else comp.project)(self.query_vector[None, :])[0])
        return np.mean(z, axis=0)

    def page(self, number: int = 0) -> Results:
        return self.results.page(number, self.page_size)

    @property
    def n_pages(self) -> int:
        return max(1, -(-self.results.count // self.page_size))

    # --- persistence ---
    def to_dict(self) -> dict:
        """Everything needed to replay this session on the same catalogue."""
        return {
            "format": SESSION_FORMAT,
            "n_items": len(self.catalogue),
            "params": {
                "k": self.k,
                "page_size": self.page_size,
                "n_background": self.n_background,
                "background_weight": self.background_weight,
                "random_state": self.random_state,
                "classifier": self.classifier_params,
            },
            "query": self.query,
            "query_vector": None if self.query_vector is None else self.query_vector.tolist(),
            "labels": {str(i): v for i, v in self._labels.items()},
            "rounds": self.rounds,
            "kind": self.results.kind,
            "model": None if self.model is None else self.model.boxes_.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict, catalogue: Catalogue, **kwargs) -> Session:
        """Rebuild a session and replay its last step: the same results, exactly."""
        if data.get("format") != SESSION_FORMAT:
            raise ValueError(
                f"session: expected format {SESSION_FORMAT}, got {data.get('format')!r}"
            )
        if data["n_items"] != len(catalogue):
            raise ValueError(
                f"session: saved for a catalogue of {data['n_items']} items, "
                f"got one of {len(catalogue)}"
            )
        p = data["params"]
        s = cls(
            catalogue,
            k=p["k"],
            page_size=p["page_size"],
            n_background=p["n_background"],
            background_weight=p["background_weight"],
            random_state=p["random_state"],
            classifier=p["classifier"],
            **kwargs,
        )
        s.set_labels({int(i): v for i, v in data["labels"].items()})
        if data["query_vector"] is not None:
            s.query = data["query"]
            s.query_vector = np.asarray(data["query_vector"], np.float32)
            scores, ids = catalogue.seeder.search(s.query_vector, s.k)
            keep = ids >= 0
            s.results = Results(
                ids[keep], np.zeros(int(keep.sum()), np.int64), scores[keep], "knn", "knn"
            )
        if data["kind"] == "refined":
            s.rounds = data["rounds"] - 1
            s.refine()
        return s
