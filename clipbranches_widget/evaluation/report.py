"""Summaries of an evaluation run: tables of means and spreads, and the F1 plot.

matplotlib is optional (the ``bench`` extra): it is imported only to plot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["check_accuracy", "plot_f1", "positives_to_beat", "summarise"]


def _matplotlib():
    try:
        from matplotlib import colormaps
        from matplotlib.figure import Figure
    except ImportError as exc:  # optional: only the plot needs it
        raise ImportError(
            "the quality plot needs matplotlib: pip install 'clipbranches-widget[bench]'"
        ) from exc
    return Figure, colormaps


def positives_to_beat(df, against: str = "knn_set_f1"):
    """Per run (dataset, codes, learner, class, seed): positives labelled at
    the first round whose F1 beats ``against`` (NaN when none did)."""
    beat = df[df["f1"] > df[against]]
    keys = ["dataset", "codes", "learner", "class", "seed"]
    first = beat.groupby(keys)["positives"].min()
    runs = df.groupby(keys)["positives"].max()
    return first.reindex(runs.index)


def _with_estimate_errors(df):
    """``df`` with ``added_precision`` (the true precision of the added
    items, NaN where none was added or the learner gives no estimate) and
    ``class_size_ratio`` (estimated over true class size): what the
    estimates a user reads are compared with."""
    if "est_precision" not in df:  # a run of an older harness
        df = df.assign(est_precision=np.nan, est_class_size=np.nan, added=0)
    has = df["est_precision"].notna()
    return df.assign(
        added_precision=df["new_precision"].where(has),
        class_size_ratio=df["est_class_size"] / df["class_size"],
    )


def check_accuracy(df):
    """Per data set and round, how the random check's estimates (``--check``)
    compare with the truth of the results it was drawn from: the mean true
    and estimated precision and recall, the mean absolute error of each, and
    how often the interval holds the truth. Empty without checks."""
    if "check_precision" not in df or df["check_precision"].isna().all():
        return pd.DataFrame()
    d = df[df["check_precision"].notna()]
    cols = {}
    for q in ("precision", "recall"):
        est, lo, hi = d[f"check_{q}"], d[f"check_{q}_low"], d[f"check_{q}_high"]
        cols[f"{q}_error"] = (est - d[q]).abs()
        cols[f"{q}_covered"] = (lo <= d[q] + 1e-9) & (d[q] <= hi + 1e-9)
    # data sets in the order they ran, rounds in order
    d = d.assign(**cols, dataset=pd.Categorical(d["dataset"], pd.unique(d["dataset"])))
    return (
        d.groupby(["dataset", "round"], observed=True)
        .agg(
            runs=("f1", "size"),
            precision=("precision", "mean"),
            check_precision=("check_precision", "mean"),
            precision_error=("precision_error", "mean"),
            precision_covered=("precision_covered", "mean"),
            recall=("recall", "mean"),
            check_recall=("check_recall", "mean"),
            recall_error=("recall_error", "mean"),
            recall_covered=("recall_covered", "mean"),
        )
        .reset_index()
        .astype({"dataset": str})
    )


def summarise(df):
    """``(by_round, final, per_class)`` DataFrames of means and spreads."""
    keys = ["dataset", "codes", "learner"]
    df = _with_estimate_errors(df)
    g = df.groupby(keys + ["round"], sort=False)
    by_round = g.agg(
        positives=("positives", "mean"),
        f1=("f1", "mean"),
        f1_std=("f1", "std"),
        knn_set_f1=("knn_set_f1", "mean"),
        size=("size", "mean"),
        knn_class_f1=("knn_class_f1", "mean"),
        next_precision=("next_precision", "mean"),
        knn_next_precision=("knn_next_precision", "mean"),
        positives_kept=("positives_kept", "mean"),
        empty=("empty", "mean"),
        est_precision=("est_precision", "mean"),
        added_precision=("added_precision", "mean"),
        class_size_ratio=("class_size_ratio", "median"),
    ).reset_index()
    last = df[df["round"] == df["round"].max()]
    gl = last.groupby(keys, sort=False)
    final = gl.agg(
        positives=("positives", "mean"),
        size=("size", "mean"),
        precision=("precision", "mean"),
        recall=("recall", "mean"),
        f1=("f1", "mean"),
        f1_std=("f1", "std"),
        new_precision=("new_precision", "mean"),
        new_recall=("new_recall", "mean"),
        knn_set_f1=("knn_set_f1", "mean"),
        knn_class_f1=("knn_class_f1", "mean"),
        ms=("ms", "mean"),
    ).reset_index()
    for against, col in (("knn_set_f1", "beat_set"), ("knn_class_f1", "beat_class")):
        b = positives_to_beat(df, against).rename("p").reset_index()
        agg = b.groupby(keys)["p"].agg(lambda s: s.notna().mean()).rename(col + "_share")
        med = b.groupby(keys)["p"].median().rename(col + "_median")
        final = final.merge(pd.concat([agg, med], axis=1).reset_index(), on=keys, how="left")
    seed_means = last.groupby(keys + ["seed"])["f1"].mean().groupby(keys).std()
    final = final.merge(seed_means.rename("f1_seed_std").reset_index(), on=keys, how="left")
    per_class = (
        last.groupby(keys + ["class"], sort=False)
        .agg(
            class_size=("class_size", "first"),
            positives=("positives", "mean"),
            size=("size", "mean"),
            precision=("precision", "mean"),
            recall=("recall", "mean"),
            f1=("f1", "mean"),
            f1_std=("f1", "std"),
            knn_class_f1=("knn_class_f1", "mean"),
            seed_page_f1=("seed_page_f1", "mean"),
        )
        .reset_index()
    )
    b = positives_to_beat(df, "knn_class_f1").rename("to_beat").reset_index()
    per_class = per_class.merge(
        b.groupby(keys + ["class"])["to_beat"].median().reset_index(),
        on=keys + ["class"],
        how="left",
    )
    return by_round, final, per_class


_COLOURS = {
    "branches": "black",
    "logistic regression": "tab:blue",
    "random forest": "tab:green",
    "1-NN classifier": "tab:purple",
    "labelled positives only": "tab:orange",
}
_CODE_COLOURS = {"pca": "tab:gray", "global": "tab:red", "learned": "tab:brown"}


def plot_f1(by_round, final, path, *, codes: str = "pca"):
    """F1 against the number of labelled positives, one panel per data set."""
    # a bare Figure, not pyplot: no global backend switch, nothing to close
    Figure, colormaps = _matplotlib()
    names = list(dict.fromkeys(by_round["dataset"]))
    fig = Figure(figsize=(5.2 * len(names), 4.2))
    axes = fig.subplots(1, len(names), squeeze=False)
    for ax, name in zip(axes[0], names):
        d = by_round[by_round["dataset"] == name]
        alt = 0
        for (cd, learner), part in d.groupby(["codes", "learner"], sort=False):
            if cd != codes and learner != "branches":
                continue
            label = learner if cd == codes else f"{learner} ({cd} codes)"
            color = _COLOURS.get(learner) if cd == codes else _CODE_COLOURS.get(cd, "tab:red")
            main = color is not None
            if color is None:  # the alternatives: thin, from a sequential map
                color = colormaps["viridis"](0.1 + 0.1 * alt)
                alt += 1
            ax.plot(
                part["positives"],
                part["f1"],
                marker="o" if main else None,
                color=color,
                lw=2.4 if learner == "branches" and cd == codes else (1.5 if main else 0.9),
                alpha=1.0 if main else 0.6,
                ls="--" if cd != codes else "-",
                label=label,
            )
        fin = final[(final["dataset"] == name) & (final["codes"] == codes)]
        ax.axhline(
            float(fin["knn_class_f1"].iloc[0]),
            color="k",
            ls=":",
            label="k-NN of the query, k = class size",
        )
        ref = d[(d["codes"] == codes) & (d["learner"] == "branches")]
        ax.plot(
            ref["positives"],
            ref["knn_set_f1"],
            color="grey",
            ls="-.",
            label="k-NN, k = branches' set size",
        )
        ax.set_title(name)
        ax.set_xlabel("labelled positives (mean over classes and seeds)")
        ax.set_ylabel("F1 of the complete result set")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
