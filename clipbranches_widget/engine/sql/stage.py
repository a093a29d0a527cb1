"""A two-stage refine as one SQL query: the boxes, then the second stage.

``stage_to_sql(model, boxes, table)`` writes one ``SELECT`` over a catalogue
table (``id``, ``c0`` .. ``c31``, the layout of ``boxes_to_sql``) that
returns a refine's result set in the session's order, with its box ``votes``
and ``score``. ``model`` is a fitted second stage
(``engine/learn/stage_model.StageModel``, read through its attributes, so
this module, like ``query.py``, imports nothing of the engine):

1. the candidates: the box matches (``boxes_to_sql``'s ``WHERE``, in the CTE
   ``cb__boxes``) and the model's extra ids (the labelled positives);
2. the training items as a ``VALUES`` table joined to the catalogue for their
   codes; the out-of-sample vote and logit of the training items among the
   candidates (they cannot be recomputed) as another;
3. every other candidate's vote: the weighted vote of its K nearest training
   items by the weighted squared distance of the codes, in ``BIGINT``
   (exact), ties by the lower training index, summed nearest first (as the
   kernel does); or, when the session had too many candidates for that, the
   weighted positive share of the training items in the candidate's leaf of
   the k-d tree (a ``CASE`` descent, the shares carried as literals);
4. the logistic as a linear expression (``DOUBLE``, summed in column order),
   the mix, the Platt recalibration, and the ranking: score, then the
   similarity to the reference point (``REAL``, in column order), then id;
5. the cut: the labelled positives and the first ``m`` unlabelled candidates
   (the session's count), the labelled negatives dropped.

What is guaranteed (DuckDB, checked by tests/engine/sql/test_stage.py): the
candidates, the neighbours, the votes, the logits and the similarities are
the session's, bit for bit (integer arithmetic, or the same IEEE operations
in the same order from the same literals), and the result has the session's
size. The scores go through ``EXP`` and ``LN``, which the SQL engine and
numpy may round differently in the last ulp (numpy's SIMD ``exp`` differs
from glibc's on about 5 % of inputs): a score may differ by an ulp or two.
Equal inputs still give equal scores, and where the sigmoid is flat (large
logits, where scores tie) both sides round ``1 + exp(-x)`` alike, so the
order is the session's unless two candidates' session scores are distinct
yet within a few ulps (about 1e-15 relative) of each other; only such a near
tie at the cut can change which item is the last one kept.
"""

from __future__ import annotations

import numpy as np

from .query import _code_columns, box_predicates, boxes_header, quote_identifier, quote_table

__all__ = ["stage_to_sql"]

_TAG = "clipbranches-two-stage"


def _f(x) -> str:
    """A DOUBLE literal that parses back to exactly ``x`` (an exponent makes
    it DOUBLE, not DECIMAL, in DuckDB and Spark)."""
    r = repr(float(x))
    if not np.isfinite(float(x)):
        raise ValueError(f"stage_to_sql: expected finite coefficients, got {r}")
    return f"({r if 'e' in r else r + 'e0'})"


def _values(name, columns, rows) -> str:
    """``name`` as a CTE of literal rows (a typed empty table when none)."""
    cols = ", ".join(c for c, _ in columns)
    if not rows:
        nulls = ", ".join(f"CAST(NULL AS {t}) AS {c}" for c, t in columns)
        return f"{name} AS (SELECT {nulls} WHERE FALSE)"
    body = ",\n    ".join("(" + ", ".join(r) + ")" for r in rows)
    return f"{name} AS (SELECT * FROM (VALUES\n    {body}\n  ) AS v({cols}))"


def _leaf_expr(tree, node: int, prefix: str) -> str:
    """The leaf a candidate's codes descend to: go left iff 2 * code <= split."""
    left = int(tree["left"][node])
    if left < 0:
        return str(node)
    c, split = int(tree["dim"][node]), int(tree["split"][node])
    right = int(tree["right"][node])
    return (
        f"CASE WHEN 2 * {prefix}k{c} <= {split} THEN {_leaf_expr(tree, left, prefix)} "
        f"ELSE {_leaf_expr(tree, right, prefix)} END"
    )


def _vote_sql(model) -> list[str]:
    """CTEs of the neighbour vote of the candidates outside the training set."""
    d, K = model.n_features, int(model.K)
    if not model.exact:  # the positive share of the candidate's leaf, carried as literals
        shares = model.leaf_shares()
        rows = ", ".join(f"({int(g)}, {_f(shares[g])})" for g in np.unique(model.tree["leaf"]))
        return [
            f"cb__fresh AS (SELECT cid, {_leaf_expr(model.tree, 0, '')} AS leaf "
            "FROM cb__cand WHERE cid NOT IN (SELECT id FROM cb__loo))",
            f"cb__shares(leaf, vote) AS (VALUES {rows})",
            "cb__vote AS (SELECT f.cid, s.vote FROM cb__fresh f JOIN cb__shares s "
            "ON f.leaf = s.leaf)",
        ]
    dist = " + ".join(
        f"{int(model.wdim[j])} * (f.k{j} - t.k{j}) * (f.k{j} - t.k{j})" for j in range(d)
    )
    per_rank = ",\n         ".join(
        f"SUM(CASE WHEN r = {t} THEN w * y END) AS wy{t}, "
        f"SUM(CASE WHEN r = {t} THEN w END) AS ww{t}"
        for t in range(1, K + 1)
    )
    shares = []
    for k in model.ks:
        n = min(int(k), K)
        wy = " + ".join(["0e0"] + [f"COALESCE(wy{t}, 0e0)" for t in range(1, n + 1)])
        ww = " + ".join(["0e0"] + [f"COALESCE(ww{t}, 0e0)" for t in range(1, n + 1)])
        shares.append(f"({wy}) / GREATEST({ww}, 1e-300)")
    vote = f"({' + '.join(['0e0'] + shares)}) / {_f(len(model.ks))}"
    return [
        "cb__fresh AS (SELECT * FROM cb__cand WHERE cid NOT IN (SELECT id FROM cb__loo))",
        f"cb__pairs AS (\n  SELECT f.cid, t.idx, t.y, t.w,\n         {dist} AS dist\n"
        "  FROM cb__fresh f JOIN cb__tcodes t ON TRUE)",
        "cb__near AS (\n  SELECT cid, y, w,\n"
        "         ROW_NUMBER() OVER (PARTITION BY cid ORDER BY dist, idx) AS r\n"
        "  FROM cb__pairs)",
        f"cb__ranks AS (\n  SELECT cid,\n         {per_rank}\n  FROM cb__near WHERE r <= {K} "
        "GROUP BY cid)",
        f"cb__vote AS (SELECT cid, {vote} AS vote FROM cb__ranks)",
    ]


def _score_expr(model) -> str:
    lw = float(model.logistic_weight)
    mix = f"{_f(1 - lw)} * v + {_f(lw)} * (1e0 / (1e0 + EXP(-e)))"
    if model.platt is None:
        return mix
    b, a = model.platt
    q = f"LEAST(GREATEST({mix}, 0.01e0), 0.99e0)"
    return f"1e0 / (1e0 + EXP(-({_f(b)} + {_f(a)} * LN(({q}) / (1e0 - ({q}))))))"


def stage_to_sql(
    model,
    boxes,
    table="catalogue",
    *,
    columns=None,
    id_column: str = "id",
    select: tuple[str, ...] = (),
    dialect: str = "ansi",
) -> str:
    """A refine's result set as one SQL query (see the module docstring for
    what it computes and what is guaranteed): columns ``id`` (named
    ``id_column``), ``votes``, ``score`` (REAL) and the ``select`` columns,
    in the session's order."""
    d = model.n_features
    if boxes.n_features != d:
        raise ValueError(
            f"stage_to_sql: the boxes are over {boxes.n_features} code columns, "
            f"the second stage over {d}"
        )
    if not model.exact and model.tree is None:
        raise ValueError(
            "stage_to_sql: the model votes by leaf shares but it holds no k-d tree; "
            "refine with a larger StageParams(exact_limit=...) for an exact export"
        )
    names = _code_columns(d, columns)
    cols = [quote_identifier(c, dialect) for c in names]
    idc = quote_identifier(id_column, dialect)
    source = quote_table(table, dialect)
    xs = [quote_identifier(c, dialect) for c in select]
    extra_cols = "".join(f", {x} AS cb__x{i}" for i, x in enumerate(xs))
    codes = ", ".join(f"CAST({c} AS BIGINT) AS k{j}" for j, c in enumerate(cols))
    tcodes = ", ".join(f"CAST(c.{c} AS BIGINT) AS k{j}" for j, c in enumerate(cols))
    preds = box_predicates(boxes, columns=names, dialect=dialect)
    votes = "\n       + ".join(f"CASE WHEN {p} THEN 1 ELSE 0 END" for p in preds) or "0"
    where = "\n   OR ".join(f"({p})" for p in preds) or "FALSE"
    train = [
        (str(i), str(int(t)), _f(model.y[i]), _f(model.w[i])) for i, t in enumerate(model.train_ids)
    ]
    train_cols = [("idx", "BIGINT"), ("id", "BIGINT"), ("y", "DOUBLE"), ("w", "DOUBLE")]
    weight, offset = model.similarity_terms()
    sim = " + ".join(
        [f"CAST({_f(offset)} AS REAL)"]
        + [f"CAST(k{j} AS REAL) * CAST({_f(weight[j])} AS REAL)" for j in range(d)]
    )
    logit = " + ".join(
        [_f(model.b)] + [f"CAST(k{j} AS DOUBLE) * {_f(model.a[j])}" for j in range(d)]
    )
    voting = float(model.logistic_weight) < 1
    positives = set(model.positives.tolist())
    ctes = [
        _values("cb__train", train_cols, train),
        _values(
            "cb__loo",
            [("id", "BIGINT"), ("vote", "DOUBLE"), ("logit", "DOUBLE")],
            [
                (str(int(i)), _f(v), _f(e))
                for i, v, e in zip(model.loo_ids, model.loo_vote, model.loo_logit)
            ],
        ),
        _values("cb__extra", [("id", "BIGINT")], [(str(int(i)),) for i in model.extra_ids]),
        _values(
            "cb__labelled",
            [("id", "BIGINT"), ("label", "INTEGER")],
            [(str(int(i)), "1" if i in positives else "-1") for i in model.labelled.tolist()],
        ),
        f"cb__boxes AS (\nSELECT {idc} AS cid,\n       ({votes}) AS votes,\n"
        f"       {codes}{extra_cols}\nFROM {source}\nWHERE {where})",
        f"cb__cand AS (\n  SELECT * FROM cb__boxes\n  UNION ALL\n"
        f"  SELECT {idc} AS cid, 0 AS votes, {codes}{extra_cols}\n  FROM {source}\n"
        f"  WHERE {idc} IN (SELECT id FROM cb__extra)\n"
        f"    AND {idc} NOT IN (SELECT cid FROM cb__boxes))",
        f"cb__tcodes AS (\n  SELECT t.*, {tcodes}\n"
        f"  FROM cb__train t JOIN {source} c ON c.{idc} = t.id)",
    ]
    if voting:
        ctes += _vote_sql(model)
    v = "COALESCE(l.vote, w.vote, 0e0)" if voting else "COALESCE(l.vote, 0e0)"
    join_vote = "\n  LEFT JOIN cb__vote w ON w.cid = c.cid" if voting else ""
    xsel = "".join(f", c.cb__x{i}" for i in range(len(xs)))
    ctes += [
        f"cb__scored AS (\n  SELECT c.cid, c.votes{xsel},\n         {sim} AS sim,\n"
        f"         COALESCE(l.logit, {logit}) AS e,\n         {v} AS v\n"
        f"  FROM cb__cand c\n  LEFT JOIN cb__loo l ON l.id = c.cid{join_vote})",
        f"cb__p AS (SELECT *, {_score_expr(model)} AS p FROM cb__scored)",
        "cb__ranked AS (\n  SELECT s.*, lab.label, ROW_NUMBER() OVER (\n"
        "    PARTITION BY CASE WHEN lab.label IS NULL THEN 0 ELSE 1 END\n"
        "    ORDER BY s.p DESC, s.sim DESC, s.cid) AS r_un\n"
        "  FROM cb__p s LEFT JOIN cb__labelled lab ON lab.id = s.cid)",
    ]
    outx = "".join(f", cb__x{i} AS {x}" for i, x in enumerate(xs))
    header = (
        boxes_header(boxes) + f"-- {_TAG}: {len(model.train_ids)} training items, "
        f"K={int(model.K)}, ks={list(model.ks)}, logistic share {float(model.logistic_weight)}, "
        f"{'Platt' if model.platt is not None else 'no Platt'}, "
        f"{'exact neighbours' if model.exact else 'leaf shares'}; keeps the labelled positives "
        f"and the first {int(model.m)} unlabelled candidates\n"
    )
    return (
        f"{header}WITH\n"
        + ",\n".join(ctes)
        + f"\nSELECT cid AS {idc}, votes, CAST(p AS REAL) AS score"
        f"{outx}\nFROM cb__ranked\nWHERE label = 1 OR (label IS NULL AND r_un <= {int(model.m)})"
        "\nORDER BY p DESC, sim DESC, cid"
    )


def stage_boxes_sql(sql: str) -> str | None:
    """The boxes query inside a ``stage_to_sql`` text (the ``cb__boxes`` CTE,
    with the model header), for ``parse_boxes``; None when it holds none."""
    start = sql.find("cb__boxes AS (\n")
    if _TAG not in sql or start < 0:
        return None
    end = sql.find("\ncb__cand AS (", start)
    body = sql[start + len("cb__boxes AS (\n") : end].rstrip().rstrip(",").rstrip()
    return sql[: sql.find("\n") + 1] + body[:-1]  # the header line, then without its ")"
