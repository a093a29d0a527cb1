import numpy as np
import pytest

from clipbranches_widget.engine.codes.pca import Compressor
from clipbranches_widget.engine.search.ranking import code_scores, rank
from clipbranches_widget.engine.search.seed import KnnSeeder

from twins import rank_twin


def embeddings(rng, n=2000, d=64):
    X = rng.standard_normal((n, d)).astype(np.float32) * np.linspace(3, 0.1, d, dtype=np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_compressor_uses_full_range_and_inverts(rng):
    X = embeddings(rng)
    c = Compressor(random_state=0).fit(X)
    codes = c.transform(X)
    assert codes.shape == (2000, 32) and codes.dtype == np.uint8
    assert (codes.min(axis=0) <= 2).all() and (codes.max(axis=0) >= 253).all()
    Xr = c.inverse_transform(codes)
    assert Xr.shape == X.shape
    # 32 of 64 dims with decaying variance: most of the signal survives
    assert np.mean(np.sum(Xr * X, axis=1)) > 0.8
    again = Compressor.from_dict(c.to_dict())
    np.testing.assert_array_equal(again.transform(X), codes)


def test_compressor_pads_when_data_is_small(rng):
    X = embeddings(rng, n=10, d=8)
    codes = Compressor().fit(X).transform(X)
    assert codes.shape == (10, 32)
    assert (codes[:, 9:] == codes[0, 9:]).all()  # zero components: constant codes


def test_compressor_errors():
    with pytest.raises(ValueError, match="NaN or inf in 1 row"):
        Compressor().fit(np.array([[0.0, 1.0], [np.nan, 1.0]]))
    with pytest.raises(ValueError, match="2-D float array"):
        Compressor().fit(np.zeros(5))
    with pytest.raises(ValueError, match="at least one row"):
        Compressor().fit(np.zeros((0, 5)))


def test_seeder_matches_brute_force_and_pads(rng):
    X = embeddings(rng, n=500, d=16)
    s = KnnSeeder().fit(X)
    q = X[3] + 0.01
    scores, ids = s.search(q, 10)
    brute = np.argsort(-(X @ q), kind="stable")[:10]
    np.testing.assert_array_equal(np.sort(ids), np.sort(brute))
    assert ids.dtype == np.int64 and np.all(np.diff(scores) <= 1e-6)
    scores, ids = s.search(X[:2], 600)
    assert ids.shape == (2, 600) and (ids[:, 500:] == -1).all()
    assert np.isneginf(scores[:, 500:]).all()
    with pytest.raises(ValueError, match="k: expected a positive integer"):
        s.search(q, 0)
    with pytest.raises(ValueError, match=r"shape \(n, 16\)"):
        s.search(np.zeros(5, np.float32), 3)


def test_code_scores_and_rank_twins(rng):
    X = embeddings(rng)
    c = Compressor().fit(X)
    codes = c.transform(X)
    ids = rng.choice(2000, 300, replace=False)
    ref = rng.standard_normal(32).astype(np.float32)
    got = code_scores(codes, ids, c, ref)
    np.testing.assert_allclose(got, c.dequantize(codes[ids]) @ ref, rtol=1e-4, atol=1e-4)
    votes = rng.integers(1, 4, 300)
    scores = np.round(got, 1)  # force ties on score to exercise the id tiebreak
    np.testing.assert_array_equal(rank(ids, votes, scores), rank_twin(ids, votes, scores))
