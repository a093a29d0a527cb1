"""Synthetic clustered codes: the benchmark and test workload.

``n`` items drawn from ``n_clusters`` Gaussian clusters in ``d`` dimensions,
quantised to uint8; a *concept* is a few clusters (DESIGN.md's benchmark: 200
clusters, a concept of 3 clusters = about 1.5 % of the items).
"""

from __future__ import annotations

import numpy as np

from ..engine.codes.pca import identity_compressor

__all__ = ["clustered_codes", "identity_compressor"]


def clustered_codes(
    n: int,
    *,
    d: int = 32,
    n_clusters: int = 200,
    concept_clusters: int = 3,
    spread: float = 12.0,
    random_state=0,
    chunk: int = 1 << 20,
):
    """Return ``(codes, cluster, concept)``.

    codes (n, d) uint8; cluster (n,) int32 cluster of each item; concept: the
    ids of the clusters forming the concept. Centres are uniform in
    [40, 215]^d, so clusters are separable in a few dimensions but not in one.
    """
    rng = np.random.default_rng(random_state)
    centres = rng.uniform(40, 215, size=(n_clusters, d)).astype(np.float32)
    cluster = rng.integers(0, n_clusters, n).astype(np.int32)
    codes = np.empty((n, d), np.uint8)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        x = centres[cluster[s:e]] + rng.standard_normal((e - s, d), dtype=np.float32) * spread
        np.clip(np.rint(x), 0, 255, out=x)
        codes[s:e] = x
    concept = np.arange(concept_clusters)
    return codes, cluster, concept
