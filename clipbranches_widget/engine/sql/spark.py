"""Run a decision-branches model on a cluster with Spark.

Two equivalent routes, both giving the numba ``scan``'s ids and votes:

* Spark SQL: the text of ``Boxes.to_sql(dialect="spark")`` over a view of
  the Parquet catalogue, i.e. exactly the saved query a user can paste into
  a Databricks / spark-sql shell;
* the DataFrame API: ``spark_filter(boxes)`` and ``spark_votes(boxes)`` are
  ``Column`` expressions to combine with a user's own pipeline.

pyspark is imported lazily: nothing here is needed unless Spark is used.
"""

from __future__ import annotations

import logging
import time
import uuid

import numpy as np

from ..boxes import Boxes
from ..search.result import ScanResult
from .parquet import path_list
from .query import boxes_to_sql

__all__ = [
    "HUGE_METHODS_OPTION",
    "local_spark_session",
    "search_spark",
    "spark_filter",
    "spark_votes",
]

log = logging.getLogger(__name__)

#: JVM option that lets the JIT compile Spark's large generated filter methods
HUGE_METHODS_OPTION = "-XX:-DontCompileHugeMethods"


def _pyspark():
    try:
        from pyspark.sql import functions
    except ImportError as exc:
        raise ImportError(
            "Spark execution needs pyspark (and a Java runtime): "
            "pip install 'clipbranches-widget[spark]'"
        ) from exc
    return functions


def local_spark_session(master: str = "local[2]", *, app_name: str = "clipbranches", **conf):
    """A small local SparkSession: no UI, bound to 127.0.0.1, few shuffle partitions.

    For a laptop or a test; on a cluster use the session your platform gives
    (and add ``HUGE_METHODS_OPTION`` to its ``spark.driver.extraJavaOptions``
    and ``spark.executor.extraJavaOptions``). ``conf``: more settings, with
    ``__`` standing for ``.`` in keys (``spark__sql__shuffle__partitions="2"``).
    """
    _pyspark()
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # A model's predicate compiles into one large generated method;
        # by default the JVM never JIT-compiles methods over 8000 bytes,
        # which made 8-box queries ~5x slower (benchmarks/sql.py).
        .config("spark.driver.extraJavaOptions", HUGE_METHODS_OPTION)
        .config("spark.executor.extraJavaOptions", HUGE_METHODS_OPTION)
    )
    for key, value in conf.items():
        builder = builder.config(key.replace("__", "."), value)
    return builder.getOrCreate()


def _columns(boxes, columns):
    names = list(columns) if columns is not None else [f"c{j}" for j in range(boxes.n_features)]
    if len(names) != boxes.n_features:
        raise ValueError(
            f"columns: expected {boxes.n_features} code column names, got {len(names)}"
        )
    return names


def _box_column(F, boxes, b, names):
    cond = F.lit(True)
    for j in boxes.dims[b]:
        cond = cond & F.col(names[j]).between(int(boxes.lower[b, j]), int(boxes.upper[b, j]))
    return cond


def spark_filter(boxes, columns=None):
    """A boolean ``Column``: the row lies in at least one box (``df.where(...)``)."""
    F = _pyspark()
    names = _columns(boxes, columns)
    cond = F.lit(False)
    for b in range(boxes.n_boxes):
        cond = cond | _box_column(F, boxes, b, names)
    return cond


def spark_votes(boxes, columns=None):
    """An integer ``Column``: the number of boxes containing the row."""
    F = _pyspark()
    names = _columns(boxes, columns)
    votes = F.lit(0)
    for b in range(boxes.n_boxes):
        votes = votes + F.when(_box_column(F, boxes, b, names), 1).otherwise(0)
    return votes


def _frame(spark, source):
    if hasattr(source, "sparkSession") and hasattr(source, "where"):
        return source  # already a Spark DataFrame
    return spark.read.parquet(*path_list(source, "a Spark DataFrame or Parquet path(s)"))


def _collect(df, id_column):
    if hasattr(df, "toArrow"):  # Spark >= 4: columnar, no pandas round trip
        table = df.toArrow()
        return (
            table.column(id_column).to_numpy().astype(np.int64),
            table.column("votes").to_numpy(),
        )
    rows = df.collect()
    return (np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.int64))


def search_spark(
    spark,
    source,
    boxes,
    *,
    columns=None,
    id_column: str = "id",
    order: str | None = "id",
    method: str = "sql",
) -> ScanResult:
    """Every row of ``source`` inside at least one box, with its votes, collected.

    ``source``: a Spark DataFrame or Parquet path(s) in the ``write_parquet``
    layout. ``method="sql"`` runs ``Boxes.to_sql(dialect="spark", order=None)``
    through Spark SQL, ``"dataframe"`` the ``spark_filter`` / ``spark_votes``
    columns; both return a ``ScanResult`` with ``path="spark"``, ordered on
    the driver by ``order`` ("id", "votes" or None).
    """
    if not isinstance(boxes, Boxes):
        raise TypeError(f"boxes: expected a Boxes model, got {type(boxes).__name__}")
    if method not in ("sql", "dataframe"):
        raise ValueError(f"method: expected 'sql' or 'dataframe', got {method!r}")
    if order not in ("id", "votes", None):
        raise ValueError(f"order: expected 'id', 'votes' or None, got {order!r}")
    F = _pyspark()
    t0 = time.perf_counter()
    df = _frame(spark, source)
    # The matches are collected to the driver anyway, so they are sorted there:
    # a distributed ORDER BY samples its input first, which runs the whole
    # scan and filter twice.
    sql = None
    if method == "sql":
        view = f"clipbranches_{uuid.uuid4().hex[:12]}"
        df.createOrReplaceTempView(view)
        try:
            sql = boxes_to_sql(
                boxes, view, columns=columns, id_column=id_column, dialect="spark", order=None
            )
            ids, votes = _collect(spark.sql(sql), id_column)
        finally:
            spark.catalog.dropTempView(view)
        sql = sql.replace(view, "catalogue")
    else:
        out = df.where(spark_filter(boxes, columns)).select(
            F.col(id_column), spark_votes(boxes, columns).alias("votes")
        )
        ids, votes = _collect(out, id_column)
    votes = np.asarray(votes).astype(np.uint8 if boxes.n_boxes < 256 else np.uint16)
    if order == "id":
        keep = np.argsort(ids, kind="stable")
        ids, votes = ids[keep], votes[keep]
    elif order == "votes":
        keep = np.lexsort((ids, -votes.astype(np.int64)))
        ids, votes = ids[keep], votes[keep]
    ms = (time.perf_counter() - t0) * 1e3
    log.info("spark (%s): %d matches in %.1f ms", method, ids.shape[0], ms)
    return ScanResult(ids, votes, "spark", {"sql": sql, "order": order, "method": method, "ms": ms})
