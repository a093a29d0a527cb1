"""notebooks/02-large-catalogue.ipynb runs headless (at 100,000 items)."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "02-large-catalogue.ipynb"


def test_large_catalogue_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPBRANCHES_N", "100000")
    monkeypatch.setenv("CLIPBRANCHES_WORK", str(tmp_path))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()
    text = "\n".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "100,000 items" in text
    assert text.count("round ") == 3 and "identical to the scan" in text
    assert (tmp_path / "catalogue.parquet").exists() and (tmp_path / "catalogue" / "index").exists()
