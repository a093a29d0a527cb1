"""Refine in a real browser with a cold numba cache: click to new grid, first and later.

    python benchmarks/widget_browser_refine.py --items 500 [--wait-warm] [--out DIR]

Starts JupyterLab (tests/widget/test_browser.py's isolated server: an empty
NUMBA_CACHE_DIR, so kernels compile cold) with a two-cell notebook that makes
a catalogue of ``--items`` images and shows the widget, drives Chromium
through Playwright: three clicks positive, one negative, Refine (the first
refine), one more label, Refine (a later one). Prints the time from the click
to the grid showing the round, as the page measures it (performance.now()).

The catalogue: up to 10,000 items are real CIFAR-10 images (8x8 pixel
features); beyond that the 300 images of tests/data/cifar10-sample are cycled
with a little noise on their features (a 200,000-item catalogue in seconds).
``--wait-warm``: wait for the background compile to finish before labelling
(a user who looks at the grid for a while); by default Refine is clicked as
soon as the labels are in.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "widget"))
sys.path.insert(0, str(ROOT / "tests"))

import test_browser as tb  # noqa: E402

CELL = r"""
import os, pathlib, time
import numpy as np
from PIL import Image
from clipbranches_widget import Catalogue, ClipBranches
n = int(os.environ["CB_ITEMS"])
real = pathlib.Path(os.environ["CB_REAL"])
paths = sorted(str(p) for p in real.rglob("*.jpg"))
if n > len(paths):
    paths = sorted(str(p) for p in pathlib.Path(os.environ["CB_SAMPLE"]).rglob("*.jpg"))
paths = paths[:n]
X = np.stack([np.asarray(Image.open(p).convert("RGB").resize((8, 8)), np.float32).ravel()
              for p in paths])
X -= X.mean(axis=0)
X /= np.linalg.norm(X, axis=1, keepdims=True)
idx = np.arange(n) % len(paths)
Xn = X[idx]
if n > len(paths):
    Xn = Xn + 0.05 * np.random.default_rng(0).standard_normal(Xn.shape).astype(np.float32)
    Xn /= np.linalg.norm(Xn, axis=1, keepdims=True)
t0 = time.perf_counter()
cat = Catalogue.from_embeddings(Xn.astype(np.float32), uris=[paths[i] for i in idx])
print(f"catalogue of {len(cat):,} items in {time.perf_counter() - t0:.1f} s")
"""


def notebook(path: pathlib.Path) -> None:
    cells = [CELL, "w = ClipBranches(cat)\nw"]
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "metadata": {},
                "source": c,
                "outputs": [],
                "execution_count": None,
            }
            for c in cells
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb))


def main(argv=None):
    from playwright.sync_api import expect, sync_playwright

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=500)
    ap.add_argument("--wait-warm", action="store_true")
    ap.add_argument("--out", default=None, help="append the figures to DIR/timings.json")
    ap.add_argument(
        "--real",
        default=str(ROOT.parent / "shared" / "data" / "cifar10-test"),
        help="folder of CIFAR-10 test images (the first --items of them, up to 10,000)",
    )
    args = ap.parse_args(argv)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="cb-browser-"))
    nb = tmp / "refine-timing.ipynb"
    notebook(nb)
    tb.NOTEBOOK, tb.WIDGET_CELL = nb, 1
    os.environ.update(
        CB_ITEMS=str(args.items),
        CB_REAL=args.real,
        CB_SAMPLE=str(ROOT / "tests" / "data" / "cifar10-sample"),
    )
    out = {"items": args.items, "wait_warm": args.wait_warm}
    with (
        tb.jupyter_lab(tmp) as (base, runtime),
        sync_playwright() as p,
        tb.chromium(p, tmp) as page,
    ):
        page.goto(f"{base}/lab/tree/{nb.name}?reset&token={tb.TOKEN}")
        root = tb.run_to_widget(page)
        kernel = tb.Kernel(base, runtime)
        try:
            assert kernel.eval("len(w.catalogue)") == args.items
            if args.wait_warm:
                tb._wait(
                    "the background compile",
                    lambda: kernel.eval("__import__('clipbranches_widget').warmup.is_warm()"),
                    300,
                    0.5,
                )
            out["warm_at_first_refine"] = kernel.eval(
                "__import__('clipbranches_widget').warmup.is_warm()"
            )
            ids = tb.dom_ids(page)
            for i in ids[:3]:
                root.locator(f'.cb-cell[data-id="{i}"] img').click()
            for _ in range(2):
                root.locator(f'.cb-cell[data-id="{ids[3]}"] img').click()
            expect(root.locator(".cb-counts")).to_contain_text("3 + \u00b7 1 \u2212")
            out["first_refine_ms"] = round(tb.timed_refine(page, 1))
            out["first_kernel"] = kernel.eval("w.timings")
            out["results"] = kernel.eval("w.total")
            ids = [i for i in tb.dom_ids(page) if str(i) not in kernel.state()["labels"]]
            root.locator(f'.cb-cell[data-id="{ids[0]}"] img').click()
            time.sleep(1)  # the label's update reaches the kernel (it also rides in the action)
            out["later_refine_ms"] = round(tb.timed_refine(page, 2))
            out["later_kernel"] = kernel.eval("w.timings")
        finally:
            kernel.close()
    print(json.dumps(out))
    if args.out:
        path = pathlib.Path(args.out) / "timings.json"
        rows = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps(rows + [out], indent=1))


if __name__ == "__main__":
    main()
