"""The simulated user's protocol: metrics, k-NN curves, learners, rounds.

For a labelled data set (embeddings + class labels), each class in turn is the
concept a user searches for. A simulated user starts from the k nearest
neighbours of a query (a class-text embedding when one is given, otherwise one
example item of the class), labels the shown page with the ground truth
(+1 / -1) as they would by clicking, refines through ``Session``, and labels
the next shown page (the first unlabelled items of the refined ranking) for a
few rounds. At every round each learner is fitted on *the same labels* (and
the same background negatives and codes) and judged on the complete set it
returns: precision, recall and F1 against the class, next to plain k-NN of
the query with k = that set's size and with k = the true class size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..engine.learn.branches import DecisionBranchesClassifier
from ..engine.learn.ensemble import BaggedBranchesClassifier
from ..engine.learn.twostage import DEFAULT_STAGE, StageParams, refine_set
from ..engine.search.ranking import code_scores, rank
from ..engine.search.scan import scan
from ..engine.store.catalogue import Catalogue
from ..engine.subsets import default_feature_subsets
from ..session import REFINE_CLASSIFIER, Session
from .datasets import LabelledSet

__all__ = [
    "Learner",
    "bagged_learners",
    "default_learners",
    "fit_result_set",
    "knn_curve",
    "knn_prf",
    "next_page",
    "prf",
    "simulate",
]


def prf(found, truth) -> tuple[float, float, float]:
    """Precision, recall, F1 of the item ids ``found`` against a boolean mask.

    An empty set has precision 0 (nothing useful was returned).
    """
    truth = np.asarray(truth, bool)
    found = np.asarray(found, np.int64)
    tp = int(truth[found].sum()) if found.size else 0
    p = tp / found.size if found.size else 0.0
    r = tp / max(int(truth.sum()), 1)
    f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return p, r, f


def knn_curve(X, query, truth):
    """k-NN of ``query`` at every k: ``(order, tp)`` with ``tp[k]`` = true
    positives among the first k (``tp[0] = 0``). Exact inner product."""
    s = X @ np.asarray(query, np.float32)
    order = np.lexsort((np.arange(s.size), -s.astype(np.float64)))
    tp = np.concatenate([[0], np.cumsum(np.asarray(truth, bool)[order])])
    return order, tp


def knn_prf(tp, k: int, n_true: int) -> tuple[float, float, float]:
    k = int(min(k, tp.size - 1))
    if k <= 0:
        return 0.0, 0.0, 0.0
    p, r = tp[k] / k, tp[k] / max(n_true, 1)
    return p, r, (2 * p * r / (p + r) if p + r > 0 else 0.0)


# --------------------------------------------------------------------------- learners


@dataclass(frozen=True)
class Learner:
    """A way to turn the user's labels into a result set over the catalogue.

    ``kind``: "session" (``Session.refine``, ``params`` its keywords),
    "branches" (DecisionBranchesClassifier with ``params``, the boxes alone;
    without params, the product's default: ``Session.refine``), or
    "bagged" (BaggedBranchesClassifier with ``params``, estimators as the
    refine's classifier unless ``estimator_params`` says otherwise; ranked by
    estimator votes, then similarity, then id), "bagged+stage" (the same
    ensemble's matches as the candidates of the refine's second stage,
    ``engine/learn/twostage.refine_set``, in place of one model's boxes),
    "logreg", "forest", "nn1" (scikit-learn on the dequantised codes: the
    same 32 numbers per item), or "labels" (just the labelled positives: the
    floor any learner must clear, since every metric counts them). All are
    fitted on the session's training set:
    the labels plus ``n_background`` random unlabelled items as negatives of
    weight ``background_weight``. ``min_pts="design"``: DESIGN.md's
    min(50, 1.5 x #positives) window.
    """

    name: str
    kind: str = "branches"
    params: dict = field(default_factory=dict)
    n_background: int = 1000
    background_weight: float = 0.5

    @property
    def is_default(self) -> bool:
        """The product's default: ``Session.refine`` with its own settings."""
        return (
            self.kind in ("branches", "session")
            and not self.params
            and self.n_background == 1000
            and self.background_weight == 0.5
        )


def default_learners(quick: bool = False) -> list[Learner]:
    """Our default (``Session.refine``: boxes + second stage), the old default
    (the paper's subsets, boxes alone), the directions of issue 15, and what a
    user would pick instead."""
    old = Learner("branches (old default)", params={"feature_subsets": "paper"})
    if quick:
        return [
            Learner("branches", "session"),
            old,
            Learner("logistic regression", "logreg"),
            Learner("1-NN classifier", "nn1"),
        ]
    mean = {"combine": "mean", "calibrate": False}
    return [
        Learner("branches", "session"),
        old,
        Learner("boxes only, 8-d margin 3.5", "session", params={"stage": None}),
        Learner(
            "boxes + votes and logistic 1:1",
            "session",
            params={"stage": StageParams(**mean)},
        ),
        Learner(
            "boxes + votes only",
            "session",
            params={"stage": StageParams(**mean, logistic_weight=0)},
        ),
        Learner(
            "boxes + logistic only",
            "session",
            params={"stage": StageParams(**mean, logistic_weight=1)},
        ),
        Learner(
            "branches (previous stage: added items' cut, no label frequency)",
            "session",
            params={"stage": StageParams(cut="added", label_frequency=False)},
        ),
        Learner(
            "boxes + stage, whole-set cut without label frequency",
            "session",
            params={"stage": StageParams(label_frequency=False)},
        ),
        Learner(
            "boxes + stage, label frequency with the added items' cut",
            "session",
            params={"stage": StageParams(cut="added")},
        ),
        Learner(
            "boxes + stage, background unlabelled (1 EM step)",
            "session",
            params={"stage": StageParams(background_steps=1)},
        ),
        Learner(
            "boxes + stage, not recalibrated",
            "session",
            params={"stage": StageParams(calibrate=False)},
        ),
        Learner(
            "boxes + stage, paper subsets",
            "session",
            params={"classifier": {"feature_subsets": "paper", "margin": 3.5}},
        ),
        Learner("boxes + stage, bg 2000", "session", n_background=2000),
        Learner("boxes + stage, bg weight 1.0", "session", background_weight=1.0),
        Learner(
            "branches 4-d only",
            params={"feature_subsets": default_feature_subsets(32, sizes=((104, 4),))},
        ),
        Learner("branches 8-d only (boxes alone)", params={"feature_subsets": "8d"}),
        *bagged_learners(),
        Learner("logistic regression", "logreg"),
        Learner("random forest", "forest"),
        Learner("1-NN classifier", "nn1"),
        Learner("labelled positives only", "labels"),
    ]


def bagged_learners() -> list[Learner]:
    """The ensembles of issue 15: 9 bagged branch models voting per estimator,
    at a few thresholds on the share of estimators, alone and as the first
    stage of the refine's second stage."""
    return [
        Learner("bagged branches (9, any estimator)", "bagged", params={"threshold": 0.0}),
        Learner("bagged branches (9, > 1/3 of estimators)", "bagged", params={"threshold": 1 / 3}),
        Learner("bagged branches (9, majority of estimators)", "bagged", params={"threshold": 0.5}),
        Learner("bagged branches (9, > 2/3 of estimators)", "bagged", params={"threshold": 2 / 3}),
        Learner(
            "bagged branches (9, any estimator) + stage",
            "bagged+stage",
            params={"threshold": 0.0},
        ),
        Learner(
            "bagged branches (9, majority) + stage",
            "bagged+stage",
            params={"threshold": 0.5},
        ),
    ]


def fit_result_set(
    learner: Learner,
    catalogue: Catalogue,
    labels: dict,
    *,
    seed: int,
    round_: int,
    features=None,
    query=None,
    ranked: bool = False,
):
    """Ids of every catalogue item ``learner`` accepts after fitting on ``labels``;
    with ``ranked``, ``(ranking, ids)``: the set in the order a page shows it
    (score, then similarity to the query and positives, then id)."""
    out = _fit_ranked(learner, catalogue, labels, seed, round_, features, query)
    return out if ranked else np.sort(out[1])


def _fit_ranked(learner, catalogue, labels, seed, round_, features, query):
    session = learner.kind == "session" or learner.is_default
    kw = dict(learner.params) if learner.kind == "session" else {}
    s = Session(
        catalogue,
        n_background=learner.n_background,
        background_weight=learner.background_weight,
        random_state=seed,
        n_jobs=1,
        **kw,
    )
    if learner.kind == "labels":  # the floor: the user's own clicks, nothing learned
        return np.zeros(0, np.int64), np.array([i for i, v in labels.items() if v > 0], np.int64)
    if query is not None:
        s.search(query)
    s.set_labels(labels)
    if session:
        s.rounds = round_
        res = s.refine()
        near = res.info.get("below_cut")  # the ranking goes on past the cut
        return (res.ids if near is None else np.concatenate([res.ids, near])), res.ids
    ids, y, w = s.training_set()
    rs = seed + round_

    def by_score(found, score):
        sim = code_scores(catalogue.codes, found, catalogue.compressor, s._reference())
        return found[np.lexsort((found, -sim, -np.asarray(score, np.float64)))], found

    if learner.kind == "branches":
        params = dict(learner.params)
        if params.get("min_pts") == "design":
            params["min_pts"] = int(min(50, np.ceil(1.5 * int(y.sum()))))
        model = DecisionBranchesClassifier(random_state=rs, n_jobs=1, **params)
        model.fit(catalogue.codes[ids], y, sample_weight=w)
        found = scan(catalogue.codes, model.boxes_, n_jobs=1)
        sim = code_scores(catalogue.codes, found.ids, catalogue.compressor, s._reference())
        return found.ids[rank(found.ids, found.votes, sim)], found.ids
    if learner.kind in ("bagged", "bagged+stage"):
        params = {"estimator_params": REFINE_CLASSIFIER, **learner.params}
        model = BaggedBranchesClassifier(random_state=rs, n_jobs=1, **params)
        model.fit(catalogue.codes[ids], y, sample_weight=w)
        found = model.search(catalogue, n_jobs=1)  # index-aware: the catalogue's searcher
        if learner.kind == "bagged":
            sim = code_scores(catalogue.codes, found.ids, catalogue.compressor, s._reference())
            return found.ids[rank(found.ids, found.votes, sim)], found.ids
        ranked, *_ = refine_set(
            catalogue,
            found,
            ids,
            y,
            w,
            model.boxes_.n_boxes,
            s.labels,
            s._reference(),
            s.query_vector,
            s.page_size,
            DEFAULT_STAGE,
        )
        return ranked, ranked
    F = catalogue.compressor.dequantize(catalogue.codes) if features is None else features
    if learner.kind == "logreg":
        # standardised features: lbfgs converges in a few iterations
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, **learner.params))
        model.fit(F[ids], y, logisticregression__sample_weight=w)
    elif learner.kind == "forest":
        model = RandomForestClassifier(
            **{"n_estimators": 50, "n_jobs": 1, "random_state": rs, **learner.params}
        )
        model.fit(F[ids], y, sample_weight=w)
    elif learner.kind == "nn1":
        model = KNeighborsClassifier(n_neighbors=1, algorithm="brute").fit(F[ids], y)
        found = np.flatnonzero(model.predict(F) == 1)
        return by_score(found, np.zeros(found.size))
    else:
        raise ValueError(
            f"learner {learner.name!r}: unknown kind {learner.kind!r}; expected "
            "'session', 'branches', 'bagged', 'bagged+stage', 'logreg', 'forest', 'nn1' "
            "or 'labels'"
        )
    found = np.flatnonzero(model.predict(F) == 1)
    return by_score(found, model.predict_proba(F)[found, 1])


# --------------------------------------------------------------------------- the user


def simulate(
    data: LabelledSet,
    catalogue: Catalogue,
    cls: int,
    seed: int,
    *,
    learners,
    rounds: int = 5,
    page_size: int = 60,
    k: int = 60,
    codes: str = "pca",
    check: int = 0,
) -> list[dict]:
    """One simulated user searching for class ``cls``; one row per round and learner.

    The default learner's ``Session`` drives what the user sees (its pages),
    so every learner is fitted on the same labels each round. The next page
    is the first ``page_size`` unlabelled items of the refined ranking: the
    results, then the near misses below the cut (the widget's view of them),
    topped up from the query's neighbours when those run out.
    While no positive is labelled there is nothing to refine: every learner
    returns an empty set that round and the next page is the next k-NN page.
    ``check`` > 0: after each refine the user also labels a random check of
    that many items (``Session.check``); every learner gets those labels
    too, and the default's row records what the check estimated of its
    results (``check_precision``, ``check_recall`` and their bounds).
    """
    truth = data.y == cls
    n_true = int(truth.sum())
    if n_true == 0:
        raise ValueError(f"{data.name}: class {cls} has no items")
    rng = np.random.default_rng([seed, cls])
    if data.queries is not None:
        query, query_kind = data.queries[cls], "text"
    else:
        query, query_kind = data.X[int(rng.choice(np.flatnonzero(truth)))], "example"
    order, tp = knn_curve(data.X, query, truth)
    knn_class = knn_prf(tp, n_true, n_true)
    features = catalogue.compressor.dequantize(catalogue.codes)
    # the default learner's session drives the pages; without one, the old default
    old = {"classifier": {"feature_subsets": "paper"}, "stage": None}
    kw = {} if any(lr.is_default for lr in learners) else old
    session = Session(catalogue, k=k, page_size=page_size, random_state=seed, n_jobs=1, **kw)
    shown = session.search(query).ids
    seed_page = knn_prf(tp, shown.size, n_true)
    rows = []
    default_at = next((j for j, lr in enumerate(learners) if lr.is_default), 0)
    for r in range(1, rounds + 1):
        _label_truly(session, shown, truth)
        labels = session.labels
        n_pos = sum(v > 0 for v in labels.values())
        labelled = np.zeros(len(data), bool)
        labelled[np.fromiter(labels, np.int64)] = True
        t0 = time.perf_counter()
        # no positive yet: nothing to refine; the user pages on through k-NN
        refined = session.refine() if n_pos else None
        ms_default = (time.perf_counter() - t0) * 1e3
        lab_ids = np.fromiter(labels, np.int64)
        knn_next = order[~labelled[order]][:page_size]
        for learner in learners:
            t0 = time.perf_counter()
            if refined is None:
                found, ms = np.zeros(0, np.int64), 0.0
                ranking = found
            elif learner.is_default:
                found, ms = refined.ids, ms_default
                ranking = found
            else:
                ranking, found = fit_result_set(
                    learner,
                    catalogue,
                    labels,
                    seed=seed,
                    round_=session.rounds - 1,
                    features=features,
                    query=query,
                    ranked=True,
                )
                ms = (time.perf_counter() - t0) * 1e3
            nxt = next_page(ranking, labelled, order, page_size)
            p, rec, f = prf(found, truth)
            kp, kr, kf = knn_prf(tp, found.size, n_true)
            # what the learner adds beyond the clicks: unlabelled items only
            fresh = found[~labelled[found]]
            n_fresh_true = n_true - n_pos
            tp_fresh = int(truth[fresh].sum())
            # what the user reads (the default's estimates), against the truth
            info = (refined.info or {}) if learner.is_default and refined is not None else {}
            est_p = info.get("expected_precision", np.nan) if fresh.size else np.nan
            rows.append(
                {
                    "dataset": data.name,
                    "codes": codes,
                    "class": data.class_names[cls],
                    "seed": seed,
                    "round": r,
                    "learner": learner.name,
                    "query": query_kind,
                    "positives": n_pos,
                    "labels": len(labels),
                    "class_size": n_true,
                    "size": int(found.size),
                    "precision": p,
                    "recall": rec,
                    "f1": f,
                    "knn_set_precision": kp,
                    "knn_set_recall": kr,
                    "knn_set_f1": kf,
                    "knn_class_f1": knn_class[2],
                    "new_precision": tp_fresh / fresh.size if fresh.size else 0.0,
                    "new_recall": tp_fresh / n_fresh_true if n_fresh_true else np.nan,
                    "added": int(fresh.size),
                    "est_precision": float(est_p),
                    "est_class_size": float(info.get("expected_class_size", np.nan)),
                    "knn_class_precision": knn_class[0],
                    "seed_page_f1": seed_page[2],
                    "next_precision": float(truth[nxt].mean()),
                    "knn_next_precision": float(truth[knn_next].mean()),
                    "positives_kept": bool(np.isin(lab_ids[truth[lab_ids]], found).all()),
                    "empty": bool(found.size == 0 and n_pos > 0),
                    "ms": ms,
                    **_check_columns(None),
                }
            )
        # the next page: what the user sees after this refine, the unlabelled
        # results and then the near misses (the widget's "near misses" view)
        ranked = np.zeros(0, np.int64)
        if refined is not None:
            near = refined.info.get("below_cut")
            ranked = refined.ids if near is None else np.concatenate([refined.ids, near])
        shown = next_page(ranked, labelled, order, page_size)
        if check and refined is not None and r < rounds:
            shown = _with_check(session, shown, truth, check)
            rows[-len(learners) + default_at].update(_check_columns(session.checked_quality()))
    return rows


_CHECK_KEYS = [f"check_{q}{e}" for q in ("precision", "recall") for e in ("", "_low", "_high")]


def _check_columns(est) -> dict:
    """The random check's estimates of the default's results (NaN without one)."""
    if est is None:
        return dict.fromkeys(_CHECK_KEYS, np.nan)
    values = [*est["precision"], *est["recall"]]
    return {k: float(v) for k, v in zip(_CHECK_KEYS, values)}


def _label_truly(session, ids, truth) -> None:
    """The simulated user's clicks: each shown item labelled by the ground truth."""
    session.label(ids[truth[ids]], 1)
    session.label(ids[~truth[ids]], -1)


def _with_check(session, shown, truth, n):
    """The next page and a random check of the results beyond it, both
    labelled: the page first, so the check draws from the rest."""
    _label_truly(session, shown, truth)
    try:
        drawn = session.check(n)
    except ValueError:  # every item is labelled
        return shown
    _label_truly(session, drawn, truth)
    return np.concatenate([shown, drawn])


def next_page(ranking, labelled, order, page_size):
    """The page a user sees next: the first ``page_size`` unlabelled items of
    ``ranking``, topped up from the query's neighbours ``order``."""
    nxt = ranking[~labelled[ranking]][:page_size]
    if nxt.size < page_size:
        more = order[~labelled[order] & ~np.isin(order, nxt)]
        nxt = np.concatenate([nxt, more[: page_size - nxt.size]])
    return nxt
