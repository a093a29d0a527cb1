"""DuckDB execution of the exported SQL equals the numba scan (ids and votes)."""

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_text import sql_boxes

from clipbranches_widget.engine.boxes import Boxes
from clipbranches_widget.engine.learn.branches import DecisionBranchesClassifier
from clipbranches_widget.engine.search.scan import scan
from clipbranches_widget.engine.sql.duckdb import duckdb_connect, search_duckdb
from clipbranches_widget.engine.sql.parquet import write_parquet

duckdb = pytest.importorskip("duckdb", reason="the duckdb package is a dev dependency")


def ranked(ids, votes):
    """Expected order of ``order="votes"``: votes descending, then id."""
    o = np.lexsort((ids, -votes.astype(np.int64)))
    return ids[o], votes[o]


@pytest.fixture(scope="module")
def random_catalogue(tmp_path_factory):
    rng = np.random.default_rng(99)
    codes = rng.integers(0, 256, (20_000, 32), dtype=np.uint8)
    codes[:50] = 0  # items at the edges of the value range
    codes[50:100] = 255
    path = write_parquet(
        codes, tmp_path_factory.mktemp("duck") / "cat.parquet", row_group_size=4096
    )
    return codes, path


@pytest.mark.parametrize("seed", range(6))
def test_sql_on_duckdb_equals_scan_on_random_boxes(random_catalogue, seed):
    codes, path = random_catalogue
    rng = np.random.default_rng(seed)
    boxes = sql_boxes(rng, int(rng.integers(1, 80)))
    expected = scan(codes, boxes)
    got = search_duckdb(path, boxes)
    assert got.path == "duckdb"
    np.testing.assert_array_equal(got.ids, expected.ids)
    np.testing.assert_array_equal(got.votes, expected.votes)
    assert got.votes.dtype == expected.votes.dtype
    assert len(expected) > 0  # box 0 of sql_boxes accepts everything: never vacuous
    r = search_duckdb(path, boxes, order="votes")
    want_ids, want_votes = ranked(expected.ids, expected.votes)
    np.testing.assert_array_equal(r.ids, want_ids)
    np.testing.assert_array_equal(r.votes, want_votes)


def test_selective_boxes_and_edges(random_catalogue):
    codes, path = random_catalogue
    rng = np.random.default_rng(5)
    boxes = Boxes.from_bounds(
        [
            {j: (0, 0) for j in range(32)},  # only the all-zero items
            {0: (255, 255), 9: (255, 255)},  # the all-255 items (and a few others)
            {3: (0, 40), 17: (200, 255), 21: (90, 100)},
            {int(j): (60, 140) for j in rng.choice(32, 4, replace=False)},
        ]
    )
    expected = scan(codes, boxes)
    got = search_duckdb(path, boxes)
    np.testing.assert_array_equal(got.ids, expected.ids)
    np.testing.assert_array_equal(got.votes, expected.votes)
    assert set(range(100)) <= set(got.ids.tolist())
    assert len(got) < len(codes) // 2


def test_empty_model_returns_nothing(random_catalogue):
    _, path = random_catalogue
    got = search_duckdb(path, Boxes.empty(32))
    assert len(got) == 0 and got.ids.dtype == np.int64
    assert "WHERE FALSE" in got.info["sql"]


def test_real_model_on_clustered_codes_in_shards(clustered, tmp_path):
    codes, cluster, concept = clustered
    rng = np.random.default_rng(3)
    pos = rng.choice(np.flatnonzero(np.isin(cluster, concept)), 40, replace=False)
    neg = rng.choice(np.flatnonzero(~np.isin(cluster, concept)), 400, replace=False)
    ids = np.concatenate([pos, neg])
    y = np.r_[np.ones(40, int), np.zeros(400, int)]
    model = DecisionBranchesClassifier(random_state=0).fit(codes[ids], y)
    boxes = model.boxes_
    assert boxes.n_boxes > 0
    # a sharded catalogue: a directory of Parquet files, ids carried along
    half = len(codes) // 2
    write_parquet(codes[:half], tmp_path / "shards" / "part-0.parquet", row_group_size=5000)
    write_parquet(
        codes[half:],
        tmp_path / "shards" / "part-1.parquet",
        ids=np.arange(half, len(codes)),
        row_group_size=5000,
    )
    expected = scan(codes, boxes)
    got = search_duckdb(tmp_path / "shards", boxes, threads=2)
    np.testing.assert_array_equal(got.ids, expected.ids)
    np.testing.assert_array_equal(got.votes, expected.votes)
    np.testing.assert_array_equal(np.flatnonzero(model.predict(codes)), got.ids)


def test_sorted_file_same_answer(clustered, tmp_path):
    codes, _, _ = clustered
    boxes = Boxes.from_bounds([{0: (40, 90), 5: (0, 120)}, {1: (100, 180), 2: (0, 255)}])
    path = write_parquet(
        codes, tmp_path / "sorted.parquet", row_group_size=2048, sort_by=["c0", "c1"]
    )
    assert pq.ParquetFile(path).metadata.num_row_groups == -(-len(codes) // 2048)
    expected = scan(codes, boxes)
    got = search_duckdb(path, boxes)
    np.testing.assert_array_equal(got.ids, expected.ids)
    np.testing.assert_array_equal(got.votes, expected.votes)


def test_own_connection_arrow_source_and_quoted_columns(rng):
    import pyarrow as pa

    codes = rng.integers(0, 256, (3000, 32), dtype=np.uint8)
    cols = [f'dim "{j}" `x`' for j in range(32)]
    table = pa.table(
        {"item id": np.arange(3000, dtype=np.int64), **{c: codes[:, j] for j, c in enumerate(cols)}}
    )
    boxes = sql_boxes(np.random.default_rng(1), 25)
    con = duckdb_connect(threads=1, memory_limit="512MB")
    con.execute("CREATE VIEW catalogue AS SELECT 42 AS answer")
    got = search_duckdb(table, boxes, connection=con, columns=cols, id_column="item id")
    expected = scan(codes, boxes)
    np.testing.assert_array_equal(got.ids, expected.ids)
    np.testing.assert_array_equal(got.votes, expected.votes)
    # the user's own objects are untouched, and nothing of ours is left behind
    assert con.execute("SELECT answer FROM catalogue").fetchall() == [(42,)]
    views = con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    assert views == [("catalogue",)]
    con.close()


def test_bad_sources_and_models(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Parquet file"):
        search_duckdb(tmp_path / "missing.parquet", Boxes.empty(32))
    with pytest.raises(TypeError, match="expected a Parquet path"):
        search_duckdb(12, Boxes.empty(32))
    with pytest.raises(TypeError, match="expected a Boxes model"):
        search_duckdb(tmp_path, {"boxes": []})


def test_out_of_core_file_larger_than_the_memory_limit(tmp_path):
    rng = np.random.default_rng(11)
    codes = rng.integers(0, 256, (1_000_000, 32), dtype=np.uint8)
    path = write_parquet(codes, tmp_path / "big.parquet", compression=None)
    assert path.stat().st_size > 2 * 16 * 2**20  # the file does not fit in the limit
    # every row matches (box 1 has no constraint), so the ranked sort holds 1M rows
    boxes = Boxes.from_bounds([{0: (0, 200), 1: (0, 200)}, {2: (0, 255)}])
    con = duckdb_connect(threads=1, memory_limit="16MB", temp_directory=str(tmp_path / "spill"))
    got = search_duckdb(path, boxes, connection=con, order="votes")
    con.close()
    ref = scan(codes, boxes)
    o = np.lexsort((ref.ids, -ref.votes.astype(np.int64)))
    assert len(got) == len(codes)
    np.testing.assert_array_equal(got.ids, ref.ids[o])
    np.testing.assert_array_equal(got.votes, ref.votes[o])
