"""The command line: clipbranches build / info."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from clipbranches_widget import Catalogue
from clipbranches_widget.cli import main

from images import write_images


def test_build_then_info(tmp_path, capsys):
    paths = write_images(tmp_path / "imgs", 9)
    (tmp_path / "imgs" / "broken.jpg").write_text("nope")
    out = tmp_path / "cat"
    rc = main(
        [
            "build",
            str(tmp_path / "imgs"),
            str(out),
            "--model",
            "clipbranches-tiny",
            "--pretrained",
            "none",
            "--batch-size",
            "4",
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert re.search(
        rf"{re.escape(str(out))}: 9 items in [0-9.]+ s \([0-9]+ images/s\), "
        r"1 unreadable images skipped",
        printed,
    ), printed
    assert (
        main(
            [
                "build",
                str(tmp_path / "imgs"),
                str(out),
                "--model",
                "clipbranches-tiny",
                "--pretrained",
                "none",
                "--batch-size",
                "4",
                "--no-progress",
            ]
        )
        == 0
    )
    assert f"{out}: 9 items (already built)" in capsys.readouterr().out
    cat = Catalogue.open(out)
    assert len(cat) == 9 and list(cat.uris) == sorted(paths)
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["items"] == 9 and info["failed"] == 1
    assert info["model"] == "clipbranches-tiny" and info["pretrained"] is None
    assert info["code_dims"] == 32 and info["embeddings"] is True
    assert info["bytes"] >= 9 * 32
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "items" in text and "clipbranches-tiny" in text


def test_build_without_embeddings(tmp_path, capsys):
    write_images(tmp_path / "imgs", 5)
    rc = main(
        [
            "build",
            str(tmp_path / "imgs"),
            str(tmp_path / "cat"),
            "--model",
            "clipbranches-tiny",
            "--pretrained",
            "none",
            "--no-embeddings",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert Catalogue.open(tmp_path / "cat").embeddings is None


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("clipbranches info: error: no catalogue at") and err.count("\n") == 1
    write_images(tmp_path / "imgs", 2)
    assert (
        main(
            [
                "build",
                str(tmp_path / "imgs"),
                str(tmp_path / "c"),
                "--model",
                "ViT-B-99",
                "--no-progress",
            ]
        )
        == 2
    )
    assert "unknown open_clip model 'ViT-B-99'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["build"])  # argparse: missing SOURCE and OUT


def test_console_script_entry_point(tmp_path):
    X = np.random.default_rng(0).standard_normal((12, 8)).astype(np.float32)
    Catalogue.from_embeddings(X, uris=[f"u{i}" for i in range(12)]).save(tmp_path / "c")
    r = subprocess.run(
        [sys.executable, "-m", "clipbranches_widget.cli", "info", str(tmp_path / "c"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["items"] == 12


def test_sharded_build_with_a_saved_compressor_then_merge(tmp_path, capsys):
    from clipbranches_widget.engine.codes.registry import save_compressor

    paths = write_images(tmp_path / "imgs", 8)
    X = np.random.default_rng(0).standard_normal((200, 64)).astype(np.float32)
    from clipbranches_widget import Compressor

    save_compressor(Compressor().fit(X), tmp_path / "pca.json")
    (tmp_path / "s0").mkdir()
    (tmp_path / "s1").mkdir()
    for i, p in enumerate(paths):
        os.link(p, tmp_path / f"s{i % 2}" / os.path.basename(p))
    for k in (0, 1):
        assert (
            main(
                [
                    "build",
                    str(tmp_path / f"s{k}"),
                    str(tmp_path / f"c{k}"),
                    "--model",
                    "clipbranches-tiny",
                    "--pretrained",
                    "none",
                    "--no-progress",
                    "--compressor",
                    str(tmp_path / "pca.json"),
                ]
            )
            == 0
        )
    assert main(["merge", str(tmp_path / "all"), str(tmp_path / "c0"), str(tmp_path / "c1")]) == 0
    assert f"{tmp_path / 'all'}: 8 items from 2 parts" in capsys.readouterr().out
    merged = Catalogue.open(tmp_path / "all")
    c0 = Catalogue.open(tmp_path / "c0")
    np.testing.assert_array_equal(merged.codes[:4], c0.codes)
    assert merged.compressor.to_dict() == c0.compressor.to_dict()
