"""Gathering the candidates' code rows: ``np.take(axis=0)`` against fancy indexing.

    python benchmarks/gather.py [--n 10000000] [--rows 258000]

The second stage of a refine copies its candidates' codes once (every kernel
then reads contiguous rows). Both ways are timed in one run on the same
sorted random rows of a (n, 32) uint8 catalogue; the ratio is what counts on
a shared machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def best_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--rows", type=int, default=258_000)
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (args.n, 32), dtype=np.uint8)
    rows = np.sort(rng.choice(args.n, min(args.rows, args.n), replace=False))
    assert np.array_equal(np.take(codes, rows, axis=0), codes[rows])
    take = best_ms(lambda: np.take(codes, rows, axis=0), args.repeats)
    fancy = best_ms(lambda: codes[rows], args.repeats)
    print("| rows | n | np.take ms | codes[rows] ms | ratio |\n|---|---|---|---|---|")
    print(f"| {rows.size:,} | {args.n:,} | {take:.2f} | {fancy:.2f} | {fancy / take:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
