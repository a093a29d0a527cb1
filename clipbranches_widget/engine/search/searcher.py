"""The one place that chooses between the index and the scan.

A ``Searcher`` owns the codes of a catalogue and, optionally, a
``BoxIndex`` built on exactly those codes. Nothing assigns an index from
outside: ``use_index`` checks that it matches (same number of items, same
fingerprint of every row), so a stale index can never answer a query.
"""

from __future__ import annotations

from .._validation import check_codes, describe
from .fingerprint import fingerprint
from .result import ScanResult
from .scan import scan

__all__ = ["Searcher"]

_PATHS = ("auto", "index", "scan")


class Searcher:
    """Whole-catalogue search over ``codes``: the index when present, else the scan.

    ``Searcher(codes, index=None)``; ``search(boxes, n_jobs=None, path="auto")``
    returns a ``ScanResult`` whose ``path`` says which ran. ``fingerprint``:
    the digest of these codes when the caller has just checked them (a
    catalogue verified at open), so they are not hashed again.
    """

    def __init__(self, codes, index=None, *, fingerprint: str | None = None):
        self._codes = check_codes(codes, allow_empty=True)
        # given: the caller checked it against read-only codes; else hashed lazily
        self.verified_fingerprint = fingerprint
        self._fingerprint = fingerprint
        self._index = None
        if index is not None:
            self.use_index(index)

    @property
    def fingerprint(self) -> str:
        """The digest of every code row (``search.fingerprint``), hashed at most once."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self._codes)
        return self._fingerprint

    def __repr__(self) -> str:
        return f"Searcher(n_items={self._codes.shape[0]}, index={self._index!r})"

    @property
    def codes(self):
        return self._codes

    @property
    def index(self):
        """The ``BoxIndex`` in use, or None (read-only: see ``use_index``)."""
        return self._index

    def use_index(self, index) -> None:
        """Search through ``index`` from now on; it must be built on these codes."""
        n = self._codes.shape[0]
        if not hasattr(index, "fingerprint") or not hasattr(index, "search"):
            raise TypeError(f"index: expected a BoxIndex, got {describe(index)}")
        if index.n_items != n:
            raise ValueError(
                f"index: built on {index.n_items} items, but these codes have {n}; "
                "rebuild the index for these codes"
            )
        if index.fingerprint != self.fingerprint:
            raise ValueError(
                f"index: built on codes with fingerprint {index.fingerprint}, but these "
                f"codes have fingerprint {self.fingerprint}; rebuild the index"
            )
        self._index = index

    def drop_index(self) -> None:
        """Search by scan from now on (e.g. after the codes grew)."""
        self._index = None

    def search(self, boxes, *, n_jobs=None, path: str = "auto") -> ScanResult:
        """Every item in at least one box, with its votes, in id order.

        ``path``: "auto" (the index's cost model, or the scan without an
        index), "index" (needs an index) or "scan".
        """
        if path not in _PATHS:
            raise ValueError(f"path: expected 'auto', 'index' or 'scan', got {path!r}")
        if self._index is None:
            if path == "index":
                raise ValueError("path='index': this Searcher has no index; call use_index first")
            return scan(self._codes, boxes, n_jobs=n_jobs)
        return self._index.search(boxes, path=path, n_jobs=n_jobs)
