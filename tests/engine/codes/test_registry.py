"""The compressor registry: one ``make_compressor`` for every kind, and every
kind round-trips through ``to_dict`` / ``compressor_from_dict``."""

import subprocess
import sys

import numpy as np
import pytest

from clipbranches_widget.engine.codes.global_quantizer import GlobalQuantizer
from clipbranches_widget.engine.codes.learned import LearnedCompressor
from clipbranches_widget.engine.codes.pca import Compressor
from clipbranches_widget.engine.codes.registry import (
    KINDS,
    compressor_from_dict,
    is_fitted,
    make_compressor,
)


def test_every_kind_is_made_with_its_width_and_seed():
    assert set(KINDS) == {"pca", "global", "learned"}
    for kind, cls in KINDS.items():
        c = make_compressor(kind, n_components=8, random_state=3)
        assert type(c) is cls and c.n_components == 8 and c.random_state == 3
        assert not is_fitted(c)
    assert isinstance(make_compressor(None), Compressor)
    q = GlobalQuantizer(4)
    assert make_compressor(q) is q


def test_global_quantizer_round_trips_and_matches_the_reference_map():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 16)).astype(np.float32)
    q = make_compressor("global", n_components=8).fit(X)
    codes = q.transform(X)
    z = q.project(X)
    np.testing.assert_array_equal(codes, np.clip(np.floor(127.5 * z + 128), 0, 255))
    back = compressor_from_dict(q.to_dict())
    assert isinstance(back, GlobalQuantizer)
    np.testing.assert_array_equal(back.transform(X), codes)
    np.testing.assert_allclose(back.inverse_transform(codes), q.inverse_transform(codes))


def test_codes_modules_import_without_a_cycle():
    # each module imports on its own, in any order (no lazy import hides a cycle)
    for first in ("learned", "pca", "registry", "global_quantizer"):
        code = f"import clipbranches_widget.engine.codes.{first}"
        subprocess.run([sys.executable, "-c", code], check=True)


def test_learned_is_registered():
    assert KINDS["learned"] is LearnedCompressor
    with pytest.raises(ValueError, match="unknown kind 'umap'"):
        compressor_from_dict({"kind": "umap"})
