"""The exported SQL on DuckDB (Parquet, out-of-core) against our numba scan and BoxIndex.

    nice -n 10 python benchmarks/sql.py [--sizes 10000000 100000000] [--trials 5]
                                        [--data /tmp/clipbranches-bench] [--spark]

Data: n items of synthetic clustered codes (engine/synthetic.py: 200 clusters
in 32 dims, spread 8, a concept = the first k clusters),
written once as Parquet in the ``write_parquet`` layout under ``--data``
(never in the repository; reused by later runs). The model is a real
``DecisionBranchesClassifier`` fit, as one refine round: 30 positives and 30
negatives of the concept, plus 1000 random background negatives; one model
per ``--concepts`` size (3 clusters: a few boxes; 20 clusters: many).

Printed side by side, each the median of ``--trials`` warm runs, each checked
to return exactly the scan's ids and votes:

* numba ``scan`` over the in-memory (n, 32) codes;
* ``BoxIndex.search`` (index path forced, and the cost model's choice), built
  for the feature subsets the model uses (query time does not depend on the
  other subsets; the build time is printed);
* ``search_duckdb`` on the Parquet file (the OS page cache is warm after the
  first run; DuckDB still decodes the Parquet pages every time);
* DuckDB on its own in-memory table loaded from that file;
* optionally (``--spark``) Spark local[2] through Spark SQL on the file;
* optionally (``--pushdown``) DuckDB on a copy of the file sorted by ``c0``,
  where row groups hold narrow c0 ranges and can be skipped by statistics.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

from clipbranches_widget.engine.boxes import Boxes
from clipbranches_widget.engine.learn.branches import DecisionBranchesClassifier
from clipbranches_widget.engine.search.scan import scan
from clipbranches_widget.engine.sql.duckdb import duckdb_connect, search_duckdb
from clipbranches_widget.engine.sql.parquet import write_parquet
from clipbranches_widget.evaluation.synthetic import clustered_codes

log = logging.getLogger("benchmarks.sql")


def timed(fn, trials):
    out, times = None, []
    for _ in range(trials):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1e3)
    return out, float(np.median(times))


def fit_model(codes, cluster, concept, seed=0):
    rng = np.random.default_rng(seed)
    truth = np.isin(cluster, concept)
    pos = rng.choice(np.flatnonzero(truth), 30, replace=False)
    neg = rng.choice(np.flatnonzero(~truth), 30, replace=False)
    bg = rng.choice(len(codes), 1000, replace=False)
    bg = bg[~np.isin(bg, np.r_[pos, neg])]
    ids = np.r_[pos, neg, bg]
    y = np.r_[np.ones(len(pos), int), np.zeros(len(neg) + len(bg), int)]
    return DecisionBranchesClassifier(random_state=seed).fit(codes[ids], y).boxes_


def same(res, ref):
    return np.array_equal(res.ids, ref.ids) and np.array_equal(res.votes, ref.votes)


def one_size(n, trials, data_dir, spark, row_group_size, compression, concepts, pushdown, rows):
    t = time.perf_counter()
    codes, cluster, _ = clustered_codes(n, spread=8.0, random_state=0)
    log.info("n=%d: generated codes in %.1f s", n, time.perf_counter() - t)
    path = data_dir / f"clustered-{n}-rg{row_group_size}-{compression}.parquet"
    if not path.exists():
        t = time.perf_counter()
        write_parquet(
            codes,
            path,
            row_group_size=row_group_size,
            compression=None if compression == "none" else compression,
        )
        log.info(
            "n=%d: wrote %s (%.0f MB) in %.1f s",
            n,
            path,
            path.stat().st_size / 1e6,
            time.perf_counter() - t,
        )
    # the concept is the first k clusters: the codes do not depend on k
    models = [(k, fit_model(codes, cluster, np.arange(k))) for k in concepts]
    del cluster
    scan(codes[:1000], models[0][1])  # JIT warm-up
    con = duckdb_connect(threads=2)
    t = time.perf_counter()
    con.execute(f"CREATE TABLE cat AS SELECT * FROM read_parquet('{path}')")
    load_s = time.perf_counter() - t
    size = f"{n / 1e6:.0f}M"
    for k, boxes in models:
        one_model(size, codes, boxes, k, path, con, load_s, trials, spark, rows)
    if pushdown:
        row_group_skipping(size, codes, path, models, con, data_dir, row_group_size, trials, rows)
    con.close()


def row_group_skipping(size, codes, path, models, con, data_dir, row_group_size, trials, rows):
    """The same queries on a copy of the file whose rows are sorted by c0."""
    sorted_path = data_dir / f"{path.stem}-sorted-c0.parquet"
    if not sorted_path.exists():
        write_parquet(codes, sorted_path, row_group_size=row_group_size, sort_by=["c0"])
    narrow = Boxes.from_bounds([{0: (100, 104), 7: (0, 200)}])
    queries = [("1 box on c0 in 100..104", narrow)] + [
        (f"{k}-cluster model ({b.n_boxes} boxes; {sum(0 in d for d in b.dims)} on c0)", b)
        for k, b in models
    ]
    for name, boxes in queries:
        ref = scan(codes, boxes)
        t = {}
        for label, p in (("id order", path), ("sorted by c0", sorted_path)):
            search_duckdb(p, boxes, connection=con)
            res, t[label] = timed(lambda: search_duckdb(p, boxes, connection=con), trials)
            assert same(res, ref)
        rows.append(
            (
                size,
                name,
                "DuckDB on Parquet sorted by c0 (vs id order)",
                t["sorted by c0"],
                t["sorted by c0"] / t["id order"],
                len(ref),
                f"id order: {t['id order']:.1f} ms; ratio column = sorted / id order",
            )
        )


def one_model(size, codes, boxes, k, path, con, load_s, trials, spark, rows):
    def row(name, ms, count, note=""):
        rows.append((size, label, name, ms, ms / t_scan, count, note))

    label = (
        f"{k}-cluster concept: {boxes.n_boxes} boxes x {sorted({len(d) for d in boxes.dims})} dims"
    )
    ref, t_scan = timed(lambda: scan(codes, boxes, n_jobs=2), trials)
    row("numba scan (in-memory codes)", t_scan, len(ref))

    try:
        from clipbranches_widget.engine.search.index import BoxIndex
    except ImportError:
        row("BoxIndex", float("nan"), 0, "engine/index.py absent")
    else:
        used = sorted({tuple(sorted(d)) for d in boxes.dims})
        t = time.perf_counter()
        index = BoxIndex.build(codes, subsets=used, progress=False)
        build_s = time.perf_counter() - t
        index.search(boxes, path="index")  # warm-up
        res, t_idx = timed(lambda: index.search(boxes, path="index", n_jobs=2), trials)
        assert same(res, ref), "BoxIndex differs from the scan"
        row(
            "BoxIndex.search(path='index')",
            t_idx,
            len(res),
            f"{len(used)} subsets indexed in {build_s:.1f} s, {index.bytes_per_item:.0f} B/item",
        )
        res, t_auto = timed(lambda: index.search(boxes, n_jobs=2), trials)
        assert same(res, ref)
        row("BoxIndex.search (cost model)", t_auto, len(res), f"chose {res.path}")
        index = res = None  # free the index before DuckDB runs

    search_duckdb(path, boxes, connection=con)  # warm the page cache
    res, t_duck = timed(lambda: search_duckdb(path, boxes, connection=con), trials)
    assert same(res, ref), "DuckDB on Parquet differs from the scan"
    row(
        "DuckDB on Parquet (ORDER BY id)",
        t_duck,
        len(res),
        f"{path.stat().st_size / 1e6:.0f} MB file",
    )
    res, t_rank = timed(lambda: search_duckdb(path, boxes, connection=con, order="votes"), trials)
    row("DuckDB on Parquet (ranked)", t_rank, len(res), "ORDER BY votes DESC, id")
    sql = boxes.to_sql("cat", order="id")
    got, t_mem = timed(lambda: con.execute(sql).fetchnumpy(), trials)
    assert np.array_equal(got["id"], ref.ids) and np.array_equal(got["votes"], ref.votes)
    row("DuckDB on its in-memory table", t_mem, len(got["id"]), f"loaded once in {load_s:.1f} s")

    if spark:
        from clipbranches_widget.engine.sql.spark import local_spark_session, search_spark

        session = local_spark_session("local[2]")
        session.sparkContext.setLogLevel("ERROR")
        for _ in range(3):  # the JVM's JIT needs a few runs of the generated code
            search_spark(session, path, boxes)
        res, t_spark = timed(lambda: search_spark(session, path, boxes), max(1, trials // 2))
        assert same(res, ref), "Spark differs from the scan"
        row("Spark local[2] SQL on Parquet", t_spark, len(res), "collected via Arrow")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000_000])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--data", type=Path, default=Path("/tmp/clipbranches-bench"))
    ap.add_argument("--row-group-size", type=int, default=1 << 17)
    ap.add_argument("--compression", default="snappy", help="Parquet codec, or none")
    ap.add_argument(
        "--concepts",
        type=int,
        nargs="+",
        default=[3, 20],
        help="clusters per concept: one fitted model each",
    )
    ap.add_argument("--spark", action="store_true", help="also Spark local[2] (slow)")
    ap.add_argument(
        "--pushdown",
        action="store_true",
        help="also DuckDB on a copy sorted by c0 (row-group skipping)",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("clipbranches_widget").setLevel(logging.WARNING)  # per-query lines
    args.data.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.sizes:
        one_size(
            n,
            args.trials,
            args.data,
            args.spark,
            args.row_group_size,
            args.compression,
            args.concepts,
            args.pushdown,
            rows,
        )
    print(
        f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d')}; median of {args.trials} warm runs, 2 threads each"
    )
    print("| n | model | method | ms | vs scan | matches | note |")
    print("|---|---|---|---:|---:|---:|---|")
    for size, model, name, ms, ratio, count, note in rows:
        print(f"| {size} | {model} | {name} | {ms:.1f} | {ratio:.2f}x | {count:,} | {note} |")


if __name__ == "__main__":
    main()
