"""32-d codes side by side: PCA + per-dimension quantisation (the default) vs
the learned head (distillation + KoLeo) vs the reference's global
``trunc(127.5 z + 128)`` quantisation of either, and the learned head's
untrained start (PCA codes, L2-normalised: "pca + L2").

For every data set and compressor it prints, on the same embeddings:

- fit time (the learned head: 1 torch thread);
- neighbourhood recall@10 / @100: of the true 10 (100) nearest items in the
  full embedding space (cosine), the share that are also among the 10 (100)
  nearest in the decoded 32-d codes (L2), over 1,000 query items; ``f@10``
  is the same for the float 32-d outputs before quantisation;
- code usage: distinct values per dimension (mean and minimum over the 32
  dimensions, out of 256) and entropy per dimension in bits (max 8);
- refined-search F1: the simulated user of ``clipbranches_widget.evaluation``
  (issue 7's harness: labels the shown page, refines through ``Session``,
  repeats), decision branches on each compressor's codes, mean over classes
  x seeds after the first refine ("F1 r1") and the last ("F1 end"; labelled
  positives count, so later rounds converge towards the clicks), next to
  k-NN of the query with k = the class size.

Data: sklearn digits (64-d), CIFAR-10 test images as HOG + colour features
(1,892-d; no pretrained CLIP weights can be downloaded here), and a
synthetic CLIP-like 512-d set (unit vectors in a cone, clusters in a
rank-128 subspace; concepts of 3 unrelated modes among distractor clusters).

    nice -n 10 .venv/bin/python benchmarks/compress.py --scale 100000   # < 10 min here
    nice -n 10 .venv/bin/python benchmarks/compress.py --quick    # digits only, ~1 min
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clipbranches_widget.engine.codes import quantize as q8  # noqa: E402
from clipbranches_widget.engine.codes.learned import LearnedCompressor  # noqa: E402
from clipbranches_widget.engine.codes.pca import Compressor  # noqa: E402
from clipbranches_widget.engine.store.catalogue import Catalogue  # noqa: E402

try:  # issue 7's harness: the labelled sets, the simulated user, the global quantiser
    from clipbranches_widget import evaluation as ev
except ImportError:  # pragma: no cover - harness not installed
    ev = None


def clip_like_set(
    *,
    n_concepts=10,
    modes=3,
    per_mode=300,
    n_other=11_000,
    other_clusters=300,
    d=512,
    rank=128,
    spread=0.45,
    cone=1.5,
    random_state=0,
):
    """(X, y): CLIP-like unit vectors; y = concept (0..n_concepts-1) or -1.

    Cluster centres are random directions in a rank-``rank`` subspace; every
    item is centre + Gaussian noise + a little full-rank noise, then a shared
    offset of norm ``cone`` is added before normalising (CLIP's embeddings
    sit in a narrow cone). Each concept is ``modes`` unrelated clusters.
    """
    rng = np.random.default_rng(random_state)
    basis = np.linalg.qr(rng.standard_normal((d, rank)))[0].T
    n_c = n_concepts * modes + other_clusters
    centres = rng.standard_normal((n_c, rank))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sizes = [per_mode] * (n_concepts * modes)
    sizes += np.bincount(
        rng.integers(0, other_clusters, n_other), minlength=other_clusters
    ).tolist()
    cluster = np.repeat(np.arange(n_c), sizes)
    z = centres[cluster] + spread * rng.standard_normal((cluster.size, rank)) / np.sqrt(rank)
    X = z @ basis + 0.05 * rng.standard_normal((cluster.size, d)) / np.sqrt(d)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    offset = rng.standard_normal(d)
    X += cone * offset / np.linalg.norm(offset)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.where(cluster < n_concepts * modes, cluster // modes, -1)
    perm = rng.permutation(cluster.size)
    return X[perm].astype(np.float32), y[perm].astype(np.int64)


def datasets(quick: bool, cifar_root: str, cache: str):
    sets = []
    if ev is not None:
        sets.append(ev.digits_set())
    else:
        from sklearn.datasets import load_digits

        d = load_digits()
        X = d.data.astype(np.float32)
        sets.append(("digits", X - X.mean(axis=0), d.target))
    if quick:
        return sets
    if ev is not None and Path(cifar_root).is_dir():
        sets.append(ev.cifar10_set(cifar_root, cache_dir=cache))
    X, y = clip_like_set()
    if ev is not None:
        sets.append(ev.LabelledSet("clip-like-512", X, y, [f"concept{c}" for c in range(10)]))
    else:
        sets.append(("clip-like-512", X, y))
    return sets


def unpack(data):
    if isinstance(data, tuple):
        name, X, y = data
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
        return name, X.astype(np.float32), y
    return data.name, data.X, data.y


def recall(X, Z, ks=(10, 100), n_queries=1000, seed=0):
    """Share of each query's true k nearest (cosine on X) among its k nearest
    in Z (L2), the query itself excluded."""
    import faiss

    rng = np.random.default_rng(seed)
    q = rng.choice(len(X), min(n_queries, len(X)), replace=False)
    kmax = max(ks) + 1
    full = faiss.IndexFlatIP(X.shape[1])
    full.add(X)
    _, t = full.search(X[q], kmax)
    Z = np.ascontiguousarray(Z, np.float32)
    small = faiss.IndexFlatL2(Z.shape[1])
    small.add(Z)
    _, a = small.search(Z[q], kmax)
    out = {}
    for k in ks:
        hits = []
        for j in range(q.size):
            tt = t[j][t[j] != q[j]][:k]
            aa = a[j][a[j] != q[j]][:k]
            hits.append(np.intersect1d(tt, aa).size / k)
        out[k] = float(np.mean(hits))
    return out


def usage(codes):
    """(mean distinct values, min distinct values, mean entropy bits) over dimensions."""
    distinct, ent = [], []
    for j in range(codes.shape[1]):
        counts = np.bincount(codes[:, j], minlength=256)
        p = counts[counts > 0] / codes.shape[0]
        distinct.append(int((counts > 0).sum()))
        ent.append(float(-(p * np.log2(p)).sum()))
    return float(np.mean(distinct)), int(np.min(distinct)), float(np.mean(ent))


def compressors(X, learned_params):
    """[(name, fitted compressor, fit seconds)]."""
    out = []
    t0 = time.perf_counter()
    pca = Compressor().fit(X)
    out.append(("pca + per-dim (default)", pca, time.perf_counter() - t0))
    if ev is not None:
        t0 = time.perf_counter()
        out.append(
            ("pca + global 127.5x+128", ev.GlobalQuantizer().fit(X), time.perf_counter() - t0)
        )
    t0 = time.perf_counter()  # the learned head's starting point, untrained
    out.append(
        (
            "pca + L2 + per-dim",
            LearnedCompressor(**{**learned_params, "max_epochs": 0}).fit(X),
            time.perf_counter() - t0,
        )
    )
    t0 = time.perf_counter()
    learned = LearnedCompressor(**learned_params).fit(X)
    t_learned = time.perf_counter() - t0
    out.append(("learned + per-dim", learned, t_learned))
    glob = copy.deepcopy(learned)  # the same head, the reference's quantisation
    glob.quantization = "global"
    glob.low_, glob.scale_ = q8.global_range(glob.n_components)
    out.append(("learned + global 127.5x+128", glob, t_learned))
    return out


def refined_f1(data, comp, *, rounds, seeds):
    """Mean F1 of the complete refined set after the first and the last round,
    over classes x seeds, and k-NN's F1 with k = the class size."""
    X = data.X
    cat = Catalogue(comp.transform(X), compressor=comp, embeddings=X)
    learners = [ev.Learner("branches")]
    first, last, knn = [], [], []
    for cls in range(len(data.class_names)):
        for seed in seeds:
            rows = ev.simulate(data, cat, cls, seed, learners=learners, rounds=rounds)
            first.append(rows[0]["f1"])
            last.append(rows[-1]["f1"])
            knn.append(rows[-1]["knn_class_f1"])
    return float(np.mean(first)), float(np.mean(last)), float(np.mean(knn))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="digits only")
    ap.add_argument(
        "--cifar-root",
        default=os.environ.get(
            "CLIPBRANCHES_CIFAR10", str(ROOT.parent / "shared" / "data" / "cifar10-test")
        ),
    )
    ap.add_argument("--cache", default=str(ROOT / ".cache" / "quality"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--no-f1", action="store_true")
    ap.add_argument(
        "--scale",
        type=int,
        default=0,
        help="also time fitting the learned head on this many 512-d embeddings",
    )
    args = ap.parse_args(argv)
    import faiss

    faiss.omp_set_num_threads(1)
    learned_params = {"max_epochs": args.max_epochs, "progress": False}
    header = (
        f"{'data':<14} {'codes':<28} {'fit s':>6} {'f@10':>6} {'R@10':>6} {'R@100':>6} "
        f"{'values':>7} {'min':>4} {'bits':>5} {'F1 r1':>6} {'F1 end':>6} {'kNN F1':>7}"
    )
    print(header)
    print("-" * len(header))
    for data in datasets(args.quick, args.cifar_root, args.cache):
        name, X, _ = unpack(data)
        for cname, comp, fit_s in compressors(X, learned_params):
            codes = comp.transform(X)
            r = recall(X, comp.dequantize(codes))
            rf = recall(X, comp.project(X), ks=(10,))
            mean_v, min_v, bits = usage(codes)
            f1_first = f1 = knn = float("nan")
            if ev is not None and not args.no_f1:
                f1_first, f1, knn = refined_f1(
                    data, comp, rounds=args.rounds, seeds=range(args.seeds)
                )
            print(
                f"{name:<14} {cname:<28} {fit_s:6.1f} {rf[10]:6.3f} {r[10]:6.3f} {r[100]:6.3f} "
                f"{mean_v:7.1f} {min_v:4d} {bits:5.2f} {f1_first:6.3f} {f1:6.3f} {knn:7.3f}",
                flush=True,
            )
        if isinstance(comp, LearnedCompressor):
            best = min(comp.history_, key=lambda h: h["val"])
            print(
                f"{'':<14} (learned head: {len(comp.history_) - 1} epochs, best epoch "
                f"{best['epoch']} (-1 = the PCA start), held-out loss {best['val']:.4f} from "
                f"{comp.history_[0]['val']:.4f})",
                flush=True,
            )
    if args.scale:
        X, _ = clip_like_set(n_other=args.scale - 9000, other_clusters=2000)
        t0 = time.perf_counter()
        head = LearnedCompressor(**learned_params).fit(X)
        t_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        head.transform(X)
        print(
            f"learned head on {len(X):,} x {X.shape[1]}: fit {t_fit:.0f} s "
            f"({len(head.history_) - 1} epochs), transform {time.perf_counter() - t0:.1f} s"
        )
    if ev is None:
        print("(clipbranches_widget.evaluation not available: no F1, no PCA + global row)")


if __name__ == "__main__":
    main()
