"""Does refining beat nearest neighbours? A labelled evaluation in the paper's protocol.

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

Everything here imports only the engine and ``Session`` (never the widget).
``benchmarks/quality.py`` is the command that runs it and writes the tables
and the plot.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from ..engine._validation import check_codes, check_embeddings, describe
from ..engine.codes.pca import Compressor
from ..engine.learn.branches import DecisionBranchesClassifier
from ..engine.search.scan import scan
from ..engine.store.catalogue import Catalogue
from ..engine.subsets import default_feature_subsets
from ..session import Session

__all__ = [
    "GlobalQuantizer",
    "LabelledSet",
    "Learner",
    "cifar10_set",
    "default_learners",
    "digits_set",
    "knn_curve",
    "load_labelled_file",
    "prf",
    "run_evaluation",
    "simulate",
    "summarise",
    "synthetic_modes_set",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- data


@dataclass
class LabelledSet:
    """Embeddings ``X`` (n, d) float32, L2-normalised, and a class per item.

    ``y`` (n,) int64: class index into ``class_names``, or -1 for items of no
    evaluated class (distractors). ``queries`` (n_classes, d), optional: a
    text embedding per class; without it a query is one example item.
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    class_names: list
    queries: np.ndarray | None = None
    description: str = ""

    def __post_init__(self):
        X = check_embeddings(np.asarray(self.X, np.float32), name=f"{self.name}: embeddings")
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        self.X = np.ascontiguousarray(X / np.where(norms > 0, norms, 1), np.float32)
        y = np.asarray(self.y)
        if y.shape != (X.shape[0],) or y.dtype.kind not in "iu":
            raise ValueError(
                f"{self.name}: expected integer labels of shape ({X.shape[0]},), got {describe(y)}"
            )
        self.y = y.astype(np.int64)
        if self.y.max() >= len(self.class_names) or self.y.min() < -1:
            raise ValueError(
                f"{self.name}: labels must lie in -1..{len(self.class_names) - 1}, "
                f"got {self.y.min()}..{self.y.max()}"
            )
        if self.queries is not None:
            q = np.asarray(self.queries, np.float32)
            if q.shape != (len(self.class_names), X.shape[1]):
                raise ValueError(
                    f"{self.name}: expected queries of shape "
                    f"({len(self.class_names)}, {X.shape[1]}), got {q.shape}"
                )
            self.queries = q / np.linalg.norm(q, axis=1, keepdims=True)

    def __len__(self) -> int:
        return self.X.shape[0]

    def class_sizes(self) -> np.ndarray:
        return np.bincount(self.y[self.y >= 0], minlength=len(self.class_names))


def digits_set() -> LabelledSet:
    """scikit-learn's 1,797 8x8 handwritten digits (64-d pixel vectors)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = d.data.astype(np.float32)
    X -= X.mean(axis=0)  # centred, so cosine compares strokes, not ink totals
    return LabelledSet(
        "digits",
        X,
        d.target,
        [str(c) for c in d.target_names],
        description="sklearn load_digits: 1,797 real 8x8 digits, 64-d centred pixels, 10 classes",
    )


def synthetic_modes_set(
    *,
    n_concepts: int = 10,
    modes: int = 5,
    per_mode: int = 120,
    n_other: int = 10_000,
    other_clusters: int = 200,
    d: int = 256,
    rank: int = 24,
    spread: float = 0.35,
    random_state=0,
) -> LabelledSet:
    """CLIP-like unit vectors where every concept is several separate modes.

    Mode centres and distractor clusters are random directions in a
    ``rank``-dimensional subspace of R^d (CLIP embeddings are effectively
    low-rank), items are centre + Gaussian noise, L2-normalised. A concept's
    modes are unrelated directions, so the neighbours of one example find one
    mode only: k-NN is incomplete by construction. Distractors get label -1.
    ``queries`` play the class-text embeddings: each is a weighted sum of its
    concept's mode centres (weights from 1 down to 0.5) plus a random part, so
    k-NN of the text reaches the first modes before the last ones, mixed with
    distractor clusters that happen to lie near the text.
    """
    rng = np.random.default_rng(random_state)
    basis = np.linalg.qr(rng.standard_normal((d, rank)))[0].T  # (rank, d) orthonormal
    n_centres = n_concepts * modes + other_clusters
    centres = rng.standard_normal((n_centres, rank))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sizes = [per_mode] * (n_concepts * modes)
    other = np.bincount(rng.integers(0, other_clusters, n_other), minlength=other_clusters)
    sizes += other.tolist()
    cluster = np.repeat(np.arange(n_centres), sizes)
    z = centres[cluster] + rng.standard_normal((cluster.size, rank)) * spread / np.sqrt(rank)
    X = z @ basis + rng.standard_normal((cluster.size, d)) * (0.1 * spread / np.sqrt(d))
    y = np.where(cluster < n_concepts * modes, cluster // modes, -1)
    # a "text" query per concept: near its first mode, further from the others
    # (weights 1 down to 0.5) plus a random part (CLIP's modality gap)
    weights = np.linspace(1.0, 0.5, modes)
    q = np.einsum(
        "m,cmr->cr", weights, centres[: n_concepts * modes].reshape(n_concepts, modes, rank)
    )
    q += rng.standard_normal(q.shape) / np.sqrt(rank)
    perm = rng.permutation(cluster.size)
    return LabelledSet(
        "synthetic",
        X[perm].astype(np.float32),
        y[perm],
        [f"concept{c}" for c in range(n_concepts)],
        queries=q @ basis,
        description=f"synthetic CLIP-like: {n_concepts} concepts x {modes} "
        f"separate modes x {per_mode} items + {n_other} distractors "
        f"in {other_clusters} clusters; {d}-d, rank {rank}; a "
        f"'text' query per concept, nearest its first mode",
    )


CIFAR_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def cifar10_set(root, *, cache_dir=None, limit_per_class: int | None = None) -> LabelledSet:
    """CIFAR-10 test images (``root/<class>/*.jpg``) as offline image features.

    No pretrained CLIP (or any pretrained) weights can be downloaded here, so
    the features are hand-made: HOG of the grey image (4x4-pixel cells, 2x2
    blocks: local shape) and a hue/saturation/value colour histogram (global
    colour), each square-rooted (Hellinger) and L2-normalised, weighted
    0.8 / 0.6, concatenated and centred. Cached as ``.npz`` in ``cache_dir``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"CIFAR-10: expected a folder of <class>/*.jpg at {root}; "
            "set --cifar-root or CLIPBRANCHES_CIFAR10"
        )
    tag = f"cifar10-hogcolour-v1-{limit_per_class or 'all'}.npz"
    cache = None if cache_dir is None else Path(cache_dir) / tag
    if cache is not None and cache.exists():
        z = np.load(cache)
        X, y = z["X"], z["y"]
    else:
        t0 = time.perf_counter()
        paths, labels = [], []
        for c, name in enumerate(CIFAR_CLASSES):
            files = sorted((root / name).glob("*.jpg"))
            if not files:
                raise FileNotFoundError(f"CIFAR-10: no JPEGs in {root / name}")
            files = files[:limit_per_class] if limit_per_class else files
            paths += files
            labels += [c] * len(files)
        X = image_features(paths)
        y = np.asarray(labels, np.int64)
        log.info("CIFAR-10 features for %d images in %.1f s", len(paths), time.perf_counter() - t0)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp.npz")
            np.savez(tmp, X=X, y=y)
            tmp.replace(cache)
    return LabelledSet(
        "cifar10",
        X,
        y,
        list(CIFAR_CLASSES),
        description="CIFAR-10 test split, 10,000 real 32x32 photos; features: "
        "HOG (4x4 cells) + HSV colour histogram (no pretrained "
        "weights offline)",
    )


def image_features(paths) -> np.ndarray:
    """(n, 1892) float32 HOG + colour-histogram features of small images."""
    from PIL import Image
    from skimage.feature import hog

    rows = []
    for p in paths:
        with Image.open(p) as im:
            rgb = im.convert("RGB").resize((32, 32))
            grey = np.asarray(rgb.convert("L"), np.float32) / 255.0
            hsv = np.asarray(rgb.convert("HSV"))
        h = hog(
            grey,
            orientations=9,
            pixels_per_cell=(4, 4),
            cells_per_block=(2, 2),
            block_norm="L2-Hys",
            feature_vector=True,
        )
        bins = (
            (hsv[..., 0].astype(np.int64) * 8 // 256) * 16
            + (hsv[..., 1].astype(np.int64) * 4 // 256) * 4
            + hsv[..., 2].astype(np.int64) * 4 // 256
        )
        col = np.bincount(bins.ravel(), minlength=128).astype(np.float32)
        parts = []
        for v, wgt in ((h, 0.8), (col, 0.6)):
            v = np.sqrt(np.maximum(v, 0))
            parts.append(wgt * v / max(np.linalg.norm(v), 1e-12))
        rows.append(np.concatenate(parts))
    X = np.asarray(rows, np.float32)
    return X - X.mean(axis=0)


def load_labelled_file(path, labels=None, *, name: str | None = None) -> LabelledSet:
    """A user's data set: one ``.npz`` or embeddings ``.npy`` + labels ``.npy``/``.csv``.

    ``.npz`` keys: ``embeddings`` (or ``X``), ``labels`` (or ``y``), optional
    ``class_names`` and ``queries`` (one text embedding per class, e.g. CLIP's
    "a photo of a {class}"). Labels may be integers or strings; a CSV has one
    column, or a column named ``label``. Embeddings are L2-normalised here.
    """
    path = Path(path)
    queries = names = None
    if path.suffix == ".npz":
        z = np.load(path, allow_pickle=False)
        key_x = next((k for k in ("embeddings", "X") if k in z), None)
        key_y = next((k for k in ("labels", "y") if k in z), None)
        if key_x is None or (key_y is None and labels is None):
            raise ValueError(
                f"{path}: expected arrays 'embeddings' (or 'X') and 'labels' "
                f"(or 'y'), got {sorted(z.files)}"
            )
        X = z[key_x]
        raw = z[key_y] if labels is None else _read_labels(labels)
        names = [str(s) for s in z["class_names"]] if "class_names" in z else None
        queries = z["queries"] if "queries" in z else None
    elif path.suffix == ".npy":
        if labels is None:
            raise ValueError(f"{path}: embeddings in .npy need a labels file (.npy or .csv)")
        X = np.load(path, allow_pickle=False)
        raw = _read_labels(labels)
    else:
        raise ValueError(f"{path}: expected a .npz, or a .npy of embeddings with a labels file")
    raw = np.asarray(raw)
    if raw.shape != (X.shape[0],):
        raise ValueError(
            f"{path}: expected {X.shape[0]} labels (one per embedding), got {describe(raw)}"
        )
    if names is None or raw.dtype.kind not in "iu":
        uniq, y = np.unique(raw, return_inverse=True)
        names = [str(u) for u in uniq] if names is None or raw.dtype.kind not in "iu" else names
    else:
        y = raw
    return LabelledSet(
        name or path.stem,
        X,
        y.astype(np.int64),
        names,
        queries,
        description=f"user file {path.name}: {X.shape[0]} x {X.shape[1]} "
        f"embeddings, {len(names)} classes",
    )


def _read_labels(path) -> np.ndarray:
    path = Path(path)
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix == ".csv":
        import pandas as pd

        df = pd.read_csv(path)
        col = "label" if "label" in df.columns else df.columns[0]
        if "label" not in df.columns and df.shape[1] != 1:
            raise ValueError(
                f"{path}: expected one column or a column named 'label', got {list(df.columns)}"
            )
        return df[col].to_numpy()
    raise ValueError(f"{path}: expected labels as .npy or .csv")


# --------------------------------------------------------------------------- codes


class GlobalQuantizer(TransformerMixin, BaseEstimator):
    """The reference's codes: PCA-32 of L2-normalised embeddings, each 32-d
    vector L2-normalised (like the reference head's output), then one global
    map ``code = trunc(127.5 z + 128)`` for every dimension.

    Same interface as ``Compressor`` (project/quantize/dequantize/transform/
    inverse_transform, ``low_``/``scale_``), so a ``Catalogue`` and ``Session``
    run on its codes unchanged.
    """

    def __init__(self, n_components=32, *, random_state=0):
        self.n_components = n_components
        self.random_state = random_state

    def fit(self, X, y=None):
        X = check_embeddings(X)
        X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        pca = Compressor(self.n_components, random_state=self.random_state).fit(X)
        self.mean_, self.components_ = pca.mean_, pca.components_
        self.n_features_in_ = X.shape[1]
        k = int(self.n_components)
        # dequantised value = bin centre of the truncation
        self.scale_ = np.full(k, 127.5, np.float32)
        self.low_ = np.full(k, (0.5 - 128.0) / 127.5, np.float32)
        return self

    def project(self, X) -> np.ndarray:
        if not hasattr(self, "components_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("GlobalQuantizer is not fitted yet: call fit(X) first")
        X = check_embeddings(X, n_features=self.n_features_in_, allow_empty=True)
        X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        z = (X - self.mean_) @ self.components_.T
        return (z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def quantize(self, z) -> np.ndarray:
        return np.clip(np.floor(127.5 * np.asarray(z, np.float32) + 128.0), 0, 255).astype(np.uint8)

    def dequantize(self, codes) -> np.ndarray:
        codes = check_codes(codes, n_features=int(self.n_components), allow_empty=True)
        return codes.astype(np.float32) / self.scale_ + self.low_

    def transform(self, X) -> np.ndarray:
        return self.quantize(self.project(X))

    def inverse_transform(self, codes) -> np.ndarray:
        return self.dequantize(codes) @ self.components_ + self.mean_


CODE_VARIANTS = ("pca", "global", "learned")


def make_compressor(data: LabelledSet, codes: str = "pca"):
    """A fitted compressor: ``pca`` the product's default ``Compressor``,
    ``global`` the reference's ``GlobalQuantizer``, ``learned`` the engine's
    ``LearnedCompressor`` (torch; about 10-45 s per data set here)."""
    if codes == "pca":
        return Compressor().fit(data.X)
    if codes == "global":
        return GlobalQuantizer().fit(data.X)
    if codes == "learned":
        from ..engine.codes.learned import LearnedCompressor

        return LearnedCompressor(progress=False, n_threads=1).fit(data.X)
    raise ValueError(f"codes: expected one of {CODE_VARIANTS}, got {codes!r}")


def make_catalogue(data: LabelledSet, codes: str = "pca", compressor=None) -> Catalogue:
    """The data set's catalogue under a code variant (see ``make_compressor``)."""
    comp = make_compressor(data, codes) if compressor is None else compressor
    return Catalogue(comp.transform(data.X), compressor=comp, embeddings=data.X)


# --------------------------------------------------------------------------- metrics


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

    ``kind``: "branches" (DecisionBranchesClassifier with ``params``), or
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
        return (
            self.kind == "branches"
            and not self.params
            and self.n_background == 1000
            and self.background_weight == 0.5
        )


def default_learners(quick: bool = False) -> list[Learner]:
    """Our default, the alternatives of issue 7, and what a user would pick instead."""
    if quick:
        return [
            Learner("branches"),
            Learner(
                "branches 4-d only",
                params={"feature_subsets": default_feature_subsets(32, sizes=((104, 4),))},
            ),
            Learner("logistic regression", "logreg"),
            Learner("1-NN classifier", "nn1"),
        ]
    return [
        Learner("branches"),
        Learner(
            "branches 4-d only",
            params={"feature_subsets": default_feature_subsets(32, sizes=((104, 4),))},
        ),
        Learner(
            "branches 8-d only",
            params={"feature_subsets": default_feature_subsets(32, sizes=((104, 8),))},
        ),
        Learner("branches max_boxes=10", params={"max_boxes": 10}),
        Learner("branches margin=2.0", params={"margin": 2.0}),
        Learner("branches margin=3.0", params={"margin": 3.0}),
        Learner("branches min_pts=DESIGN", params={"min_pts": "design"}),
        Learner("branches bg weight=1.0", background_weight=1.0),
        Learner("branches n_background=300", n_background=300),
        # the two single changes that raised precision, together
        Learner(
            "branches 8-d only + bg weight=1.0",
            background_weight=1.0,
            params={"feature_subsets": default_feature_subsets(32, sizes=((104, 8),))},
        ),
        Learner("logistic regression", "logreg"),
        Learner("random forest", "forest"),
        Learner("1-NN classifier", "nn1"),
        Learner("labelled positives only", "labels"),
    ]


def fit_result_set(
    learner: Learner, catalogue: Catalogue, labels: dict, *, seed: int, round_: int, features=None
) -> np.ndarray:
    """Ids of every catalogue item ``learner`` accepts after fitting on ``labels``."""
    s = Session(
        catalogue,
        n_background=learner.n_background,
        background_weight=learner.background_weight,
        random_state=seed,
        n_jobs=1,
    )
    if learner.kind == "labels":  # the floor: the user's own clicks, nothing learned
        return np.sort(np.array([i for i, v in labels.items() if v > 0], np.int64))
    s.set_labels(labels)
    ids, y, w = s.training_set()
    rs = seed + round_
    if learner.kind == "branches":
        params = dict(learner.params)
        if params.get("min_pts") == "design":
            params["min_pts"] = int(min(50, np.ceil(1.5 * int(y.sum()))))
        model = DecisionBranchesClassifier(random_state=rs, n_jobs=1, **params)
        model.fit(catalogue.codes[ids], y, sample_weight=w)
        return scan(catalogue.codes, model.boxes_, n_jobs=1).ids
    F = catalogue.compressor.dequantize(catalogue.codes) if features is None else features
    if learner.kind == "logreg":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        # standardised features: lbfgs converges in a few iterations
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, **learner.params))
        model.fit(F[ids], y, logisticregression__sample_weight=w)
    elif learner.kind == "forest":
        from sklearn.ensemble import RandomForestClassifier

        model = RandomForestClassifier(
            **{"n_estimators": 50, "n_jobs": 1, "random_state": rs, **learner.params}
        )
        model.fit(F[ids], y, sample_weight=w)
    elif learner.kind == "nn1":
        from sklearn.neighbors import KNeighborsClassifier

        model = KNeighborsClassifier(n_neighbors=1, algorithm="brute").fit(F[ids], y)
    else:
        raise ValueError(
            f"learner {learner.name!r}: unknown kind {learner.kind!r}; expected "
            "'branches', 'logreg', 'forest', 'nn1' or 'labels'"
        )
    return np.flatnonzero(model.predict(F) == 1)


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
) -> list[dict]:
    """One simulated user searching for class ``cls``; one row per round and learner.

    The default learner's ``Session`` drives what the user sees (its pages),
    so every learner is fitted on the same labels each round. The next page
    is the first ``page_size`` unlabelled items of the refined ranking,
    topped up from the query's neighbours when the refined set has fewer.
    While no positive is labelled there is nothing to refine: every learner
    returns an empty set that round and the next page is the next k-NN page.
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
    session = Session(catalogue, k=k, page_size=page_size, random_state=seed, n_jobs=1)
    shown = session.search(query).ids
    seed_page = knn_prf(tp, shown.size, n_true)
    rows = []
    for r in range(1, rounds + 1):
        session.label(shown[truth[shown]], 1)
        session.label(shown[~truth[shown]], -1)
        labels = session.labels
        n_pos = sum(v > 0 for v in labels.values())
        labelled = np.zeros(len(data), bool)
        labelled[np.fromiter(labels, np.int64)] = True
        t0 = time.perf_counter()
        # no positive yet: nothing to refine; the user pages on through k-NN
        refined = session.refine() if n_pos else None
        ms_default = (time.perf_counter() - t0) * 1e3
        for learner in learners:
            t0 = time.perf_counter()
            if refined is None:
                found, ms = np.zeros(0, np.int64), 0.0
            elif learner.is_default:
                found, ms = refined.ids, ms_default
            else:
                found = fit_result_set(
                    learner,
                    catalogue,
                    labels,
                    seed=seed,
                    round_=session.rounds - 1,
                    features=features,
                )
                ms = (time.perf_counter() - t0) * 1e3
            p, rec, f = prf(found, truth)
            kp, kr, kf = knn_prf(tp, found.size, n_true)
            # what the learner adds beyond the clicks: unlabelled items only
            fresh = found[~labelled[found]]
            n_fresh_true = n_true - n_pos
            tp_fresh = int(truth[fresh].sum())
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
                    "knn_class_precision": knn_class[0],
                    "seed_page_f1": seed_page[2],
                    "ms": ms,
                }
            )
        # the next page: what the user sees after this refine
        ranked = refined.ids if refined is not None else np.zeros(0, np.int64)
        nxt = ranked[~np.isin(ranked, np.fromiter(labels, np.int64))][:page_size]
        if nxt.size < page_size:
            more = order[~np.isin(order, np.concatenate([np.fromiter(labels, np.int64), nxt]))]
            nxt = np.concatenate([nxt, more[: page_size - nxt.size]])
        shown = nxt
    return rows


def run_evaluation(
    datasets,
    *,
    learners,
    seeds=(0, 1, 2),
    rounds: int = 5,
    classes: int | None = None,
    code_variants=("pca", "global"),
    variant_learners=("branches",),
    page_size: int = 60,
    jobs: int = 1,
    progress=None,
):
    """All simulated users over ``datasets``: a DataFrame with one row per
    (dataset, codes, class, seed, round, learner). Code variants after the
    first run only ``variant_learners``. ``jobs`` > 1 runs (dataset, codes,
    class) tasks in that many worker processes (every fit inside is
    single-threaded, so results do not depend on ``jobs``)."""
    import pandas as pd

    # compressors are fitted once here (the learned one takes a while);
    # workers only transform
    compressors = {
        (di, codes): make_compressor(data, codes)
        for di, data in enumerate(datasets)
        for codes in code_variants
    }
    tasks = []
    for di, data in enumerate(datasets):
        n_cls = len(data.class_names) if classes is None else min(classes, len(data.class_names))
        for codes in code_variants:
            use = (
                learners
                if codes == code_variants[0]
                else [lr for lr in learners if lr.name in variant_learners]
            )
            tasks += [
                (di, codes, cls, tuple(seeds), use, rounds, page_size) for cls in range(n_cls)
            ]
    rows = []
    if jobs <= 1:
        _worker_init(datasets, compressors)
        for t in tasks:
            rows += _run_task(t)
            if progress is not None:
                progress(_task_name(datasets, t))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # spawned (not forked) workers: faiss/OpenMP and numba threads are
        # not fork-safe once the parent has used them
        with ProcessPoolExecutor(
            jobs,
            mp_context=mp.get_context("spawn"),
            initializer=_worker_init,
            initargs=(datasets, compressors),
        ) as pool:
            for t, out in zip(tasks, pool.map(_run_task, tasks)):
                rows += out
                if progress is not None:
                    progress(_task_name(datasets, t))
    return pd.DataFrame(rows)  # in task order: data set, codes, class, seed, round, learner


_WORKER: dict = {}


def _worker_init(datasets, compressors):
    _WORKER.clear()
    _WORKER["datasets"] = datasets
    _WORKER["compressors"] = compressors
    _WORKER["catalogues"] = {}


def _task_name(datasets, task) -> str:
    data = datasets[task[0]]
    return f"{data.name}/{task[1]} class {data.class_names[task[2]]}"


def _run_task(task) -> list[dict]:
    di, codes, cls, seeds, learners, rounds, page_size = task
    data = _WORKER["datasets"][di]
    cats = _WORKER["catalogues"]
    if (di, codes) not in cats:
        cats[(di, codes)] = make_catalogue(data, codes, _WORKER["compressors"][(di, codes)])
    rows = []
    for seed in seeds:
        rows += simulate(
            data,
            cats[(di, codes)],
            cls,
            seed,
            learners=learners,
            rounds=rounds,
            page_size=page_size,
            codes=codes,
        )
    return rows


# --------------------------------------------------------------------------- summaries


def positives_to_beat(df, against: str = "knn_set_f1"):
    """Per run (dataset, codes, learner, class, seed): positives labelled at
    the first round whose F1 beats ``against`` (NaN when none did)."""
    beat = df[df["f1"] > df[against]]
    keys = ["dataset", "codes", "learner", "class", "seed"]
    first = beat.groupby(keys)["positives"].min()
    runs = df.groupby(keys)["positives"].max()
    return first.reindex(runs.index)


def summarise(df):
    """``(by_round, final, per_class)`` DataFrames of means and spreads."""
    import pandas as pd

    keys = ["dataset", "codes", "learner"]
    g = df.groupby(keys + ["round"], sort=False)
    by_round = g.agg(
        positives=("positives", "mean"),
        f1=("f1", "mean"),
        f1_std=("f1", "std"),
        knn_set_f1=("knn_set_f1", "mean"),
        size=("size", "mean"),
    ).reset_index()
    last = df[df["round"] == df["round"].max()]
    gl = last.groupby(keys, sort=False)
    final = gl.agg(
        positives=("positives", "mean"),
        size=("size", "mean"),
        precision=("precision", "mean"),
        recall=("recall", "mean"),
        f1=("f1", "mean"),
        f1_std=("f1", "std"),
        new_precision=("new_precision", "mean"),
        new_recall=("new_recall", "mean"),
        knn_set_f1=("knn_set_f1", "mean"),
        knn_class_f1=("knn_class_f1", "mean"),
        ms=("ms", "mean"),
    ).reset_index()
    for against, col in (("knn_set_f1", "beat_set"), ("knn_class_f1", "beat_class")):
        b = positives_to_beat(df, against).rename("p").reset_index()
        agg = b.groupby(keys)["p"].agg(lambda s: s.notna().mean()).rename(col + "_share")
        med = b.groupby(keys)["p"].median().rename(col + "_median")
        final = final.merge(pd.concat([agg, med], axis=1).reset_index(), on=keys, how="left")
    seed_means = last.groupby(keys + ["seed"])["f1"].mean().groupby(keys).std()
    final = final.merge(seed_means.rename("f1_seed_std").reset_index(), on=keys, how="left")
    per_class = (
        last.groupby(keys + ["class"], sort=False)
        .agg(
            class_size=("class_size", "first"),
            positives=("positives", "mean"),
            size=("size", "mean"),
            precision=("precision", "mean"),
            recall=("recall", "mean"),
            f1=("f1", "mean"),
            f1_std=("f1", "std"),
            knn_class_f1=("knn_class_f1", "mean"),
            seed_page_f1=("seed_page_f1", "mean"),
        )
        .reset_index()
    )
    b = positives_to_beat(df, "knn_class_f1").rename("to_beat").reset_index()
    per_class = per_class.merge(
        b.groupby(keys + ["class"])["to_beat"].median().reset_index(),
        on=keys + ["class"],
        how="left",
    )
    return by_round, final, per_class


_COLOURS = {
    "branches": "black",
    "logistic regression": "tab:blue",
    "random forest": "tab:green",
    "1-NN classifier": "tab:purple",
    "labelled positives only": "tab:orange",
}
_CODE_COLOURS = {"pca": "tab:gray", "global": "tab:red", "learned": "tab:brown"}


def plot_f1(by_round, final, path, *, codes: str = "pca"):
    """F1 against the number of labelled positives, one panel per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(by_round["dataset"]))
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        d = by_round[by_round["dataset"] == name]
        alt = 0
        for (cd, learner), part in d.groupby(["codes", "learner"], sort=False):
            if cd != codes and learner != "branches":
                continue
            label = learner if cd == codes else f"{learner} ({cd} codes)"
            color = _COLOURS.get(learner) if cd == codes else _CODE_COLOURS.get(cd, "tab:red")
            main = color is not None
            if color is None:  # the alternatives: thin, from a sequential map
                color = plt.cm.viridis(0.1 + 0.1 * alt)
                alt += 1
            ax.plot(
                part["positives"],
                part["f1"],
                marker="o" if main else None,
                color=color,
                lw=2.4 if learner == "branches" and cd == codes else (1.5 if main else 0.9),
                alpha=1.0 if main else 0.6,
                ls="--" if cd != codes else "-",
                label=label,
            )
        fin = final[(final["dataset"] == name) & (final["codes"] == codes)]
        ax.axhline(
            float(fin["knn_class_f1"].iloc[0]),
            color="k",
            ls=":",
            label="k-NN of the query, k = class size",
        )
        ref = d[(d["codes"] == codes) & (d["learner"] == "branches")]
        ax.plot(
            ref["positives"],
            ref["knn_set_f1"],
            color="grey",
            ls="-.",
            label="k-NN, k = branches' set size",
        )
        ax.set_title(name)
        ax.set_xlabel("labelled positives (mean over classes and seeds)")
        ax.set_ylabel("F1 of the complete result set")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
