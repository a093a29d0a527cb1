"""The feature subsets: the contract between the classifier and the index.

Every box of a model constrains the dimensions of one subset, and the index
keeps one structure per subset, so both must draw the same list. Drawn with a
fixed seed, the default list matches every model trained later against an
index built once.
"""

from __future__ import annotations

import numpy as np

__all__ = ["default_feature_subsets"]


def default_feature_subsets(
    n_features: int = 32, sizes=((64, 4), (32, 6), (8, 8)), seed: int = 0
) -> list[tuple[int, ...]]:
    """The paper's deployment: 64 subsets of 4 dims, 32 of 6, 8 of 8 (duplicates dropped)."""
    rng = np.random.default_rng(seed)
    out: list[tuple[int, ...]] = []
    seen = set()
    for count, size in sizes:
        size = min(size, n_features)
        for _ in range(count):
            s = tuple(sorted(rng.choice(n_features, size, replace=False).tolist()))
            if s not in seen:
                seen.add(s)
                out.append(s)
    return out
