"""The fitted second stage of one refine, as plain data (issue 15).

``twostage.select`` fits the second stage and scores the box candidates;
``StageModel`` is what it fitted, every number it needs to score a candidate
again: the training items (ids, labels, weights), the neighbour vote (integer
dimension weights, K, the chosen ks, exact neighbours or leaf shares and, for
the latter, the k-d tree's splits), the logistic (a linear score over the
code columns), the mix and the Platt recalibration, the out-of-sample vote
and logit of each training item that is a candidate (they cannot be
recomputed from the codes), the cut (a count of unlabelled items), the labels
and the similarity that breaks score ties. ``to_dict`` / ``from_dict`` store
it in a session file (checked field by field: a file is user input);
``scores`` and ``rank`` recompute ``select``'s scores and result set in plain
numpy, and ``engine/sql/stage.py`` writes the same computation as SQL.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, fields

import numpy as np

__all__ = ["StageModel", "fitted_stage"]

_ARRAYS = {  # field: (dtype, length: None, "d" features or "n" training items)
    "train_ids": (np.int64, None),
    "y": (np.float64, "n"),
    "w": (np.float64, "n"),
    "wdim": (np.int64, "d"),
    "a": (np.float64, "d"),
    "loo_ids": (np.int64, None),
    "loo_vote": (np.float64, None),
    "loo_logit": (np.float64, None),
    "extra_ids": (np.int64, None),
    "positives": (np.int64, None),
    "labelled": (np.int64, None),
    "reference": (np.float64, "d"),
    "scale": (np.float64, "d"),
    "low": (np.float64, "d"),
}
_TREE = ("dim", "split", "left", "right", "leaf")
_CHUNK = 2048  # candidates per block of the plain-numpy distances


def _sigmoid(z):  # also twostage's: the refine and this model score alike
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


def _clipped_logit(p):
    p = np.clip(np.asarray(p, np.float64), 0.01, 0.99)
    return np.log(p / (1 - p))


def _compact_tree(tree, n_train: int) -> dict:
    """The descent of ``rescore.knn_tree``'s tree: at internal node n go left
    iff 2 * code[dim[n]] <= split[n] (the kernel's "nearer child": exact
    integers), and the leaf each training row lies in."""
    _, ref_idx, lo, hi, child, rows, dims, _ = tree
    left, right = child[:, 0].astype(np.int64), child[:, 1].astype(np.int64)
    inner = left >= 0
    dim = np.where(inner, dims, -1).astype(np.int64)
    split = np.zeros(left.size, np.int64)
    c = dims[inner]
    split[inner] = (lo[right[inner], c] + hi[left[inner], c]).astype(np.int64)
    leaf = np.full(n_train, -1, np.int64)
    for node in np.flatnonzero(~inner):
        leaf[ref_idx[rows[node, 0] : rows[node, 1]]] = node
    return {"dim": dim, "split": split, "left": left, "right": right, "leaf": leaf}


def fitted_stage(train_ids, y, w, wdim, K, coef, a, b, candidates, c_row, v_c, e_c, tree, m, cut):
    """The fields of a ``StageModel`` that ``select`` knows (its locals)."""
    known = c_row >= 0
    exact = bool(coef.get("exact_neighbours", True))
    platt = coef.get("platt")
    return {
        "train_ids": train_ids,
        "y": y,
        "w": w,
        "wdim": np.asarray(wdim, np.int64),
        "K": int(K),
        "ks": tuple(int(k) for k in coef["ks"]),
        "logistic_weight": float(coef["logistic_weight"]),
        "a": np.asarray(a, np.float64),
        "b": float(b),
        "platt": None if platt is None else (float(platt[0]), float(platt[1])),
        "exact": exact,
        "loo_ids": candidates[known],
        "loo_vote": np.asarray(v_c[known], np.float64),
        "loo_logit": np.asarray(e_c[known], np.float64),
        "m": int(m),
        "cut": float(cut),
        "tree": None if exact or tree is None else _compact_tree(tree, train_ids.size),
    }


def _fail(name, what, got):
    raise ValueError(f"stage_model: {name}: expected {what}, got {got!r:.80}")


def _number(name, v, integer=False, lo=None, hi=None):
    kind = numbers.Integral if integer else numbers.Real
    ok = not isinstance(v, bool) and isinstance(v, kind)
    if ok and integer:
        ok = -(2**62) < v < 2**62
    elif ok:
        try:
            ok = bool(np.isfinite(float(v)))
        except OverflowError:
            ok = False
    if not ok:
        _fail(name, "an integer" if integer else "a finite number", v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        _fail(name, f"a value in [{lo}, {hi}]", v)
    return int(v) if integer else float(v)


def _array(name, v, dtype, n=None):
    if not isinstance(v, (list, tuple, np.ndarray)):
        _fail(name, "a list", v)
    items = v.tolist() if isinstance(v, np.ndarray) else list(v)
    integer = dtype is np.int64
    out = np.array([_number(f"{name}[{i}]", x, integer) for i, x in enumerate(items)], dtype)
    if n is not None and out.size != n:
        _fail(name, f"{n} values", f"{out.size} values")
    return out.reshape(-1)


def _sorted_ids(name, v):
    if v.size and (v.min() < 0 or np.any(v[1:] <= v[:-1])):
        _fail(name, "sorted distinct non-negative ids", v.tolist())
    return v


@dataclass(eq=False)
class StageModel:
    """The second stage of one refine (see the module docstring).

    Arrays: ``train_ids`` (labelled items first, then background), ``y``
    (targets in [0, 1]: the labels, then the background's soft targets),
    ``w`` (sample weights), ``wdim`` (integer dimension weights of the
    squared distances), ``a`` (logit = b + sum_j a_j code_j), ``loo_ids``
    (sorted: the training items among the candidates) with their
    out-of-sample ``loo_vote`` and ``loo_logit``, ``extra_ids`` (sorted: the
    candidates beside the box matches, the labelled positives or a
    fallback's neighbours), ``positives`` and ``labelled`` (sorted), and the
    similarity's ``reference`` point with the compressor's ``scale`` and
    ``low``. Scalars: ``K`` (neighbours searched), ``ks`` (the vote's
    neighbourhoods), ``logistic_weight`` (the logistic's share of the mix),
    ``platt`` (intercept, slope, or None), ``exact`` (the other candidates
    vote by their exact neighbours, else by the positive share of their leaf
    of ``tree``), ``m``
    (unlabelled items kept) and ``cut`` (the lowest kept score).
    """

    train_ids: np.ndarray
    y: np.ndarray
    w: np.ndarray
    wdim: np.ndarray
    K: int
    ks: tuple
    logistic_weight: float
    a: np.ndarray
    b: float
    platt: tuple | None
    exact: bool
    loo_ids: np.ndarray
    loo_vote: np.ndarray
    loo_logit: np.ndarray
    extra_ids: np.ndarray
    positives: np.ndarray
    labelled: np.ndarray
    m: int
    cut: float
    reference: np.ndarray
    scale: np.ndarray
    low: np.ndarray
    tree: dict | None = None

    @property
    def n_features(self) -> int:
        return int(self.a.size)

    def to_dict(self) -> dict:
        """Plain JSON data; ``from_dict`` reads it back exactly."""
        out = {"format": 1}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                v = v.tolist()
            elif f.name == "tree" and v is not None:
                v = {k: np.asarray(v[k]).tolist() for k in _TREE}
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data) -> StageModel:
        """The model of ``to_dict``, every field checked: ``ValueError`` naming it."""
        if not isinstance(data, dict):
            _fail("", "an object", type(data).__name__)
        names = {f.name for f in fields(cls)} | {"format"}
        if set(data) != names:
            missing, unknown = sorted(names - set(data)), sorted(set(data) - names)
            _fail("fields", f"exactly {sorted(names)}", f"missing {missing}, unknown {unknown}")
        if data["format"] != 1 or isinstance(data["format"], bool):
            _fail("format", "1", data["format"])
        d = len(data["a"]) if isinstance(data["a"], list) else -1
        if not 1 <= d <= 4096:
            _fail("a", "a list of 1..4096 coefficients", data["a"])
        n = len(data["train_ids"]) if isinstance(data["train_ids"], list) else -1
        if n < 1:
            _fail("train_ids", "a non-empty list", data["train_ids"])
        arr = {
            k: _array(k, data[k], dt, {"d": d, "n": n}.get(size))
            for k, (dt, size) in _ARRAYS.items()
        }
        for k in ("loo_ids", "extra_ids", "positives", "labelled"):
            _sorted_ids(k, arr[k])
        if arr["train_ids"].min() < 0 or np.unique(arr["train_ids"]).size != n:
            _fail("train_ids", "distinct non-negative ids", data["train_ids"])
        if not ((arr["y"] >= 0) & (arr["y"] <= 1)).all():
            _fail("y", "targets in [0, 1]", data["y"])
        if not (arr["w"] > 0).all() or not (arr["wdim"] >= 1).all() or arr["wdim"].max() > 2**16:
            _fail("w / wdim", "positive weights (wdim integers up to 65536)", "others")
        if not (arr["scale"] > 0).all():
            _fail("scale", "positive scales", data["scale"])
        loo = arr["loo_ids"].size
        if arr["loo_vote"].size != loo or arr["loo_logit"].size != loo:
            _fail("loo_vote / loo_logit", f"{loo} values each (one per loo_ids)", "others")
        if not np.isin(arr["loo_ids"], arr["train_ids"]).all():
            _fail("loo_ids", "training items", data["loo_ids"])
        if not np.isin(arr["positives"], arr["labelled"]).all():
            _fail("positives", "labelled items", data["positives"])
        ks = data["ks"]
        if not isinstance(ks, list) or not 1 <= len(ks) <= 64:
            _fail("ks", "a list of 1..64 neighbour counts", ks)
        platt = data["platt"]
        if platt is not None and (not isinstance(platt, list) or len(platt) != 2):
            _fail("platt", "null or [intercept, slope]", platt)
        if not isinstance(data["exact"], bool):
            _fail("exact", "true or false", data["exact"])
        model = cls(
            **arr,
            K=_number("K", data["K"], True, 1, 1000),
            ks=tuple(_number("ks", k, True, 1, 1000) for k in ks),
            logistic_weight=_number("logistic_weight", data["logistic_weight"], lo=0, hi=1),
            b=_number("b", data["b"]),
            platt=None if platt is None else tuple(_number("platt", x) for x in platt),
            exact=data["exact"],
            m=_number("m", data["m"], True, 0),
            cut=_number("cut", data["cut"], lo=0, hi=1),
            tree=None if data["tree"] is None else _tree(data["tree"], d, n),
        )
        if not model.exact and model.tree is None:
            _fail("tree", "the k-d tree of a leaf-share vote", None)
        return model

    # --- plain numpy: what select computed ---

    def similarity_terms(self):
        """``(weight, offset)`` float32: similarity = offset + sum_j code_j * weight_j,
        summed in float32 in column order (as ``ranking.code_scores``)."""
        weight = (self.reference / self.scale).astype(np.float32)
        offset = np.float32(np.dot(self.low.astype(np.float64), self.reference))
        return weight, offset

    def similarity(self, codes, ids) -> np.ndarray:
        weight, offset = self.similarity_terms()
        rows = np.asarray(codes)[np.asarray(ids, np.int64)]
        s = np.full(rows.shape[0], offset, np.float32)
        for j in range(rows.shape[1]):
            s = s + rows[:, j].astype(np.float32) * weight[j]
        return s

    def logits(self, codes, ids) -> np.ndarray:
        """The logistic's logit of items ``ids``, summed in column order."""
        rows = np.asarray(codes)[np.asarray(ids, np.int64)]
        e = np.full(rows.shape[0], self.b)
        for j in range(rows.shape[1]):
            e = e + rows[:, j].astype(np.float64) * self.a[j]
        return e

    def neighbours(self, codes, ids) -> np.ndarray:
        """(len(ids), K) training indices of each item's K nearest (weighted
        squared L2 of the codes, ties by the lower index; -1 pads), exact or
        within the item's leaf of ``tree``; no item is left out."""
        codes = np.asarray(codes)
        q = codes[np.asarray(ids, np.int64)].astype(np.float64)
        t = codes[self.train_ids].astype(np.float64)
        out = np.full((q.shape[0], self.K), -1, np.int64)
        if self.exact:
            groups = [(np.arange(q.shape[0]), np.arange(t.shape[0]))]
        else:
            leaf = self._leaves(q)
            groups = [
                (np.flatnonzero(leaf == g), np.flatnonzero(self.tree["leaf"] == g))
                for g in np.unique(leaf)
            ]
        wd = self.wdim.astype(np.float64)
        for rows, refs in groups:
            for s in range(0, rows.size, _CHUNK):
                r = rows[s : s + _CHUNK]
                # integers below 2^53 at every step: float64 sums are exact
                dist = (q[r] ** 2 @ wd)[:, None] + ((t[refs] ** 2) @ wd)[None]
                dist -= 2.0 * (q[r] * wd) @ t[refs].T
                key = dist.astype(np.int64) * t.shape[0] + refs[None]
                k = min(self.K, refs.size)
                if k == 0:
                    continue
                part = np.sort(np.partition(key, k - 1, axis=1)[:, :k], axis=1)
                out[r, :k] = part % t.shape[0]
        return out

    def leaf_shares(self) -> np.ndarray:
        """Per node of ``tree``, the weighted positive share of the training
        items in it (0 for an inner node), summed in training order."""
        out = np.zeros(self.tree["dim"].size)
        for node in np.unique(self.tree["leaf"]):
            j = np.flatnonzero(self.tree["leaf"] == node)
            out[node] = float(np.dot(self.w[j], self.y[j]) / max(float(self.w[j].sum()), 1e-300))
        return out

    def _leaves(self, q):
        tr = self.tree
        node = np.zeros(q.shape[0], np.int64)
        while True:
            inner = tr["left"][node] >= 0
            if not inner.any():
                return node
            c = np.maximum(tr["dim"][node], 0)
            go_left = 2 * q[np.arange(q.shape[0]), c] <= tr["split"][node]
            node = np.where(inner, np.where(go_left, tr["left"][node], tr["right"][node]), node)

    def votes(self, neighbours) -> np.ndarray:
        """Mean over ``ks`` of the weighted positive share of the first k
        neighbours, summed nearest first (as ``rescore.knn_votes``)."""
        nb = np.asarray(neighbours, np.int64)
        acc = np.zeros(nb.shape[0])
        for k in self.ks:
            wy, ww = np.zeros(nb.shape[0]), np.zeros(nb.shape[0])
            for t in range(min(k, nb.shape[1])):
                ok = nb[:, t] >= 0
                j = np.where(ok, nb[:, t], 0)
                wy = np.where(ok, wy + self.w[j] * self.y[j], wy)
                ww = np.where(ok, ww + self.w[j], ww)
            acc = acc + wy / np.maximum(ww, 1e-300)
        return acc / len(self.ks)

    def scores(self, codes, ids) -> np.ndarray:
        """float64 score of items ``ids``: ``select``'s p (bit-identical)."""
        ids = np.asarray(ids, np.int64)
        at = np.searchsorted(self.loo_ids, ids).clip(0, max(self.loo_ids.size - 1, 0))
        known = self.loo_ids[at] == ids if self.loo_ids.size else np.zeros(ids.size, bool)
        e = self.logits(codes, ids)
        e[known] = self.loo_logit[at[known]]
        v = np.zeros(ids.size)
        v[known] = self.loo_vote[at[known]]
        lw = self.logistic_weight
        if lw < 1 and (~known).any() and self.exact:
            v[~known] = self.votes(self.neighbours(codes, ids[~known]))
        elif lw < 1 and (~known).any():  # the positive share of the item's leaf
            q = np.asarray(codes)[ids[~known]].astype(np.float64)
            v[~known] = self.leaf_shares()[self._leaves(q)]
        p = (1 - lw) * v + lw * _sigmoid(e)
        if self.platt is not None:
            b, a = self.platt
            p = _sigmoid(b + a * _clipped_logit(p))
        return p

    def rank(self, codes, box_ids):
        """``(ids, scores)`` of the result set given the box matches: the
        candidates scored, ranked by score, similarity, id; the positives and
        the first ``m`` unlabelled kept."""
        cand = np.union1d(np.asarray(box_ids, np.int64), self.extra_ids)
        p = self.scores(codes, cand)
        order = np.lexsort((cand, -self.similarity(codes, cand).astype(np.float64), -p))
        cand, p = cand[order], p[order]
        keep = np.isin(cand, self.positives)
        un = np.flatnonzero(~np.isin(cand, self.labelled))
        keep[un[: self.m]] = True
        return cand[keep], p[keep].astype(np.float32)


def _tree(raw, d: int, n: int) -> dict:
    if not isinstance(raw, dict) or set(raw) != set(_TREE):
        _fail("tree", f"an object with the keys {list(_TREE)}", raw)
    t = {k: _array(f"tree.{k}", raw[k], np.int64) for k in _TREE}
    nodes = t["dim"].size
    if nodes < 1 or any(t[k].size != nodes for k in ("split", "left", "right")):
        _fail("tree", "dim, split, left, right of one length", [t[k].size for k in _TREE])
    if t["leaf"].size != n:
        _fail("tree.leaf", f"{n} leaves (one per training item)", t["leaf"].size)
    inner = t["left"] >= 0
    idx = np.arange(nodes)
    ok = (
        np.all((t["left"] < 0) == (t["right"] < 0))
        and np.all(t["left"][inner] > idx[inner])  # children come after their parent,
        and np.all(t["right"][inner] > idx[inner])  # so a descent ends at a leaf
        and np.all(np.maximum(t["left"], t["right"]) < nodes)
        and np.all((t["dim"][inner] >= 0) & (t["dim"][inner] < d))
        and np.all((t["leaf"] >= 0) & (t["leaf"] < nodes))
        and not inner[t["leaf"]].any()
    )
    if not ok:
        _fail("tree", "a k-d tree (children after parents, leaves holding the items)", "others")
    return t
