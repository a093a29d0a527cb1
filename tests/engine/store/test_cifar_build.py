"""Real images: build a catalogue of the 10,000 CIFAR-10 test JPEGs with the tiny
model, reopen it, and run a search/refine round on it.

The data lives outside the repository: ``../shared/data/cifar10-test`` from the
repository root, or ``$CLIPBRANCHES_DATA`` (the data folder or cifar10-test
itself), and the tests skip without it.
"""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from clipbranches_widget import Catalogue, Session
from clipbranches_widget.engine.store.embed import ClipEmbedder, register_tiny_model

from images import full_cifar_dir


@pytest.fixture(scope="module")
def cifar():
    return full_cifar_dir()


@pytest.fixture(scope="module")
def cifar_catalogue(tmp_path_factory, cifar):
    import torch

    out = tmp_path_factory.mktemp("cifar") / "catalogue"
    before = torch.get_num_threads()
    try:
        # one torch thread: the decoding threads get the other core
        embedder = ClipEmbedder(register_tiny_model(), None, batch_size=128, threads=1)
        Catalogue.build(cifar, out=out, embedder=embedder, batch_size=128, progress=False)
    finally:
        torch.set_num_threads(before)
    return Catalogue.open(out)  # as a user would later: lazily recreated embedder


def test_counts_and_uris(cifar_catalogue, cifar):
    cat = cifar_catalogue
    assert len(cat) == 10_000 and cat.failed == []
    assert cat.codes.shape == (10_000, 32) and cat.embeddings.shape == (10_000, 64)
    uris = np.asarray(cat.uris).tolist()
    assert uris == sorted(uris) and len(set(uris)) == 10_000
    assert all(u.startswith(str(cifar.resolve())) and u.endswith(".jpg") for u in uris)
    classes = Counter(Path(u).parent.name for u in uris)
    assert len(classes) == 10 and set(classes.values()) == {1000}
    assert cat.uri(0) == str(cifar.resolve() / "airplane" / "0000.jpg")
    # every code dimension uses (most of) its 8-bit range on real images
    span = cat.codes.max(axis=0).astype(int) - cat.codes.min(axis=0)
    assert (span >= 200).all()


def test_search_and_refine_round(cifar_catalogue):
    cat = cifar_catalogue
    truth = np.array([Path(u).parent.name == "ship" for u in np.asarray(cat.uris)])
    s = Session(cat, k=60)
    res = s.search("a photo of a ship")
    assert res.count == 60 and res.kind == "knn"
    assert np.all(np.diff(res.scores) <= 1e-6)
    example = int(np.flatnonzero(truth)[0])
    res = s.search([example])
    assert res.ids[0] == example
    for i in res.ids.tolist():  # the user labels what they see by its true class
        s.label([i], 1 if truth[i] else -1)
    n_pos = sum(v > 0 for v in s.labels.values())
    assert n_pos >= 1
    refined = s.refine()
    assert refined.kind == "refined" and refined.count >= 1
    # the labelled positives, and the box matches the second stage keeps
    accepted = set(np.flatnonzero(s.model.predict(cat.codes)).tolist())
    positives = {i for i, v in s.labels.items() if v > 0}
    assert positives <= set(refined.ids.tolist()) <= accepted | positives
    frame = refined.to_frame(cat, s.labels)
    assert frame["uri"].str.endswith(".jpg").all()
    assert len(frame) == refined.count
