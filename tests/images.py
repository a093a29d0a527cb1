"""Where the tests find real images, and small generated ones.

The default tests use the 300-image CIFAR-10 sample committed under
``tests/data/cifar10-sample``. Only the tests that need real scale use the
full 10,000-image split, found through ``$CLIPBRANCHES_DATA`` (the folder
holding ``cifar10-test/``, or that folder itself) or ``../shared/data``
beside the checkout; without it they skip with one line saying so.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = Path(__file__).resolve().parent / "data" / "cifar10-sample"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PER_CLASS = 30


def sample_dir() -> Path:
    """The committed sample: ``<class>/0000.jpg`` .. ``0029.jpg`` for the 10 classes."""
    if not (SAMPLE / "cat" / "0000.jpg").is_file():
        pytest.fail(f"the committed test images are missing under {SAMPLE}")
    return SAMPLE


def full_cifar_dir() -> Path:
    """The full CIFAR-10 test split, or skip (with how to provide it)."""
    env = os.environ.get("CLIPBRANCHES_DATA")
    base = Path(env) if env else ROOT.parent / "shared" / "data"
    d = base if (base / "cat").is_dir() else base / "cifar10-test"
    if not (d / "cat").is_dir():
        pytest.skip(
            f"the full CIFAR-10 test split is not at {d}: set CLIPBRANCHES_DATA to the "
            "folder holding cifar10-test/ to run this test"
        )
    return d


def write_images(folder, n, *, seed=0, size=(40, 30), ext=".png"):
    """n small images: a colour per image plus noise (distinct embeddings)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        base = rng.integers(0, 256, 3)
        pix = np.clip(base + rng.normal(0, 30, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
        p = folder / f"img{i:03d}{ext}"
        Image.fromarray(pix).save(p)
        paths.append(str(p))
    return paths


def write_truncated_jpeg(path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
