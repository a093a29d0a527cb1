"""The model of a decision-branches classifier: a union of axis-aligned boxes.

Each box constrains a few code dimensions (one feature subset) with inclusive
uint8 bounds; the other dimensions are unconstrained (0..255). An item's
*votes* are the number of boxes that contain it.
"""

from __future__ import annotations

import numpy as np

from ._validation import check_codes
from .sql.query import boxes_to_sql, parse_boxes

__all__ = ["Boxes"]


class Boxes:
    """A union of axis-aligned boxes over uint8 codes.

    Parameters
    ----------
    lower, upper : (m, d) uint8 arrays
        Inclusive bounds; unconstrained dimensions hold 0 and 255. A box whose
        lower bound exceeds its upper bound on some dimension is empty.
    dims : sequence of m tuples of int
        The dimensions each box constrains (its feature subset).
    """

    def __init__(self, lower, upper, dims):
        lower = np.asarray(lower)
        upper = np.asarray(upper)
        if lower.dtype != np.uint8 or upper.dtype != np.uint8:
            raise TypeError(
                f"Boxes: expected uint8 lower/upper bounds, got {lower.dtype} and {upper.dtype}"
            )
        if lower.ndim != 2 or lower.shape != upper.shape:
            raise ValueError(
                f"Boxes: expected lower and upper of the same (m, d) shape, "
                f"got {lower.shape} and {upper.shape}"
            )
        dims = tuple(tuple(int(j) for j in dd) for dd in dims)
        if len(dims) != lower.shape[0]:
            raise ValueError(f"Boxes: expected {lower.shape[0]} dimension tuples, got {len(dims)}")
        d = lower.shape[1]
        for b, dd in enumerate(dims):
            if any(j < 0 or j >= d for j in dd):
                raise ValueError(
                    f"Boxes: box {b} names dimensions {dd}, expected values in 0..{d - 1}"
                )
            free = np.ones(d, bool)
            free[list(dd)] = False
            if (lower[b, free] != 0).any() or (upper[b, free] != 255).any():
                raise ValueError(f"Boxes: box {b} bounds dimensions outside its dims {dd}")
        self.lower = np.ascontiguousarray(lower)
        self.upper = np.ascontiguousarray(upper)
        self.dims = dims

    @classmethod
    def empty(cls, n_features: int = 32) -> Boxes:
        """A model with no boxes: it matches nothing."""
        z = np.zeros((0, n_features), np.uint8)
        return cls(z, z.copy(), ())

    @classmethod
    def from_bounds(cls, boxes, n_features: int = 32) -> Boxes:
        """Build from ``[{dim: (lo, hi), ...}, ...]`` (one mapping per box)."""
        m = len(boxes)
        lower = np.zeros((m, n_features), np.uint8)
        upper = np.full((m, n_features), 255, np.uint8)
        dims = []
        for b, box in enumerate(boxes):
            for j, (lo, hi) in box.items():
                if not (0 <= lo <= 255 and 0 <= hi <= 255):
                    raise ValueError(
                        f"Boxes: box {b} dim {j}: expected bounds in 0..255, got ({lo}, {hi})"
                    )
                lower[b, int(j)] = lo
                upper[b, int(j)] = hi
            dims.append(tuple(sorted(int(j) for j in box)))
        return cls(lower, upper, dims)

    @property
    def n_boxes(self) -> int:
        return self.lower.shape[0]

    @property
    def n_features(self) -> int:
        return self.lower.shape[1]

    def __len__(self) -> int:
        return self.n_boxes

    def __repr__(self) -> str:
        return f"Boxes(n_boxes={self.n_boxes}, n_features={self.n_features})"

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, Boxes)
            and self.dims == other.dims
            and np.array_equal(self.lower, other.lower)
            and np.array_equal(self.upper, other.upper)
        )

    def bounds(self, b: int) -> dict[int, tuple[int, int]]:
        """``{dim: (lo, hi)}`` of box ``b``."""
        return {j: (int(self.lower[b, j]), int(self.upper[b, j])) for j in self.dims[b]}

    # --- plain-numpy reference semantics (the twin of the numba scan) ---
    def contains(self, codes) -> np.ndarray:
        """(n, m) bool: whether each item lies in each box (plain numpy)."""
        codes = check_codes(codes, n_features=self.n_features, allow_empty=True)
        out = np.ones((codes.shape[0], self.n_boxes), bool)
        for b, dd in enumerate(self.dims):
            for j in dd:
                col = codes[:, j]
                out[:, b] &= (col >= self.lower[b, j]) & (col <= self.upper[b, j])
        return out

    def votes(self, codes) -> np.ndarray:
        """(n,) number of boxes containing each item (plain numpy)."""
        return self.contains(codes).sum(axis=1)

    # --- serialisation ---
    def to_dict(self) -> dict:
        """A JSON-ready description: one ``{"dims", "lower", "upper"}`` per box."""
        return {
            "n_features": self.n_features,
            "boxes": [
                {
                    "dims": list(dd),
                    "lower": [int(self.lower[b, j]) for j in dd],
                    "upper": [int(self.upper[b, j]) for j in dd],
                }
                for b, dd in enumerate(self.dims)
            ],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Boxes:
        try:
            n_features = int(data["n_features"])
            boxes = [
                dict(zip(box["dims"], zip(box["lower"], box["upper"]))) for box in data["boxes"]
            ]
        except (KeyError, TypeError) as exc:
            raise ValueError(
                "Boxes.from_dict: expected {'n_features': int, 'boxes': "
                "[{'dims': [...], 'lower': [...], 'upper': [...]}, ...]}, "
                f"got keys {sorted(data) if isinstance(data, dict) else type(data).__name__}"
            ) from exc
        return cls.from_bounds(boxes, n_features)

    def to_sql(
        self,
        table="catalogue",
        *,
        columns=None,
        id_column: str = "id",
        select: tuple[str, ...] = (),
        dialect: str = "ansi",
        order: str | None = "votes",
    ) -> str:
        """A SQL query returning every matching row with its votes, ranked.

        One ``BETWEEN`` group per box in the ``WHERE`` clause; votes are a sum of
        ``CASE`` expressions. ``columns`` names the code columns (default
        ``c0 .. c{d-1}``); identifiers are quoted for ``dialect`` ("ansi":
        double quotes, "spark": backticks). ``order``: "votes" (ranked, then
        id), "id", or None. ``Boxes.from_sql`` reads the text back.
        """
        return boxes_to_sql(
            self,
            table,
            columns=columns,
            id_column=id_column,
            select=select,
            dialect=dialect,
            order=order,
        )

    @classmethod
    def from_sql(cls, sql: str, *, columns=None, n_features: int | None = None) -> Boxes:
        """Parse a query written by ``to_sql`` (any dialect) back into ``Boxes``."""
        return cls(*parse_boxes(sql, columns=columns, n_features=n_features))
