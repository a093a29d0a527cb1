"""Refine rounds on synthetic clustered codes: ours against the alternatives.

    python benchmarks/refine.py [--sizes 1000000 10000000] [--trials 3]

Data: n items from 200 Gaussian clusters in 32 dims quantised to uint8
(engine/synthetic.py); a concept = 3 clusters (~1.5 % of the items).
Training, as a user's refine round: 30 positives + 30 negatives of the
concept's ground truth, plus 1000 random background items as negatives (which
include ~15 unlabelled positives). Printed side by side in one run:

* ours: a full ``Session.refine()`` round (fit + whole-catalogue inference +
  the second stage over the box candidates + ranking) and the first page,
  with the step timings;
* the old default in the same run (the paper's subsets, boxes alone);
* scikit-learn DecisionTreeClassifier and RandomForestClassifier(25 trees)
  fit on the same training set and weights, then predict over the catalogue;
* a plain-numpy vectorised scan of our boxes (``Boxes.votes``);
* the bagged ensemble (``BaggedBranchesClassifier``: 9 of the refine's
  branch models, a majority of estimators), fit + ``search`` (the union of
  the boxes once, then estimator votes over the candidates) + ranking by
  votes, then similarity, then id;
* the scan's throughput in GB/s of codes.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

from clipbranches_widget import Catalogue, Session, warmup
from clipbranches_widget.engine.learn.ensemble import BaggedBranchesClassifier
from clipbranches_widget.engine.search.ranking import code_scores, rank
from clipbranches_widget.engine.search.scan import scan
from clipbranches_widget.evaluation.synthetic import clustered_codes, identity_compressor
from clipbranches_widget.session import REFINE_CLASSIFIER


def prf(found_ids, truth):
    tp = truth[found_ids].sum()
    p = tp / max(len(found_ids), 1)
    r = tp / max(truth.sum(), 1)
    return p, r, 2 * p * r / max(p + r, 1e-12)


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, (time.perf_counter() - t) * 1e3


def one_size(n, spread, trials, alternatives, rows):
    codes, cluster, concept = clustered_codes(n, spread=spread, random_state=0)
    truth = np.isin(cluster, concept)
    cat = Catalogue(codes, compressor=identity_compressor())
    for trial in range(trials):
        rng = np.random.default_rng(100 + trial)
        pos = rng.choice(np.flatnonzero(truth), 30, replace=False)
        neg = rng.choice(np.flatnonzero(~truth), 30, replace=False)
        for name, kw in (
            ("ours: Session.refine + page", {}),
            (
                "old default (boxes only, paper subsets)",
                {"classifier": {"feature_subsets": "paper"}, "stage": None},
            ),
        ):
            s = Session(cat, random_state=trial, **kw)
            s.label(pos, 1)
            s.label(neg, -1)
            if trial == 0:
                warmup.wait()  # the session's background compile must not share the timed rounds
                s.refine()  # JIT warm-up (cached on disk after the first run)
            t0 = time.perf_counter()
            res = s.refine()
            page = s.page(0)
            total = (time.perf_counter() - t0) * 1e3
            assert page.count == min(60, res.count)
            p, r, f = prf(res.ids, truth)
            tm = res.timings
            note = f"{s.model.boxes_.n_boxes} boxes, rank {tm['rank_ms']:.1f} ms"
            if "n_candidates" in res.info:
                note += f" (second stage over {res.info['n_candidates']} candidates)"
            rows.append((n, spread, name, total, tm["fit_ms"], tm["search_ms"], p, r, f, note))
        s = Session(cat, random_state=trial)  # the boxes of our default, for the scans
        s.label(pos, 1)
        s.label(neg, -1)
        res = s.refine()
        _, t_scan = timed(scan, codes, s.model.boxes_)
        rows.append(
            (
                n,
                spread,
                "ours: scan alone",
                t_scan,
                0,
                t_scan,
                p,
                r,
                f,
                f"{codes.nbytes / t_scan / 1e6:.2f} GB/s",
            )
        )
        votes, t_np = timed(s.model.boxes_.votes, codes)
        # the result set: the box matches the second stage keeps, and the positives
        assert np.isin(res.ids[votes[res.ids] == 0], pos).all()
        rows.append((n, spread, "plain-numpy scan of our boxes", t_np, 0, t_np, p, r, f, ""))
        rows.append(bagged_row(cat, s, truth, n, spread, trial))
        if not alternatives:
            continue
        ids, y, w = s.training_set()
        for name, model in (
            ("sklearn DecisionTree", DecisionTreeClassifier(random_state=0)),
            ("sklearn RandomForest(25)", RandomForestClassifier(25, n_jobs=2, random_state=0)),
        ):
            _, t_fit = timed(model.fit, codes[ids], y, sample_weight=w)
            pred, t_pred = timed(model.predict, codes)
            p2, r2, f2 = prf(np.flatnonzero(pred), truth)
            rows.append((n, spread, name, t_fit + t_pred, t_fit, t_pred, p2, r2, f2, ""))


def bagged_row(cat, s, truth, n, spread, trial):
    """Fit the ensemble on the session's training set, search, rank."""
    ids, y, w = s.training_set()
    model = BaggedBranchesClassifier(random_state=trial, estimator_params=REFINE_CLASSIFIER)
    if trial == 0:  # JIT warm-up
        model.fit(cat.codes[ids], y, sample_weight=w).search(cat)
    t0 = time.perf_counter()
    model.fit(cat.codes[ids], y, sample_weight=w)
    t1 = time.perf_counter()
    found = model.search(cat)
    sim = code_scores(cat.codes, found.ids, cat.compressor, s._reference())
    ranked = found.ids[rank(found.ids, found.votes, sim)]
    t2 = time.perf_counter()
    p, r, f = prf(ranked, truth)
    note = (
        f"{model.boxes_.n_boxes} boxes in 9 estimators, "
        f"{found.info['n_candidates']} candidates, {found.path}"
    )
    return (
        n,
        spread,
        "bagged branches (9, majority)",
        (t2 - t0) * 1e3,
        (t1 - t0) * 1e3,
        (t2 - t1) * 1e3,
        p,
        r,
        f,
        note,
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--spreads", type=float, nargs="+", default=[4.0, 8.0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--no-alternatives", action="store_true")
    args = ap.parse_args(argv)
    import numba

    print(
        f"# {time.strftime('%Y-%m-%d')} {platform.processor() or platform.machine()}, "
        f"numba threads {numba.get_num_threads()}"
    )
    rows = []
    for n in args.sizes:
        for spread in args.spreads:
            one_size(n, spread, args.trials, not args.no_alternatives, rows)
    # mean over trials, per (n, spread, method)
    keys = list(dict.fromkeys((r[0], r[1], r[2]) for r in rows))
    print(
        "| n | spread | method | round ms | fit ms | inference ms | precision | recall | F1 "
        "| note |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key in keys:
        sel = [r for r in rows if (r[0], r[1], r[2]) == key]
        m = np.mean([r[3:9] for r in sel], axis=0)
        print(
            f"| {key[0]:,} | {key[1]:g} | {key[2]} | {m[0]:.1f} | {m[1]:.1f} | {m[2]:.1f} | "
            f"{m[3]:.3f} | {m[4]:.3f} | {m[5]:.3f} | {sel[-1][9]} |"
        )


if __name__ == "__main__":
    main()
