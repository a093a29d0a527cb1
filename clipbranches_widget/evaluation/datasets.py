"""Labelled data sets for the evaluation: embeddings plus a class per item.

``digits_set`` (scikit-learn's digits), ``synthetic_modes_set`` (CLIP-like
concepts made of separate modes), ``cifar10_set`` (CIFAR-10 photos as offline
HOG + colour features) and ``load_labelled_file`` (the user's own ``.npz`` or
``.npy`` + labels).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits

from ..engine._atomic import atomic_file
from ..engine._validation import check_embeddings, describe
from .features import image_features

__all__ = [
    "CIFAR_CLASSES",
    "LabelledSet",
    "cifar10_set",
    "digits_set",
    "load_labelled_file",
    "synthetic_modes_set",
]

log = logging.getLogger(__name__)


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
            with atomic_file(cache) as f:  # a killed run never leaves half a cache
                np.savez(f, X=X, y=y)
    return LabelledSet(
        "cifar10",
        X,
        y,
        list(CIFAR_CLASSES),
        description="CIFAR-10 test split, 10,000 real 32x32 photos; features: "
        "HOG (4x4 cells) + HSV colour histogram (no pretrained "
        "weights offline)",
    )


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
        df = pd.read_csv(path)
        col = "label" if "label" in df.columns else df.columns[0]
        if "label" not in df.columns and df.shape[1] != 1:
            raise ValueError(
                f"{path}: expected one column or a column named 'label', got {list(df.columns)}"
            )
        return df[col].to_numpy()
    raise ValueError(f"{path}: expected labels as .npy or .csv")
