"""The two-stage refine as SQL (engine/sql/stage.py): DuckDB returns the
session's result set, ids in the session's order, with its scores and votes."""

import json

import numpy as np
import pyarrow as pa
import pytest

from clipbranches_widget import Catalogue, Session
from clipbranches_widget.engine.boxes import Boxes
from clipbranches_widget.engine.learn.twostage import StageParams
from clipbranches_widget.engine.sql.duckdb import duckdb_connect, refine_duckdb
from clipbranches_widget.engine.sql.parquet import write_parquet
from clipbranches_widget.engine.sql.stage import stage_to_sql
from clipbranches_widget.engine.sql.text import session_from_sql, session_to_sql
from clipbranches_widget.evaluation.synthetic import clustered_codes, identity_compressor

duckdb = pytest.importorskip("duckdb", reason="the duckdb package is a dev dependency")


def catalogue(n, seed):
    codes, cluster, concept = clustered_codes(n, random_state=seed, spread=14.0)
    return Catalogue(codes, compressor=identity_compressor()), np.isin(cluster, concept)


def table(codes, cols=None, id_column="id"):
    cols = cols or [f"c{j}" for j in range(codes.shape[1])]
    data = {id_column: np.arange(len(codes), dtype=np.int64)}
    return pa.table({**data, **{c: codes[:, j] for j, c in enumerate(cols)}})


def rounds(cat, truth, seed, stage, n_rounds=3, n_pos=8):
    """Refines of a user who labels the first unlabelled results of each round."""
    rng = np.random.default_rng(seed)
    s = Session(cat, random_state=seed, stage=stage)
    s.label(rng.choice(np.flatnonzero(truth), n_pos, replace=False), 1)
    s.label(rng.choice(np.flatnonzero(~truth), 12, replace=False), -1)
    for _ in range(n_rounds):
        res = s.refine()
        yield s, res
        for i in [i for i in res.ids[:40].tolist() if i not in s.labels][:10]:
            s.label([i], 1 if truth[i] else -1)


def run(con, sql):
    return con.execute(sql).fetchnumpy()


def assert_same(got, res):
    np.testing.assert_array_equal(np.asarray(got["id"], np.int64), res.ids)
    np.testing.assert_array_equal(np.asarray(got["score"], np.float32), res.scores)
    np.testing.assert_array_equal(np.asarray(got["votes"], np.int64), res.votes)


@pytest.mark.parametrize("n, seed", [(4000, 0), (4000, 1), (20000, 2), (20000, 3)])
def test_default_two_stage_sql_equals_the_session(n, seed):
    cat, truth = catalogue(n, seed)
    con = duckdb_connect(threads=2)
    con.register("catalogue", table(cat.codes))
    seen = set()
    for s, res in rounds(cat, truth, seed, StageParams()):
        model = res.info["stage_model"]
        assert model.exact and res.count > 0
        seen.add((model.logistic_weight < 1, model.platt is not None))
        assert_same(run(con, stage_to_sql(model, s.model.boxes_)), res)
    if n == 4000:  # these seeds choose a share of the vote, with Platt on
        assert (True, True) in seen
    assert any(platt for _, platt in seen)


@pytest.mark.parametrize("seed", [4, 5])
def test_sql_equals_the_session_when_the_vote_decides(seed):
    """Votes only (no logistic share, no Platt): the neighbour vote alone
    ranks, so many candidates tie on it and the similarity orders them."""
    cat, truth = catalogue(6000, seed)
    con = duckdb_connect(threads=2)
    con.register("catalogue", table(cat.codes))
    stage = StageParams(combine="mean", logistic_weight=0.0, calibrate=False, ks=(5, 10))
    for s, res in rounds(cat, truth, seed, stage):
        model = res.info["stage_model"]
        assert model.logistic_weight == 0 and model.platt is None and model.ks == (5, 10)
        got = run(con, stage_to_sql(model, s.model.boxes_))
        assert_same(got, res)
        # ties of the vote are real: the order within them is the similarity's
        assert np.unique(res.scores).size < res.count


@pytest.mark.parametrize("exact_limit", [10_000, 0])
def test_sql_equals_the_session_with_soft_background_targets(exact_limit):
    """background_steps=1, cut="set": the background's targets are
    probabilities, not 0, and the SQL (exact votes or leaf shares) still
    gives the session's ids, scores and votes."""
    cat, truth = catalogue(20000, 11)
    con = duckdb_connect(threads=2)
    con.register("catalogue", table(cat.codes))
    stage = StageParams(background_steps=1, cut="set", exact_limit=exact_limit)
    for s, res in rounds(cat, truth, 11, stage):
        model = res.info["stage_model"]
        bg = model.y[model.labelled.size :]
        assert ((bg > 0) & (bg < 1)).any()  # soft targets, not labels
        assert_same(run(con, stage_to_sql(model, s.model.boxes_)), res)


def test_sql_equals_the_session_with_leaf_only_neighbours():
    cat, truth = catalogue(20000, 6)
    con = duckdb_connect(threads=2)
    con.register("catalogue", table(cat.codes))
    stage = StageParams(exact_limit=0)  # every other candidate: its own leaf of the tree
    exact = StageParams()
    for s, res in rounds(cat, truth, 6, stage):
        model = res.info["stage_model"]
        if model.logistic_weight == 1:
            continue  # no vote this round: nothing leaf-only to check
        assert not model.exact and model.tree is not None
        sql = stage_to_sql(model, s.model.boxes_)
        assert "CASE WHEN 2 * k" in sql  # the descent
        assert_same(run(con, sql), res)
        # the exact vote would give another result: the leaves are what ran
        twin = Session(cat, random_state=6, stage=exact)
        twin.set_labels(s.labels)
        twin.rounds = s.rounds - 1
        other = twin.refine().info["stage_model"]
        assert not np.array_equal(
            other.scores(cat.codes, res.ids), model.scores(cat.codes, res.ids)
        )


def test_session_to_sql_runs_the_two_stage_query_from_a_saved_file(tmp_path):
    cat, truth = catalogue(8000, 7)
    path = write_parquet(cat.codes, tmp_path / "cat.parquet", row_group_size=2048)
    for s, res in rounds(cat, truth, 7, StageParams(), n_rounds=2):
        data = json.loads(json.dumps(s.to_dict()))  # what Session.save writes
        assert data["stage_model"] is not None
        text = session_to_sql(data, "photos")
        assert text == session_to_sql(s, "photos")
        con = duckdb_connect(threads=2)
        con.execute(f"CREATE VIEW photos AS SELECT * FROM read_parquet('{path}')")
        assert_same(run(con, text), res)
        back = session_from_sql(text)
        assert back["boxes"] == s.model.boxes_ and back["labels"] == s.labels
        got = refine_duckdb(path, res.info["stage_model"], s.model.boxes_)
        np.testing.assert_array_equal(got.ids, res.ids)
        np.testing.assert_array_equal(got.info["scores"], res.scores)
    with pytest.raises(ValueError, match="order"):
        session_to_sql(s, order="id")


def test_quoted_columns_and_extra_output_columns():
    cat, truth = catalogue(4000, 8)
    s, res = next(rounds(cat, truth, 8, StageParams(), n_rounds=1))
    cols = [f'dim "{j}"' for j in range(32)]
    t = table(cat.codes, cols, "item id").append_column(
        "uri", pa.array([f"img/{i}.jpg" for i in range(len(cat))])
    )
    con = duckdb_connect(threads=2)
    con.register("my photos", t)
    sql = stage_to_sql(
        res.info["stage_model"],
        s.model.boxes_,
        "my photos",
        columns=cols,
        id_column="item id",
        select=("uri",),
    )
    got = run(con, sql)
    np.testing.assert_array_equal(got["item id"], res.ids)
    assert list(got["uri"][:3]) == [f"img/{i}.jpg" for i in res.ids[:3]]


def test_a_boxes_only_session_still_exports_the_boxes(caplog):
    cat, truth = catalogue(4000, 9)
    s, res = next(rounds(cat, truth, 9, None, n_rounds=1))
    data = s.to_dict()
    assert data["stage_model"] is None
    text = session_to_sql(data)
    assert "clipbranches-two-stage" not in text
    con = duckdb_connect(threads=2)
    con.register("catalogue", table(cat.codes))
    got = run(con, text)
    np.testing.assert_array_equal(np.sort(got["id"]), np.sort(res.ids))
    # a file naming a second stage without its fit: the boxes, with a warning
    s2, _ = next(rounds(cat, truth, 9, StageParams(), n_rounds=1))
    old = {**s2.to_dict(), "stage_model": None}
    assert "clipbranches-two-stage" not in session_to_sql(old)
    assert "superset" in caplog.text


def test_stage_to_sql_refuses_mismatched_boxes_and_a_missing_tree():
    cat, truth = catalogue(4000, 10)
    s, res = next(rounds(cat, truth, 10, StageParams(), n_rounds=1))
    model = res.info["stage_model"]
    with pytest.raises(ValueError, match="over 8 code columns"):
        stage_to_sql(model, Boxes.empty(8))
    model.exact = False
    with pytest.raises(ValueError, match="exact_limit"):
        stage_to_sql(model, s.model.boxes_)
