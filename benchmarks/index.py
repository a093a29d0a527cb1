"""BoxIndex vs the numba scan vs a plain-numpy scan, on synthetic clustered codes.

    nice -n 10 .venv/bin/python benchmarks/index.py --sizes 1e6 1e7 [1e8]

For each catalogue size: generate clustered codes in chunks (a memmap file
under --data-dir from --memmap-above items on), fit DecisionBranchesClassifier
models for concepts of 0.01 % .. 5 % of the catalogue (30 positives, 30
negatives, 1000 background items weighted 0.5, as a Session does), add a
model of wide boxes, build the index (timed, bytes per item), then time each
model's inference by the index, by the scan, by the auto switch and by plain
numpy (chunked ``Boxes.votes``), checking that all return the same items.

The generator is the recipe of ``engine/synthetic.py`` (200 Gaussian
clusters, centres uniform in [40, 215]^32, spread 12) with cluster weights
that make rare concepts: cluster 0 holds 0.01 %, cluster 1 0.1 %, cluster 2
1 %, and clusters 3..12 together ~5 %.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import time
from pathlib import Path

import numpy as np

from clipbranches_widget.engine.boxes import Boxes
from clipbranches_widget.engine.learn.branches import DecisionBranchesClassifier
from clipbranches_widget.engine.search.index import BoxIndex
from clipbranches_widget.engine.search.scan import scan
from clipbranches_widget.engine.subsets import default_feature_subsets

D = 32
N_CLUSTERS = 200
SPREAD = 12.0
CONCEPTS = {"0.01%": [0], "0.1%": [1], "1%": [2], "5%": list(range(3, 13))}


def cluster_weights():
    p = np.full(N_CLUSTERS, 0.0)
    p[0], p[1], p[2] = 1e-4, 1e-3, 1e-2
    rest = 1.0 - p[:3].sum()
    p[3:] = rest / (N_CLUSTERS - 3)
    return p


def make_codes(n, path=None, seed=0, chunk=1 << 22):
    """(codes, cluster) built chunk by chunk; codes in a .npy memmap when ``path``."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(40, 215, size=(N_CLUSTERS, D)).astype(np.float32)
    p = cluster_weights()
    reuse = (
        path is not None and Path(path).exists() and np.load(path, mmap_mode="r").shape == (n, D)
    )
    if reuse:
        codes = np.load(path, mmap_mode="r")
    elif path is not None:
        codes = np.lib.format.open_memmap(path, "w+", np.uint8, (n, D))
    else:
        codes = np.empty((n, D), np.uint8)
    cluster = np.empty(n, np.int16)
    for c, s in enumerate(range(0, n, chunk)):
        e = min(n, s + chunk)
        r = np.random.default_rng([seed, c])
        cl = r.choice(N_CLUSTERS, e - s, p=p).astype(np.int16)
        if reuse:  # the codes are on disk already: only the labels are redrawn
            cluster[s:e] = cl
            continue
        x = centres[cl] + r.standard_normal((e - s, D), dtype=np.float32) * SPREAD
        np.clip(np.rint(x), 0, 255, out=x)
        codes[s:e] = x
        cluster[s:e] = cl
    if path is not None and not reuse:
        codes.flush()
    return codes, cluster


def fit_concept(codes, cluster, members, seed):
    """Boxes a user would get: 30 positives, 30 negatives, 1000 background (w 0.5)."""
    rng = np.random.default_rng(seed)
    inside = np.isin(cluster, members)
    members_ids = np.flatnonzero(inside)
    pos = rng.choice(members_ids, min(30, members_ids.shape[0]), replace=False)
    # user negatives: items near the concept but outside it (what a user rejects)
    out_ids = rng.choice(
        np.flatnonzero(~inside), 200_000 if len(cluster) > 400_000 else 20_000, replace=False
    )
    centre = codes[pos].astype(np.float32).mean(axis=0)
    dist = ((codes[out_ids].astype(np.float32) - centre) ** 2).sum(axis=1)
    neg = out_ids[np.argsort(dist)[:30]]
    labelled = np.concatenate([pos, neg])
    bg = rng.choice(len(cluster), 1300, replace=False)
    bg = bg[~np.isin(bg, labelled)][:1000]
    ids = np.concatenate([labelled, bg])
    X = np.asarray(codes[ids])
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg) + len(bg))].astype(int)
    w = np.r_[np.ones(len(labelled)), np.full(len(bg), 0.5)]
    t0 = time.perf_counter()
    model = DecisionBranchesClassifier(random_state=seed).fit(X, y, sample_weight=w)
    fit_s = time.perf_counter() - t0
    return model.boxes_, fit_s, centre, inside.mean()


def wide_boxes(seed, m=20):
    rng = np.random.default_rng(seed)
    subsets = default_feature_subsets(D)
    out = []
    for q in rng.choice(len(subsets), m, replace=False):
        box = {}
        for j in subsets[q]:
            lo = int(rng.integers(0, 100))
            box[j] = (lo, lo + 150)
        out.append(box)
    return Boxes.from_bounds(out, D)


def numpy_votes(codes, boxes, chunk=1 << 21):
    """The plain-numpy baseline: Boxes.votes chunk by chunk (bounded memory)."""
    ids, votes = [], []
    for s in range(0, codes.shape[0], chunk):
        v = boxes.votes(np.asarray(codes[s : s + chunk]))
        nz = np.flatnonzero(v)
        ids.append(nz + s)
        votes.append(v[nz])
    return np.concatenate(ids), np.concatenate(votes)


def timed(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def first_page(codes, res, centre, page=50):
    """The first page: most votes, then similarity to the positives, then id.

    Scores every match (32 bytes read per match), then partially sorts: only
    the top tier of votes and its ``page`` best scores are fully ordered.
    """
    ids, votes = res.ids, res.votes.astype(np.int64)
    if ids.shape[0] == 0:
        return ids
    x = np.asarray(codes[ids], np.float32)
    score = x @ (centre - 128.0)
    top, out = votes.max(), []
    while len(out) < page and top > 0:
        tier = np.flatnonzero(votes == top)
        if tier.shape[0] > page:
            tier = tier[np.argpartition(-score[tier], page - 1)[:page]]
        tier = tier[np.lexsort((ids[tier], -score[tier]))]
        out.extend(tier[: page - len(out)].tolist())
        top -= 1
    return ids[np.asarray(out, np.int64)]


def run_size(n, args):
    print(f"\n=== n = {n:,} items ({n * D / 1e9:.2f} GB of codes) ===", flush=True)
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    on_disk = n >= args.memmap_above
    t0 = time.perf_counter()
    codes, cluster = make_codes(n, data_dir / f"codes_{n}.npy" if on_disk else None)
    if on_disk:  # reopen read-only, as a catalogue would
        del codes
        codes = np.load(data_dir / f"codes_{n}.npy", mmap_mode="r")
    print(
        f"generated in {time.perf_counter() - t0:.1f} s ({'memmap' if on_disk else 'RAM'})",
        flush=True,
    )

    models = {}
    for k, (name, members) in enumerate(CONCEPTS.items()):
        boxes, fit_s, centre, frac = fit_concept(codes, cluster, members, seed=k)
        models[name] = (boxes, fit_s, centre, frac)
    models["wide"] = (wide_boxes(7), 0.0, np.full(D, 128.0, np.float32), float("nan"))
    del cluster
    gc.collect()

    used = sorted({dd for b, *_ in models.values() for dd in b.dims})
    subsets = default_feature_subsets(D)
    if n >= args.partial_above:
        # index only the subsets of the concept models: the wide model, which
        # the cost model sends to the scan anyway, then falls back to the scan
        used = {dd for name, (b, *_) in models.items() if name != "wide" for dd in b.dims}
        extra = [s for s in subsets if s not in used][: max(0, args.partial_subsets - len(used))]
        subsets = [s for s in subsets if s in used or s in extra]
    index_dir = data_dir / f"index_{n}"
    shutil.rmtree(index_dir, ignore_errors=True)
    t0 = time.perf_counter()
    idx = BoxIndex.build(
        codes,
        index_dir if on_disk else None,
        subsets=subsets,
        block_size=args.block_size,
        progress=args.progress,
        memory_budget=int(args.memory_budget * 2**30),
    )
    build_s = time.perf_counter() - t0
    per_subset = build_s / len(subsets)
    extrapolated = (
        ""
        if len(subsets) == 104
        else f"; x104/{len(subsets)} -> {per_subset * 104 / (n / 1e6):.2f} s per million "
        "for all 104"
    )
    print(
        f"index build: {build_s:.1f} s for {len(subsets)} subsets "
        f"({build_s / (n / 1e6):.2f} s per million items"
        f"{extrapolated}); "
        f"{idx.bytes_per_item:.1f} bytes/item = {idx.bytes_per_item / D:.1f}x the codes "
        f"({idx.bytes_per_item / len(subsets):.2f} bytes/item/subset)",
        flush=True,
    )

    hdr = (
        f"{'model':>6} {'boxes':>5} {'concept':>8} {'matches':>9} {'sel%':>7} {'touched%':>8} "
        f"{'cells':>8} {'fit ms':>7} {'index ms':>9} {'scan ms':>8} {'numpy ms':>9} "
        f"{'scan/idx':>8} {'auto':>6} {'auto ms':>8} {'round ms':>9}"
    )
    print(hdr)
    rows = []
    for name, (boxes, fit_s, centre, frac) in models.items():
        est = idx.estimate(boxes)
        if est["cost_index_ns"] < 10 * est["cost_scan_ns"]:
            t_index, r_index = timed(lambda: idx.search(boxes, path="index"), args.repeats)
        else:  # forcing the index where it does 10x the scan's work only burns the shared CPU
            t_index, r_index = float("nan"), None
        t_scan, r_scan = timed(lambda: scan(codes, boxes), args.repeats)
        t_auto, r_auto = timed(lambda: idx.search(boxes), args.repeats)
        if n <= args.numpy_max and (n < args.partial_above or name == "1%"):
            t_np, (np_ids, np_votes) = timed(lambda: numpy_votes(codes, boxes), 1)
            assert np.array_equal(np_ids, r_scan.ids) and np.array_equal(np_votes, r_scan.votes)
        else:
            t_np = float("nan")
        for r in (r_index, r_auto):
            if r is None:
                continue
            assert np.array_equal(r.ids, r_scan.ids) and np.array_equal(r.votes, r_scan.votes)
        t_page, _ = timed(lambda: first_page(codes, r_auto, centre), 1)
        info = est
        touched = info.get("fraction_touched", float("nan")) * 100
        round_ms = (fit_s + t_auto + t_page) * 1e3
        row = (
            f"{name:>6} {boxes.n_boxes:>5} {frac * 100:>7.2f}% "
            f"{len(r_scan):>9,} {len(r_scan) / n * 100:>6.2f}% {touched:>7.2f}% "
            f"{info.get('cells_touched', -1):>8,} {fit_s * 1e3:>7.0f} {t_index * 1e3:>9.1f} "
            f"{t_scan * 1e3:>8.1f} {t_np * 1e3:>9.0f} {t_scan / t_index:>8.2f} "
            f"{r_auto.path:>6} {t_auto * 1e3:>8.1f} {round_ms:>9.0f}"
        )
        print(row, flush=True)
        rows.append(row)
    idx = None  # release the index memory before the next size
    gc.collect()
    if on_disk and not args.keep:
        shutil.rmtree(index_dir, ignore_errors=True)
        os.remove(data_dir / f"codes_{n}.npy")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e6, 1e7])
    ap.add_argument("--data-dir", default="/tmp/clipbranches_bench")
    ap.add_argument(
        "--memmap-above",
        type=float,
        default=5e7,
        help="catalogues this large live in a memmap file (and the index on disk)",
    )
    ap.add_argument(
        "--partial-above",
        type=float,
        default=5e7,
        help="from this size on, index only the subsets the models use",
    )
    ap.add_argument(
        "--partial-subsets",
        type=int,
        default=5,
        help="at partial sizes, index this many subsets (the models' first)",
    )
    ap.add_argument(
        "--memory-budget",
        type=float,
        default=2.0,
        help="GiB of RAM for the ids scattered in one build pass",
    )
    ap.add_argument("--numpy-max", type=float, default=2e7, help="largest n for plain numpy")
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    args = ap.parse_args()
    import numba

    print(f"numba threads: {numba.get_num_threads()}, cpus: {os.cpu_count()}")
    # compile every kernel once, outside the timings
    warm, _ = make_codes(20_000)
    wi = BoxIndex.build(warm, progress=False)
    wb = wide_boxes(1)
    wi.search(wb, path="index")
    wi.search(wb, path="scan")
    for n in args.sizes:
        run_size(int(n), args)


if __name__ == "__main__":
    main()
