"""The paper's learned 32-d head: an MLP trained on the catalogue's own
embeddings to keep CLIP's neighbourhoods, with a KoLeo term spreading codes.

Training (torch, imported only inside ``fit``, in ``learned_training``)
needs no captions:

- **similarity distillation**: for each anchor of a batch, the softmax over
  a random pool of items of its cosine similarities in the full CLIP space
  (the teacher, each row's temperature calibrated to a fixed perplexity, as
  in t-SNE, so it describes the anchor's neighbourhood whatever the data's
  similarity scale) is matched by the softmax of the 32-d codes'
  similarities, each row of those measured in units of its own
  neighbourhood width (KL divergence: the shapes of the neighbourhoods are
  compared, not their widths, which would make the head distort the
  geometry);
- **KoLeo** (Sablayrolles et al. 2019): ``-mean log(distance to the nearest
  other code)`` over the anchors, which spreads the codes over the sphere
  so that all of 0..255 gets used after quantisation.

The head is ``normalise(u W + relu(u W1 + b1) W2 + b2)`` where ``u`` holds the
top ``input_dims`` (128) principal coordinates of the L2-normalised input:
the MLP sees the catalogue's main subspace, which keeps it small and hard
to overfit (on 1,892-d CIFAR features a head on the raw input only ever
got worse on held-out items). ``W`` starts as the identity on the first 32
coordinates and ``W2`` at zero, so training starts from the PCA codes
(L2-normalised) and keeps them unless the held-out loss improves (early
stopping on a held-out split restores the best epoch, the start included).

Text queries: CLIP puts texts and images in one space and this head only
ever sees that space, so without captions the text head *is* the image head
(a separate text head trained to reproduce the image head's outputs on the
same inputs would converge to a copy of it). With image-caption pairs
(``fit(X, captions=(rows, T))``) a separate text head starts as a copy and
is trained with the paper's contrastive loss towards the (frozen) image
codes of its images, plus a term that keeps it equal to the image head on
image inputs, so catalogue codes never change because of captions.

Inference (``project``/``transform``) is plain numpy, so a catalogue built
with this compressor opens and answers queries without torch, and codes of
appended items are computed exactly like the original ones.
"""

from __future__ import annotations

import base64
import logging
import time

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError

from .._validation import check_embeddings, describe
from . import quantize as q8
from .learned_training import train_image_head, train_text_head
from .pca import Compressor

__all__ = ["LearnedCompressor"]

log = logging.getLogger(__name__)

QUANTIZATIONS = ("per_dimension", "global")


class LearnedCompressor(q8.CodesMixin, TransformerMixin, BaseEstimator):
    """Learned MLP head d -> 32 (L2-normalised) + 8-bit quantisation.

    Same interface as ``Compressor`` (fit, project, quantize, dequantize,
    transform, inverse_transform, to_dict/from_dict, ``low_``/``scale_``),
    plus ``project_text``/``transform_text`` for text embeddings.

    Parameters
    ----------
    n_components : int, default 32
    hidden : int, default 256
        Width of the MLP's hidden layer.
    input_dims : int, default 128
        The head's input: this many principal coordinates (at least
        ``n_components``, at most 255).
    perplexity : float, default 10
        Effective number of neighbours each teacher row spreads its mass
        over (the scale of the neighbourhoods that are preserved).
    koleo : float, default 0.05
        Weight of the KoLeo term (0 turns it off).
    anchors : int, default 128
        Random items per batch whose similarity distributions are matched...
    pool : int, default 2048
        ...over a disjoint random pool of this many items.
    lr : float, default 2e-3
    max_epochs : int, default 30
        0 keeps the starting point: PCA codes, L2-normalised.
    steps_per_epoch : int, default 50
    patience : int, default 4
        Stop after this many epochs without a better held-out loss.
    validation_fraction : float, default 0.1
    max_fit_samples : int, default 100_000
        Train on a seeded random subsample of at most this many rows.
    quantile : float, default 0.001
        Per-dimension quantisation range (see ``quantize.fit_per_dimension``).
    quantization : {"per_dimension", "global"}, default "per_dimension"
        "global" is the reference's ``trunc(127.5 z + 128)``, for comparison.
    caption_weight : float, default 1.0
        Weight of the term keeping the text head equal to the image head on
        image inputs, next to the contrastive loss (only with captions).
    random_state : int, default 0
    n_threads : int, default 1
        torch threads while training; results are reproducible for a given
        seed and thread count.
    progress : bool, default True
        A tqdm bar over epochs.

    Attributes
    ----------
    mean_ : (d,) float32, centre of the L2-normalised inputs
    input_components_ : (r, d) float32, principal axes giving the head's input
    input_scale_ : float, makes the head's inputs unit-norm on average
    weights_ : dict of float32 arrays ``W``, ``W1``, ``b1``, ``W2``, ``b2``
    text_weights_ : dict or None (None: the text head is the image head)
    decoder_ : (n_components + 1, d) float32, linear least-squares map from
        codes back to embeddings (``inverse_transform``; approximate)
    low_, scale_ : (n_components,) float32, ``code = round((z - low_) * scale_)``
    history_ : list of per-epoch dicts (train and held-out loss)
    n_features_in_ : int
    """

    def __init__(
        self,
        n_components=32,
        *,
        hidden=256,
        input_dims=128,
        perplexity=10.0,
        koleo=0.05,
        anchors=128,
        pool=2048,
        lr=2e-3,
        max_epochs=30,
        steps_per_epoch=50,
        patience=4,
        validation_fraction=0.1,
        max_fit_samples=100_000,
        quantile=0.001,
        quantization="per_dimension",
        caption_weight=1.0,
        random_state=0,
        n_threads=1,
        progress=True,
    ):
        self.n_components = n_components
        self.hidden = hidden
        self.input_dims = input_dims
        self.perplexity = perplexity
        self.koleo = koleo
        self.anchors = anchors
        self.pool = pool
        self.lr = lr
        self.max_epochs = max_epochs
        self.steps_per_epoch = steps_per_epoch
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.max_fit_samples = max_fit_samples
        self.quantile = quantile
        self.quantization = quantization
        self.caption_weight = caption_weight
        self.random_state = random_state
        self.n_threads = n_threads
        self.progress = progress

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None, *, captions=None):
        """Train the head on embeddings ``X`` (n, d); ``y`` is ignored.

        ``captions``: optional ``(rows, T)``, text embeddings ``T`` (m, d) of
        the images ``X[rows]``, to train a separate text head.
        """
        _check_params(self)
        X = check_embeddings(X)
        n, d = X.shape
        if n < 20:
            raise ValueError(f"X: expected at least 20 embeddings to train the head on, got {n}")
        rng = np.random.default_rng(self.random_state)
        if captions is not None:
            rows, T = _check_captions(captions, n, d)
        if n > self.max_fit_samples:
            keep = np.sort(rng.choice(n, self.max_fit_samples, replace=False))
            X = X[keep]
            if captions is not None:  # keep the captions of kept images only
                where = np.full(n, -1, np.int64)
                where[keep] = np.arange(keep.size)
                ok = where[rows] >= 0
                rows, T = where[rows[ok]], T[ok]
        Xn = _normalise(X)
        # PCA of the normalised inputs: the head's input, the centre and the start
        pca = Compressor(min(int(self.input_dims), d), random_state=self.random_state).fit(Xn)
        self.mean_ = pca.mean_
        self.input_components_ = pca.components_
        self.input_scale_ = 1.0
        U = self._inputs(Xn)
        self.input_scale_ = float(
            1.0 / max(np.sqrt((U.astype(np.float64) ** 2).sum(axis=1).mean()), 1e-12)
        )
        self.n_features_in_ = d
        perm = rng.permutation(Xn.shape[0])
        n_val = max(2, int(round(self.validation_fraction * Xn.shape[0])))
        val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        t0 = time.perf_counter()
        self.weights_, self.history_ = train_image_head(self, Xn, train, val)
        self.text_weights_ = None
        if captions is not None and len(rows):
            self.text_weights_, hist = train_text_head(self, Xn, rows, _normalise(T), train, val)
            self.history_ += hist
        log.info(
            "learned head: %d epochs in %.1f s, best held-out loss %.4f",
            len(self.history_),
            time.perf_counter() - t0,
            min(h["val"] for h in self.history_),
        )
        z = self._project_normalised(Xn, self.weights_)
        if self.quantization == "global":
            self.low_, self.scale_ = q8.global_range(self.n_components)
        else:
            self.low_, self.scale_ = q8.fit_per_dimension(z, self.quantile)
        # least-squares decoder codes -> embeddings, for inverse_transform
        A = np.hstack([z, np.ones((z.shape[0], 1), np.float32)]).astype(np.float64)
        self.decoder_ = np.linalg.lstsq(A, Xn.astype(np.float64), rcond=None)[0].astype(np.float32)
        return self

    # ------------------------------------------------------------------ inference (numpy)
    def _check_fitted(self):
        if not hasattr(self, "weights_"):
            raise NotFittedError("LearnedCompressor is not fitted yet: call fit(X) first")

    def _inputs(self, Xn) -> np.ndarray:
        """The head's input: scaled principal coordinates of normalised embeddings."""
        return ((Xn - self.mean_) @ self.input_components_.T) * np.float32(self.input_scale_)

    def _project_normalised(self, Xn, w) -> np.ndarray:
        u = self._inputs(Xn)
        h = np.maximum(u @ w["W1"] + w["b1"], 0)
        return _normalise(u @ w["W"] + h @ w["W2"] + w["b2"])

    def project(self, X) -> np.ndarray:
        """(n, n_components) float32 unit vectors of image embeddings, before quantisation."""
        self._check_fitted()
        X = check_embeddings(X, n_features=self.n_features_in_, allow_empty=True)
        return self._project_normalised(_normalise(X), self.weights_)

    def project_text(self, T) -> np.ndarray:
        """(n, n_components) float32 unit vectors of text embeddings (the text head)."""
        self._check_fitted()
        T = check_embeddings(T, n_features=self.n_features_in_, name="T", allow_empty=True)
        w = self.weights_ if self.text_weights_ is None else self.text_weights_
        return self._project_normalised(_normalise(T), w)

    def quantize(self, z) -> np.ndarray:
        self._check_fitted()
        z = np.asarray(z, np.float32)
        if z.ndim != 2 or z.shape[1] != len(self.low_):
            raise ValueError(
                f"z: expected a 2-D float array of shape (n, {len(self.low_)}), got {describe(z)}"
            )
        if self.quantization == "global":
            return q8.quantize_global(z)
        return q8.quantize(z, self.low_, self.scale_)

    def transform_text(self, T) -> np.ndarray:
        """(n, n_components) uint8 codes of text embeddings."""
        return self.quantize(self.project_text(T))

    def inverse_transform(self, codes) -> np.ndarray:
        """Approximate L2-normalised embeddings of codes.

        The head is not invertible (a nonlinear map to fewer dimensions); this
        is the linear least-squares decoder fitted on the training sample, good
        enough for k-NN seeding of a catalogue stored without embeddings.
        """
        z = self.dequantize(codes)
        return _normalise(z @ self.decoder_[:-1] + self.decoder_[-1])

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """JSON-able: parameters, weights (base64 float32), quantisation, decoder."""
        self._check_fitted()
        params = self.get_params()
        return {
            "kind": "learned",
            "params": params,
            "mean": _pack(self.mean_),
            "input_components": _pack(self.input_components_),
            "input_scale": self.input_scale_,
            "weights": {k: _pack(v) for k, v in self.weights_.items()},
            "text_weights": (
                None
                if self.text_weights_ is None
                else {k: _pack(v) for k, v in self.text_weights_.items()}
            ),
            "decoder": _pack(self.decoder_),
            "low": self.low_.tolist(),
            "scale": self.scale_.tolist(),
            "history": self.history_,
        }

    @classmethod
    def from_dict(cls, data: dict) -> LearnedCompressor:
        if not isinstance(data, dict) or data.get("kind") != "learned":
            got = data.get("kind") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"LearnedCompressor.from_dict: expected kind 'learned', got {got!r}")
        try:
            c = cls(**data["params"])
            c.mean_ = _unpack(data["mean"])
            c.input_components_ = _unpack(data["input_components"])
            c.input_scale_ = float(data["input_scale"])
            c.weights_ = {k: _unpack(v) for k, v in data["weights"].items()}
            tw = data.get("text_weights")
            c.text_weights_ = None if tw is None else {k: _unpack(v) for k, v in tw.items()}
            c.decoder_ = _unpack(data["decoder"])
            c.low_ = np.asarray(data["low"], np.float32)
            c.scale_ = np.asarray(data["scale"], np.float32)
            c.history_ = list(data.get("history", []))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"LearnedCompressor.from_dict: a malformed entry ({exc!r}); "
                "expected the output of to_dict()"
            ) from exc
        c.n_features_in_ = int(c.mean_.shape[0])
        k, d = int(c.n_components), c.n_features_in_
        r = c.input_components_.shape[0]
        if (
            c.input_components_.shape != (r, d)
            or c.weights_.get("W", np.empty(0)).shape != (r, k)
            or c.low_.shape != (k,)
        ):
            raise ValueError(
                f"LearnedCompressor.from_dict: expected input_components of shape "
                f"(r, {d}) and weights W of shape (r, {k}), got "
                f"{c.input_components_.shape} and "
                f"{c.weights_.get('W', np.empty(0)).shape}"
            )
        return c


# ---------------------------------------------------------------------- helpers (numpy)


def _check_params(est) -> None:
    """ValueError naming the first parameter of ``est`` out of its range."""

    def positive_int(name, lo=1, hi=None):
        v = getattr(est, name)
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, np.integer))
            or v < lo
            or (hi is not None and v > hi)
        ):
            rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise ValueError(f"{name}: expected an integer {rng}, got {v!r}")

    positive_int("n_components", 1, 255)
    positive_int("input_dims", int(est.n_components), 255)
    positive_int("max_epochs", 0)
    for name in (
        "hidden",
        "anchors",
        "pool",
        "steps_per_epoch",
        "patience",
        "max_fit_samples",
        "n_threads",
    ):
        positive_int(name)
    for name in ("perplexity", "lr"):
        if not getattr(est, name) > 0:
            raise ValueError(f"{name}: expected a positive number, got {getattr(est, name)!r}")
    for name in ("koleo", "caption_weight"):
        if not getattr(est, name) >= 0:
            raise ValueError(f"{name}: expected a number >= 0, got {getattr(est, name)!r}")
    if not 0 < est.validation_fraction < 0.5:
        raise ValueError(
            f"validation_fraction: expected a value in (0, 0.5), got {est.validation_fraction!r}"
        )
    if not 0 <= est.quantile < 0.5:
        raise ValueError(f"quantile: expected a value in [0, 0.5), got {est.quantile!r}")
    if est.quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization: expected one of {QUANTIZATIONS}, got {est.quantization!r}")


def _normalise(X) -> np.ndarray:
    X = np.asarray(X, np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), np.float32(1e-12))


def _pack(a) -> dict:
    a = np.ascontiguousarray(a, dtype="<f4")
    return {
        "shape": list(a.shape),
        "dtype": "<f4",
        "data": base64.b64encode(a.tobytes()).decode("ascii"),
    }


def _unpack(p) -> np.ndarray:
    raw = base64.b64decode(p["data"])
    return np.frombuffer(raw, dtype=p["dtype"]).reshape(p["shape"]).astype(np.float32)


def _check_captions(captions, n: int, d: int):
    try:
        rows, T = captions
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"captions: expected a pair (rows, text_embeddings), got {type(captions).__name__}"
        ) from exc
    rows = np.asarray(rows)
    if rows.ndim != 1 or rows.dtype.kind not in "iu":
        raise TypeError(f"captions: expected rows as a 1-D integer array, got {describe(rows)}")
    T = check_embeddings(T, n_features=d, name="captions text embeddings")
    if T.shape[0] != rows.shape[0]:
        raise ValueError(
            f"captions: expected one text embedding per row, got {rows.shape[0]} "
            f"rows and {T.shape[0]} text embeddings"
        )
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise IndexError(f"captions: expected rows in 0..{n - 1}, got {rows.min()}..{rows.max()}")
    return rows.astype(np.int64), T
