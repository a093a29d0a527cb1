"""Decision-branches models as SQL: a disjunction of range predicates."""

from __future__ import annotations

__all__ = ["boxes_to_sql", "quote_identifier"]


def quote_identifier(name: str) -> str:
    """Double-quote a SQL identifier, doubling embedded quotes (SQL standard)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"expected a non-empty identifier string, got {name!r}")
    if "\x00" in name:
        raise ValueError(f"identifier contains a NUL byte: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def _box_predicate(boxes, b: int, columns) -> str:
    dims = boxes.dims[b]
    if any(boxes.lower[b, j] > boxes.upper[b, j] for j in dims):
        return "FALSE"  # an empty box matches nothing
    if not dims:
        return "TRUE"
    return " AND ".join(
        f"{columns[j]} BETWEEN {int(boxes.lower[b, j])} AND {int(boxes.upper[b, j])}"
        for j in dims)


def boxes_to_sql(boxes, table: str = "catalogue", *, columns=None, id_column: str = "id",
                 select: tuple[str, ...] = ()) -> str:
    d = boxes.n_features
    names = list(columns) if columns is not None else [f"c{j}" for j in range(d)]
    if len(names) != d:
        raise ValueError(f"columns: expected {d} code column names, got {len(names)}")
    cols = [quote_identifier(c) for c in names]
    idc = quote_identifier(id_column)
    extra = "".join(f", {quote_identifier(c)}" for c in select)
    preds = [_box_predicate(boxes, b, cols) for b in range(boxes.n_boxes)]
    if not preds:
        return (f"SELECT {idc}{extra}, 0 AS votes\nFROM {quote_identifier(table)}\n"
                f"WHERE FALSE")
    votes = "\n     + ".join(f"CASE WHEN {p} THEN 1 ELSE 0 END" for p in preds)
    where = "\n   OR ".join(f"({p})" for p in preds)
    return (f"SELECT {idc}{extra},\n       ({votes}) AS votes\n"
            f"FROM {quote_identifier(table)}\nWHERE {where}\n"
            f"ORDER BY votes DESC, {idc}")
