"""A search session: seed, label, refine, page. No widget code.

The widget (``widget.py``) only translates front-end messages into calls on a
``Session`` and its ``Results`` into traits; everything here works from a
plain script.
"""

from __future__ import annotations

import logging
import numbers
import time

import numpy as np

from . import checks, warmup
from .engine._validation import check_positive_int
from .engine.learn.branches import DecisionBranchesClassifier
from .engine.learn.twostage import DEFAULT_STAGE, StageParams, refine_set
from .engine.search.ranking import code_scores, rank
from .engine.store.catalogue import Catalogue
from .estimate import cross_validate, fork
from .persist import SESSION_FORMAT, catalogue_identity, labels_from_json, session_from_dict
from .results import Results
from .session_checks import SessionChecks
from .session_views import ALL_BOXES, LABELLED_VIEW, SessionViews

__all__ = [
    "ALL_BOXES",
    "LABELLED_VIEW",
    "RefineCancelled",
    "Results",
    "Session",
    "labels_from_json",
]

log = logging.getLogger(__name__)

#: The classifier of a refine (issue 15): boxes on 8-d subsets with a wider
#: margin find the candidates (recall and pruning); the second stage
#: (engine/learn/twostage.py) scores them for precision. A box is judged by the
#: hull of its positives (``accept="hull"``): with the margin it reaches into
#: background items that, for a concept of 10 % of the catalogue or more, are
#: mostly unlabelled positives, and judged whole no box was kept. An index
#: serves these boxes when built on the same subsets (engine/subsets.py,
#: REFINE_SIZES).
REFINE_CLASSIFIER = {"feature_subsets": "8d", "margin": 3.5, "accept": "hull"}

#: Largest k of a search: a knn result is shown, not a catalogue dump (refine finds all).
MAX_K = 100_000
MAX_PAGE_SIZE = 10_000


def _describe_query(query):
    """What to remember of a query: its text, its example ids, or None (a vector)."""
    if isinstance(query, str):
        return query
    q = np.asarray(query)
    return None if q.dtype.kind == "f" else [int(i) for i in np.atleast_1d(q)]


def _query_vector(catalogue: Catalogue, query) -> np.ndarray:
    """The unit query vector of a text, a float vector or example ids (their mean)."""
    if isinstance(query, str):
        if not query.strip():
            raise ValueError("query: expected a non-empty text, got an empty string")
        v = np.asarray(catalogue.embed_text([query]), np.float32)[0]
    else:
        q = np.asarray(query)
        if q.dtype.kind == "f":
            if q.ndim != 1 or q.shape[0] != catalogue.n_features:
                raise ValueError(
                    f"query: expected a vector of {catalogue.n_features} "
                    f"floats, got an array of shape {q.shape}"
                )
            v = q.astype(np.float32)
        elif q.dtype.kind in "iu" and q.size:
            v = catalogue.vector(q).mean(axis=0)  # "more like these"
        else:
            raise TypeError(
                "query: expected a text, a float vector or example item ids, "
                f"got {type(query).__name__}"
            )
    if not np.isfinite(v).all():
        raise ValueError("query: the query vector contains NaN or inf")
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else v


class RefineCancelled(Exception):
    """A refine stopped by its ``should_stop`` (the session is as it was)."""


def _check_stop(should_stop, after: str) -> None:
    if should_stop is not None and should_stop():
        raise RefineCancelled(f"refine cancelled after {after}; nothing changed")


class Session(SessionViews, SessionChecks):
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
        Keyword arguments of ``DecisionBranchesClassifier`` (default
        ``REFINE_CLASSIFIER``: 8-d feature subsets, ``margin=3.5``).
    stage : StageParams or None, default ``DEFAULT_STAGE`` (``StageParams()``)
        The second stage of a refine over the box candidates
        (engine/learn/twostage.py): a calibrated score per candidate, the
        labelled positives always in, the rest cut where the expected F1 is
        highest. None: the boxes alone (every item in a box, ranked by votes).
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
        stage: StageParams | None = DEFAULT_STAGE,
    ):
        if not isinstance(catalogue, Catalogue):
            raise TypeError(f"catalogue: expected a Catalogue, got {type(catalogue).__name__}")
        k = check_positive_int("k", k, maximum=MAX_K)
        page_size = check_positive_int("page_size", page_size, maximum=MAX_PAGE_SIZE)
        if not isinstance(n_background, numbers.Integral) or n_background < 0:
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
        self.classifier_params = dict(REFINE_CLASSIFIER if classifier is None else classifier)
        DecisionBranchesClassifier(**self.classifier_params)  # reject unknown keys now
        if stage is not None and not isinstance(stage, StageParams):
            raise TypeError(f"stage: expected StageParams or None, got {type(stage).__name__}")
        self.stage = stage
        self.n_jobs = n_jobs
        self._background = None
        self._browse = None
        self._identity = None
        self.reset()  # labels, query, model, results, round: none yet
        codes = catalogue.codes
        warmup.start(codes.shape[1], self.classifier_params, not codes.flags.writeable)

    def reset(self) -> None:
        """Start over: no labels, model, results or query, and round 0."""
        self._labels: dict[int, int] = {}
        self.query = None  # what the user searched for (text, ids or None)
        self.query_vector = None  # (d,) float32 embedding of the query
        self.model: DecisionBranchesClassifier | None = None
        self.results = Results.empty()
        self.rounds = 0
        self._facets = None  # (results, (n_results, n_boxes) bool) of the last view
        self._before = np.zeros(0, np.int64)  # ids of the results a refine replaced
        self._last_check = checks.Draw.none()  # of the current results until a refine

    # --- labels ---
    @property
    def labels(self) -> dict[int, int]:
        """``{id: +1 | -1}`` (a copy)."""
        return dict(self._labels)

    def label(self, ids, value: int) -> None:
        """Mark items positive (+1), negative (-1) or unlabelled (0)."""
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Integral)
            or value not in (1, -1, 0)
        ):
            raise ValueError(f"label: expected +1, -1 or 0, got {value!r}")
        value = int(value)  # a numpy integer would not survive json.dumps in save()
        ids = self.catalogue.check_ids(ids)
        for i in ids.tolist():
            if value == 0:
                self._labels.pop(i, None)
            else:
                self._labels[i] = value

    def set_labels(self, labels: dict) -> None:
        """Replace all labels by ``{id: +1 | -1}`` (validated before anything changes)."""
        clean = labels_from_json(dict(labels))
        if clean:
            self.catalogue.check_ids(np.fromiter(clean, np.int64, len(clean)))
        self._labels = clean

    # --- search ---
    def search(self, query, k: int | None = None) -> Results:
        """Nearest neighbours of a text, a vector, or example item ids."""
        t0 = time.perf_counter()
        k = self.k if k is None else check_positive_int("k", k, maximum=MAX_K)
        k = min(k, len(self.catalogue))
        vector = _query_vector(self.catalogue, query)
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

    def refine(self, should_stop=None) -> Results:
        """Fit decision branches on the labels and return every accepted item.

        Labels are never modified here: a failed refine leaves them intact.
        ``should_stop()``, when given, is asked between the steps (after the
        fit, after the search); true raises ``RefineCancelled`` before
        anything of the session changed.
        """
        if should_stop is not None and not callable(should_stop):
            raise TypeError(
                f"should_stop: expected a callable or None, got {type(should_stop).__name__}"
            )
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
        _check_stop(should_stop, "the fit")
        found = self.catalogue.search_boxes(model.boxes_, n_jobs=self.n_jobs)
        t2 = time.perf_counter()
        _check_stop(should_stop, "the search")
        if self.stage is None:
            scores = code_scores(
                self.catalogue.codes, found.ids, self.catalogue.compressor, self._reference()
            )
            order = rank(found.ids, found.votes, scores)
            out = found.ids[order], found.votes[order], scores[order]
            info = {"n_positives": n_pos, "fallback": None}
        else:
            *out, info = refine_set(
                self.catalogue,
                found,
                ids,
                y,
                weights,
                model.boxes_.n_boxes,
                self._labels,
                self._reference(),
                self.query_vector,
                self.page_size,
                self.stage,
            )
        t3 = time.perf_counter()
        self._before = self.results.ids
        self.model = model
        self.rounds += 1
        self.results = Results(
            out[0],
            np.asarray(out[1], np.int64),
            out[2],
            "refined",
            found.path,
            {
                "fit_ms": (t1 - t0) * 1e3,
                "search_ms": (t2 - t1) * 1e3,
                "rank_ms": (t3 - t2) * 1e3,
                "total_ms": (t3 - t0) * 1e3,
            },
            info,
        )
        log.info(
            "refine: %d results from %d boxes in %.1f ms",
            self.results.count,
            model.boxes_.n_boxes,
            self.results.timings["total_ms"],
        )
        return self.results

    def fork(self, labels: dict) -> Session:
        """A session like this one (settings, background sample, query, round)
        with other ``labels``: what-if refines that leave this one alone."""
        return fork(self, labels)

    def estimate_quality(self, folds: int = 5) -> dict:
        """Precision and recall of the refine cross-validated on the labels
        (``estimate.cross_validate``: one refine per fold, so about ``folds``
        rounds of time). Kept in ``results.info["cv"]`` after a refine."""
        out = cross_validate(self, folds)
        if self.results.kind == "refined":
            self.results.info["cv"] = out
        return out

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
    def identity(self) -> str:
        """The catalogue's identity, stored in a saved session and checked on load."""
        n = len(self.catalogue)
        if self._identity is None or self._identity[0] != n:
            self._identity = (n, catalogue_identity(self.catalogue))
        return self._identity[1]

    def to_dict(self) -> dict:
        """Everything needed to replay this session on the same catalogue."""
        return {
            "format": SESSION_FORMAT,
            "n_items": len(self.catalogue),
            "catalogue": self.identity(),
            "params": {
                "k": self.k,
                "page_size": self.page_size,
                "n_background": self.n_background,
                "background_weight": self.background_weight,
                "random_state": self.random_state,
                "classifier": self.classifier_params,
                "stage": None if self.stage is None else self.stage.to_dict(),
            },
            "query": self.query,
            "query_vector": None if self.query_vector is None else self.query_vector.tolist(),
            "labels": {str(i): v for i, v in self._labels.items()},
            "last_check": self._last_check.to_dict(),
            "rounds": self.rounds,
            "kind": self.results.kind,
            "model": None if self.model is None else self.model.boxes_.to_dict(),
            "stage_model": (m.to_dict() if (m := self.results.info.get("stage_model")) else None),
        }

    @classmethod
    def from_dict(cls, data: dict, catalogue: Catalogue, **kwargs) -> Session:
        """Rebuild a session and replay its last step: the same results, exactly.

        ``data`` is checked field by field (a damaged file fails naming the
        field), and must have been saved on this catalogue (its identity).
        """
        return session_from_dict(cls, data, catalogue, **kwargs)
