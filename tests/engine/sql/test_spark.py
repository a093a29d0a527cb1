"""Spark (local[2]) runs the exported SQL and the DataFrame filter with the scan's results.

Needs pyspark (dev extra) and a Java runtime; CI installs a headless JRE from
Debian when ``java`` is missing. Skipped, with the reason, only where no Java
runtime exists at all.
"""

import os
import shutil

import numpy as np
import pytest
from test_text import sql_boxes

from clipbranches_widget.engine.boxes import Boxes
from clipbranches_widget.engine.search.scan import scan
from clipbranches_widget.engine.sql.parquet import write_parquet
from clipbranches_widget.engine.sql.text import session_from_sql, session_to_sql

pytest.importorskip("pyspark", reason="pyspark is a dev dependency: pip install -e '.[dev]'")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip(
        "no Java runtime (java not on PATH, JAVA_HOME unset): Spark cannot start",
        allow_module_level=True,
    )

from clipbranches_widget.engine.sql.spark import (  # noqa: E402
    HUGE_METHODS_OPTION,
    local_spark_session,
    search_spark,
    spark_filter,
    spark_votes,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def spark():
    session = local_spark_session("local[2]", spark__sql__shuffle__partitions="2")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    rng = np.random.default_rng(2024)
    codes = rng.integers(0, 256, (6_000, 32), dtype=np.uint8)
    codes[:20] = 0
    codes[20:40] = 255
    path = write_parquet(
        codes,
        tmp_path_factory.mktemp("spark") / "cat.parquet",
        uris=[f"img/{i}.jpg" for i in range(6_000)],
        row_group_size=1500,
    )
    return codes, path


def test_sql_through_spark_equals_scan(spark, catalogue):
    codes, path = catalogue
    for seed in range(3):
        rng = np.random.default_rng(seed)
        boxes = sql_boxes(rng, int(rng.integers(5, 60)))
        expected = scan(codes, boxes)
        got = search_spark(spark, path, boxes)
        assert got.path == "spark" and got.info["method"] == "sql"
        np.testing.assert_array_equal(got.ids, expected.ids)
        np.testing.assert_array_equal(got.votes, expected.votes)
        assert "`c" in got.info["sql"] and "FROM `catalogue`" in got.info["sql"]
    # ranked, as a user would see it
    got = search_spark(spark, path, boxes, order="votes")
    o = np.lexsort((expected.ids, -expected.votes.astype(int)))
    np.testing.assert_array_equal(got.ids, expected.ids[o])
    np.testing.assert_array_equal(got.votes, expected.votes[o])


def test_dataframe_filter_equals_scan_and_edges(spark, catalogue):
    codes, path = catalogue
    boxes = Boxes.from_bounds(
        [
            {j: (0, 0) for j in range(32)},
            {1: (255, 255), 30: (250, 255)},
            {4: (10, 90), 11: (100, 200), 19: (0, 128)},
        ]
    )
    expected = scan(codes, boxes)
    got = search_spark(spark, path, boxes, method="dataframe")
    np.testing.assert_array_equal(got.ids, expected.ids)
    np.testing.assert_array_equal(got.votes, expected.votes)
    assert set(range(40)) <= set(got.ids.tolist())
    # the Column expressions compose with a user's own DataFrame
    df = spark.read.parquet(str(path))
    n = df.where(spark_filter(boxes)).count()
    assert n == len(expected)
    top = df.select("id", spark_votes(boxes).alias("v")).where("v >= 2").count()
    assert top == int((expected.votes >= 2).sum())


def test_empty_model_and_saved_session_file(spark, catalogue, tmp_path):
    codes, path = catalogue
    empty = search_spark(spark, path, Boxes.empty(32))
    assert len(empty) == 0
    assert len(search_spark(spark, path, Boxes.empty(32), method="dataframe")) == 0
    # a saved session file, as a user with a cluster runs it (README): plain spark.sql
    boxes = sql_boxes(np.random.default_rng(7), 12)
    saved = {
        "labels": {"3": 1, "7": -1},
        "model": boxes.to_dict(),
        "query": "a red bus",
        "n_items": len(codes),
        "rounds": 2,
    }
    sql_file = tmp_path / "bus.sql"
    sql_file.write_text(session_to_sql(saved, "photos", dialect="spark"))
    spark.read.parquet(str(path)).createOrReplaceTempView("photos")
    rows = spark.sql(sql_file.read_text()).collect()
    expected = scan(codes, boxes)
    o = np.lexsort((expected.ids, -expected.votes.astype(int)))
    assert [r["id"] for r in rows] == expected.ids[o].tolist()
    assert [r["votes"] for r in rows] == expected.votes[o].tolist()
    back = session_from_sql(sql_file.read_text())
    # a session stores its model with to_dict (dims in sorted order): that model, exactly
    assert back["boxes"] == Boxes.from_dict(saved["model"])
    assert back["labels"] == {3: 1, 7: -1}
    assert back["query"] == "a red bus"


def test_bad_arguments(spark, catalogue):
    _, path = catalogue
    with pytest.raises(ValueError, match="method: expected 'sql' or 'dataframe'"):
        search_spark(spark, path, Boxes.empty(32), method="rdd")
    with pytest.raises(TypeError, match="expected a Spark DataFrame or Parquet path"):
        search_spark(spark, 3.5, Boxes.empty(32))
    with pytest.raises(ValueError, match="columns: expected 32"):
        spark_filter(Boxes.empty(32), columns=["a"])


def test_local_session_settings(spark):
    conf = spark.sparkContext.getConf()
    assert HUGE_METHODS_OPTION in conf.get("spark.driver.extraJavaOptions")
    assert conf.get("spark.ui.enabled") == "false"
    assert conf.get("spark.driver.host") == "127.0.0.1"
    assert spark.conf.get("spark.sql.shuffle.partitions") == "2"  # from the ``__`` keyword
