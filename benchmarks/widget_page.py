"""What one page of the widget costs: kernel time and bytes on the wire.

    python benchmarks/widget_page.py [--images 2000] [--page-size 60] [--repeat 5]

On the CIFAR-10 test images (../shared/data/cifar10-test), prints side by
side:
* thumbnails from disk (cold cache) vs from the LRU cache (paging back), and
  the full refresh the widget does per action (`_show`: thumbnails + traits);
* bytes per page as binary comm buffers (what the widget sends) vs the same
  thumbnails as base64 data URLs inside the JSON state (the usual alternative),
  and the JSON part of the message.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import pathlib
import statistics
import sys
import time

import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clipbranches_widget import Catalogue, ClipBranches  # noqa: E402
from clipbranches_widget.thumbnails import Thumbnailer, encode, open_image  # noqa: E402


def pixel_features(paths) -> np.ndarray:
    X = np.stack(
        [np.asarray(Image.open(p).convert("RGB").resize((8, 8)), np.float32).ravel() for p in paths]
    )
    X -= X.mean(axis=0)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def ms(f, repeat):
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        out.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--page-size", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--data",
        default=os.environ.get(
            "CLIPBRANCHES_CIFAR", str(ROOT.parent / "shared" / "data" / "cifar10-test")
        ),
    )
    args = ap.parse_args(argv)
    paths = sorted(str(p) for p in pathlib.Path(args.data).rglob("*.jpg"))
    if not paths:
        sys.exit(f"no images under {args.data}")
    paths = paths[:: max(1, len(paths) // args.images)][: args.images]
    cat = Catalogue.from_embeddings(pixel_features(paths), uris=paths)
    n_pages = len(paths) // args.page_size
    print(
        f"{len(paths)} CIFAR-10 images (32x32 JPEG), pages of {args.page_size}, "
        f"median of {args.repeat}"
    )

    # thumbnails alone: a fresh cache per page (cold) vs the same page again (warm)
    pages = [paths[p * args.page_size : (p + 1) * args.page_size] for p in range(n_pages)]
    Thumbnailer(160).get(paths[-1])  # Pillow's plugins load on first use: not a page's cost
    for u in paths:  # same footing for every variant: files in the OS page cache
        pathlib.Path(u).read_bytes()
    cold = []
    for page in pages[: args.repeat]:
        t = Thumbnailer(160)
        t0 = time.perf_counter()
        for u in page:
            t.get(u)
        cold.append((time.perf_counter() - t0) * 1e3)

    def reencode(uri):  # the plain way: decode, shrink, encode again
        im = open_image(uri)
        im.thumbnail((160, 160))
        return encode(im)

    recoded = []
    for page in pages[args.repeat : 2 * args.repeat]:
        t0 = time.perf_counter()
        recoded_bytes = sum(len(reencode(u).data) for u in page)
        recoded.append((time.perf_counter() - t0) * 1e3)
    asis_bytes = sum(len(Thumbnailer(160).get(u).data) for u in pages[args.repeat])
    warm_t = Thumbnailer(160)
    for u in pages[0]:
        warm_t.get(u)
    warm = ms(lambda: [warm_t.get(u) for u in pages[0]], args.repeat)

    # the widget's refresh per action: page the browse results
    w = ClipBranches(cat, page_size=args.page_size)
    sent = []
    w._send = lambda msg, buffers=None: sent.append((msg, buffers or []))
    k = [0]

    def next_page():
        k[0] += 1
        w._handle_msg(
            {
                "content": {
                    "data": {
                        "method": "update",
                        "state": {"user_page": k[0] % n_pages},
                        "buffer_paths": [],
                    }
                },
                "buffers": [],
            }
        )
        w._show()

    show_cold = ms(next_page, min(args.repeat, n_pages - 1))
    k[0] = 0
    show_warm = ms(
        lambda: (
            w._handle_msg(
                {
                    "content": {
                        "data": {"method": "update", "state": {"user_page": 0}, "buffer_paths": []}
                    },
                    "buffers": [],
                }
            ),
            w._show(),
        ),
        args.repeat,
    )

    sent.clear()
    w.send_state("items")
    ((msg, buffers),) = sent
    binary = sum(len(bytes(b)) for b in buffers)
    json_part = len(json.dumps(msg))
    b64_items = [
        {
            **{k: v for k, v in it.items() if k != "thumb"},
            "thumb": "data:image/jpeg;base64," + base64.b64encode(it["thumb"]).decode(),
        }
        for it in w.items
    ]
    b64 = len(json.dumps({"method": "update", "state": {"items": b64_items}}))

    print(f"{'':44s} {'ours':>22s}   {'alternative':>26s}")
    print(
        f"{'thumbnails of one page':44s} {warm:13.2f} ms (LRU)   "
        f"{statistics.median(cold):10.1f} ms (no cache)"
    )
    print(
        f"{'thumbnails of a new page (small files)':44s} "
        f"{statistics.median(cold):11.1f} ms (as is)   "
        f"{statistics.median(recoded):11.1f} ms (re-encoded)"
    )
    print(
        f"{'  their bytes':44s} {asis_bytes:12,d} B (as is)   {recoded_bytes:11,d} B (re-encoded)"
    )
    print(
        f"{'widget refresh per page action':44s} {show_warm:11.1f} ms (seen)   "
        f"{show_cold:14.1f} ms (new page)"
    )
    print(
        f"{'bytes per page on the wire':44s} {binary + json_part:12,d} B (binary)   "
        f"{b64:14,d} B (base64)  = {b64 / (binary + json_part):.2f}x"
    )
    print(f"{'  of which JSON (ids, votes, scores, names)':44s} {json_part:12,d} B")


if __name__ == "__main__":
    main()
