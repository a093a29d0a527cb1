"""Does refining beat nearest neighbours? The labelled evaluation, one command.

    nice -n 10 python benchmarks/quality.py                # digits, CIFAR-10, synthetic
    python benchmarks/quality.py --quick --out /tmp/q     # tiny run (the test's)
    python benchmarks/quality.py --data clip.npz          # your own embeddings + labels
    python benchmarks/quality.py --data X.npy --labels y.csv --datasets

For every class of every data set a simulated user searches (k = 60 nearest
neighbours of one example item, or of the class's text embedding when the
file has ``queries``), labels each shown page of 60 with the ground truth,
refines, and repeats (clipbranches_widget/evaluation/protocol.py says exactly how).
Writes, under ``--out`` (default: the repository root):

* ``EVALUATION.md``: the tables, between the markers
  ``<!-- quality:begin -->`` and ``<!-- quality:end -->`` (text outside is kept);
* ``docs/quality-f1.png``: F1 against labelled positives, per learner;
* ``docs/quality-results.csv.gz``: every row (data set, codes, class, seed,
  round, learner) with its metrics.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import os
import platform
import sys
import time
from pathlib import Path

# every fit is single-threaded (parallelism is across worker processes), and
# BLAS thread counts must be fixed before numpy loads: PCA fits then give the
# same bits on every run. Only as the command: a test process importing this
# file must not pass these limits on to its own subprocesses.
if __name__ == "__main__":
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable from a plain checkout too
    sys.path.insert(0, str(ROOT))

from clipbranches_widget import evaluation as ev  # noqa: E402

BEGIN, END = "<!-- quality:begin -->", "<!-- quality:end -->"
CODE_NAMES = {
    "pca": "per-dimension PCA quantisation (default)",
    "global": "global `127.5x+128` (the reference's)",
    "learned": "learned head (`LearnedCompressor`)",
}
LOG = logging.getLogger("quality")


def parse(argv=None):
    a = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    a.add_argument(
        "--datasets",
        nargs="*",
        default=None,
        help="built-in sets: digits cifar10 synthetic synthetic-large (default: the "
        "first three, or none when --data is given)",
    )
    a.add_argument(
        "--data",
        action="append",
        default=[],
        help="a user file: .npz (embeddings, labels[, class_names, queries]) or a "
        ".npy of embeddings with --labels",
    )
    a.add_argument(
        "--labels",
        action="append",
        default=[],
        help="labels (.npy or .csv) for each .npy given with --data, in order",
    )
    a.add_argument("--seeds", type=int, default=3)
    a.add_argument("--rounds", type=int, default=4)
    a.add_argument("--classes", type=int, default=None, help="only the first N classes")
    a.add_argument(
        "--check",
        type=int,
        default=0,
        metavar="N",
        help="after each refine the user also labels N random results (Session.check)",
    )
    a.add_argument("--jobs", type=int, default=2, help="worker processes")
    a.add_argument(
        "--codes",
        nargs="+",
        default=["pca", "global"],
        choices=ev.CODE_VARIANTS,
        help="code variants; the first runs every learner, the others the "
        "default branches only ('learned' trains a torch head: ~1 min more "
        "for the three built-in sets)",
    )
    a.add_argument(
        "--learners",
        nargs="+",
        default=None,
        metavar="NAME",
        help="only these learners (names as in the tables, e.g. branches)",
    )
    a.add_argument(
        "--quick",
        action="store_true",
        help="tiny run: digits, 2 classes, 1 seed, 2 rounds, 4 learners",
    )
    a.add_argument("--out", type=Path, default=ROOT, help="where EVALUATION.md and docs/ go")
    a.add_argument(
        "--cifar-root",
        type=Path,
        default=Path(
            os.environ.get("CLIPBRANCHES_CIFAR10", ROOT.parent / "shared" / "data" / "cifar10-test")
        ),
    )
    a.add_argument(
        "--cache-dir",
        type=Path,
        default=ROOT / ".cache" / "quality",
        help="image features are cached here",
    )
    return a.parse_args(argv)


def load_sets(args) -> list:
    names = args.datasets
    if names is None:
        names = [] if args.data else ["digits", "cifar10", "synthetic"]
    if args.quick:
        names = ["digits"] if args.datasets is None and not args.data else names
    out = []
    for name in names:
        if name == "digits":
            out.append(ev.digits_set())
        elif name == "cifar10":
            out.append(ev.cifar10_set(args.cifar_root, cache_dir=args.cache_dir))
        elif name == "synthetic":
            out.append(ev.synthetic_modes_set())
        elif name == "synthetic-large":
            # the same concepts among 10x the distractors: the 1,000 background
            # items are then 1 % of the catalogue (56 % of digits)
            big = ev.synthetic_modes_set(n_other=100_000, other_clusters=2000)
            out.append(dataclasses.replace(big, name="synthetic-large"))
        else:
            raise SystemExit(
                f"--datasets: expected digits, cifar10, synthetic or synthetic-large, got {name!r}"
            )
    labels = iter(args.labels)
    for path in args.data:
        lab = next(labels, None) if str(path).endswith(".npy") else None
        out.append(ev.load_labelled_file(path, lab))
    if not out:
        raise SystemExit("nothing to evaluate: give --datasets and/or --data")
    return out


# --------------------------------------------------------------------------- markdown


def md_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def pm(mean, std, nd=2) -> str:
    return f"{mean:.{nd}f} ± {0 if np.isnan(std) else std:.{nd}f}"


def beat(share, median) -> str:
    if share == 0 or np.isnan(median):
        return f"never ({share:.0%})"
    return f"{median:.0f} ({share:.0%})"


def next_page_section(name, br, ref, rounds) -> list[str]:
    """The oracle-k line, the next-page precision table and the positives check."""
    if not len(ref):
        return []
    oracle = ", ".join(f"{ref.loc[k, 'knn_class_f1']:.2f}" for k in rounds)
    out = [
        "",
        f"k-NN with the oracle k (the class size): {oracle} (rounds "
        + ", ".join(str(k) for k in rounds)
        + ").",
        "",
        f"Next-page precision by round ({name}): share of the class among the first 60 "
        "unlabelled items of each learner's ranking (a refine's ranking goes on past its cut "
        "into the near misses; topped up from k-NN), against the next "
        "60 unlabelled items of the query's k-NN:",
        "",
    ]
    rows = []
    for learner, part in br.groupby("learner", sort=False):
        p = part.set_index("round")
        rows.append([learner] + [f"{p.loc[k, 'next_precision']:.2f}" for k in rounds])
    rows.append(
        ["k-NN (next 60 unlabelled)"] + [f"{ref.loc[k, 'knn_next_precision']:.2f}" for k in rounds]
    )
    out.append(md_table(["learner"] + [f"round {k}" for k in rounds], rows))
    out += [
        "",
        f"The default's result set kept every labelled positive in "
        f"{ref['positives_kept'].mean():.0%} of runs x rounds, and was empty while positives "
        f"existed in {ref['empty'].mean():.0%}.",
    ]
    return out


def estimate_section(name, ref, rounds) -> list[str]:
    """How far the default's estimates (what the widget prints) are from the truth."""
    if not len(ref) or ref["est_precision"].isna().all():
        return []
    rows = [
        ["estimated precision of the added items (shown)"]
        + [f"{ref.loc[k, 'est_precision']:.2f}" for k in rounds],
        ["their true precision"] + [f"{ref.loc[k, 'added_precision']:.2f}" for k in rounds],
        ["estimated / true class size (median)"]
        + [f"{ref.loc[k, 'class_size_ratio']:.2f}" for k in rounds],
    ]
    return [
        "",
        f"The default's estimates against the truth ({name}; precision over the runs "
        "that added items):",
        "",
        md_table(["estimate"] + [f"round {k}" for k in rounds], rows),
    ]


def check_section(df) -> list[str]:
    """How close the random check's estimates (``--check``) came to the truth."""
    acc = ev.check_accuracy(df[df["learner"] == "branches"])
    if not len(acc):
        return []
    rows = [
        [
            r.dataset,
            str(r.round),
            f"{r.precision:.2f} / {r.check_precision:.2f}",
            f"{r.precision_error:.2f}",
            f"{r.precision_covered:.0%}",
            f"{r.recall:.2f} / {r.check_recall:.2f}",
            f"{r.recall_error:.2f}",
            f"{r.recall_covered:.0%}",
        ]
        for r in acc.itertuples()
    ]
    head = ["data set", "round", "precision: true / check", "error", "in interval"]
    head += ["recall: true / check", "error", "in interval"]
    return [
        "",
        "### The random check's estimates against the truth",
        "",
        "Of the default's results each round, from the labelled check alone (no model; "
        "means over runs, error = mean absolute error, interval = 95 % Wilson bounds "
        "of each stratum):",
        "",
        md_table(head, rows),
    ]


def report(df, by_round, final, per_class, sets, args, seconds) -> str:
    main = args.codes[0]
    seeds = sorted(int(s) for s in df["seed"].unique())
    out = [
        f"Generated by `python benchmarks/quality.py{' --quick' if args.quick else ''}` on "
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()} "
        f"{os.cpu_count()} cores (shared), in {seconds:.0f} s. "
        f"Seeds {seeds}, {df['round'].max()} rounds of 60 labels"
        + (f" plus {args.check} random results checked" if args.check else "")
        + ", k = 60 for the first page. "
        "Means over classes x seeds, ± the standard deviation over those runs.",
        "",
        "Data sets:",
        "",
    ]
    for s in sets:
        sizes = s.class_sizes()
        out.append(
            f"* **{s.name}**: {s.description}; {len(s)} items, class sizes "
            f"{sizes.min()}-{sizes.max()}; query: "
            f"{'class text embedding' if s.queries is not None else 'one example item'}."
        )
    for name in dict.fromkeys(df["dataset"]):
        fin = final[(final["dataset"] == name) & (final["codes"] == main)]
        out += ["", f"### {name}: after the last round ({main} codes)", ""]
        rows = []
        for _, r in fin.iterrows():
            rows.append(
                [
                    r["learner"],
                    f"{r['positives']:.0f}",
                    f"{r['size']:.0f}",
                    f"{r['precision']:.2f}",
                    f"{r['recall']:.2f}",
                    pm(r["f1"], r["f1_std"]),
                    f"{np.nan_to_num(r['f1_seed_std']):.3f}",
                    f"{r['new_precision']:.2f} / {r['new_recall']:.2f}",
                    f"{r['knn_set_f1']:.2f}",
                    f"{r['knn_class_f1']:.2f}",
                    beat(r["beat_set_share"], r["beat_set_median"]),
                    beat(r["beat_class_share"], r["beat_class_median"]),
                    f"{r['ms']:.0f}",
                ]
            )
        out.append(
            md_table(
                [
                    "learner",
                    "positives",
                    "set size",
                    "P",
                    "R",
                    "F1",
                    "F1 spread over seeds",
                    "P / R on unlabelled items",
                    "k-NN F1 (k = set size)",
                    "k-NN F1 (k = class size)",
                    "positives to beat k-NN (set size)",
                    "positives to beat k-NN (class size)",
                    "ms / fit+search",
                ],
                rows,
            )
        )
        br = by_round[(by_round["dataset"] == name) & (by_round["codes"] == main)]
        rounds = sorted(br["round"].unique())
        pos = br[br["learner"] == br["learner"].iloc[0]].set_index("round")["positives"]
        out += [
            "",
            f"F1 by round ({name}, {main} codes; mean labelled positives in the header):",
            "",
        ]
        rows = []
        for learner, part in br.groupby("learner", sort=False):
            p = part.set_index("round")
            rows.append([learner] + [pm(p.loc[k, "f1"], p.loc[k, "f1_std"]) for k in rounds])
        ref = br[br["learner"] == "branches"].set_index("round")
        if len(ref):
            rows.append(
                ["k-NN, k = branches' set size"]
                + [f"{ref.loc[k, 'knn_set_f1']:.2f}" for k in rounds]
            )
        out.append(
            md_table(["learner"] + [f"round {k} ({pos.loc[k]:.0f} pos.)" for k in rounds], rows)
        )
        out += next_page_section(name, br, ref, rounds)
        out += estimate_section(name, ref, rounds)
    out += check_section(df)
    variants = by_round[by_round["learner"] == "branches"]
    if variants["codes"].nunique() > 1:
        out += [
            "",
            "### Codes: " + " vs ".join(CODE_NAMES[c] for c in args.codes),
            "",
            "Decision branches with default settings; each code variant drives its own "
            "simulated user. F1 by round (positives labelled in brackets):",
            "",
        ]
        rows = []
        for (name, codes), part in variants.groupby(["dataset", "codes"], sort=False):
            p = part.set_index("round")
            rows.append(
                [name, codes]
                + [f"{p.loc[k, 'f1']:.2f} ({p.loc[k, 'positives']:.0f})" for k in sorted(p.index)]
            )
        rounds = sorted(variants["round"].unique())
        out.append(md_table(["data set", "codes"] + [f"round {k}" for k in rounds], rows))
    out += ["", f"### Per class: default decision branches, {main} codes, last round", ""]
    pc = per_class[(per_class["codes"] == main) & (per_class["learner"] == "branches")]
    rows = [
        [
            r["dataset"],
            r["class"],
            r["class_size"],
            f"{r['positives']:.0f}",
            f"{r['size']:.0f}",
            f"{r['precision']:.2f}",
            f"{r['recall']:.2f}",
            pm(r["f1"], r["f1_std"]),
            f"{r['seed_page_f1']:.2f}",
            f"{r['knn_class_f1']:.2f}",
            "never" if np.isnan(r["to_beat"]) else f"{r['to_beat']:.0f}",
        ]
        for _, r in pc.iterrows()
    ]
    out.append(
        md_table(
            [
                "data set",
                "class",
                "class size",
                "positives",
                "set size",
                "P",
                "R",
                "F1 (± over seeds)",
                "first page F1 (k = 60)",
                "k-NN F1 (k = class size)",
                "positives to beat k-NN (class size), median",
            ],
            rows,
        )
    )
    out += ["", "![F1 against labelled positives](docs/quality-f1.png)", ""]
    return "\n".join(out)


def write_markdown(path: Path, body: str) -> None:
    text = (
        path.read_text()
        if path.exists()
        else (f"# Evaluation: does refining beat nearest neighbours?\n\n{BEGIN}\n{END}\n")
    )
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{BEGIN}\n{body}\n{END}{tail}")


def main(argv=None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t0 = time.perf_counter()
    sets = load_sets(args)
    if args.quick:
        seeds, rounds, classes = (0,), 2, args.classes or 2
        learners = ev.default_learners(quick=True)
    else:
        seeds, rounds, classes = tuple(range(args.seeds)), args.rounds, args.classes
        learners = ev.default_learners()
    if args.learners:
        known = {lr.name: lr for lr in ev.default_learners()}
        unknown = [n for n in args.learners if n not in known]
        if unknown:
            raise SystemExit(f"--learners: unknown {unknown}; expected names from {list(known)}")
        learners = [known[n] for n in args.learners]
    df = ev.run_evaluation(
        sets,
        learners=learners,
        seeds=seeds,
        rounds=rounds,
        classes=classes,
        code_variants=tuple(args.codes),
        jobs=args.jobs,
        progress=lambda m: LOG.info("%s done", m),
        check=args.check,
    )
    by_round, final, per_class = ev.summarise(df)
    docs = args.out / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    df.to_csv(docs / "quality-results.csv.gz", index=False, float_format="%.4f")
    ev.plot_f1(by_round, final, docs / "quality-f1.png", codes=args.codes[0])
    seconds = time.perf_counter() - t0
    write_markdown(
        args.out / "EVALUATION.md", report(df, by_round, final, per_class, sets, args, seconds)
    )
    LOG.info(
        "wrote %s, %s and %s in %.0f s",
        args.out / "EVALUATION.md",
        docs / "quality-f1.png",
        docs / "quality-results.csv.gz",
        seconds,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
