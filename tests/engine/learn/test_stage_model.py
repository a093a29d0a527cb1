"""The fitted second stage as data (engine/learn/stage_model.py): it scores
and ranks as the refine did, its numpy parts equal the numba kernels, and a
damaged one is refused field by field."""

import json

import numpy as np
import pytest

from clipbranches_widget import Catalogue, Session
from clipbranches_widget.engine.learn.rescore import knn_query, knn_tree, knn_votes
from clipbranches_widget.engine.learn.stage_model import StageModel
from clipbranches_widget.engine.learn.twostage import StageParams
from clipbranches_widget.engine.search.ranking import code_scores
from clipbranches_widget.evaluation.synthetic import clustered_codes, identity_compressor


@pytest.fixture(scope="module")
def refined():
    codes, cluster, concept = clustered_codes(6000, random_state=1, spread=14.0)
    cat = Catalogue(codes, compressor=identity_compressor())
    truth = np.isin(cluster, concept)
    rng = np.random.default_rng(1)
    out = []
    for stage in (StageParams(), StageParams(exact_limit=0), StageParams(calibrate=False)):
        s = Session(cat, random_state=1, stage=stage)
        s.label(rng.choice(np.flatnonzero(truth), 10, replace=False), 1)
        s.label(rng.choice(np.flatnonzero(~truth), 10, replace=False), -1)
        res = s.refine()
        out.append((s, res))
    return cat, out


def test_the_model_ranks_and_scores_as_the_refine(refined):
    cat, runs = refined
    for s, res in runs:
        model = res.info["stage_model"]
        back = StageModel.from_dict(json.loads(json.dumps(model.to_dict())))
        assert back.to_dict() == model.to_dict()
        box_ids = cat.search_boxes(s.model.boxes_).ids
        for m in (model, back):
            ids, scores = m.rank(cat.codes, box_ids)
            np.testing.assert_array_equal(ids, res.ids)
            np.testing.assert_array_equal(scores, res.scores)
            np.testing.assert_array_equal(
                m.scores(cat.codes, res.ids).astype(np.float32), res.scores
            )
        assert model.m == res.count - np.isin(res.ids, model.labelled).sum()
    assert not runs[1][1].info["stage_model"].exact  # the leaf-only case was covered


def test_numpy_neighbours_and_votes_equal_the_kernels(refined):
    cat, runs = refined
    rng = np.random.default_rng(2)
    q = rng.choice(len(cat), 700, replace=False)
    for _, res in runs:
        model = res.info["stage_model"]
        tc = np.ascontiguousarray(cat.codes[model.train_ids])
        tree = knn_tree(tc, model.wdim)
        want = knn_query(cat.codes, q, tree, model.K, exact=model.exact)
        got = model.neighbours(cat.codes, q)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(model.votes(got), knn_votes(want, model.y, model.w, model.ks))


def test_model_similarity_equals_code_scores(refined):
    cat, runs = refined
    s, res = runs[0]
    model = res.info["stage_model"]
    ids = np.arange(len(cat))
    np.testing.assert_array_equal(
        model.similarity(cat.codes, ids),
        code_scores(cat.codes, ids, cat.compressor, s._reference()),
    )


def _damage(d, key, value):
    d = json.loads(json.dumps(d))
    if "." in key:
        a, b = key.split(".")
        d[a][b] = value
    elif value is KeyError:
        del d[key]
    else:
        d[key] = value
    return d


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("format", 2, "format"),
        ("K", KeyError, "missing \\['K'\\]"),
        ("surprise", 1, "unknown \\['surprise'\\]"),
        ("K", 0, "K: expected a value in"),
        ("K", 2.5, "K: expected an integer"),
        ("ks", [], "ks"),
        ("ks", [True], "ks"),
        ("y", "bad", "y: expected a list"),
        ("logistic_weight", 1.5, "logistic_weight"),
        ("b", float("nan"), "b: expected a finite number"),
        ("platt", [1.0], "platt"),
        ("exact", 1, "exact"),
        ("a", [0.0] * 3, "a"),
        ("train_ids", [], "train_ids"),
        ("m", -1, "m: expected a value in"),
        ("cut", 2.0, "cut"),
        ("loo_vote", [], "loo_vote"),
        ("positives", [10**30], "positives\\[0\\]: expected an integer"),
        ("labelled", [5, 3], "labelled: expected sorted"),
        ("tree", {"dim": [0]}, "tree"),
    ],
)
def test_from_dict_refuses_damaged_input(refined, key, value, match):
    _, runs = refined
    good = runs[0][1].info["stage_model"].to_dict()
    StageModel.from_dict(json.loads(json.dumps(good)))
    with pytest.raises(ValueError, match="stage_model: .*" + match):
        StageModel.from_dict(_damage(good, key, value))


def test_from_dict_checks_the_data_behind_the_fields(refined):
    _, runs = refined
    good = runs[1][1].info["stage_model"].to_dict()  # leaf-only: has a tree
    n = len(good["train_ids"])
    cases = [
        ("y", [2.0] * n, r"targets in \[0, 1\]"),
        ("w", [-1.0] * n, "positive weights"),
        ("train_ids", [0] * n, "distinct"),
        ("loo_ids", [10**9], "loo_vote / loo_logit|training items"),
        ("tree.left", [0] * len(good["tree"]["left"]), "k-d tree"),
        ("tree.leaf", [0] * (n - 1), "one per training item"),
        ("tree", None, "tree"),
    ]
    for key, value, match in cases:
        with pytest.raises(ValueError, match=match):
            StageModel.from_dict(_damage(good, key, value))
    with pytest.raises(ValueError, match="an object"):
        StageModel.from_dict([1, 2])


def test_a_session_file_with_a_damaged_stage_model_fails_to_load(refined):
    cat, runs = refined
    s, res = runs[0]
    data = json.loads(json.dumps(s.to_dict()))
    assert Session.from_dict(data, cat).results.ids.tolist() == res.ids.tolist()
    data["stage_model"]["w"] = [0.0] * len(data["stage_model"]["w"])
    with pytest.raises(ValueError, match="stage_model: w"):
        Session.from_dict(data, cat)
