"""The main job from a script: build a catalogue, search, label, refine.

    python -m clipbranches_widget.demo

Uses scikit-learn's handwritten digits (real 8x8 images, shipped with
scikit-learn, so it runs offline) as the catalogue, searches by an example
image of a digit, plays a user who clicks the shown items by their true class,
and refines twice, printing what each step found.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
from sklearn.datasets import load_digits

from . import Catalogue, Session


def _prf(found: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    tp = np.isin(found, truth).sum()
    p = tp / max(found.size, 1)
    r = tp / max(truth.size, 1)
    return p, r, 2 * p * r / max(p + r, 1e-12)


def run(digit: int = 3, rounds: int = 2, out=print) -> Session:
    data = load_digits()
    X = data.data.astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    cat = Catalogue.from_embeddings(X, uris=[f"digits/{i}.png" for i in range(len(X))])
    out(f"catalogue: {len(cat)} images, codes {cat.codes.shape} {cat.codes.dtype}")
    truth = np.flatnonzero(data.target == digit)
    session = Session(cat, k=60, random_state=0)
    example = int(truth[0])
    res = session.search([example])
    p, r, f = _prf(res.ids, truth)
    out(
        f"search by example image #{example} (a {digit}): {res.count} nearest neighbours, "
        f"precision {p:.2f} recall {r:.2f} F1 {f:.2f} [{res.timings['total_ms']:.1f} ms]"
    )
    for rnd in range(1, rounds + 1):
        shown = session.page(0).ids
        for i in shown.tolist():  # the user clicks what they see
            if i not in session.labels:
                session.label([i], 1 if data.target[i] == digit else -1)
        labels = session.labels
        n_pos = sum(v > 0 for v in labels.values())
        res = session.refine()
        p, r, f = _prf(res.ids, truth)
        knn = session.catalogue.seeder.search(session.query_vector, res.count)[1]
        kp, kr, kf = _prf(knn[knn >= 0], truth)
        out(
            f"refine round {rnd}: {n_pos} positive and {len(labels) - n_pos} negative labels "
            f"-> {res.count} results ({session.model.boxes_.n_boxes} boxes), precision {p:.2f} "
            f"recall {r:.2f} F1 {f:.2f} [fit {res.timings['fit_ms']:.1f} ms, "
            f"search {res.timings['search_ms']:.1f} ms]; k-NN with k={res.count}: F1 {kf:.2f}"
        )
    top = session.page(0)
    out(
        "first results: "
        + ", ".join(f"{cat.uri(int(i))} (votes {v})" for i, v in zip(top.ids[:5], top.votes[:5]))
    )
    out(
        "the boxes as SQL (the candidates; session_to_sql(session) exports the whole "
        "two-stage refine as one query):\n" + session.model.boxes_.to_sql("catalogue")
    )
    return session


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digit", type=int, default=3, help="the concept to search for (0-9)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    run(args.digit, args.rounds)


if __name__ == "__main__":
    main()
