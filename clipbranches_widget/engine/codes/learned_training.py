"""Training of the learned head (``LearnedCompressor.fit``): similarity
distillation and KoLeo for the image head, InfoNCE for an optional text head
(the losses are described in ``learned``).

torch is imported inside these functions only, so ``learned`` (inference,
serialisation) and the package import without it; ``require_torch`` names
the ``learned`` extra when it is missing.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
from tqdm.auto import tqdm

__all__ = ["require_torch", "train_image_head", "train_text_head"]


def require_torch():
    """The torch module, or an ImportError saying which extra to install."""
    try:
        import torch
    except ImportError as exc:
        raise ImportError(
            "training the learned head needs torch: pip install 'clipbranches-widget[learned]' "
            "(its inference is plain numpy and needs no torch)"
        ) from exc
    return torch


def _torch_threads(n: int):
    """Context manager running torch on ``n`` threads, restoring the setting after."""
    import torch

    @contextlib.contextmanager
    def ctx():
        before = torch.get_num_threads()
        torch.set_num_threads(int(n))
        try:
            yield
        finally:
            torch.set_num_threads(before)

    return ctx()


def _calibrate(S, perplexity: float, iters: int = 16, top: int = 64):
    """Log inverse temperatures (one per row) giving the softmax rows of ``S``
    the perplexity ``perplexity``, by bisection.

    Computed on each row's ``top`` largest entries only: at a perplexity of
    ~10 the rest carry no mass, and it is much cheaper.
    """
    import torch

    m = S.shape[1]
    target = math.log(min(float(perplexity), max(m, 1) * 0.5 + 0.5))
    S = S - S.amax(dim=1, keepdim=True)  # row max 0
    St = S.topk(min(top, m), dim=1).values
    lo = torch.full((S.shape[0], 1), -8.0)
    hi = torch.full((S.shape[0], 1), 12.0)
    for _ in range(iters):
        mid = (lo + hi) / 2
        P = torch.softmax(St * mid.exp(), dim=1)
        H = -(P * torch.log(P.clamp_min(1e-30))).sum(dim=1, keepdim=True)
        too_flat = H > target  # entropy too high: sharpen
        lo = torch.where(too_flat, mid, lo)
        hi = torch.where(too_flat, hi, mid)
    return (lo + hi) / 2


def _teacher(S, perplexity: float):
    """Row-wise softmax of the similarities ``S`` (anchors x pool), each row at
    the temperature that gives it the perplexity ``perplexity`` (as t-SNE)."""
    import torch

    return torch.softmax((S - S.amax(dim=1, keepdim=True)) * _calibrate(S, perplexity).exp(), dim=1)


def _head(params, xc):
    import torch

    h = torch.relu(xc @ params["W1"] + params["b1"])
    z = xc @ params["W"] + h @ params["W2"] + params["b2"]
    return torch.nn.functional.normalize(z, dim=1)


def _init_params(est, r: int, gen):
    import torch

    k, hid = int(est.n_components), int(est.hidden)
    W = torch.eye(r, k)  # the first k principal coordinates: the PCA codes
    W1 = torch.randn(r, hid, generator=gen) * math.sqrt(2.0 / r)
    return {
        "W": W,
        "W1": W1,
        "b1": torch.zeros(hid),
        "W2": torch.zeros(hid, k),
        "b2": torch.zeros(k),
    }


def _batch(idx, est, gen):
    """A batch: ``anchors`` random rows and a disjoint random pool of ``pool`` rows."""
    import torch

    n = idx.shape[0]
    perm = idx[torch.randperm(n, generator=gen)]
    n_anchor = min(int(est.anchors), max(1, n // 2))
    return perm[:n_anchor], perm[n_anchor : n_anchor + int(est.pool)]


def _distill_loss(params, log_scale, Xn_t, Xc_t, batch, est):
    """KL(teacher || student) of each anchor's similarity distribution over the
    pool, plus the KoLeo term over the anchors."""
    import torch

    a, p = batch
    with torch.no_grad():
        P = _teacher(Xn_t[a] @ Xn_t[p].T, float(est.perplexity))
    Z = _head(params, Xc_t[torch.cat([a, p])])
    za, zp = Z[: a.shape[0]], Z[a.shape[0] :]
    C = za @ zp.T
    # each student row is measured in units of its own neighbourhood width
    # (nearest minus k-th nearest similarity, k ~ perplexity), like the
    # teacher's per-row calibration but differentiable, so the loss compares
    # the shapes of the neighbourhoods, not their widths. Measured: one global
    # student temperature made the head distort the geometry (digits
    # recall@10 0.897); a per-row bisection held constant in the step is not a
    # descent direction (the loss rose after one epoch on CIFAR features)
    top = C.topk(min(int(round(float(est.perplexity))) + 1, C.shape[1]), dim=1).values
    width = (top[:, :1] - top[:, -1:]).clamp_min(1e-4)
    logQ = torch.log_softmax((C - top[:, :1]) / width * log_scale.exp(), dim=1)
    loss = (P * (torch.log(P.clamp_min(1e-30)) - logQ)).sum(dim=1).mean()
    if est.koleo > 0 and a.shape[0] > 1:
        dist = torch.cdist(za, za) + torch.eye(a.shape[0]) * 1e3
        loss = loss - est.koleo * torch.log(dist.min(dim=1).values + 1e-8).mean()
    return loss


def _fit_loop(est, params, extra, step_loss, val_batches, desc):
    """Adam with early stopping on the held-out loss; returns the best params."""
    import torch

    trainable = list(params.values()) + list(extra)
    for t in trainable:
        t.requires_grad_(True)
    opt = torch.optim.Adam(trainable, lr=float(est.lr))
    history = []
    with torch.no_grad():  # the starting point (PCA for the image head) is a candidate too
        best_loss = float(np.mean([float(step_loss(vb)) for vb in val_batches]))
    best, waited = {k: v.detach().clone() for k, v in params.items()}, 0
    history.append({"stage": desc, "epoch": -1, "train": None, "val": best_loss})
    bar = tqdm(range(int(est.max_epochs)), desc=desc, disable=not est.progress, leave=False)
    for epoch in bar:
        total = 0.0
        for _ in range(int(est.steps_per_epoch)):
            opt.zero_grad()
            loss = step_loss(None)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        with torch.no_grad():
            val = float(np.mean([float(step_loss(vb)) for vb in val_batches]))
        history.append(
            {"stage": desc, "epoch": epoch, "train": total / est.steps_per_epoch, "val": val}
        )
        bar.set_postfix(train=f"{total / est.steps_per_epoch:.4f}", val=f"{val:.4f}")
        if val < best_loss - 1e-5:
            best_loss, waited = val, 0
            best = {k: v.detach().clone() for k, v in params.items()}
        else:
            waited += 1
            if waited >= est.patience:
                break
    bar.close()
    return {k: v.numpy().astype(np.float32) for k, v in best.items()}, history


def train_image_head(est, Xn, train, val):
    """Distilled image head of ``est`` on normalised ``Xn``: (weights, history)."""
    torch = require_torch()

    with _torch_threads(est.n_threads):
        torch.manual_seed(int(est.random_state))
        gen = torch.Generator().manual_seed(int(est.random_state))
        Xn_t = torch.from_numpy(np.ascontiguousarray(Xn, np.float32))
        Xc_t = torch.from_numpy(est._inputs(Xn))
        params = _init_params(est, Xc_t.shape[1], gen)
        log_scale = torch.tensor(math.log(3.0))  # learned student sharpness
        tr, va = torch.from_numpy(train), torch.from_numpy(val)
        # held-out anchors against a pool drawn from the training items: the
        # same geometry (pool size, so temperature) as the training batches
        vgen = torch.Generator().manual_seed(int(est.random_state) + 1)
        val_batches = [
            (
                va[torch.randperm(va.numel(), generator=vgen)[: int(est.anchors)]],
                _batch(tr, est, vgen)[1],
            )
            for _ in range(4)
        ]

        def step_loss(vb):
            return _distill_loss(
                params, log_scale, Xn_t, Xc_t, _batch(tr, est, gen) if vb is None else vb, est
            )

        return _fit_loop(est, params, [log_scale], step_loss, val_batches, "image head")


def train_text_head(est, Xn, rows, Tn, train, val):
    """Contrastive (InfoNCE) text head towards the frozen image codes of its
    images; ``Tn`` holds the normalised text embeddings of ``Xn[rows]``."""
    torch = require_torch()

    with _torch_threads(est.n_threads):
        torch.manual_seed(int(est.random_state) + 2)
        gen = torch.Generator().manual_seed(int(est.random_state) + 2)
        Xc_t = torch.from_numpy(est._inputs(Xn))
        Tc_t = torch.from_numpy(est._inputs(Tn))
        image = {k: torch.from_numpy(v) for k, v in est.weights_.items()}
        with torch.no_grad():
            target = _head(image, Xc_t[torch.from_numpy(rows)])  # frozen image codes
        params = {k: v.clone() for k, v in image.items()}
        log_scale = torch.tensor(math.log(10.0))
        in_val = np.isin(rows, val)
        pairs_tr = torch.from_numpy(np.flatnonzero(~in_val))
        pairs_va = torch.from_numpy(np.flatnonzero(in_val))
        if pairs_va.numel() < 2:  # too few captions to hold some out: monitor the training pairs
            pairs_va = pairs_tr
        tr = torch.from_numpy(train)
        size = min(int(est.anchors) * 4, pairs_tr.numel())

        def loss_on(pr, img):
            zt = _head(params, Tc_t[pr])
            logits = zt @ target[pr].T * log_scale.exp()
            labels = torch.arange(pr.numel())
            nce = (
                torch.nn.functional.cross_entropy(logits, labels)
                + torch.nn.functional.cross_entropy(logits.T, labels)
            ) / 2
            keep = (_head(params, Xc_t[img]) - _head(image, Xc_t[img])).pow(2).sum(dim=1).mean()
            return nce + est.caption_weight * keep

        vgen = torch.Generator().manual_seed(int(est.random_state) + 3)
        val_batches = [
            (
                pairs_va[torch.randperm(pairs_va.numel(), generator=vgen)[:size]],
                torch.from_numpy(val),
            )
            for _ in range(2)
        ]

        def step_loss(vb):
            if vb is not None:
                return loss_on(*vb)
            pr = pairs_tr[torch.randperm(pairs_tr.numel(), generator=gen)[:size]]
            img = tr[torch.randperm(tr.numel(), generator=gen)[:size]]
            return loss_on(pr, img)

        if pairs_tr.numel() < 2:
            raise ValueError(
                f"captions: expected at least 2 image-caption pairs in the training "
                f"split, got {pairs_tr.numel()}"
            )
        return _fit_loop(est, params, [log_scale], step_loss, val_batches, "text head")
