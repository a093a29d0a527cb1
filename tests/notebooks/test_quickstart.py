"""notebooks/01-quickstart.ipynb runs headless, offline, top to bottom (nbclient)."""

from __future__ import annotations

import json
import os
import pathlib
import re

import nbformat
import pytest
from nbclient import NotebookClient

from clipbranches_widget import Catalogue

from images import sample_dir

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "01-quickstart.ipynb"


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif "data" in out and "text/plain" in out["data"]:
            parts.append(out["data"]["text/plain"])
    return "".join(parts)


@pytest.mark.slow
def test_quickstart_executes_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPBRANCHES_IMAGES", str(sample_dir()))
    monkeypatch.setenv("CLIPBRANCHES_N_IMAGES", "300")
    monkeypatch.setenv("CLIPBRANCHES_DEMO", str(tmp_path / "no-demo"))  # as offline in CI
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the catalogue and exports land here
    # the kernel imports the package from this checkout even when it is not installed
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join(
            [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        ),
    )
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()

    code = [c for c in nb.cells if c.cell_type == "code"]
    for c in code:
        errors = [o for o in c.get("outputs", []) if o["output_type"] == "error"]
        assert not errors, f"cell failed: {c.source[:80]!r}: {errors[0]['ename']}"
    text = "\n".join(_text(c) for c in code)
    assert "no demo catalogue at" in text and "300 images from" in text
    assert "Catalogue(n_items=300" in text
    # the widget cells display a widget view, not just a repr
    views = [
        c
        for c in code
        if any(
            "application/vnd.jupyter.widget-view+json" in o.get("data", {})
            for o in c.get("outputs", [])
        )
    ]
    assert len(views) >= 2
    assert "0 labels: 0 positive, 0 negative; the grid shows 300 results (browse)" in text
    m = re.search(
        r"refine 2: (\d+) labels -> (\d+) results from (\d+) boxes, precision ([\d.]+)", text
    )
    assert m, text
    assert int(m.group(1)) >= 100 and int(m.group(3)) >= 1
    assert "SELECT" in text.upper() and "BETWEEN" in text.upper()
    m = re.search(r"exported (\d+) results; the reloaded session shows the same (\d+)", text)
    assert m and m.group(1) == m.group(2)


@pytest.mark.slow
def test_quickstart_uses_a_ready_demo_catalogue_and_falls_back_without_weights(
    monkeypatch, tmp_path
):
    """Binder's path: a prepared catalogue opens; one whose weights are missing falls back."""
    from clipbranches_widget.engine.store.embed import register_tiny_model

    paths = sorted(str(p) for p in sample_dir().rglob("*.jpg"))[::10]
    demo = tmp_path / "demo"
    Catalogue.build(paths, model=register_tiny_model(), pretrained=None, out=demo, progress=False)
    first_cells = nbformat.read(NOTEBOOK, as_version=4)
    first_cells.cells = first_cells.cells[:4]
    monkeypatch.setenv("CLIPBRANCHES_DEMO", str(demo))
    monkeypatch.setenv("CLIPBRANCHES_IMAGES", str(sample_dir()))
    monkeypatch.setenv("CLIPBRANCHES_N_IMAGES", "50")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    nb = nbformat.from_dict(first_cells)
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()
    text = "\n".join(_text(c) for c in nb.cells if c.cell_type == "code")
    assert "using the demo catalogue" in text and f"Catalogue(n_items={len(paths)}" in text
    # the same catalogue, but its model's weights cannot be loaded here: fall back
    manifest = json.loads((demo / "manifest.json").read_text())
    manifest["embedder"]["pretrained"] = str(tmp_path / "missing-weights.pt")
    (demo / "manifest.json").write_text(json.dumps(manifest))
    nb = nbformat.from_dict(first_cells)
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()
    text = "\n".join(_text(c) for c in nb.cells if c.cell_type == "code")
    assert "falling back to the offline tiny model" in text and "50 images from" in text
