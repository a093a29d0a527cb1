"""The feature subsets: the contract between the classifier and the index.

Every box of a model constrains the dimensions of one subset, and the index
keeps one structure per subset, so both must draw the same list. Drawn with a
fixed seed, the default list matches every model trained later against an
index built once.

The default is the paper's deployment (``PAPER_SIZES``: 64 x 4, 32 x 6 and
8 x 8 dimensions). ``REFINE_SIZES``, 104 subsets of 8 dimensions, is what
``Session.refine`` trains on (issue 15: in the quality harness 8-d subsets
gave boxes as good as or better than the paper's mix on every data set, and
the better candidates for the second stage); an index serves those models
when it is built with ``default_feature_subsets(d, REFINE_SIZES)``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["PAPER_SIZES", "REFINE_SIZES", "default_feature_subsets"]

#: (count, size) of the default subsets, the paper's: 64 of 4 dimensions, 32 of 6, 8 of 8
PAPER_SIZES = ((64, 4), (32, 6), (8, 8))
#: (count, size) of the subsets a refine trains on ("8d"): 104 of 8 dimensions
REFINE_SIZES = ((104, 8),)


def default_feature_subsets(
    n_features: int = 32, sizes=PAPER_SIZES, seed: int = 0
) -> list[tuple[int, ...]]:
    """``count`` subsets of ``size`` dimensions for each (count, size) of
    ``sizes``, drawn with ``seed`` (duplicates dropped)."""
    sizes = tuple((int(c), int(z)) for c, z in sizes)
    return list(_drawn(int(n_features), sizes, int(seed)))


@lru_cache(maxsize=32)  # every fit asks for the same list: drawing it cost ~1 ms
def _drawn(n_features, sizes, seed) -> tuple[tuple[int, ...], ...]:
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
    return tuple(out)
