"""Second stage of a refine: the kernels (issue 15).

The boxes give recall and pruning: the index returns their union, the
*candidates* (about 1 % of a catalogue). The second stage (``twostage``)
scores only the candidates, with two estimators fitted on the training set
of the boxes (labels + background negatives, with their sample weights):

* a weighted vote of the K nearest training items over the codes (squared L2
  of the dequantised codes, computed exactly: each dimension weighs 1 /
  scale^2 rounded to 1/256 of the largest, see ``dimension_weights``), found
  by an exact k-d tree search (``knn_tree``, ``knn_query``);
* an L2-regularised logistic regression on the standardised dequantised
  codes (``logistic_code_model``): a linear score over the 32 code columns,
  so one SQL expression; with its approximate leave-one-out logits.

The result set is cut where the expected F1 is highest (``f1_cut``). Numba
kernels only see arrays; tests/engine/learn/test_twostage.py holds the
plain-numpy twins they are compared with.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from threadpoolctl import ThreadpoolController

from .._parallel import KERNEL, PARALLEL

_BLAS = []  # one ThreadpoolController, made on first use (it scans the loaded libraries)


def _one_blas_thread():
    """Tiny matrices: threaded BLAS only waits on busy cores (and on numba's)."""
    if not _BLAS:
        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


__all__ = [
    "dimension_weights",
    "expected_f1_cut",
    "f1_cut",
    "fit_logistic",
    "knn_order",
    "knn_query",
    "knn_tree",
    "knn_votes",
    "label_frequency",
    "leaf_of",
    "leaf_shares",
    "linear_scores",
    "logistic_code_model",
]


def dimension_weights(compressor, n_features: int = 32) -> np.ndarray:
    """(d,) int32 weights: squared L2 of dequantised codes ~ sum w_j (c_j - c'_j)^2.

    Dequantisation is ``code / scale + low``, so a dimension's weight is
    1 / scale^2, rounded to 1/256 of the largest (at least 1): distances are
    exact integers (no float ties, the same on every path and in SQL).
    """
    scale = np.asarray(getattr(compressor, "scale_", np.ones(n_features)), np.float64)
    inv = 1.0 / np.maximum(scale, 1e-12) ** 2
    return np.maximum(1, np.rint(256.0 * inv / inv.max())).astype(np.int32)


@njit(**KERNEL)
def _offer(j, s, best_d, best_i):
    """Insert reference ``j`` at distance ``s`` into the K best, kept sorted by
    (distance, index): ties keep the lower reference index."""
    K = best_d.shape[0]
    if s > best_d[K - 1] or (s == best_d[K - 1] and j > best_i[K - 1]):
        return
    pos = K - 1
    while pos > 0 and (best_d[pos - 1] > s or (best_d[pos - 1] == s and best_i[pos - 1] > j)):
        best_d[pos] = best_d[pos - 1]
        best_i[pos] = best_i[pos - 1]
        pos -= 1
    best_d[pos] = s
    best_i[pos] = j


# float32 sums of the weighted squared code differences: every term is an
# integer below 2^24 (256 * 255^2), so only the additions round, by at most
# 31 * 2^-24 of the sum. A float32 sum above (1 + SLACK) * bound therefore
# proves the exact sum is above the bound; the rest are summed exactly.
SLACK = 1e-5
# reordering the sums (to vectorise them) changes nothing: float64 sums of
# integers below 2^53 are exact, and SLACK covers the float32 ones
EXACT_SUMS = {"reassoc", "contract"}


@njit(**KERNEL, fastmath=EXACT_SUMS)
def _box_bound(q, lo, hi, wdim):
    """Weighted squared distance from ``q`` to the box [lo, hi] (float32): a
    lower bound of the distance to every point inside."""
    s = np.float32(0.0)
    for c in range(q.shape[0]):
        g = max(lo[c] - q[c], q[c] - hi[c], np.float32(0.0))
        s += wdim[c] * g * g
    return s


@njit(**PARALLEL, fastmath=EXACT_SUMS)
def _knn_order(
    codes,
    query_ids,
    ref,
    ref_idx,
    node_lo,
    node_hi,
    node_child,
    node_rows,
    node_dim,
    wdim,
    exclude,
    K,
    exact,
    out,
):
    # A k-d tree over ``ref``: node n has the bounding box node_lo/hi[n] of its
    # rows, split dimension node_dim[n], children node_child[n] (-1 for a
    # leaf) and, for a leaf, the rows node_rows[n, 0]..node_rows[n, 1]. Depth
    # first, nearer child first; a subtree is skipped when a lower bound of
    # its distance (the distance to its box, or its parent's) is above the
    # K-th best so far, so the result is the exact K nearest (``exact``; else
    # only the query's own leaf is searched). Distances: vectorised
    # float32 first, exact float64 (integers below 2^53) for the rows the
    # float32 sum cannot rule out.
    d = ref.shape[1]
    nq = query_ids.shape[0]
    chunk = 256
    hold = 1.0 + SLACK
    for ch in prange((nq + chunk - 1) // chunk):
        best_d = np.empty(K)
        best_i = np.empty(K, np.int64)
        q = np.empty(d, np.float32)
        stack = np.empty(128, np.int64)
        bound = np.empty(128)
        for r in range(ch * chunk, min(nq, (ch + 1) * chunk)):
            for c in range(d):
                q[c] = codes[query_ids[r], c]
            best_d[:] = np.inf
            best_i[:] = np.iinfo(np.int64).max
            stack[0] = 0
            bound[0] = 0.0
            top = 1
            while top > 0:
                top -= 1
                node = stack[top]
                lb = bound[top]
                if lb > hold * best_d[K - 1]:
                    continue
                left = node_child[node, 0]
                if left >= 0:
                    right = node_child[node, 1]
                    c = node_dim[node]
                    # nearer child first: the side of the split q lies on
                    if node_lo[right, c] - q[c] >= q[c] - node_hi[left, c]:
                        near, far = left, right
                    else:
                        near, far = right, left
                    if exact:
                        stack[top] = far
                        bound[top] = max(lb, _box_bound(q, node_lo[far], node_hi[far], wdim))
                        top += 1
                    stack[top] = near
                    bound[top] = lb
                    top += 1
                    continue
                if _box_bound(q, node_lo[node], node_hi[node], wdim) > hold * best_d[K - 1]:
                    continue
                for row in range(node_rows[node, 0], node_rows[node, 1]):
                    s32 = np.float32(0.0)
                    for c in range(d):
                        diff = q[c] - ref[row, c]
                        s32 += wdim[c] * diff * diff
                    j = ref_idx[row]
                    if s32 > hold * best_d[K - 1] or j == exclude[r]:
                        continue
                    s = 0.0
                    for c in range(d):
                        e = np.float64(q[c]) - np.float64(ref[row, c])
                        s += np.float64(wdim[c]) * e * e
                    if s <= best_d[K - 1]:
                        _offer(j, s, best_d, best_i)
            for t in range(K):
                out[r, t] = best_i[t] if best_d[t] < np.inf else -1


@njit(**KERNEL)
def _kd_build(ref, wdim, leaf_size, perm, order, lo, hi, child, rows, dims):
    # the recursive build (split at the median of the widest weighted
    # dimension, left subtree first) with an explicit stack: nodes are
    # numbered in the same pre-order and leaves filled in the same order
    n, d = ref.shape
    st_s = np.empty(n + 64, np.int64)
    st_e = np.empty(n + 64, np.int64)
    st_parent = np.empty(n + 64, np.int64)
    st_side = np.empty(n + 64, np.int64)
    st_s[0], st_e[0], st_parent[0], st_side[0] = 0, n, -1, 0
    top, node, filled = 1, 0, 0
    while top:
        top -= 1
        s, e, parent, side = st_s[top], st_e[top], st_parent[top], st_side[top]
        if parent >= 0:
            child[parent, side] = node
        for j in range(d):
            a = ref[perm[s], j]
            b = a
            for t in range(s + 1, e):
                v = ref[perm[t], j]
                a = min(a, v)
                b = max(b, v)
            lo[node, j] = a
            hi[node, j] = b
        best, dim = np.int64(-1), 0
        for j in range(d):
            span = wdim[j] * (np.int64(hi[node, j]) - np.int64(lo[node, j])) ** 2
            if span > best:
                best, dim = span, j
        dims[node] = dim
        child[node, 0] = -1
        child[node, 1] = -1
        if e - s <= leaf_size or best == 0:
            order[filled : filled + e - s] = perm[s:e]
            rows[node, 0] = filled
            rows[node, 1] = filled + e - s
            filled += e - s
        else:
            idx = perm[s:e].copy()
            col = np.empty(e - s, np.int64)
            for t in range(e - s):
                col[t] = ref[idx[t], dim]
            perm[s:e] = idx[np.argsort(col, kind="mergesort")]  # stable
            mid = s + (e - s) // 2
            st_s[top], st_e[top], st_parent[top], st_side[top] = mid, e, node, 1
            st_s[top + 1], st_e[top + 1], st_parent[top + 1], st_side[top + 1] = s, mid, node, 0
            top += 2
        node += 1
    return node


def _kd_tree(ref, wdim, leaf_size):
    """A k-d tree of ``ref`` (split at the median of the widest weighted
    dimension) with leaves of at most ``leaf_size`` rows: ``(rows in leaf
    order, their reference indices, node box lows, highs, children, leaf
    rows, split dimensions)``."""
    n, d = ref.shape
    cap = 2 * n + 1  # a binary tree with at most n leaves
    order = np.empty(n, np.int64)
    lo, hi = np.empty((cap, d), np.uint8), np.empty((cap, d), np.uint8)
    child, rows = np.empty((cap, 2), np.int64), np.zeros((cap, 2), np.int64)
    dims = np.empty(cap, np.int64)
    perm = np.arange(n, dtype=np.int64)
    m = _kd_build(ref, wdim, max(int(leaf_size), 1), perm, order, lo, hi, child, rows, dims)
    return (
        np.ascontiguousarray(ref[order]),
        order,
        lo[:m].copy(),
        hi[:m].copy(),
        child[:m].copy(),
        rows[:m].copy(),
        dims[:m].copy(),
    )


def knn_tree(ref_codes, wdim, leaf_size: int = 32):
    """The reference items as a k-d tree for ``knn_query``."""
    ref = np.ascontiguousarray(ref_codes, np.uint8)
    wdim = np.ascontiguousarray(wdim, np.int64)
    if ref.shape[0] == 0:
        return None
    sref, ref_idx, lo, hi, child, rows, dims = _kd_tree(ref, wdim, int(leaf_size))
    f = np.float32  # exact for codes and weights (integers below 2^24)
    return (sref.astype(f), ref_idx, lo.astype(f), hi.astype(f), child, rows, dims, wdim.astype(f))


def knn_query(codes, query_ids, tree, K, exclude=None, exact: bool = True) -> np.ndarray:
    """(len(query_ids), K) indices into the reference items of ``tree`` of
    each query item's K nearest, nearest first (ties: lower index; -1 pads
    when there are fewer than K). ``exclude[r]``: a reference query r skips.
    ``exact=False``: the K nearest within the query's own leaf only (no
    backtracking: a fixed, cheap neighbourhood, the same for a query
    whatever the other queries)."""
    query_ids = np.ascontiguousarray(query_ids, np.int64)
    ex = (
        np.full(query_ids.size, -1, np.int64)
        if exclude is None
        else np.ascontiguousarray(exclude, np.int64)
    )
    out = np.full((query_ids.size, int(K)), -1, np.int64)
    if query_ids.size and tree is not None and K > 0:
        _knn_order(codes, query_ids, *tree, ex, int(K), bool(exact), out)
    return out


def knn_order(codes, query_ids, ref_codes, wdim, K, exclude=None, leaf_size: int = 32):
    """``knn_query`` against ``ref_codes``; ``leaf_size`` only changes the speed."""
    return knn_query(codes, query_ids, knn_tree(ref_codes, wdim, leaf_size), K, exclude)


@njit(**PARALLEL)
def _leaf_of(codes, query_ids, node_lo, node_hi, node_child, node_dim, out):
    # the descent of ``_knn_order`` (nearer child first) without backtracking
    for r in prange(query_ids.shape[0]):
        node = 0
        while node_child[node, 0] >= 0:
            left, right, c = node_child[node, 0], node_child[node, 1], node_dim[node]
            q = np.float32(codes[query_ids[r], c])
            node = left if node_lo[right, c] - q >= q - node_hi[left, c] else right
        out[r] = node


def leaf_of(codes, query_ids, tree) -> np.ndarray:
    """(len(query_ids),) int64: the leaf node of ``tree`` each item descends to."""
    query_ids = np.ascontiguousarray(query_ids, np.int64)
    out = np.zeros(query_ids.size, np.int64)
    if query_ids.size and tree is not None:
        _, _, lo, hi, child, _, dims, _ = tree
        _leaf_of(codes, query_ids, lo, hi, child, dims, out)
    return out


def leaf_shares(tree, y, w) -> np.ndarray:
    """(n_nodes,) the weighted positive share of each leaf's training items."""
    _, ref_idx, _, _, child, rows, _, _ = tree
    out = np.zeros(child.shape[0])
    for node in np.flatnonzero(child[:, 0] < 0):
        # in training order: StageModel and its SQL sum the same way
        j = np.sort(ref_idx[rows[node, 0] : rows[node, 1]])
        out[node] = float(np.dot(w[j], y[j]) / max(float(w[j].sum()), 1e-300))
    return out


@njit(**KERNEL)
def _knn_votes(neighbours, y, w, ks, out):
    for r in range(neighbours.shape[0]):
        acc = 0.0
        for k in ks:
            wy = 0.0
            ww = 0.0
            for t in range(min(k, neighbours.shape[1])):
                j = neighbours[r, t]
                if j >= 0:
                    wy += w[j] * y[j]
                    ww += w[j]
            acc += wy / max(ww, 1e-300)
        out[r] = acc / ks.shape[0]


def knn_votes(neighbours, y, w, ks) -> np.ndarray:
    """Mean over k in ``ks`` of the weighted positive share of the first k neighbours."""
    out = np.zeros(neighbours.shape[0])
    if neighbours.shape[0]:
        _knn_votes(
            np.ascontiguousarray(neighbours, np.int64),
            np.ascontiguousarray(y, np.float64),
            np.ascontiguousarray(w, np.float64),
            np.asarray([int(k) for k in ks], np.int64),
            out,
        )
    return out


def fit_logistic(F, y, w, lam: float = 1.0, iters: int = 25, loo: bool = False):
    """Weighted L2-regularised logistic regression (Newton / IRLS) on
    standardised ``F``; returns ``(coef, intercept)`` on the raw features, and
    with ``loo`` also every row's approximate leave-one-out logit (one Newton
    step from the fit towards the fit without the row, Sherman-Morrison)."""
    with _one_blas_thread():
        return _fit_logistic(
            np.asarray(F, np.float64),
            np.asarray(y, np.float64),
            np.asarray(w, np.float64),
            lam,
            iters,
            loo,
        )


def _fit_logistic(F, y, w, lam, iters, loo):
    mu = F.mean(0)
    sd = F.std(0) + 1e-6
    Z = np.hstack([(F - mu) / sd, np.ones((F.shape[0], 1))])
    beta = np.zeros(Z.shape[1])
    R = lam * np.eye(Z.shape[1])
    R[-1, -1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(Z @ beta)))
        g = Z.T @ (w * (p - y)) + R @ beta
        H = (Z * (w * p * (1 - p))[:, None]).T @ Z + R + 1e-9 * np.eye(Z.shape[1])
        step = np.linalg.solve(H, g)
        beta -= step
        if np.abs(step).max() < 1e-6:
            break
    coef = beta[:-1] / sd
    out = (coef, float(beta[-1] - coef @ mu))
    if not loo:
        return out
    p = 1.0 / (1.0 + np.exp(-(Z @ beta)))
    H = (Z * (w * p * (1 - p))[:, None]).T @ Z + R + 1e-9 * np.eye(Z.shape[1])
    a = np.einsum("ij,ij->i", Z @ np.linalg.inv(H), Z)
    v = w * p * (1 - p)
    return out + (Z @ beta + a / np.maximum(1.0 - v * a, 1e-6) * w * (p - y),)


def logistic_code_model(compressor, codes_train, y, w, lam: float = 1.0, loo: bool = False):
    """The logistic stage as a linear score over *codes*: ``(a, b)`` with
    logit = sum_j a_j code_j + b (dequantisation is affine per dimension);
    with ``loo``, also each training row's approximate leave-one-out logit."""
    F = compressor.dequantize(codes_train).astype(np.float64)
    fit = fit_logistic(F, y, w, lam, loo=loo)
    coef, b0 = fit[0], fit[1]
    scale = np.asarray(compressor.scale_, np.float64)
    low = np.asarray(compressor.low_, np.float64)
    return (coef / scale, b0 + float(coef @ low)) + tuple(fit[2:])


@njit(**PARALLEL)
def _linear_scores(codes, ids, a, b, out):
    d = codes.shape[1]
    for r in prange(ids.shape[0]):
        s = b
        for j in range(d):
            s += codes[ids[r], j] * a[j]
        out[r] = s


def linear_scores(codes, ids, a, b) -> np.ndarray:
    """(len(ids),) float64 ``codes[ids] @ a + b``, summed in dimension order."""
    ids = np.ascontiguousarray(ids, np.int64)
    out = np.empty(ids.size, np.float64)
    if ids.size:
        _linear_scores(codes, ids, np.ascontiguousarray(a, np.float64), float(b), out)
    return out


def f1_cut(p_sorted, n_extra: float, n_known: float = 0.0) -> int:
    """How many of the items (scores sorted decreasing) maximise the expected
    F1 of a set that also holds ``n_known`` sure positives:
    ``2 (n_known + sum(p[:m])) / (n_known + m + N)``, N = ``n_extra`` + sum(p)
    (``n_extra`` counts the known ones). With none known at least one item is
    taken; with some, none may be (the set is then the known ones)."""
    p = np.asarray(p_sorted, np.float64)
    if p.size == 0:
        return 0
    n = n_extra + p.sum()
    if n_known <= 0:
        f = 2.0 * np.cumsum(p) / (np.arange(1, p.size + 1) + n)
        return int(np.argmax(f)) + 1
    tp = n_known + np.concatenate(([0.0], np.cumsum(p)))
    return int(np.argmax(2.0 * tp / (n_known + np.arange(p.size + 1) + n)))


def expected_f1_cut(p_sorted, n_extra: float, n_known: float = 0.0):
    """``(m, expected precision of the added items, expected class size)``."""
    m = f1_cut(p_sorted, n_extra, n_known)
    p = np.asarray(p_sorted, np.float64)
    return m, (float(p[:m].mean()) if m else 0.0), float(n_extra + p.sum())


def label_frequency(scores_of_positives, min_count: int = 5) -> float:
    """c: the mean out-of-sample score of the labelled positives (1.0 with
    fewer than ``min_count`` of them). A model fitted with unlabelled items
    as negatives estimates P(labelled | x); dividing by c estimates
    P(positive | x) (Elkan and Noto 2008, their estimator e1). Floored at
    0.05 so that a few poorly scored positives cannot multiply every score
    twentyfold."""
    q = np.asarray(scores_of_positives, np.float64)
    if q.size < max(int(min_count), 1):
        return 1.0
    return float(np.clip(q.mean(), 0.05, 1.0))
