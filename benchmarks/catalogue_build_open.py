"""Embedding throughput (decode vs model) and catalogue open time.

    nice -n 10 .venv/bin/python benchmarks/catalogue_build_open.py \
        [--vit-images 128] [--sizes 1e6 1e7]

1. Images/s on the CIFAR-10 test JPEGs for the tiny config and ViT-B-32
   (random weights: speed only), split into decoding+preprocessing (worker
   threads) and the model, and end to end through ``Catalogue.build``.
2. ``Catalogue.open`` of synthetic catalogues of 1M and 10M items (codes +
   URIs, 1M also with float16 embeddings), against reading the same data
   eagerly (``np.fromfile`` + a Parquet table of URIs).
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


def cifar_paths(n):
    base = Path(os.environ.get("CLIPBRANCHES_DATA", ROOT.parent / "shared" / "data"))
    base = base / "cifar10-test" if (base / "cifar10-test").is_dir() else base
    paths = sorted(glob.glob(str(base / "*" / "*.jpg")))
    if not paths:
        raise SystemExit(f"no CIFAR-10 images under {base}")
    return paths[:n]


def embedding_speed(model, paths, batch_size, threads):
    import torch

    from clipbranches_widget import Catalogue
    from clipbranches_widget.engine.store.embed import ClipEmbedder, register_tiny_model

    register_tiny_model()
    emb = ClipEmbedder(model, None, batch_size=batch_size, threads=threads)
    n = len(paths)
    workers = min(8, os.cpu_count() or 1)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        pixels = list(pool.map(emb.preprocess, paths))
    decode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in range(0, n, batch_size):
        emb.embed_pixels(torch.stack(pixels[s : s + batch_size]))
    model_s = time.perf_counter() - t0
    out = Path(tempfile.mkdtemp(prefix="cb-bench-")) / "cat"
    t0 = time.perf_counter()
    Catalogue.build(paths, out=out, embedder=emb, batch_size=batch_size, progress=False)
    build_s = time.perf_counter() - t0
    shutil.rmtree(out.parent)
    print(
        f"{model:<18} n={n:>5} bs={batch_size:<4} torch threads={torch.get_num_threads()}  "
        f"decode+preprocess {n / decode_s:8.0f} img/s ({workers} threads) | "
        f"model {n / model_s:8.1f} img/s | build end to end {n / build_s:8.1f} img/s  "
        f"(decode share of serial time {decode_s / (decode_s + model_s):.0%})"
    )


def synthetic(n, d, rng):
    from clipbranches_widget import Catalogue, Compressor

    X = rng.standard_normal((4096, d)).astype(np.float32)
    comp = Compressor().fit(X)
    codes = np.empty((n, 32), np.uint8)
    block = 1 << 20
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        codes[lo:hi] = rng.integers(0, 256, (hi - lo, 32), dtype=np.uint8)
    uris = np.char.add("/photos/2024/holiday/IMG_", np.arange(n).astype("U10"))
    uris = np.char.add(uris, ".jpg").astype(object)
    return Catalogue(codes, compressor=comp, uris=uris), comp


def open_time(n, keep_embeddings, tmp):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from clipbranches_widget import Catalogue

    rng = np.random.default_rng(0)
    d = 512
    cat, comp = synthetic(n, d, rng)
    if keep_embeddings:
        cat.embeddings = rng.standard_normal((n, d), dtype=np.float32).astype(np.float16)
    path = tmp / f"cat{n}"
    t0 = time.perf_counter()
    cat.save(path)
    save_s = time.perf_counter() - t0
    pq.write_table(pa.table({"uri": pa.array(cat.uris, pa.large_string())}), tmp / "uris.parquet")
    del cat
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        opened = Catalogue.open(path)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    ids = np.random.default_rng(1).integers(0, n, 1000)
    _ = [opened.uri(int(i)) for i in ids]
    uri_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    codes = np.fromfile(path / "codes.u8", np.uint8).reshape(n, 32)
    emb = np.fromfile(path / "embeddings.f16", np.float16) if keep_embeddings else None
    uris = pq.read_table(tmp / "uris.parquet").column("uri").to_numpy()
    eager_s = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in path.iterdir()) / 2**20
    print(
        f"n={n:>10,} embeddings={'f16 x512' if keep_embeddings else 'no':<8} size {size:8.0f} MiB "
        f"| save {save_s:6.1f} s | open: ours (memmap) median {np.median(times) * 1e3:7.1f} ms "
        f"(max {max(times) * 1e3:.1f}) vs eager read {eager_s * 1e3:8.0f} ms | "
        f"1000 random uri(i) {uri_ms:.1f} ms"
    )
    del codes, emb, uris, opened
    shutil.rmtree(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny-images", type=int, default=4000)
    ap.add_argument("--vit-images", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--sizes", type=float, nargs="*", default=[1e6, 1e7])
    ap.add_argument("--skip-embed", action="store_true")
    args = ap.parse_args()
    if not args.skip_embed:
        print("== embedding throughput (CIFAR-10 test JPEGs, random weights) ==")
        embedding_speed("clipbranches-tiny", cifar_paths(args.tiny_images), 128, args.threads)
        embedding_speed("ViT-B-32", cifar_paths(args.vit_images), 32, args.threads)
    print("== Catalogue.open ==")
    tmp = Path(tempfile.mkdtemp(prefix="cb-open-"))
    try:
        for n in args.sizes:
            open_time(int(n), keep_embeddings=int(n) <= 1_000_000, tmp=tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
