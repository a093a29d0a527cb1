"""Boxes for recall, a calibrated second stage for precision (issue 15).

``select`` turns the box candidates of one refine into the result set: score
every candidate with a neighbour vote and a logistic regression (see
``rescore``), combine the two, keep the user's positives and the unlabelled
candidates above the expected-F1 cut, rank by score, then similarity to the
query, then id. ``refine_set`` is what ``Session.refine`` calls: the same
function on the index path and the scan path (the same candidates), so both
give the same results.

How the two scores combine is chosen each round from the labels themselves
(``StageParams.combine="cv"``): every training item gets out-of-sample scores
(its vote leaves it out, the logistic uses its approximate leave-one-out
logit); the neighbourhood size and the share of the logistic with the lowest
Brier score on them win, and a one-feature logistic fitted on the
out-of-sample scores of the labelled items and of the background items among
the candidates recalibrates the result (Platt), since the expected-F1 cut
needs probabilities. The class size it needs is the labelled positives, the
scores of the candidates, and the logistic probability of the background
sample outside the boxes, scaled to the catalogue.

With ``StageParams(background_steps=n)`` the stage is fitted n + 1 times,
each refit with the background's targets set to the previous fit's
out-of-sample probabilities (the background sample is unlabelled, not
negative: EM steps of positive-unlabelled learning; not the default). The
cut (``cut="set"``, the default) maximises the expected F1 of the whole set,
the labelled positives counted, on the scores divided by the label frequency
c (``rescore.label_frequency``): the mean out-of-sample score of the labelled
positives, the factor by which fitting the unlabelled background as negative
shrinks every score (EVALUATION.md, finding 12).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..search.ranking import code_scores, ranked_order
from .rescore import (
    dimension_weights,
    expected_f1_cut,
    fit_logistic,
    knn_query,
    knn_tree,
    knn_votes,
    label_frequency,
    leaf_of,
    leaf_shares,
    linear_scores,
    logistic_code_model,
)

# one sigmoid and logit for the refine and its exported model: bit-identical scores
from .stage_model import StageModel, _clipped_logit, _sigmoid, fitted_stage
from .stage_params import DEFAULT_STAGE, StageParams

__all__ = ["DEFAULT_STAGE", "Selection", "StageParams", "member", "refine_set", "select"]


#: Fewest candidates below the cut a refine keeps, for the near-miss view and
#: a random check to draw from (``Selection.below``; as many as it added, when
#: more).
BELOW_MIN = 60


@dataclass
class Selection:
    ids: np.ndarray  # the result set, ranked
    scores: np.ndarray  # calibrated score p of each, in [0, 1]
    in_boxes: np.ndarray  # bool: inside at least one box (else a labelled positive)
    cut: float  # lowest score of a kept unlabelled item (1.0 when none)
    expected_precision: float  # of the kept unlabelled items (mean score)
    expected_class_size: float
    n_candidates: int
    combination: dict = field(default_factory=dict)  # this round's ks and coefficients
    index: np.ndarray = None  # position of each of ids among the candidates
    stage: dict = None  # what was fitted: the fields of a StageModel (stage_model.py)
    positive: np.ndarray = None  # bool: which of ids are labelled positives
    below: np.ndarray = None  # the unlabelled candidates ranked next below the cut
    below_scores: np.ndarray = None  # their scores


def member(ids, sorted_keys) -> np.ndarray:
    """Boolean mask: which of ``ids`` are in ``sorted_keys`` (sorted, unique).
    A binary search: np.isin hashes both arrays, which costs more here."""
    sorted_keys = np.asarray(sorted_keys, np.int64)
    ids = np.asarray(ids, np.int64)
    if sorted_keys.size == 0:
        return np.zeros(ids.shape, bool)
    if ids.ndim == 1 and 8 * sorted_keys.size < ids.size and np.all(ids[1:] >= ids[:-1]):
        # few keys in many sorted ids: find the keys' runs among the ids instead
        lo, hi = np.searchsorted(ids, sorted_keys), np.searchsorted(ids, sorted_keys, "right")
        out = np.zeros(ids.size + 1, np.int64)
        np.add.at(out, lo, 1)
        np.add.at(out, hi, -1)
        return np.cumsum(out[:-1]) > 0
    lo, hi = int(sorted_keys[0]), int(sorted_keys[-1])
    if min(ids.size, sorted_keys.size) > 4096 and hi - lo < 64 * (ids.size + sorted_keys.size):
        table = np.zeros(hi - lo + 1, bool)  # many against many: a lookup table
        table[sorted_keys - lo] = True
        inside = (ids >= lo) & (ids <= hi)
        out = np.zeros(ids.shape, bool)
        out[inside] = table[ids[inside] - lo]
        return out
    at = np.searchsorted(sorted_keys, ids).clip(0, sorted_keys.size - 1)
    return sorted_keys[at] == ids


def _rows_of(ids, keys):
    """Index of each of ``ids`` in ``keys`` (unique, non-empty), -1 where absent."""
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    at = np.searchsorted(sk, ids).clip(0, sk.size - 1)
    return np.where(sk[at] == ids, order[at], -1).astype(np.int64)


def _combiner(params, votes, eta, y, w, n_lab, calib):
    """``(ks, score(v, eta), recalibrated score or None, coefficients)`` of
    this round, from the training items' out-of-sample ``votes`` (ks ->
    array) and logits ``eta`` (labelled items first: ``n_lab`` of them).
    ``calib``: the rows the recalibration is fitted on, the labelled items and
    the background items among the candidates (these stand for the
    unlabelled candidates, whose share of positives falls as the user labels
    them)."""
    if params.combine == "mean":
        ks, lw = tuple(params.ks), float(params.logistic_weight)
    else:
        pl = _sigmoid(eta)
        grid = [(tuple(k), g) for k in params.k_grid for g in params.mix_grid]
        brier = [float(np.sum(w * ((1 - g) * votes[k] + g * pl - y) ** 2)) for k, g in grid]
        ks, lw = grid[int(np.argmin(brier))]
        lw = float(lw)

    def mix(v, e):
        return (1 - lw) * np.asarray(v, np.float64) + lw * _sigmoid(e)

    coef = {"ks": ks, "logistic_weight": lw}
    yl = y[:n_lab]
    if not params.calibrate or min(yl.sum(), yl.size - yl.sum()) < params.min_calibration:
        return ks, mix, None, coef  # too few of a class among the labels to calibrate on
    z = _clipped_logit(mix(votes[ks][calib], eta[calib]))
    a, b = fit_logistic(z[:, None], y[calib], w[calib])
    coef["platt"] = (float(b), float(a[0]))
    return ks, mix, (lambda v, e: _sigmoid(b + a[0] * _clipped_logit(mix(v, e)))), coef


@dataclass
class _Context:
    """What every fit of one ``select`` shares: the training items, their
    neighbours (the targets change between fits, the neighbours do not) and
    the candidates."""

    compressor: object
    options: set  # the neighbourhoods whose votes the combination may use
    tc: np.ndarray  # training codes
    wdim: np.ndarray  # integer dimension weights of the distances
    tree: tuple
    K: int
    nb: np.ndarray  # out-of-sample neighbours of the training rows ``fit_rows``
    w: np.ndarray
    fit_rows: np.ndarray
    n_lab: int
    near: np.ndarray  # bool per training item: labelled, or a candidate
    cc: np.ndarray  # candidate codes
    c_row: np.ndarray  # training row of each candidate, -1 when none
    lab_c: np.ndarray  # bool per candidate: labelled
    out_rows: np.ndarray  # background rows outside the boxes
    n_pos: float  # labelled positives
    n_out: int  # catalogue items outside the candidates
    fresh: np.ndarray  # the candidates that are not training items
    _cache: dict = field(default_factory=dict)  # searches of the candidates, done once

    def fresh_leaves(self) -> np.ndarray:
        """The leaf of the tree each candidate outside the training set
        descends to (searched once: the targets change, the tree does not)."""
        if "leaves" not in self._cache:
            self._cache["leaves"] = leaf_of(self.cc, self.fresh, self.tree)
        return self._cache["leaves"]

    def fresh_neighbours(self, k: int) -> np.ndarray:
        """The k nearest training items of the candidates outside the training
        set, searched once per k: its first k of any larger K (ties by index)
        are the same, so only the chosen neighbourhood is searched."""
        if k not in self._cache:
            self._cache[k] = knn_query(self.cc, self.fresh, self.tree, k, exact=True)
        return self._cache[k]


@dataclass
class _Fit:
    ks: tuple
    coef: dict
    a: np.ndarray
    b: float
    eta: np.ndarray  # out-of-sample logits of the training items
    v_c: np.ndarray  # votes of the candidates
    e_c: np.ndarray  # logits of the candidates
    p: np.ndarray  # the candidates' final scores
    extra: float  # the class size outside the unlabelled candidates
    final: object  # score(votes, logits) -> the scores p (recalibrated or not)
    votes_fit: np.ndarray  # out-of-sample votes of the training rows ``fit_rows``
    targets: np.ndarray  # the training targets this fit used

    def q_fit(self, fit_rows) -> np.ndarray:
        """Out-of-sample probabilities of the training rows ``fit_rows``."""
        return self.final(self.votes_fit, self.eta[fit_rows])


def _n_outside(n_items, box_ids, labelled) -> int:
    """Catalogue items neither box matches nor labelled."""
    n_lab_out = np.asarray(labelled).size - int(member(labelled, box_ids).sum())
    return max(int(n_items) - np.asarray(box_ids).size - n_lab_out, 0)


def _fit_once(ctx: _Context, params: StageParams, y) -> _Fit:
    """One fit of the second stage on the training targets ``y``."""
    fr, w = ctx.fit_rows, ctx.w
    votes_fit = {ks: knn_votes(ctx.nb, y, w, ks) for ks in ctx.options}
    # the logistic over the whole training set; out-of-sample logits of its items
    a, b, eta = logistic_code_model(ctx.compressor, ctx.tc, y, w, params.lam, loo=True)
    n_lab_fit = int((fr < ctx.n_lab).sum())
    ks, score, calibrated, coef = _combiner(
        params, votes_fit, eta[fr], y[fr], w[fr], n_lab_fit, ctx.near[fr]
    )
    known = ctx.c_row >= 0
    e_c = linear_scores(ctx.cc, np.arange(ctx.cc.shape[0], dtype=np.int64), a, b)
    e_c[known] = eta[ctx.c_row[known]]
    v_c = np.zeros(ctx.cc.shape[0])
    v_c[known] = votes_fit[ks][np.searchsorted(fr, ctx.c_row[known])]
    fresh = ctx.fresh
    if coef["logistic_weight"] < 1 and fresh.size:  # the votes count: the other candidates
        exact = fresh.size <= params.exact_limit
        coef["exact_neighbours"] = exact
        if exact:
            v_c[fresh] = knn_votes(ctx.fresh_neighbours(min(ctx.K, max(ks))), y, w, ks)
        else:  # many candidates: the positive share of each one's leaf of the tree
            v_c[fresh] = leaf_shares(ctx.tree, y, w)[ctx.fresh_leaves()]
    # the class size outside the candidates: the logistic probability of the
    # background sample (uniform over the catalogue) that lies outside, scaled
    extra = ctx.n_pos
    if ctx.out_rows.size:
        extra += float(_sigmoid(eta[ctx.out_rows]).sum()) * ctx.n_out / ctx.out_rows.size
    p, final = score(v_c, e_c), score
    if calibrated is not None:
        # the labels' share of positives stands for the unlabelled candidates'
        # only while most of the class is still unlabelled
        if ctx.n_pos <= params.calibration_share * (extra + float(p[~ctx.lab_c].sum())):
            p, final = calibrated(v_c, e_c), calibrated
        else:
            coef.pop("platt")
    return _Fit(ks, coef, a, b, eta, v_c, e_c, p, extra, final, votes_fit[ks], y)


def select(
    codes,
    compressor,
    candidates,
    box_ids,
    train_ids,
    y,
    w,
    positives,
    labelled,
    similarity_fn,
    n_items: int,
    params: StageParams = DEFAULT_STAGE,
    in_box=None,
) -> Selection:
    """The ranked result set of one refine.

    ``candidates``: box matches plus the labelled positives (sorted ids);
    ``box_ids``: the box matches alone (sorted); ``train_ids, y, w``: the
    training set (labelled items first, then background); ``positives`` /
    ``labelled``: labelled positive ids / all labelled ids (both sorted);
    ``similarity_fn(rows)``: the similarity that breaks score ties, of the
    candidates' code rows (in candidate order);
    ``n_items``: catalogue size; ``in_box``: which candidates are box matches
    (default: looked up in ``box_ids``).

    Training items are scored out of sample everywhere (votes leave the item
    out, the logistic uses its approximate leave-one-out logit), so a
    background item among the candidates does not vote for itself.
    """
    candidates = np.asarray(candidates, np.int64)
    train_ids = np.asarray(train_ids, np.int64)
    y = np.asarray(y, np.float64)
    ctx = _context(
        codes, compressor, candidates, box_ids, train_ids, w, positives, labelled, n_items, params
    )
    # background_steps: the background sample is unlabelled, not negative;
    # after each fit its items' targets become that fit's out-of-sample
    # probabilities (an EM step of positive-unlabelled learning)
    targets = y
    for step in range(params.background_steps + 1):
        fit = _fit_once(ctx, params, targets)
        if step < params.background_steps:
            soft = ctx.fit_rows >= ctx.n_lab
            targets = y.copy()
            targets[ctx.fit_rows[soft]] = fit.q_fit(ctx.fit_rows)[soft]
    p = fit.p
    order = ranked_order(p, similarity_fn(ctx.cc), candidates)
    cand, p = candidates[order], p[order]
    un = np.flatnonzero(~ctx.lab_c[order])
    # "set" (the default): the F1 of the whole set, the labelled positives it
    # always holds counted; "added": of the added items alone
    known = ctx.n_pos if params.cut == "set" else 0.0
    # the background is fitted as negative but holds unlabelled positives, so
    # every score under-counts them, by about the labelled positives' score c
    fr = ctx.fit_rows
    pos = (fr < ctx.n_lab) & (fit.targets[fr] == 1)
    c = (
        label_frequency(fit.q_fit(fr)[pos], params.min_calibration)
        if params.label_frequency
        else 1.0
    )
    fit.coef["label_frequency"] = c
    p_cut = np.minimum(p[un] / c, 1.0) if c < 1 else p[un]
    m, prec, n_class = expected_f1_cut(p_cut, ctx.n_pos + (fit.extra - ctx.n_pos) / c, known)
    pos_c = member(candidates, positives)
    keep = pos_c[order]
    keep[un[:m]] = True
    index = order[keep]
    cut = float(p[un[m - 1]]) if m else 1.0
    in_box = member(candidates, box_ids) if in_box is None else np.asarray(in_box, bool)
    stage = fitted_stage(
        train_ids,
        fit.targets,
        ctx.w,
        ctx.wdim,
        ctx.K,
        fit.coef,
        fit.a,
        fit.b,
        candidates,
        ctx.c_row,
        fit.v_c,
        fit.e_c,
        ctx.tree,
        m,
        cut,
    )
    return Selection(
        cand[keep],
        p[keep].astype(np.float32),
        in_box[index],
        cut,
        prec,
        n_class,
        int(candidates.size),
        fit.coef,
        index,
        stage,
        pos_c[index],
        cand[un[m : m + max(m, BELOW_MIN)]],
        p[un[m : m + max(m, BELOW_MIN)]].astype(np.float32),
    )


def _context(
    codes, compressor, candidates, box_ids, train_ids, w, positives, labelled, n_items, params
):
    """The training items, their tree and out-of-sample neighbours, and the
    candidates: what every fit of one ``select`` shares."""
    # one gather of the candidates' codes: every kernel below then reads
    # contiguous rows (a scattered row of a big catalogue is a cache miss);
    # np.take copies whole rows, 4-6x faster than fancy indexing (258k rows
    # of a 10M catalogue: 1.4 ms against 5-9 ms)
    cc = np.ascontiguousarray(np.take(codes, candidates, axis=0))
    options = {tuple(int(k) for k in params.ks)}
    if params.combine == "cv":
        options = {tuple(int(k) for k in ks) for ks in params.k_grid}
    n_lab = np.asarray(labelled).size
    bg_rows = np.arange(n_lab, train_ids.size)
    wdim = dimension_weights(compressor, codes.shape[1])
    K = min(max(max(ks) for ks in options), max(1, train_ids.size - 1))
    tc = np.ascontiguousarray(np.take(codes, train_ids, axis=0))
    tree = knn_tree(tc, wdim)
    # the rows that fit the combination (their votes leave them out): every
    # training item ("cv"), or the labelled ones and the background among the
    # candidates; the recalibration fits on the latter, which stand for the
    # candidates it scores
    c_row = _rows_of(candidates, train_ids)
    is_cand = np.zeros(train_ids.size, bool)
    is_cand[c_row[c_row >= 0]] = True
    near = (np.arange(train_ids.size) < n_lab) | is_cand
    fit_rows = np.arange(train_ids.size) if params.combine == "cv" else np.flatnonzero(near)
    # exact votes where the score is used (labelled items, candidates); the
    # background far from every box (only fitting the combination, and voting
    # ~0 among its own kind) by its own leaf of the tree, which is cheap
    exact_fit = near[fit_rows]
    nb = np.empty((fit_rows.size, K), np.int64)
    for exact in (True, False):
        rows = fit_rows[exact_fit == exact]
        nb[exact_fit == exact] = knn_query(tc, rows, tree, K, rows, exact=exact)
    return _Context(
        compressor=compressor,
        options=options,
        tc=tc,
        wdim=wdim,
        tree=tree,
        K=K,
        nb=nb,
        w=np.asarray(w, np.float64),
        fit_rows=fit_rows,
        n_lab=n_lab,
        near=near,
        cc=cc,
        c_row=c_row,
        lab_c=member(candidates, labelled),
        out_rows=bg_rows[~member(train_ids[bg_rows], box_ids)],
        n_pos=float(np.asarray(positives).size),
        n_out=_n_outside(n_items, box_ids, labelled),
        fresh=np.flatnonzero(c_row < 0),
    )


def refine_set(
    catalogue, found, train_ids, y, w, n_boxes, labels, reference, query_vector, page_size, params
):
    """``(ids, votes, scores, info)`` of a refine: ``found`` (the box search)
    through ``select``. With no box worth keeping the candidates are the
    positives and the nearest neighbours of their mean (and of the query's
    ``query_vector``), flagged in ``info["fallback"]``."""
    pos = np.sort(np.array([i for i, v in labels.items() if v > 0], np.int64))
    labelled = np.sort(np.fromiter(labels, np.int64, len(labels)))
    found_ids = np.asarray(found.ids, np.int64)
    sorted_ids = bool(np.all(found_ids[1:] > found_ids[:-1]))  # searches return id order
    box_ids = found_ids if sorted_ids else np.sort(found_ids)
    fallback, extra = None, pos
    if n_boxes == 0:
        fallback = "no box kept: the positives and their nearest neighbours"
        v = catalogue.vector(pos).mean(axis=0)
        if query_vector is not None:
            v = (v + query_vector) / 2
        v = np.asarray(v / max(float(np.linalg.norm(v)), 1e-12), np.float32)
        _, nn = catalogue.seeder.search(v, min(page_size, len(catalogue)))
        extra = np.union1d(pos, nn[nn >= 0])
    # the candidates: the box matches, with the extra items inserted in id order
    extra = extra[~member(extra, box_ids)]
    at = np.searchsorted(box_ids, extra)
    candidates = np.insert(box_ids, at, extra)
    in_box = np.ones(candidates.size, bool)
    in_box[at + np.arange(extra.size)] = False
    sel = select(
        catalogue.codes,
        catalogue.compressor,
        candidates,
        box_ids,
        train_ids,
        y,
        w,
        pos,
        labelled,
        lambda rows: code_scores(rows, np.arange(len(rows)), catalogue.compressor, reference),
        len(catalogue),
        params,
        in_box,
    )
    comp = catalogue.compressor
    model = StageModel(
        **sel.stage,
        extra_ids=extra,
        positives=pos,
        labelled=labelled,
        reference=np.asarray(reference, np.float64),
        scale=np.asarray(comp.scale_, np.float64),
        low=np.asarray(comp.low_, np.float64),
    )
    votes_c = np.zeros(candidates.size, np.int64)
    box_votes = np.asarray(found.votes, np.int64)
    votes_c[in_box] = box_votes if sorted_ids else box_votes[np.argsort(found_ids, kind="stable")]
    votes = votes_c[sel.index]
    is_pos = sel.positive
    accept_cut = min(sel.cut, 0.5)  # a positive scored at least even odds is accepted too
    accepted = sel.in_boxes[is_pos] & (sel.scores[is_pos] >= accept_cut)
    info = {
        "n_positives": int(pos.size),
        "accepted_positives": int(accepted.sum()),
        "accept_cut": accept_cut,
        # which positives the model itself accepts (inside a box and scored at
        # or above the cut): the summary's count and each item's details agree
        "accepted_ids": np.sort(sel.ids[is_pos][accepted]),
        "expected_precision": sel.expected_precision,
        "expected_class_size": sel.expected_class_size,
        "n_candidates": sel.n_candidates,
        "cut": sel.cut,
        "combination": sel.combination,
        "fallback": fallback,
        # the items that just missed: the near-miss view, and where a random
        # check draws its second stratum (Session.check)
        "below_cut": sel.below,
        "below_scores": sel.below_scores,
        # the fitted second stage, as data: session files store it, SQL runs it
        "stage_model": model,
    }
    return sel.ids, votes, sel.scores, info
