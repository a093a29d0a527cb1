"""Decision-branches models as SQL text, on plain arrays: write and parse.

A model is a union of boxes, each a conjunction of ``BETWEEN`` ranges over a
few code columns, so it *is* a SQL ``WHERE`` clause. ``boxes_to_sql`` writes
a readable query over the Parquet/table layout of a catalogue (``id``,
``uri``, ``c0`` .. ``c31``): one ``BETWEEN`` group per box, votes as a sum of
``CASE`` expressions, ranked by votes then id. ``parse_boxes`` reads such a
query back into ``(lower, upper, dims)`` arrays.

This module knows nothing of ``Boxes`` (it reads ``lower``, ``upper``,
``dims`` and ``n_features`` of whatever it is given), so ``engine/boxes.py``
can import it for ``Boxes.to_sql`` / ``Boxes.from_sql`` without a cycle;
``sql/text.py`` builds on both.

Dialects differ only in identifier quoting: ``"ansi"`` (DuckDB, PostgreSQL,
Trino, SQLite...) uses double quotes, ``"spark"`` (Spark SQL, Databricks,
Hive, BigQuery, MySQL) backticks.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = [
    "box_predicates",
    "boxes_header",
    "boxes_to_sql",
    "parse_boxes",
    "quote_identifier",
    "quote_table",
    "tokenize",
]

_QUOTES = {"ansi": '"', "duckdb": '"', "postgres": '"', "spark": "`"}
_ORDERS = ("votes", "id", None)
_HEADER = re.compile(r"^decision-branches model: (\d+) box(?:es)? over (\d+) code columns")


def _check_dialect(dialect: str) -> str:
    if dialect not in _QUOTES:
        raise ValueError(f"dialect: expected one of {sorted(_QUOTES)}, got {dialect!r}")
    return _QUOTES[dialect]


def quote_identifier(name: str, dialect: str = "ansi") -> str:
    """Quote a SQL identifier, doubling embedded quote characters.

    ``dialect="ansi"`` gives ``"name"`` (SQL standard), ``"spark"`` gives
    ```name``` (Spark SQL, whose double quotes are string literals).
    """
    q = _check_dialect(dialect)
    if not isinstance(name, str) or not name:
        raise ValueError(f"expected a non-empty identifier string, got {name!r}")
    if "\x00" in name:
        raise ValueError(f"identifier contains a NUL byte: {name!r}")
    return q + name.replace(q, q + q) + q


def quote_table(table, dialect: str = "ansi") -> str:
    """Quote a table name: a string is one identifier (dots included), a tuple
    of strings a qualified name such as ``("lake", "photos")``."""
    parts = (table,) if isinstance(table, str) else tuple(table)
    if not parts:
        raise ValueError("table: expected a name or a non-empty tuple of name parts, got ()")
    return ".".join(quote_identifier(p, dialect) for p in parts)


def _code_columns(n_features: int, columns) -> list[str]:
    names = list(columns) if columns is not None else [f"c{j}" for j in range(n_features)]
    if len(names) != n_features:
        raise ValueError(f"columns: expected {n_features} code column names, got {len(names)}")
    if len(set(names)) != len(names):
        raise ValueError(f"columns: expected distinct names, got {names}")
    return names


def _box_predicate(boxes, b: int, cols) -> str:
    dims = boxes.dims[b]
    if not dims:
        return "TRUE"
    # An empty box (lower > upper on some dim) keeps its bounds: BETWEEN with
    # lo > hi is false in every SQL engine, and the round trip stays exact.
    return " AND ".join(
        f"{cols[j]} BETWEEN {int(boxes.lower[b, j])} AND {int(boxes.upper[b, j])}" for j in dims
    )


def box_predicates(boxes, *, columns=None, dialect: str = "ansi") -> list[str]:
    """One ``BETWEEN`` conjunction per box (``TRUE`` for a box without
    constraints), over the quoted code columns: the pieces of ``boxes_to_sql``."""
    names = _code_columns(boxes.n_features, columns)
    cols = [quote_identifier(c, dialect) for c in names]
    return [_box_predicate(boxes, b, cols) for b in range(boxes.n_boxes)]


def boxes_header(boxes) -> str:
    """The model's header comment (``parse_boxes`` reads the column count from it)."""
    m = boxes.n_boxes
    return (
        f"-- decision-branches model: {m} box{'es' if m != 1 else ''} over "
        f"{boxes.n_features} code columns; votes = boxes containing the row\n"
    )


def boxes_to_sql(
    boxes,
    table="catalogue",
    *,
    columns=None,
    id_column: str = "id",
    select: tuple[str, ...] = (),
    dialect: str = "ansi",
    order: str | None = "votes",
) -> str:
    """A SQL query returning every row inside at least one box, with its votes.

    ``order="votes"`` ranks by votes then id, ``"id"`` returns id order (the
    order of ``scan``), ``None`` leaves the order to the engine.
    """
    if order not in _ORDERS:
        raise ValueError(f"order: expected one of {_ORDERS}, got {order!r}")
    preds = box_predicates(boxes, columns=columns, dialect=dialect)
    idc = quote_identifier(id_column, dialect)
    extra = "".join(f", {quote_identifier(c, dialect)}" for c in select)
    header = boxes_header(boxes)
    order_by = {"votes": f"\nORDER BY votes DESC, {idc}", "id": f"\nORDER BY {idc}", None: ""}[
        order
    ]
    source = quote_table(table, dialect)
    if not preds:
        return f"{header}SELECT {idc}{extra}, 0 AS votes\nFROM {source}\nWHERE FALSE{order_by}"
    votes = "\n     + ".join(f"CASE WHEN {p} THEN 1 ELSE 0 END" for p in preds)
    where = "\n   OR ".join(f"({p})" for p in preds)
    return (
        f"{header}SELECT {idc}{extra},\n       ({votes}) AS votes\n"
        f"FROM {source}\nWHERE {where}{order_by}"
    )


# --- parsing our own SQL back -------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>--[^\n]*)
  | (?P<block>/\*.*?\*/)
  | (?P<dq>"(?:[^"]|"")*")
  | (?P<bq>`(?:[^`]|``)*`)
  | (?P<str>'(?:[^']|'')*')
  | (?P<num>\d+)
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<op>.)
""",
    re.VERBOSE | re.DOTALL,
)

_KEYWORDS = {
    "SELECT",
    "FROM",
    "WHERE",
    "AND",
    "OR",
    "BETWEEN",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "ORDER",
    "BY",
    "LIMIT",
    "TRUE",
    "FALSE",
    "AS",
    "NOT",
}


def tokenize(sql: str):
    """(kind, value, position) tokens; comments are returned apart."""
    tokens, comments = [], []
    for mt in _TOKEN.finditer(sql):
        kind, text = mt.lastgroup, mt.group()
        if kind == "ws" or kind == "block":
            continue
        if kind == "comment":
            comments.append(text[2:].strip())
            continue
        if kind == "dq":
            tokens.append(("ident", text[1:-1].replace('""', '"'), mt.start()))
        elif kind == "bq":
            tokens.append(("ident", text[1:-1].replace("``", "`"), mt.start()))
        elif kind == "word" and text.upper() in _KEYWORDS:
            tokens.append(("kw", text.upper(), mt.start()))
        elif kind == "word":
            tokens.append(("ident", text, mt.start()))
        else:
            tokens.append((kind, text, mt.start()))
    tokens.append(("end", "", len(sql)))
    return tokens, comments


class _Parser:
    """Recursive descent over the predicate grammar that ``boxes_to_sql`` writes:

    disjunction := group (OR group)*
    group       := '(' conjunction ')' | conjunction
    conjunction := TRUE | FALSE | range (AND range)*
    range       := column BETWEEN integer AND integer
    """

    def __init__(self, tokens, sql, columns):
        self.tokens, self.sql, self.i = tokens, sql, 0
        self.columns = {c: j for j, c in enumerate(columns)}
        self.folded = {c.lower(): j for j, c in enumerate(columns)}

    def peek(self, k=0):
        return self.tokens[self.i + k]

    def fail(self, expected):
        kind, value, pos = self.peek()
        got = "the end of the query" if kind == "end" else repr(value)
        line = self.sql.count("\n", 0, pos) + 1
        raise ValueError(f"Boxes.from_sql: expected {expected} at line {line}, got {got}")

    def take(self, kind, value=None, expected=None):
        k, v, _ = self.peek()
        if k != kind or (value is not None and v != value):
            self.fail(expected or (value if value is not None else kind))
        self.i += 1
        return v

    def at(self, kind, value=None):
        k, v, _ = self.peek()
        return k == kind and (value is None or v == value)

    def disjunction(self):
        groups = [self.group()]
        while self.at("kw", "OR"):
            self.i += 1
            groups.append(self.group())
        return [g for g in groups if g is not False]  # FALSE terms add no box

    def group(self):
        if self.at("op", "("):
            self.i += 1
            g = self.conjunction()
            self.take("op", ")", "')' closing a box")
            return g
        return self.conjunction()

    def conjunction(self):
        if self.at("kw", "TRUE"):
            self.i += 1
            return []
        if self.at("kw", "FALSE"):
            self.i += 1
            return False
        ranges = [self.range()]
        while self.at("kw", "AND"):
            self.i += 1
            ranges.append(self.range())
        return ranges

    def range(self):
        name = self.take("ident", expected="a code column name")
        j = self.columns.get(name)
        if j is None:
            j = self.folded.get(name.lower())
        if j is None:
            self.i -= 1
            self.fail(f"one of the code columns {list(self.columns)[:3]}...")
        self.take("kw", "BETWEEN")
        lo = int(self.take("num", expected="an integer bound"))
        self.take("kw", "AND")
        hi = int(self.take("num", expected="an integer bound"))
        if lo > 255 or hi > 255:
            self.i -= 1
            self.fail("bounds in 0..255")
        return j, lo, hi

    def case_terms(self):
        """``CASE WHEN conjunction THEN 1 ELSE 0 END (+ ...)*`` -> list of boxes."""
        terms = []
        while True:
            self.take("kw", "CASE")
            self.take("kw", "WHEN")
            terms.append(self.conjunction())
            self.take("kw", "THEN")
            self.take("num", "1", "THEN 1")
            self.take("kw", "ELSE")
            self.take("num", "0", "ELSE 0")
            self.take("kw", "END")
            if not self.at("op", "+"):
                return terms
            self.i += 1


def _groups_to_arrays(groups, n_features):
    """Parsed groups of ``(dim, lo, hi)`` ranges -> ``(lower, upper, dims)``."""
    m = len(groups)
    lower = np.zeros((m, n_features), np.uint8)
    upper = np.full((m, n_features), 255, np.uint8)
    dims = []
    for b, ranges in enumerate(groups):
        seen = []
        for j, lo, hi in ranges:
            if j in seen:  # a column twice in one box: the intersection
                lo, hi = max(lo, int(lower[b, j])), min(hi, int(upper[b, j]))
            else:
                seen.append(j)
            lower[b, j], upper[b, j] = lo, hi
        dims.append(tuple(seen))
    return lower, upper, tuple(dims)


def _one_statement(tokens, sql):
    """The tokens up to a ``;``; anything but comments after it is refused:
    a second statement would otherwise be dropped without a word."""
    semi = next((i for i, t in enumerate(tokens) if t[:2] == ("op", ";")), None)
    if semi is None:
        return tokens
    rest = [t for t in tokens[semi + 1 :] if t[0] != "end" and t[:2] != ("op", ";")]
    if rest:
        line = sql.count("\n", 0, rest[0][2]) + 1
        raise ValueError(
            "Boxes.from_sql: expected one SQL statement (the model's query), got "
            f"more after ';': {rest[0][1]!r} at line {line}"
        )
    return tokens[:semi] + [("end", "", tokens[semi][2])]


def _top_level_keyword(tokens, word):
    depth = 0
    for i, (kind, value, _) in enumerate(tokens):
        if kind == "op" and value == "(":
            depth += 1
        elif kind == "op" and value == ")":
            depth -= 1
        elif depth == 0 and kind == "kw" and value == word:
            return i
    return None


def parse_boxes(sql: str, *, columns=None, n_features: int | None = None):
    """Parse a query written by ``boxes_to_sql`` (any dialect): ``(lower, upper, dims)``
    for ``Boxes(lower, upper, dims)``.

    The boxes are read from the ``WHERE`` clause; when the query also holds
    the votes (``CASE`` terms), they must describe the same boxes, so a
    hand-edited query cannot silently rank by another model. ``n_features``
    defaults to the model header comment, else to ``len(columns)``, else 32.
    """
    if not isinstance(sql, str):
        raise TypeError(f"Boxes.from_sql: expected SQL text (str), got {type(sql).__name__}")
    tokens, comments = tokenize(sql)
    tokens = _one_statement(tokens, sql)
    if n_features is None:
        if columns is not None:
            n_features = len(list(columns))
        else:
            found = [_HEADER.match(c) for c in comments]
            found = [f for f in found if f]
            n_features = int(found[0].group(2)) if found else 32
    names = _code_columns(int(n_features), columns)
    where = _top_level_keyword(tokens, "WHERE")
    if where is None:
        raise ValueError(
            "Boxes.from_sql: expected a query with a WHERE clause (the boxes), found none"
        )
    parser = _Parser(tokens, sql, names)
    parser.i = where + 1
    groups = parser.disjunction()
    if not parser.at("end") and not parser.at("kw", "ORDER") and not parser.at("kw", "LIMIT"):
        parser.fail("OR, ORDER BY or the end of the query after the boxes")
    boxes = _groups_to_arrays(groups, len(names))
    case = next((i for i, t in enumerate(tokens[:where]) if t[:2] == ("kw", "CASE")), None)
    if case is not None:
        parser.i = case
        votes = _groups_to_arrays([g for g in parser.case_terms() if g is not False], len(names))
        same = (
            votes[2] == boxes[2]
            and np.array_equal(votes[0], boxes[0])
            and np.array_equal(votes[1], boxes[1])
        )
        if not same:
            raise ValueError(
                f"Boxes.from_sql: the votes (CASE terms, {len(votes[2])} boxes) "
                f"and the WHERE clause ({len(boxes[2])} boxes) describe "
                f"different models"
            )
    return boxes
