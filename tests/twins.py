"""Plain-numpy twins of the numba kernels, written for clarity, not speed."""

import itertools

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


# ---- the index kernels (engine/search/index_kernels.py) ----


def cell_keys_twin(codes, s, dims, ksize, slots, strides):
    """(n,) cell of every row in subset ``s``'s grid (row-major, last dim fastest)."""
    key = np.zeros(codes.shape[0], np.int64)
    for t in range(int(ksize[s])):
        key += slots[s, t, codes[:, dims[s, t]]].astype(np.int64) * strides[s, t]
    return key


def plan_twin(offsets, base, k, first, last, strides, full):
    """Positions in full and in partial cells met by a box, and the cells met.

    Enumerates every cell of the box's slot ranges; a cell is full when all
    its slots lie inside the box.
    """
    full_pos, part_pos, cells = [], [], 0
    for combo in itertools.product(*[range(first[t], last[t] + 1) for t in range(k)]):
        cells += 1
        key = base + sum(g * strides[t] for t, g in enumerate(combo))
        positions = range(offsets[key], offsets[key + 1])
        inside = all(full[t, g] for t, g in enumerate(combo))
        (full_pos if inside else part_pos).extend(positions)
    return np.array(full_pos, np.int64), np.array(part_pos, np.int64), cells


def collect_twin(order, codes, run_start, run_stop, run_full, run_row, run_box, boxes_bounds):
    """Per run, the ids at its positions that lie in its box (all of them when full).

    ``boxes_bounds``: per box, a dict {dim: (lo, hi)}.
    """
    out = []
    for r in range(len(run_start)):
        ids = np.asarray(order[run_row[r], run_start[r] : run_stop[r]]).astype(np.int64)
        if not run_full[r]:
            keep = np.ones(ids.shape[0], bool)
            for j, (lo, hi) in boxes_bounds[run_box[r]].items():
                keep &= (codes[ids, j] >= lo) & (codes[ids, j] <= hi)
            ids = ids[keep]
        out.append(ids)
    return out


def compact_twin(src, src_off, counts):
    """The first ``counts[r]`` entries of each slice ``src[src_off[r]:]``, concatenated."""
    parts = [src[src_off[r] : src_off[r] + counts[r]] for r in range(len(counts))]
    return np.concatenate(parts) if parts else src[:0]


def accumulate_twin(ids, n):
    """(n,) number of times each id occurs."""
    return np.bincount(np.asarray(ids, np.int64), minlength=n)


def nonzero_twin(votes):
    """Ids of the non-zero votes, and those votes."""
    ids = np.flatnonzero(votes)
    return ids, votes[ids]


def kd_tree_twin(ref, wdim, leaf_size):
    """The k-d tree build of ``rescore._kd_tree``, recursive."""
    order, lo, hi, child, rows, dims = [], [], [], [], [], []
    filled = [0]

    def build(idx):
        node = len(lo)
        sub = ref[idx]
        lo.append(sub.min(0))
        hi.append(sub.max(0))
        child.append((-1, -1))
        rows.append((0, 0))
        span = wdim * (hi[node].astype(np.int64) - lo[node]) ** 2
        dims.append(int(np.argmax(span)))
        if idx.size <= leaf_size or span.max() == 0:
            order.append(idx)
            rows[node] = (filled[0], filled[0] + idx.size)
            filled[0] += idx.size
            return node
        o = idx[np.argsort(sub[:, dims[node]], kind="stable")]
        left = build(o[: o.size // 2])
        child[node] = (left, build(o[o.size // 2 :]))
        return node

    build(np.arange(ref.shape[0]))
    ref_idx = np.concatenate(order).astype(np.int64)
    return (
        np.ascontiguousarray(ref[ref_idx]),
        ref_idx,
        np.asarray(lo),
        np.asarray(hi),
        np.asarray(child, np.int64),
        np.asarray(rows, np.int64),
        np.asarray(dims, np.int64),
    )
