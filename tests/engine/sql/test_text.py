"""SQL export of decision-branches models: text, round trip, sessions, Parquet layout."""

import ast
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from clipbranches_widget import Catalogue, Session
from clipbranches_widget.engine.boxes import Boxes
from clipbranches_widget.engine.sql import query
from clipbranches_widget.engine.sql.parquet import code_columns, read_parquet_codes, write_parquet
from clipbranches_widget.engine.sql.text import (
    boxes_from_sql,
    boxes_to_sql,
    quote_identifier,
    quote_table,
    session_from_sql,
    session_to_sql,
)


def sql_boxes(rng, m, d=32):
    """Random boxes with the awkward cases mixed in: unsorted dims, bounds at
    0 and 255, single-value ranges, empty boxes (lower > upper) and a box
    without constraints."""
    lower = np.zeros((m, d), np.uint8)
    upper = np.full((m, d), 255, np.uint8)
    dims = []
    for b in range(m):
        k = int(rng.integers(0, 7)) if b else 0  # box 0 constrains nothing
        dd = tuple(int(j) for j in rng.choice(d, k, replace=False))
        for j in dd:
            kind = rng.integers(0, 6)
            if kind == 0:
                lo, hi = 0, int(rng.integers(0, 256))
            elif kind == 1:
                lo, hi = int(rng.integers(0, 256)), 255
            elif kind == 2:
                lo = hi = int(rng.choice([0, 255, int(rng.integers(0, 256))]))
            elif kind == 3:
                hi = int(rng.integers(0, 255))
                lo = int(rng.integers(hi + 1, 256))  # empty box
            else:
                lo = int(rng.integers(0, 200))
                hi = lo + int(rng.integers(0, 256 - lo))
            lower[b, j], upper[b, j] = lo, hi
        dims.append(dd)
    return Boxes(lower, upper, dims)


@pytest.mark.parametrize("dialect", ["ansi", "spark"])
@pytest.mark.parametrize("seed", range(5))
def test_round_trip_boxes_sql_boxes(dialect, seed):
    rng = np.random.default_rng(seed)
    boxes = sql_boxes(rng, int(rng.integers(1, 40)))
    sql = boxes.to_sql("photos", dialect=dialect)
    back = Boxes.from_sql(sql)
    assert back == boxes  # same bounds and the same dims, in the same order
    assert back.dims == boxes.dims
    codes = rng.integers(0, 256, (2000, 32), dtype=np.uint8)
    np.testing.assert_array_equal(back.votes(codes), boxes.votes(codes))


def test_round_trip_all_orders_and_empty_model():
    boxes = Boxes.from_bounds([{0: (0, 0), 31: (255, 255)}, {4: (10, 20)}])
    for order in ("votes", "id", None):
        assert Boxes.from_sql(boxes.to_sql(order=order)) == boxes
    empty = Boxes.empty(32)
    sql = empty.to_sql()
    assert "WHERE FALSE" in sql and "CASE" not in sql
    back = Boxes.from_sql(sql)
    assert back == empty and back.n_boxes == 0 and back.n_features == 32
    assert Boxes.from_sql(Boxes.empty(8).to_sql()).n_features == 8  # from the header


def test_sql_text_is_readable():
    boxes = Boxes.from_bounds([{3: (10, 20), 7: (0, 255)}, {1: (5, 5)}])
    sql = boxes.to_sql("catalogue")
    assert sql.startswith("-- decision-branches model: 2 boxes over 32 code columns")
    assert (
        'WHERE ("c3" BETWEEN 10 AND 20 AND "c7" BETWEEN 0 AND 255)\n   OR ("c1" BETWEEN 5 AND 5)'
        in sql
    )
    assert sql.count("CASE WHEN") == 2
    assert sql.rstrip().endswith('ORDER BY votes DESC, "id"')
    assert boxes.to_sql(order="id").rstrip().endswith('ORDER BY "id"')
    assert "ORDER BY" not in boxes.to_sql(order=None)
    assert 'SELECT "id", "uri",' in boxes.to_sql(select=("uri",))
    assert "`c3` BETWEEN 10 AND 20" in boxes.to_sql(dialect="spark")


def test_quoting_of_table_and_column_names():
    assert quote_identifier('my "odd" col') == '"my ""odd"" col"'
    assert quote_identifier("a`b", dialect="spark") == "`a``b`"
    assert quote_identifier('a"b', dialect="spark") == '`a"b`'
    assert quote_table(("lake", "photo set")) == '"lake"."photo set"'
    assert quote_table("db.t") == '"db.t"'  # one identifier: the dot is part of the name
    for bad in ("", None, "a\x00b"):
        with pytest.raises(ValueError, match="identifier"):
            quote_identifier(bad)
    with pytest.raises(ValueError, match="dialect: expected one of"):
        quote_identifier("x", dialect="oracle")
    cols = [f'code "{j}" -- `x`' for j in range(32)]
    boxes = Boxes.from_bounds([{0: (1, 2), 5: (3, 4)}, {31: (0, 9)}])
    for dialect in ("ansi", "spark"):
        sql = boxes.to_sql(
            ("my schema", 'ta"b`le'), columns=cols, id_column="item id", dialect=dialect
        )
        assert Boxes.from_sql(sql, columns=cols) == boxes
    sql = boxes.to_sql(columns=cols)
    assert '"code ""0"" -- `x`" BETWEEN 1 AND 2' in sql
    with pytest.raises(ValueError, match="columns: expected 32 code column names, got 3"):
        boxes.to_sql(columns=["a", "b", "c"])
    with pytest.raises(ValueError, match="distinct"):
        boxes.to_sql(columns=["a"] * 32)


def test_from_sql_rejects_what_it_cannot_read():
    boxes = Boxes.from_bounds([{0: (1, 2)}, {1: (3, 4)}])
    sql = boxes.to_sql()
    with pytest.raises(ValueError, match="WHERE clause"):
        Boxes.from_sql('SELECT "id" FROM t')
    with pytest.raises(ValueError, match="code columns"):
        Boxes.from_sql('SELECT "id" FROM t WHERE ("zz" BETWEEN 1 AND 2)')
    with pytest.raises(ValueError, match="bounds in 0..255"):
        Boxes.from_sql('SELECT "id" FROM t WHERE ("c1" BETWEEN 1 AND 300)')
    with pytest.raises(ValueError, match=r"'\)' closing a box at line 1, got 'OR'"):
        Boxes.from_sql('SELECT "id" FROM t WHERE ("c1" BETWEEN 1 AND 3 OR "c2" BETWEEN 1 AND 2)')
    # a hand edit of the WHERE clause that forgot the votes is caught
    edited = sql.replace('WHERE ("c0" BETWEEN 1 AND 2)', 'WHERE ("c0" BETWEEN 1 AND 9)')
    assert edited != sql
    with pytest.raises(ValueError, match="describe different models"):
        Boxes.from_sql(edited)
    with pytest.raises(TypeError, match="SQL text"):
        Boxes.from_sql(boxes)


def test_from_sql_reads_hand_written_where_clauses():
    got = Boxes.from_sql(
        "select id from catalogue where c2 between 3 and 9 and C5 BETWEEN 0 "
        "and 255 or (c7 between 1 and 1 and c7 between 0 and 4) or false;"
    )
    assert got.dims == ((2, 5), (7,))
    assert got.bounds(0) == {2: (3, 9), 5: (0, 255)}
    assert got.bounds(1) == {7: (1, 1)}  # the intersection of the two ranges on c7


def small_session(rng, n=1500, d=24, clusters=6, **session_args):
    centres = rng.standard_normal((clusters, d)) * 3
    which = rng.integers(0, clusters, n)
    X = (centres[which] + rng.standard_normal((n, d))).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    cat = Catalogue.from_embeddings(X, uris=[f"img/{i}.jpg" for i in range(n)])
    s = Session(cat, k=40, **session_args)
    s.search([int(np.flatnonzero(which == 1)[0])])
    for i in s.page(0).ids.tolist():
        s.label([i], 1 if which[i] == 1 else -1)
    s.refine()
    return cat, s


def test_session_export_round_trip(rng, tmp_path):
    cat, s = small_session(rng)
    text = session_to_sql(s, "photos")
    path = tmp_path / "bus.sql"
    path.write_text(text)
    back = session_from_sql(path.read_text())
    assert back["labels"] == s.labels and len(back["labels"]) > 0
    assert back["boxes"] == s.model.boxes_
    assert back["n_items"] == len(cat) and back["rounds"] == s.rounds
    # the same from the saved dict (as written by Session.save / to_dict)
    data = json.loads(json.dumps(s.to_dict()))
    assert session_to_sql(data, "photos") == text
    # the re-imported boxes find exactly the candidates the session's second
    # stage scored: its results are the labelled positives plus some of them
    candidates = cat.search_boxes(back["boxes"]).ids
    positives = [i for i, v in s.labels.items() if v > 0]
    assert set(s.results.ids) - set(positives) <= set(candidates.tolist())
    assert set(positives) <= set(s.results.ids.tolist())
    assert session_from_sql(s.model.boxes_.to_sql())["labels"] == {}


def test_session_export_of_a_boxes_only_session_finds_exactly_its_results(rng):
    cat, s = small_session(rng, stage=None)
    back = session_from_sql(session_to_sql(s, "photos"))
    np.testing.assert_array_equal(
        np.sort(cat.search_boxes(back["boxes"]).ids), np.sort(s.results.ids)
    )


def test_session_export_needs_a_model(rng):
    cat, _ = small_session(rng, n=300)
    s = Session(cat)
    s.search([0])
    s.label([0], 1)
    with pytest.raises(ValueError, match="no refined model yet"):
        session_to_sql(s)
    with pytest.raises(TypeError, match="expected a Session"):
        session_to_sql([1, 2])


# --- the Parquet layout ---


def test_write_parquet_layout_row_groups_and_stats(rng, tmp_path):
    codes = rng.integers(0, 256, (10_000, 32), dtype=np.uint8)
    uris = np.array([f"img/{i}.jpg" for i in range(10_000)], object)
    path = write_parquet(codes, tmp_path / "cat.parquet", uris=uris, row_group_size=3000)
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == 10_000 and meta.num_row_groups == 4
    assert [meta.row_group(g).num_rows for g in range(4)] == [3000, 3000, 3000, 1000]
    schema = pq.read_schema(path)
    assert schema.names == ["id", "uri"] + code_columns(32)
    assert str(schema.field("c0").type) == "uint8"
    stats = meta.row_group(1).column(2).statistics  # c0 of the second group
    assert stats.has_min_max and stats.min == codes[3000:6000, 0].min()
    ids, back, back_uris = read_parquet_codes(path)
    np.testing.assert_array_equal(ids, np.arange(10_000))
    np.testing.assert_array_equal(back, codes)
    assert list(back_uris[:2]) == ["img/0.jpg", "img/1.jpg"]
    assert not list(tmp_path.glob("*.partial*"))  # written aside, then renamed


def test_write_parquet_sorted_rows_keep_ids_and_narrow_groups(rng, tmp_path):
    codes = rng.integers(0, 256, (8_000, 32), dtype=np.uint8)
    path = write_parquet(codes, tmp_path / "s.parquet", row_group_size=1000, sort_by=["c4", 7])
    ids, back, uris = read_parquet_codes(path)
    np.testing.assert_array_equal(back, codes[ids])  # each row keeps its own id
    assert sorted(ids.tolist()) == list(range(8000))
    assert np.all(np.diff(back[:, 4].astype(int)) >= 0)
    meta = pq.ParquetFile(path).metadata
    spans = [meta.row_group(g).column(2 + 4).statistics for g in range(meta.num_row_groups)]
    assert max(s.max - s.min for s in spans) < 64  # narrow c4 ranges: groups can be skipped
    assert all(u is None for u in uris[:5])
    with pytest.raises(ValueError, match="sort_by"):
        write_parquet(codes, tmp_path / "x.parquet", sort_by=["c40"])


def test_catalogue_to_parquet_and_bad_input(rng, tmp_path):
    cat, _ = small_session(rng, n=300)
    path = cat.to_parquet(tmp_path / "sub" / "cat.parquet", row_group_size=128)
    ids, codes, uris = read_parquet_codes(path)
    np.testing.assert_array_equal(codes, cat.codes)
    assert uris[299] == "img/299.jpg"
    with pytest.raises(TypeError, match="uint8"):
        write_parquet(np.zeros((3, 32), np.float32), tmp_path / "f.parquet")
    with pytest.raises(ValueError, match="uris: expected 3 URIs"):
        write_parquet(np.zeros((3, 32), np.uint8), tmp_path / "f.parquet", uris=["a"])
    with pytest.raises(ValueError, match="row_group_size"):
        write_parquet(np.zeros((3, 32), np.uint8), tmp_path / "f.parquet", row_group_size=0)
    empty = write_parquet(np.zeros((0, 32), np.uint8), tmp_path / "e.parquet")
    assert pq.ParquetFile(empty).metadata.num_rows == 0


def test_boxes_to_sql_is_the_function():
    boxes = Boxes.from_bounds([{2: (1, 2)}])
    assert boxes.to_sql("t", dialect="spark") == boxes_to_sql(boxes, "t", dialect="spark")
    assert boxes_from_sql(boxes.to_sql()) == boxes


# --- hostile SQL (issue 16) ---


def test_from_sql_refuses_a_second_statement():
    sql = Boxes.from_bounds([{0: (1, 2)}]).to_sql()
    for tail in (";\nDROP TABLE catalogue", "; SELECT 1", ";;DELETE FROM t"):
        with pytest.raises(ValueError, match="one SQL statement.*after ';'"):
            Boxes.from_sql(sql + tail)
        with pytest.raises(ValueError, match="one SQL statement"):
            boxes_from_sql(sql + tail)
    # one statement with its terminator, and comments after it, still parse
    assert Boxes.from_sql(sql + ";\n-- the end\n") == Boxes.from_sql(sql)
    assert Boxes.from_sql(sql + ";;") == Boxes.from_sql(sql)


def _with_labels(text, labels_json):
    lines = text.splitlines(keepends=True)
    i = next(k for k, line in enumerate(lines) if line.startswith("-- labels:"))
    lines[i] = f"-- labels: {labels_json}\n"
    return "".join(lines)


@pytest.mark.parametrize(
    "labels_json, match",
    [
        ('{"5": 1.5}', "must be 1 or -1"),
        ('{"5": 0}', "must be 1 or -1"),
        ('{"5": true}', "must be 1 or -1"),
        ('{"5": "1"}', "must be 1 or -1"),
        ('{"-3": 1}', "non-negative integers"),
        ('{"1_0": 1}', "non-negative integers"),
        ('{" 7": -1}', "non-negative integers"),
        ('{"x": 1}', "non-negative integers"),
        ("[1, 2]", "JSON object"),
        ('{"5": 1', "not valid JSON"),
    ],
)
def test_session_from_sql_validates_labels(rng, labels_json, match):
    _, s = small_session(rng, n=600)
    text = session_to_sql(s, "photos")
    assert session_from_sql(text)["labels"] == s.labels
    with pytest.raises(ValueError, match=match):
        session_from_sql(_with_labels(text, labels_json))


def test_session_from_sql_validates_the_header(rng):
    _, s = small_session(rng, n=600)
    text = session_to_sql(s, "photos")
    head = text.splitlines()[0]
    for bad in ('{"n_items": -1}', '{"rounds": 1.5}', '"text"', "{"):
        with pytest.raises(ValueError, match="session_from_sql"):
            session_from_sql(text.replace(head, f"-- clipbranches-session: {bad}"))
    with pytest.raises(TypeError, match="SQL text"):
        session_from_sql(b"SELECT 1")


def test_sql_writer_does_not_import_the_model():
    """boxes.py imports sql/query.py, sql/text.py imports boxes.py: no cycle,
    so query.py must stay free of engine imports."""
    tree = ast.parse(Path(query.__file__).read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert all(m in ("__future__",) or not m.startswith(".") for m in imported if m)
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0]
