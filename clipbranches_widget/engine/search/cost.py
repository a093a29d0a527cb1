"""The cost model that chooses between the index and the scan, per query.

Constants are nanoseconds of one thread per unit of work; the defaults were
measured by ``benchmarks/index.py`` on a 2-core EPYC. They are class
attributes of ``CostModel`` (and so of ``BoxIndex``) so they can be tuned
per machine, on the class or on one index.
"""

from __future__ import annotations

__all__ = ["CostModel"]


class CostModel:
    cost_scan_item = 8.0  # scan: per item of the catalogue
    cost_listed_id = 1.5  # index: per id of a cell fully inside a box
    cost_checked_id = 150.0  # index: per id whose codes are checked (a random read)
    cost_checked_id_cached = 12.0  # the same when the codes fit in the cache
    cache_bytes = 32 << 20  # codes up to this size count as cached
    parallel_min = 50_000  # fewer candidate ids than this: serial kernels
    cost_run = 60.0  # index: per run of positions
    cost_dense_item = 0.6  # combining votes in an (n,) array: per catalogue item
    cost_sparse_id = 25.0  # combining votes by sorting: per matched id

    def scan_cost(self, n_items: int) -> float:
        return self.cost_scan_item * n_items

    def dense_combine(self, n_items: int, n_matched: int) -> bool:
        """Whether votes are cheaper combined in an (n,) array than by sorting."""
        return self.cost_dense_item * n_items < self.cost_sparse_id * n_matched

    def index_cost(
        self, *, n_items, runs, cells, listed, checked, codes_nbytes, id_itemsize
    ) -> dict:
        """The index path's estimated cost and the work behind it.

        ``runs``/``cells``/``listed``/``checked``: totals of the query plan
        (runs of positions, cells met, ids in full cells, ids whose codes
        are read).
        """
        candidates = listed + checked
        combine = min(self.cost_dense_item * n_items, self.cost_sparse_id * candidates)
        per_check = (
            self.cost_checked_id_cached
            if codes_nbytes <= self.cache_bytes
            else self.cost_checked_id
        )
        cost = self.cost_listed_id * listed + per_check * checked + self.cost_run * runs + combine
        return {
            "cost_index_ns": float(cost),
            "cells_touched": cells,
            "runs_planned": runs,
            "ids_listed": listed,
            "ids_checked": checked,
            "fraction_touched": candidates / max(1, n_items),
            "bytes_index": listed * id_itemsize + checked * (id_itemsize + 64),
            "bytes_scan": int(codes_nbytes),
        }
