"""Plain-numpy twins of the numba kernels, written for clarity, not speed."""

import numpy as np


def votes_twin(codes, boxes):
    out = np.zeros(codes.shape[0], np.int64)
    for b in range(boxes.n_boxes):
        inside = np.all((codes >= boxes.lower[b]) & (codes <= boxes.upper[b]), axis=1)
        out += inside
    return out


def split_gini(wp_in, wn_in, wp_tot, wn_tot):
    def g(p, n):
        return 0.0 if p + n <= 0 else 2 * p * n / (p + n)
    return (g(wp_in, wn_in) + g(wp_tot - wp_in, wn_tot - wn_in)) / (wp_tot + wn_tot)


def grow_box_twin(X, y, w, seed, dims, margin, min_margin):
    """The box-growing step of DecisionBranchesClassifier, in numpy."""
    dims = np.asarray(dims)
    Z = X[:, dims].astype(np.int64)
    s = Z[seed]
    dist = np.abs(Z - s).max(axis=1)
    order = np.argsort(dist, kind="mergesort")
    wp_tot, wn_tot = w[y == 1].sum(), w[y == 0].sum()
    lo, hi = s.copy(), s.copy()
    best, best_lo, best_hi = np.inf, lo.copy(), hi.copy()
    for i in order:
        if y[i] != 1:
            continue
        lo, hi = np.minimum(lo, Z[i]), np.maximum(hi, Z[i])
        inside = np.all((Z >= lo) & (Z <= hi), axis=1)
        g = split_gini(w[inside & (y == 1)].sum(), w[inside & (y == 0)].sum(), wp_tot, wn_tot)
        if g < best - 1e-12:
            best, best_lo, best_hi = g, lo.copy(), hi.copy()
    out_lo, out_hi = best_lo.copy(), best_hi.copy()
    for t in range(len(dims)):
        extra = max(min_margin, int(np.ceil(margin * (best_hi[t] - best_lo[t]))))
        nlo, nhi = max(0, best_lo[t] - extra), min(255, best_hi[t] + extra)
        others = np.ones(len(dims), bool)
        others[t] = False
        slab = np.all((Z[:, others] >= best_lo[others]) & (Z[:, others] <= best_hi[others]), axis=1)
        negs = Z[slab & (y == 0), t]
        below = negs[(negs < best_lo[t]) & (negs >= nlo)]
        above = negs[(negs > best_hi[t]) & (negs <= nhi)]
        if below.size:
            nlo = (below.max() + best_lo[t] + 1) // 2
        if above.size:
            nhi = (above.min() + best_hi[t]) // 2
        out_lo[t], out_hi[t] = nlo, nhi
    return out_lo, out_hi, best


def rank_twin(ids, votes, scores):
    keys = sorted(range(len(ids)), key=lambda r: (-int(votes[r]), -float(scores[r]), int(ids[r])))
    return np.array(keys, np.int64)
