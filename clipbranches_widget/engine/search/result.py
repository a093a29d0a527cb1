"""The result type every whole-catalogue search path returns."""

from __future__ import annotations

__all__ = ["ScanResult"]


class ScanResult:
    """All matching items of a whole-catalogue query, in id order.

    Attributes: ``ids`` (int64), ``votes``, ``path`` ("scan", "index", or the
    SQL engine that ran it), plus whatever diagnostics the path records in
    ``info``.
    """

    def __init__(self, ids, votes, path="scan", info=None):
        self.ids = ids
        self.votes = votes
        self.path = path
        self.info = dict(info or {})

    def __len__(self):
        return self.ids.shape[0]

    def __repr__(self):
        return f"ScanResult(count={len(self)}, path={self.path!r})"
