"""The Binder configuration is consistent and its demo preparation works.

Binder itself (network, the PyTorch CPU index, hub weights) cannot be reached
here; what can be checked offline is checked: the scripts parse, the files
they name exist, and the catalogue step runs on local images.
"""

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import tomllib

from images import sample_dir

ROOT = Path(__file__).resolve().parents[2]


def test_binder_files_are_valid():
    post = ROOT / "binder" / "postBuild"
    assert os.access(post, os.X_OK), "postBuild must be executable"
    subprocess.run(["bash", "-n", str(post)], check=True)
    text = post.read_text()
    assert "download.pytorch.org/whl/cpu" in text  # never the CUDA wheels
    assert (ROOT / "binder" / "prepare_demo.py").exists() and "binder/prepare_demo.py" in text
    version = (ROOT / "binder" / "runtime.txt").read_text().strip().removeprefix("python-")
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.10" and tuple(map(int, version.split("."))) >= (3, 10)
    readme = (ROOT / "README.md").read_text()
    assert "mybinder.org/v2/gh/" in readme and "notebooks/01-quickstart.ipynb" in readme


def test_demo_preparation_builds_a_catalogue_offline(tmp_path):
    data = sample_dir()
    from clipbranches_widget import Catalogue
    from clipbranches_widget.engine.store.embed import register_tiny_model

    spec = importlib.util.spec_from_file_location(
        "prepare_demo", ROOT / "binder" / "prepare_demo.py"
    )
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    val = tmp_path / "imagenette2-160" / "val"
    for cls in ("cat", "ship"):
        (val / cls).mkdir(parents=True)
        for f in sorted((data / cls).iterdir())[:20]:
            shutil.copy(f, val / cls / f.name)
    assert prepare.fetch_images(tmp_path) == val  # present: nothing is downloaded
    cat = prepare.build_catalogue(
        val, tmp_path / "catalogue", model=register_tiny_model(), pretrained=None, progress=False
    )
    again = Catalogue.open(tmp_path / "catalogue")
    assert len(cat) == len(again) == 40
