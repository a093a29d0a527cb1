"""ClipEmbedder with the tiny random-weight open_clip config, and the torchvision fix."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from clipbranches_widget.engine.store.embed import (
    TINY_MODEL,
    ClipEmbedder,
    ImageReadError,
    load_image,
    register_tiny_model,
)

from images import write_images, write_truncated_jpeg


@pytest.fixture(scope="module")
def embedder():
    return ClipEmbedder(register_tiny_model(), None, batch_size=8, num_workers=2)


def test_image_and_text_embeddings_are_unit_float32(embedder, tmp_path):
    paths = write_images(tmp_path, 11)
    X = embedder.embed_images(paths)
    assert X.shape == (11, embedder.n_features_) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)
    assert np.unique(X.round(4), axis=0).shape[0] == 11  # distinct images, distinct vectors
    T = embedder.embed_text(["a red bus", "a cat", "a red bus"])
    assert T.shape == (3, embedder.n_features_) and T.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(T, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(T[0], T[2], atol=1e-6)
    assert not np.allclose(T[0], T[1])


def test_batching_and_input_kinds_do_not_change_embeddings(embedder, tmp_path):
    paths = write_images(tmp_path, 10)
    a = embedder.embed_images(paths, batch_size=3)
    b = embedder.embed_images(paths, batch_size=10)
    np.testing.assert_allclose(a, b, atol=1e-5)
    pil = [Image.open(p) for p in paths[:2]]
    np.testing.assert_allclose(embedder.embed_images(pil), a[:2], atol=1e-5)
    raw = open(paths[3], "rb").read()
    np.testing.assert_allclose(embedder.embed_images([raw]), a[3:4], atol=1e-5)
    np.testing.assert_allclose(embedder.embed_images(paths[4]), a[4:5], atol=1e-5)


def test_random_weights_are_the_same_in_every_instance(embedder, tmp_path):
    # a catalogue reopened later recreates its random-weight embedder: it must
    # embed exactly like the one that built it
    paths = write_images(tmp_path, 3)
    other = ClipEmbedder.from_spec(embedder.spec)
    np.testing.assert_array_equal(other.embed_images(paths), embedder.embed_images(paths))
    reseeded = ClipEmbedder(TINY_MODEL, None, seed=1)
    assert not np.allclose(reseeded.embed_images(paths), embedder.embed_images(paths))
    assert embedder.spec == {"model": TINY_MODEL, "pretrained": None, "seed": 0}


def test_unreadable_images_raise_or_are_skipped(embedder, tmp_path):
    paths = write_images(tmp_path, 4)
    bad_text = tmp_path / "notes.jpg"
    bad_text.write_text("this is not a JPEG")
    truncated = tmp_path / "cut.jpg"
    write_truncated_jpeg(truncated)
    mixed = [paths[0], str(bad_text), paths[1], str(truncated), str(tmp_path / "missing.png")]
    with pytest.raises(ImageReadError, match="notes.jpg: not an image") as info:
        embedder.embed_images(mixed)
    assert info.value.uri == str(bad_text)
    X = embedder.embed_images(mixed, errors="skip")
    assert X.shape[0] == 5
    assert np.isfinite(X[[0, 2]]).all() and np.isnan(X[[1, 3, 4]]).all()
    good = embedder.embed_images(paths[:2])
    np.testing.assert_allclose(X[[0, 2]], good, atol=1e-5)
    with pytest.raises(ImageReadError, match="truncated"):
        load_image(str(truncated))
    with pytest.raises(ImageReadError, match="no such file"):
        load_image(str(tmp_path / "missing.png"))
    with pytest.raises(ImageReadError, match="expected a path"):
        load_image(12)


def test_iter_batches_reports_positions_and_failures(embedder, tmp_path):
    paths = write_images(tmp_path, 5)
    bad = tmp_path / "x.png"
    bad.write_bytes(b"\x89PNG garbage")
    items = paths[:2] + [str(bad)] + paths[2:]
    timings = {}
    out = list(embedder.iter_batches(items, batch_size=2, timings=timings))
    assert [len(p) + len(f) for p, _, f in out] == [2, 2, 2]
    positions = np.concatenate([p for p, _, _ in out])
    np.testing.assert_array_equal(positions, [0, 1, 3, 4, 5])
    failures = [f for _, _, fs in out for f in fs]
    assert [pos for pos, _ in failures] == [2] and isinstance(failures[0][1], ImageReadError)
    assert timings["model_s"] > 0 and timings["decode_wait_s"] >= 0


def test_bad_arguments_and_missing_weights_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="unknown open_clip model 'ViT-B-33'; did you mean"):
        ClipEmbedder("ViT-B-33", None)
    with pytest.raises(ValueError, match="not a pretrained tag of 'ViT-B-32'.*laion2b_s34b_b79k"):
        ClipEmbedder("ViT-B-32", "no-such-tag")
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        ClipEmbedder(TINY_MODEL, str(tmp_path / "weights.pt"))
    wrong = tmp_path / "weights.pt"
    wrong.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="could not load the checkpoint file"):
        ClipEmbedder(TINY_MODEL, str(wrong))
    with pytest.raises(ValueError, match="batch_size: expected a positive integer"):
        ClipEmbedder(TINY_MODEL, None, batch_size=0)
    with pytest.raises(ValueError, match="model: expected an open_clip model name"):
        ClipEmbedder("", None)


def test_hub_weights_offline_fail_fast_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE is set.*pretrained=<path to a local"):
        ClipEmbedder("RN50", "openai")


def test_a_local_checkpoint_file_loads_offline(embedder, tmp_path):
    import torch

    ckpt = tmp_path / "tiny.pt"
    torch.save(embedder.model_.state_dict(), ckpt)
    loaded = ClipEmbedder(TINY_MODEL, str(ckpt), seed=5)  # weights come from the file
    np.testing.assert_allclose(
        loaded.embed_text(["a dog"]), embedder.embed_text(["a dog"]), atol=1e-6
    )
    assert loaded.spec["pretrained"] == str(ckpt)


def test_text_input_is_checked(embedder):
    with pytest.raises(TypeError, match="got one string; wrap it"):
        embedder.embed_text("a cat")
    with pytest.raises(TypeError, match="expected strings, got int"):
        embedder.embed_text(["a", 3])
    assert embedder.embed_text([]).shape == (0, embedder.n_features_)
    with pytest.raises(ValueError, match="errors: expected 'raise' or 'skip'"):
        embedder.embed_images([], errors="ignore")


def _run(code, env_extra=None, cwd=None, prefix=""):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-c", prefix + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


# loads torch_compat.py on its own: the package's numba/faiss imports would only
# slow these subprocesses down
COMPAT_PY = os.path.join(
    os.path.dirname(__file__),
    *[os.pardir] * 3,
    "clipbranches_widget",
    "engine",
    "store",
    "torch_compat.py",
)
LOAD_COMPAT = f"""
import importlib.util
spec = importlib.util.spec_from_file_location("torch_compat", {COMPAT_PY!r})
torch_compat = importlib.util.module_from_spec(spec)
spec.loader.exec_module(torch_compat)
ensure_torchvision = torch_compat.ensure_torchvision
"""


def test_torchvision_fix_makes_torchvision_importable():
    # the oracle: does torchvision import natively in a fresh process?
    native = _run("import torchvision").returncode == 0
    r = _run(
        prefix=LOAD_COMPAT,
        code="""
        first = ensure_torchvision()
        second = ensure_torchvision()
        from torchvision import transforms
        transforms.Normalize((0.5,), (0.5,))
        print(first, second)
    """,
    )
    assert r.returncode == 0, r.stderr
    expected = "False False" if native else "True True"
    assert r.stdout.split() == expected.split()


def test_torchvision_fix_does_nothing_where_torchvision_imports(tmp_path):
    # a torchvision that imports natively: nothing is defined, torch not even imported
    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text("NATIVE = True\n")
    r = _run(
        prefix=LOAD_COMPAT,
        code="""
        import sys
        print(torch_compat.ensure_torchvision())
        import torchvision
        print(torchvision.NATIVE, torch_compat._library is None, "torch" in sys.modules)
    """,
        env_extra={"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.getcwd()}"},
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "True", "True", "False"]


def test_torchvision_fix_reraises_unrelated_errors(tmp_path):
    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise RuntimeError('something else broke')\n")
    r = _run(
        prefix=LOAD_COMPAT,
        code="""
        ensure_torchvision()
    """,
        env_extra={"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.getcwd()}"},
        cwd=tmp_path,
    )
    assert r.returncode != 0 and "something else broke" in r.stderr


def test_images_by_url(embedder, tmp_path):
    import functools
    import http.server
    import threading

    paths = write_images(tmp_path, 2)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        urls = [f"{base}/{os.path.basename(p)}" for p in paths]
        np.testing.assert_allclose(
            embedder.embed_images(urls), embedder.embed_images(paths), atol=1e-6
        )
        with pytest.raises(ImageReadError, match="missing.png: HTTPError: HTTP Error 404"):
            embedder.embed_images([f"{base}/missing.png"])
    finally:
        server.shutdown()
        server.server_close()
