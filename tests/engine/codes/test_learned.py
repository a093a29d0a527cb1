"""LearnedCompressor: the learned 32-d head, its quantisation, persistence and
selection in catalogues. Tiny data and few epochs: the whole file runs in
seconds."""

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from clipbranches_widget import Catalogue, Session
from clipbranches_widget.engine.codes import quantize as q8
from clipbranches_widget.engine.codes.learned import LearnedCompressor
from clipbranches_widget.engine.codes.pca import Compressor
from clipbranches_widget.engine.codes.registry import (
    compressor_from_dict,
    is_fitted,
    load_compressor,
    make_compressor,
    save_compressor,
)

SMALL = dict(
    n_components=8, hidden=16, anchors=16, pool=64, max_epochs=3, steps_per_epoch=4, progress=False
)


def clustered_embeddings(n=240, d=40, k=6, seed=0):
    """Unit vectors around ``k`` random centres, with their cluster labels."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d))
    lab = rng.integers(0, k, n)
    X = centres[lab] + 0.4 * rng.standard_normal((n, d))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32), lab


@pytest.fixture(scope="module")
def data():
    return clustered_embeddings()


@pytest.fixture(scope="module")
def fitted(data):
    return LearnedCompressor(**SMALL).fit(data[0])


def test_shapes_dtypes_and_unit_outputs(fitted, data):
    X = data[0]
    z = fitted.project(X)
    assert z.shape == (len(X), 8) and z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
    codes = fitted.transform(X)
    assert codes.shape == (len(X), 8) and codes.dtype == np.uint8
    back = fitted.dequantize(codes)
    # bin centres: within half a bin of the float outputs (inside the quantile range)
    inside = (z >= fitted.low_) & (z <= fitted.low_ + 255 / fitted.scale_)
    assert np.all(
        np.abs(back - z)[inside] <= (0.5 / fitted.scale_ + 1e-6)[None, :].repeat(len(X), 0)[inside]
    )
    assert fitted.inverse_transform(codes).shape == X.shape
    assert fitted.project(X[:0]).shape == (0, 8)
    assert is_fitted(fitted) and not is_fitted(LearnedCompressor())
    # per-dimension quantisation spreads every dimension over most of 0..255
    assert all(np.ptp(codes[:, j].astype(int)) >= 200 for j in range(8))
    assert fitted.history_[0]["epoch"] == -1 and len(fitted.history_) >= 2


def test_codes_keep_neighbourhoods(fitted, data):
    """Items of one cluster get nearby codes: the 5 nearest codes of an item
    mostly share its cluster, as its 5 nearest embeddings do."""
    X, lab = data
    Z = fitted.dequantize(fitted.transform(X))
    D = ((Z[:, None, :] - Z[None]) ** 2).sum(-1)
    np.fill_diagonal(D, np.inf)
    nn = np.argsort(D, axis=1)[:, :5]
    assert (lab[nn] == lab[:, None]).mean() > 0.9


def test_deterministic_under_a_seed(data):
    X = data[0]
    a = LearnedCompressor(**SMALL, random_state=3).fit(X)
    b = LearnedCompressor(**SMALL, random_state=3).fit(X)
    c = LearnedCompressor(**SMALL, random_state=4).fit(X)
    for k in a.weights_:
        np.testing.assert_array_equal(a.weights_[k], b.weights_[k])
    np.testing.assert_array_equal(a.transform(X), b.transform(X))
    assert any(not np.array_equal(a.weights_[k], c.weights_[k]) for k in a.weights_)


def test_training_moves_away_from_the_pca_start(fitted, data):
    """The head is trained, not just PCA: the MLP path has non-zero weights and
    the held-out loss of the kept weights is below the starting point's."""
    assert np.abs(fitted.weights_["W2"]).max() > 0
    start = fitted.history_[0]["val"]
    assert min(h["val"] for h in fitted.history_[1:]) < start


def test_zero_epochs_is_the_normalised_pca_start(data):
    X = data[0]
    c = LearnedCompressor(**{**SMALL, "max_epochs": 0}).fit(X)
    z = Compressor(8).fit(X).project(X)
    np.testing.assert_allclose(
        c.project(X), z / np.linalg.norm(z, axis=1, keepdims=True), atol=1e-4
    )
    assert [h["epoch"] for h in c.history_] == [-1]


def test_text_and_image_heads_share_the_space(fitted, data):
    X = data[0]
    # without captions the text head is the image head: a text embedding equal
    # to an image embedding lands exactly on that image's code
    np.testing.assert_array_equal(fitted.transform_text(X[:10]), fitted.transform(X[:10]))
    assert fitted.text_weights_ is None


def test_caption_pairs_train_a_separate_aligned_text_head(data):
    X, lab = data
    rng = np.random.default_rng(1)
    rows = np.arange(0, len(X), 2)
    # "captions": noisy copies of the images' embeddings, shifted by a common
    # offset (the modality gap)
    gap = rng.standard_normal(X.shape[1]).astype(np.float32) * 0.15
    T = X[rows] + gap + 0.05 * rng.standard_normal((rows.size, X.shape[1])).astype(np.float32)
    c = LearnedCompressor(**{**SMALL, "max_epochs": 4}).fit(X, captions=(rows, T))
    assert c.text_weights_ is not None
    zt, zi = c.project_text(T), c.project(X[rows])
    # each caption's code is nearer to its own image's code than most others
    sims = zt @ zi.T
    rank_own = (sims > np.diag(sims)[:, None]).sum(axis=1)
    assert np.median(rank_own) <= 5
    # and an image embedding passed as text still lands next to its image
    assert np.mean(np.sum(c.project_text(X) * c.project(X), axis=1)) > 0.9
    back = LearnedCompressor.from_dict(json.loads(json.dumps(c.to_dict())))
    np.testing.assert_array_equal(back.transform_text(T), c.transform_text(T))


def test_to_dict_from_dict_round_trip(fitted, data):
    X = data[0]
    d = json.loads(json.dumps(fitted.to_dict()))  # JSON-able
    assert d["kind"] == "learned"
    back = compressor_from_dict(d)
    assert isinstance(back, LearnedCompressor)
    np.testing.assert_array_equal(back.transform(X), fitted.transform(X))
    np.testing.assert_array_equal(
        back.inverse_transform(fitted.transform(X[:5])),
        fitted.inverse_transform(fitted.transform(X[:5])),
    )
    assert back.get_params() == fitted.get_params()


def test_global_quantisation_option(data):
    X = data[0]
    g = LearnedCompressor(**SMALL, quantization="global").fit(X)
    z = g.project(X)
    np.testing.assert_array_equal(g.transform(X), q8.quantize_global(z))
    # the reference's map on unit vectors leaves most of 0..255 unused
    assert g.transform(X).max() - g.transform(X).min() < 255
    # dequantisation returns the bin centres of the truncation
    np.testing.assert_allclose(
        g.dequantize(np.array([[128] * 8], np.uint8)), 0.5 / 127.5, atol=1e-6
    )


def test_quantize_module_matches_compressor(data):
    X = data[0]
    c = Compressor(8).fit(X)
    low, scale = q8.fit_per_dimension(c.project(X), c.quantile)
    np.testing.assert_array_equal(low, c.low_)
    np.testing.assert_array_equal(scale, c.scale_)
    np.testing.assert_array_equal(q8.quantize(c.project(X), low, scale), c.transform(X))
    with pytest.raises(ValueError, match="quantile"):
        q8.fit_per_dimension(c.project(X), 0.7)


def test_bad_input_errors(fitted, data):
    X = data[0]
    with pytest.raises(NotFittedError, match="fit"):
        LearnedCompressor().transform(X)
    with pytest.raises(ValueError, match=r"expected a 2-D float array of shape \(n, 40\)"):
        fitted.transform(X[:, :10])
    with pytest.raises(TypeError, match="expected a 2-D float array"):
        fitted.transform(np.array([["a"] * 40]))
    with pytest.raises(ValueError, match="at least 20 embeddings"):
        LearnedCompressor(**SMALL).fit(X[:5])
    with pytest.raises(ValueError, match="n_components: expected an integer 1..255"):
        LearnedCompressor(n_components=0).fit(X)
    with pytest.raises(ValueError, match="quantization"):
        LearnedCompressor(quantization="truncate").fit(X)
    with pytest.raises(ValueError, match="input_dims: expected an integer 8..255"):
        LearnedCompressor(**{**SMALL, "input_dims": 4}).fit(X)
    with pytest.raises(ValueError, match="koleo"):
        LearnedCompressor(koleo=-1).fit(X)
    with pytest.raises(ValueError, match="one text embedding per row"):
        LearnedCompressor(**SMALL).fit(X, captions=(np.arange(3), X[:4]))
    with pytest.raises(IndexError, match="rows in 0..239"):
        LearnedCompressor(**SMALL).fit(X, captions=(np.array([0, 999]), X[:2]))
    with pytest.raises(TypeError, match="uint8"):
        fitted.dequantize(np.zeros((2, 8), np.float32))
    with pytest.raises(ValueError, match="shape"):
        fitted.quantize(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="expected kind 'learned', got 'pca'"):
        LearnedCompressor.from_dict(Compressor(8).fit(X).to_dict())
    broken = fitted.to_dict()
    del broken["weights"]
    with pytest.raises(ValueError, match="malformed"):
        LearnedCompressor.from_dict(broken)
    with pytest.raises(ValueError, match="unknown kind 'mlp'"):
        compressor_from_dict({"kind": "mlp"})


def test_make_compressor_specs(fitted, tmp_path):
    assert isinstance(make_compressor(None), Compressor)
    assert isinstance(make_compressor("pca"), Compressor)
    assert isinstance(make_compressor("learned"), LearnedCompressor)
    assert make_compressor(fitted) is fitted
    path = tmp_path / "head.json"
    save_compressor(fitted, path)
    loaded = make_compressor(str(path))
    assert isinstance(loaded, LearnedCompressor) and is_fitted(loaded)
    assert loaded.to_dict() == fitted.to_dict()
    assert load_compressor(path).to_dict() == fitted.to_dict()
    with pytest.raises(ValueError, match="not a known kind, and no such file"):
        make_compressor("umap")
    with pytest.raises(TypeError, match="got int"):
        make_compressor(3)
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    with pytest.raises(ValueError, match="not a compressor JSON file"):
        make_compressor(bad)


def test_catalogue_from_embeddings_save_open_and_session(fitted, data, tmp_path):
    X, lab = data
    cat = Catalogue.from_embeddings(X, compressor=fitted)
    np.testing.assert_array_equal(cat.codes, fitted.transform(X))
    saved = cat.save(tmp_path / "cat")
    manifest = json.loads((tmp_path / "cat" / "manifest.json").read_text())
    assert manifest["compressor"]["kind"] == "learned"
    assert isinstance(saved.compressor, LearnedCompressor)
    np.testing.assert_array_equal(np.asarray(saved.codes), cat.codes)
    # appended items are coded exactly like the original ones
    saved.append(embeddings=X[:7])
    np.testing.assert_array_equal(np.asarray(saved.codes[-7:]), fitted.transform(X[:7]))
    # a refine runs on learned codes, ranking through dequantize + project
    s = Session(saved, k=20, n_background=50)
    s.search(X[0])
    s.label(np.flatnonzero(lab == lab[0])[:8], 1)
    s.label(np.flatnonzero(lab != lab[0])[:8], -1)
    res = s.refine()
    # mostly the concept (1 item in 6 is, at random)
    assert res.count > 0 and (lab[res.ids[res.ids < len(X)]] == lab[0]).mean() > 0.6
    # a catalogue without embeddings decodes codes for k-NN seeding
    bare = Catalogue.from_embeddings(X, compressor=fitted, keep_embeddings=False)
    _, ids = bare.seeder.search(X[0], 10)
    assert (lab[ids] == lab[0]).mean() >= 0.8


def test_build_with_learned_compressor(tmp_path):
    from clipbranches_widget.engine.store.embed import ClipEmbedder, register_tiny_model

    from images import write_images

    embedder = ClipEmbedder(register_tiny_model(), None, batch_size=8, num_workers=1)
    root = tmp_path / "photos"
    write_images(root, 24, seed=5)
    cat = Catalogue.build(
        root,
        out=tmp_path / "cat",
        embedder=embedder,
        progress=False,
        compressor=LearnedCompressor(**SMALL),
    )
    assert cat.codes.shape == (24, 8) and isinstance(cat.compressor, LearnedCompressor)
    manifest = json.loads((tmp_path / "cat" / "manifest.json").read_text())
    assert manifest["compressor"]["kind"] == "learned"
    X = np.asarray(cat.embeddings, np.float32)
    again = Catalogue.open(tmp_path / "cat")
    np.testing.assert_array_equal(
        np.asarray(again.codes),
        again.compressor.transform(embedder.embed_images(list(again.uris), batch_size=8)),
    )
    assert again.compressor.to_dict() == cat.compressor.to_dict()
    assert X.shape[0] == 24
    # the text head maps the CLIP text space into the same codes
    t = embedder.embed_text(["a photo"])
    assert again.compressor.transform_text(t).shape == (1, 8)


def test_package_import_and_learned_inference_do_not_import_torch(fitted, data, tmp_path):
    """Opening a learned catalogue and coding queries is plain numpy."""
    path = tmp_path / "head.json"
    save_compressor(fitted, path)
    np.save(tmp_path / "X.npy", data[0][:5])
    np.save(tmp_path / "codes.npy", fitted.transform(data[0][:5]))
    code = (
        "import sys, numpy as np, clipbranches_widget; "
        "from clipbranches_widget.engine.codes.registry import load_compressor; "
        f"c = load_compressor({str(path)!r}); "
        f"X = np.load({str(tmp_path / 'X.npy')!r}); "
        f"assert (c.transform(X) == np.load({str(tmp_path / 'codes.npy')!r})).all(); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fit_without_torch_names_the_learned_extra(data, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ImportError, match=r"clipbranches-widget\[learned\]"):
        LearnedCompressor(**SMALL).fit(data[0])


def test_session_ranks_a_text_query_through_the_text_head(tmp_path):
    """With a caption-trained text head, Session's reference point for a text
    query is the text head's output; for example ids it is the image head's."""
    from clipbranches_widget.engine.store.embed import ClipEmbedder, register_tiny_model

    embedder = ClipEmbedder(register_tiny_model(), None, batch_size=8, num_workers=1)
    t = embedder.embed_text(["a photo of a bus"])
    rng = np.random.default_rng(0)
    X = (t + 0.5 * rng.standard_normal((120, t.shape[1]))).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    rows = np.arange(60)
    T = X[rows] + 0.3 * rng.standard_normal((60, X.shape[1])).astype(np.float32)
    head = LearnedCompressor(**SMALL).fit(X, captions=(rows, T))
    cat = Catalogue.from_embeddings(X, compressor=head, embedder=embedder)
    s = Session(cat, k=10, n_background=20)
    s.search("a photo of a bus")
    np.testing.assert_allclose(
        s._reference(), head.project_text(s.query_vector[None])[0], rtol=1e-6
    )
    assert not np.allclose(
        head.project_text(s.query_vector[None]), head.project(s.query_vector[None])
    )
    s.search(np.array([3, 4]))
    np.testing.assert_allclose(s._reference(), head.project(s.query_vector[None])[0], rtol=1e-6)
