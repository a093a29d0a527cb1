"""Code variants under evaluation: the product's PCA codes, the reference's
global quantisation and the learned head, each as a ready ``Catalogue``.

The compressors themselves come from the engine's registry
(``engine/codes/registry.make_compressor``); this module only fits them on a
labelled set.
"""

from __future__ import annotations

from ..engine.codes.global_quantizer import GlobalQuantizer
from ..engine.codes.registry import make_compressor
from ..engine.store.catalogue import Catalogue
from .datasets import LabelledSet

__all__ = ["CODE_VARIANTS", "GlobalQuantizer", "fit_compressor", "make_catalogue"]

CODE_VARIANTS = ("pca", "global", "learned")


def fit_compressor(data: LabelledSet, codes: str = "pca"):
    """The registry's compressor ``codes`` fitted on ``data``: ``pca`` the
    product's default, ``global`` the reference's ``GlobalQuantizer``,
    ``learned`` the ``LearnedCompressor`` (torch; about 10-45 s per data set)."""
    if codes not in CODE_VARIANTS:
        raise ValueError(f"codes: expected one of {CODE_VARIANTS}, got {codes!r}")
    comp = make_compressor(codes)
    if codes == "learned":  # quiet and single-threaded: runs sit side by side in workers
        comp.set_params(progress=False, n_threads=1)
    return comp.fit(data.X)


def make_catalogue(data: LabelledSet, codes: str = "pca", compressor=None) -> Catalogue:
    """The data set's catalogue under a code variant (see ``fit_compressor``)."""
    comp = fit_compressor(data, codes) if compressor is None else compressor
    return Catalogue(comp.transform(data.X), compressor=comp, embeddings=data.X)
