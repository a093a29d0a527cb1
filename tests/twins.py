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


def grow_box_twin(
    X, y, w, seed, dims, margin, min_margin, min_pts, cap_weight, half_range, prior_sigma
):
    """The box-growing step of DecisionBranchesClassifier, in numpy."""
    dims = np.asarray(dims)
    Z = X[:, dims].astype(np.int64)
    s = Z[seed]
    dist = np.abs(Z - s).max(axis=1)
    order = np.argsort(dist, kind="mergesort")
    wp_tot, wn_tot = w[y == 1].sum(), w[y == 0].sum()
    lo, hi = s.copy(), s.copy()
    best, best_lo, best_hi, best_q, best_pos, absorbed = np.inf, lo.copy(), hi.copy(), 0, 1, 0
    for q, i in enumerate(order):
        if min_pts > 0 and q - best_q > min_pts:
            break
        if y[i] != 1:
            continue
        absorbed += 1
        lo, hi = np.minimum(lo, Z[i]), np.maximum(hi, Z[i])
        inside = np.all((Z >= lo) & (Z <= hi), axis=1)
        if (inside & (y == 0) & (w >= cap_weight)).any():
            break
        g = split_gini(w[inside & (y == 1)].sum(), w[inside & (y == 0)].sum(), wp_tot, wn_tot)
        if g < best - 1e-12:
            best, best_lo, best_hi, best_q, best_pos = g, lo.copy(), hi.copy(), q, absorbed
    out_lo, out_hi = best_lo.copy(), best_hi.copy()
    for t in range(len(dims)):
        if best_pos >= 2:
            sigma = (best_hi[t] - best_lo[t]) / (2 * half_range[min(best_pos, len(half_range) - 1)])
        else:
            sigma = prior_sigma[dims[t]]
        half = margin * sigma
        mid = 0.5 * (best_lo[t] + best_hi[t])
        out_lo[t] = max(0, min(best_lo[t] - min_margin, int(np.floor(mid - half))))
        out_hi[t] = min(255, max(best_hi[t] + min_margin, int(np.ceil(mid + half))))
    for i in np.flatnonzero((y == 0) & (w >= cap_weight)):
        z = Z[i]
        if np.all((z >= out_lo) & (z <= out_hi)):
            gap = np.maximum(best_lo - z, z - best_hi)
            if gap.max() > 0:
                t = int(np.argmax(gap))
                if z[t] < best_lo[t]:
                    out_lo[t] = (z[t] + best_lo[t] + 1) // 2
                else:
                    out_hi[t] = (z[t] + best_hi[t]) // 2
    return out_lo, out_hi, best


def rank_twin(ids, votes, scores):
    keys = sorted(range(len(ids)), key=lambda r: (-int(votes[r]), -float(scores[r]), int(ids[r])))
    return np.array(keys, np.int64)
