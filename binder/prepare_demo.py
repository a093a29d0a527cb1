"""Prepare the Binder demo: real CLIP weights and a few thousand real images.

    python binder/prepare_demo.py --out ~/demo

Downloads the Imagenette validation split (3,925 photos of 10 ImageNet
classes, 160 px) and the ViT-B-32 LAION-2B weights from the Hugging Face hub,
then builds the catalogue ``<out>/catalogue`` with them. Run at image build
time (postBuild); notebooks/01-quickstart.ipynb opens that catalogue when it
exists and falls back to the tiny offline model otherwise.
"""

from __future__ import annotations

import argparse
import logging
import tarfile
import urllib.request
from pathlib import Path

IMAGENETTE = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz"
MODEL, PRETRAINED = "ViT-B-32", "laion2b_s34b_b79k"

log = logging.getLogger("prepare_demo")


def fetch_images(out: Path) -> Path:
    """Download and unpack Imagenette; return its validation folder."""
    val = out / "imagenette2-160" / "val"
    if val.is_dir():
        return val
    out.mkdir(parents=True, exist_ok=True)
    archive = out / "imagenette2-160.tgz"
    log.info("downloading %s", IMAGENETTE)
    urllib.request.urlretrieve(IMAGENETTE, archive)
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/val/" in m.name or m.isdir()]
        tar.extractall(out, members=members, filter="data")
    archive.unlink()
    return val


def build_catalogue(
    images: Path, out: Path, model: str = MODEL, pretrained: str | None = PRETRAINED, **kwargs
):
    from clipbranches_widget import Catalogue

    return Catalogue.build(images, model=model, pretrained=pretrained, out=out, **kwargs)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path.home() / "demo")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    images = fetch_images(args.out)
    cat = build_catalogue(images, args.out / "catalogue")
    log.info("demo catalogue ready: %s", cat)


if __name__ == "__main__":
    main()
