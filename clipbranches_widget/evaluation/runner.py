"""Every simulated user over several data sets and code variants, optionally
in worker processes.

Each task carries its own data set and fitted compressor (no state is kept
in the module), so a task runs the same in this process or in a worker.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import pandas as pd

from .codes import fit_compressor, make_catalogue
from .datasets import LabelledSet
from .protocol import Learner, simulate

__all__ = ["run_evaluation"]


@dataclass(frozen=True)
class _Task:
    """One (data set, code variant, class): every seed of that simulated user."""

    data: LabelledSet
    compressor: object
    codes: str
    cls: int
    seeds: tuple
    learners: tuple[Learner, ...]
    rounds: int
    page_size: int
    check: int = 0

    @property
    def name(self) -> str:
        return f"{self.data.name}/{self.codes} class {self.data.class_names[self.cls]}"


def _run_task(task: _Task) -> list[dict]:
    # transform only (the compressor is fitted once, in the parent): cheap
    catalogue = make_catalogue(task.data, task.codes, task.compressor)
    rows = []
    for seed in task.seeds:
        rows += simulate(
            task.data,
            catalogue,
            task.cls,
            seed,
            learners=task.learners,
            rounds=task.rounds,
            page_size=task.page_size,
            codes=task.codes,
            check=task.check,
        )
    return rows


def run_evaluation(
    datasets,
    *,
    learners,
    seeds=(0, 1, 2),
    rounds: int = 5,
    classes: int | None = None,
    code_variants=("pca", "global"),
    variant_learners=("branches",),
    page_size: int = 60,
    jobs: int = 1,
    progress=None,
    check: int = 0,
):
    """All simulated users over ``datasets``: a DataFrame with one row per
    (dataset, codes, class, seed, round, learner). Code variants after the
    first run only ``variant_learners``. ``jobs`` > 1 runs (dataset, codes,
    class) tasks in that many worker processes (every fit inside is
    single-threaded, so results do not depend on ``jobs``). ``check``: see
    ``simulate``."""
    tasks = []
    for data in datasets:
        n_cls = len(data.class_names) if classes is None else min(classes, len(data.class_names))
        for codes in code_variants:
            # fitted once here (the learned one takes a while); tasks only transform
            compressor = fit_compressor(data, codes)
            use = (
                learners
                if codes == code_variants[0]
                else [lr for lr in learners if lr.name in variant_learners]
            )
            tasks += [
                _Task(
                    data, compressor, codes, cls, tuple(seeds), tuple(use), rounds, page_size, check
                )
                for cls in range(n_cls)
            ]
    rows = []
    if jobs <= 1:
        for t in tasks:
            rows += _run_task(t)
            if progress is not None:
                progress(t.name)
    else:
        # spawned (not forked) workers: faiss/OpenMP and numba threads are
        # not fork-safe once the parent has used them
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            for t, out in zip(tasks, pool.map(_run_task, tasks)):
                rows += out
                if progress is not None:
                    progress(t.name)
    return pd.DataFrame(rows)  # in task order: data set, codes, class, seed, round, learner
