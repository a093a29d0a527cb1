"""The feature-subset index: whole-catalogue inference without a full scan.

A decision-branches box constrains one feature subset only (a few of the 32
code dimensions). For every subset the index lays a grid over the subset's
dimensions (slot edges at quantiles of each dimension, so cells are balanced)
and stores the item ids sorted by grid cell plus the cell offsets
(``index_build``). The cell bounds are known exactly from the slot edges, so
a box query:

* enumerates the cells its bounds intersect (contiguous along the last
  dimension: at most three runs of positions per prefix of slots),
* lists the ids of cells that lie fully inside the box without reading any
  code (every item there matches), and
* checks the codes of items in cells on the box's surface only.

Storage per item is one id per subset (uint32 below 2**32 items) plus a few
bytes of cell offsets: no copy of the codes. A cost model (``cost``)
compares the work of the index with a scan of all codes and picks the
cheaper path per query; the result says which ran. Both paths are numba
kernels (``index_kernels``, ``scan``) parallel over threads, and both return
exactly what ``scan(codes, boxes)`` returns.

An index answers only for the codes it was built on: it carries a
fingerprint of every code row (``fingerprint``), checked on open.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .._parallel import numba_threads
from .._validation import check_codes, describe
from ..boxes import Boxes
from . import index_build
from .cost import CostModel
from .fingerprint import fingerprint
from .index_build import ARRAYS, MANIFEST, _design_slots  # noqa: F401 (_design_slots: tests)
from .index_kernels import (
    accumulate,
    collect,
    collect_serial,
    compact,
    nonzero_counts,
    nonzero_counts_serial,
    nonzero_gather,
    nonzero_gather_serial,
    plan_box,
)
from .result import ScanResult
from .scan import scan

__all__ = ["BoxIndex"]

log = logging.getLogger(__name__)

_RUN = 4096  # longest run of positions one thread takes at a time (load balance)


def _known_fingerprint(source):
    """The digest a catalogue verified at open against its read-only codes, or None."""
    return getattr(getattr(source, "searcher", None), "verified_fingerprint", None)


def _codes_of(source, name="source"):
    """(codes, catalogue path or None) from a Catalogue or a code array."""
    if hasattr(source, "codes") and hasattr(source, "compressor"):
        path = getattr(source, "path", None)
        return check_codes(source.codes, name=f"{name}.codes"), path
    if isinstance(source, np.ndarray):
        return check_codes(source, name=name), None
    raise TypeError(
        f"{name}: expected a Catalogue or an (n, d) uint8 code array, got {describe(source)}"
    )


def _slot_starts(dims, ksize, slots):
    """(S, kmax, 257) first value of every slot, plus 256 at the end."""
    S, kmax = dims.shape
    first = np.full((S, kmax, 257), 256, np.int64)
    for q in range(S):
        for t in range(int(ksize[q])):
            sl = slots[q, t]
            starts = np.flatnonzero(np.diff(np.concatenate([[-1], sl])))
            first[q, t, : starts.shape[0]] = starts
    return first


def _box_arrays(boxes: Boxes):
    """Per box: constrained dims, their count, and bounds, as padded int64 arrays."""
    m = boxes.n_boxes
    kmax = max([len(dd) for dd in boxes.dims] + [1])
    box_dims = np.zeros((m, kmax), np.int64)
    box_k = np.zeros(m, np.int64)
    box_lo = np.zeros((m, kmax), np.int64)
    box_hi = np.zeros((m, kmax), np.int64)
    for b, dd in enumerate(boxes.dims):
        box_k[b] = len(dd)
        box_dims[b, : len(dd)] = dd
        box_lo[b, : len(dd)] = boxes.lower[b, list(dd)]
        box_hi[b, : len(dd)] = boxes.upper[b, list(dd)]
    return box_dims, box_k, box_lo, box_hi


def _votes_of(matched, n, vdtype, dense, parallel):
    """(ids, votes) in id order from ``matched`` ids (one per box containing them)."""
    if not dense:
        uniq, cnt = np.unique(matched, return_counts=True)
        return uniq.astype(np.int64), cnt.astype(vdtype)
    votes = np.zeros(n, vdtype)
    accumulate(matched, votes)
    chunk = 1 << 16
    per = (nonzero_counts if parallel else nonzero_counts_serial)(votes, chunk)
    off = np.zeros(per.shape[0] + 1, np.int64)
    np.cumsum(per, out=off[1:])
    ids = np.empty(int(off[-1]), np.int64)
    out_votes = np.empty(ids.shape[0], vdtype)
    if ids.shape[0]:
        (nonzero_gather if parallel else nonzero_gather_serial)(votes, chunk, off, ids, out_votes)
    return ids, out_votes


class BoxIndex(CostModel):
    """Per-feature-subset grid index over uint8 codes (see the module doc).

    Build with ``BoxIndex.build``, reopen with ``BoxIndex.open``; query with
    ``search(boxes)``, which returns the same ``ScanResult`` as ``scan``.
    The cost-model constants (``CostModel``) are class attributes, tunable
    per machine.
    """

    def __init__(
        self,
        codes,
        *,
        subsets,
        order,
        offsets,
        cell_ptr,
        slots,
        strides,
        nslots,
        dims,
        ksize,
        block_size,
        path=None,
        build_seconds=None,
        fingerprint=None,
    ):
        self.codes = codes
        self.subsets = [tuple(int(j) for j in s) for s in subsets]
        self.order = order
        self.offsets = offsets
        self.cell_ptr = cell_ptr
        self.slots = slots
        self.strides = strides
        self.nslots = nslots
        self.dims = dims
        self.ksize = ksize
        self.block_size = int(block_size)
        self.path = None if path is None else Path(path)
        self.build_seconds = build_seconds
        self.fingerprint = fingerprint  # of every code row the index was built on
        self._subset_row = {s: q for q, s in enumerate(self.subsets)}
        self._full_cache = _slot_starts(dims, ksize, slots)

    # ---- construction ----
    @classmethod
    def build(
        cls,
        source,
        path=None,
        *,
        subsets=None,
        block_size: int = 128,
        max_cells: int = 1 << 22,
        sample_size: int = 1 << 18,
        memory_budget: int = 2 << 30,
        overwrite: bool = False,
        progress: bool = True,
        n_jobs: int | None = None,
    ) -> BoxIndex:
        """Build the index of a Catalogue (or of an (n, d) uint8 code array).

        ``path``: the folder to write (default ``<catalogue.path>/index`` when
        the catalogue has a path, else in memory). ``subsets``: the feature
        subsets to index (default ``default_feature_subsets(d)``, those every
        DecisionBranchesClassifier uses by default). ``block_size``: target
        mean items per grid cell (smaller prunes finer, at more offsets and
        runs). ``max_cells``: cells of one subset's grid at most.
        ``sample_size``: rows sampled (evenly spaced) to place the slot
        edges. ``memory_budget``: bytes of RAM for the ids scattered in one
        pass (subsets are built in groups that fit; each group reads the
        codes twice). ``overwrite``: replace a complete index at ``path``;
        without it, one there built from the same codes with the same
        settings is reopened (no work), and any other raises
        ``FileExistsError``.
        """
        codes, cat_path = _codes_of(source)
        subsets, block_size = index_build.check_args(codes, subsets, block_size, max_cells)
        if path is None and cat_path is not None:
            path = Path(cat_path) / "index"
        digest = _known_fingerprint(source) or fingerprint(codes)  # hashed once, reused
        if path is not None and (Path(path) / MANIFEST).exists() and not overwrite:
            return cls._reuse(path, codes, digest, subsets, block_size)
        args = dict(
            max_cells=max_cells,
            sample_size=sample_size,
            memory_budget=memory_budget,
            progress=progress,
            n_jobs=n_jobs,
        )
        if path is None:
            t0 = time.perf_counter()
            arrays = index_build.build_arrays(codes, subsets, block_size=block_size, **args)
            seconds = time.perf_counter() - t0
            return cls(
                codes,
                subsets=subsets,
                block_size=block_size,
                build_seconds=seconds,
                fingerprint=digest,
                **arrays,
            )
        seconds = index_build.write(
            Path(path), codes, digest, subsets, block_size=block_size, **args
        )
        log.info(
            "BoxIndex: %d items, %d subsets built in %.1f s at %s",
            codes.shape[0],
            len(subsets),
            seconds,
            path,
        )
        return cls._open(path, codes, digest)

    @classmethod
    def _reuse(cls, path, codes, digest, subsets, block_size):
        """The complete index at ``path`` when it matches codes and settings (built once)."""
        try:
            existing = cls._open(path, codes, digest)
        except ValueError as exc:
            raise FileExistsError(
                f"{path}: an index that does not match is there ({exc}); "
                "pass overwrite=True to replace it"
            ) from None
        if existing.subsets == subsets and existing.block_size == block_size:
            log.info("BoxIndex: reusing the complete index at %s", path)
            return existing
        raise FileExistsError(
            f"{path}: an index with other subsets or block_size is there; "
            "pass overwrite=True to replace it"
        )

    @classmethod
    def open(cls, path, source) -> BoxIndex:
        """Open a complete index at ``path`` for the codes of ``source``.

        Refuses (ValueError) an index built on other codes: even one changed
        row changes the fingerprint.
        """
        codes, _ = _codes_of(source)
        return cls._open(path, codes, fingerprint(codes))

    @classmethod
    def _open(cls, path, codes, digest):
        manifest, arrays = index_build.load(Path(path), codes, digest)
        return cls(
            codes,
            subsets=manifest["subsets"],
            block_size=manifest["block_size"],
            path=path,
            build_seconds=manifest.get("build_seconds"),
            fingerprint=digest,
            **arrays,
        )

    # ---- description ----
    def __repr__(self) -> str:
        return (
            f"BoxIndex(n_items={self.n_items}, subsets={len(self.subsets)}, "
            f"bytes_per_item={self.bytes_per_item:.1f}, path={self.path})"
        )

    @property
    def n_items(self) -> int:
        return self.codes.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes of the index itself (not counting the codes)."""
        return int(sum(getattr(self, a).nbytes for a in ARRAYS))

    @property
    def bytes_per_item(self) -> float:
        return self.nbytes / max(1, self.n_items)

    # ---- queries ----
    def subset_for(self, dims) -> int | None:
        """Row of the indexed subset serving a box on ``dims`` (None: none does).

        The subset itself when indexed, else the smallest indexed superset
        (its other dimensions are then unconstrained).
        """
        dims = tuple(sorted(dims))
        if dims in self._subset_row:
            return self._subset_row[dims]
        best = None
        for q, s in enumerate(self.subsets):
            if set(dims) <= set(s) and (best is None or len(s) < len(self.subsets[best])):
                best = q
        return best

    def _plan(self, boxes: Boxes, with_runs: bool):
        m = boxes.n_boxes
        rows = np.zeros(m, np.int64)
        stats = np.zeros((m, 4), np.int64)  # runs, cells, ids listed, ids checked
        runs = []
        for b in range(m):
            q = self.subset_for(boxes.dims[b])
            if q is None:
                return None, b
            rows[b] = q
            k = int(self.ksize[q])
            sdims = self.dims[q, :k]
            lo = boxes.lower[b, sdims].astype(np.int64)
            hi = boxes.upper[b, sdims].astype(np.int64)
            if (lo > hi).any():
                continue  # an empty box: no cell, no run
            first = self.slots[q, np.arange(k), lo].astype(np.int64)
            last = self.slots[q, np.arange(k), hi].astype(np.int64)
            starts = self._full_cache[q, :k]  # first value of each slot
            ends = np.concatenate([starts[:, 1:], np.full((k, 1), 256)], axis=1) - 1
            full = (starts[:, :256] >= lo[:, None]) & (ends[:, :256] <= hi[:, None])
            args = (
                self.offsets,
                int(self.cell_ptr[q]),
                k,
                first,
                last,
                self.strides[q, :k],
                full,
                _RUN,
            )
            none_i, none_b = np.empty(0, np.int64), np.empty(0, np.bool_)
            nr, nc, nf, npart = plan_box(*args, False, none_i, none_i, none_b)
            if with_runs and nr:
                rs, re, rf = np.empty(nr, np.int64), np.empty(nr, np.int64), np.empty(nr, np.bool_)
                plan_box(*args, True, rs, re, rf)
                runs.append((b, q, rs, re, rf))
            stats[b] = nr, nc, nf, npart
        return (rows, stats, runs), None

    def estimate(self, boxes: Boxes) -> dict:
        """Estimated work of both paths for ``boxes`` (nanoseconds of one thread)."""
        self._check_boxes(boxes)
        plan, missing = self._plan(boxes, with_runs=False)
        n = self.n_items
        out = {"n_items": n, "cost_scan_ns": self.scan_cost(n)}
        if plan is None:
            out.update(
                cost_index_ns=float("inf"),
                missing_box=missing,
                reason=f"box {missing} constrains dims {boxes.dims[missing]}, which "
                "no indexed subset covers",
            )
            return out
        runs, cells, listed, checked = (int(x) for x in plan[1].sum(axis=0))
        out.update(
            self.index_cost(
                n_items=n,
                runs=runs,
                cells=cells,
                listed=listed,
                checked=checked,
                codes_nbytes=self.codes.nbytes,
                id_itemsize=self.order.dtype.itemsize,
            )
        )
        return out

    def _check_boxes(self, boxes):
        if not isinstance(boxes, Boxes):
            raise TypeError(f"boxes: expected a Boxes instance, got {describe(boxes)}")
        if boxes.n_features != self.codes.shape[1]:
            raise ValueError(
                f"boxes: expected boxes over {self.codes.shape[1]} code dims, "
                f"got {boxes.n_features}"
            )

    def search(self, boxes: Boxes, *, path: str = "auto", n_jobs: int | None = None) -> ScanResult:
        """Every item in at least one box, with its votes, in id order.

        ``path``: "auto" (the cost model chooses), "index" or "scan". The
        index path is used only when every box's dimensions lie in an indexed
        subset; otherwise the query falls back to the scan and
        ``info["reason"]`` says why. The choice is per query, not per box:
        once one box needs the scan, the scan reads every code anyway and
        evaluates all the other boxes in the same pass almost for free.

        ``info``: ``cells_touched`` (grid cells the boxes meet),
        ``ids_listed`` (ids of cells inside a box: no code read),
        ``ids_checked`` (ids whose codes are read), ``fraction_touched``,
        ``bytes_index`` / ``bytes_scan`` (estimated bytes each path reads),
        ``cost_index_ns`` / ``cost_scan_ns`` (the cost model), ``plan_s``.
        """
        if path not in ("auto", "index", "scan"):
            raise ValueError(f"path: expected 'auto', 'index' or 'scan', got {path!r}")
        self._check_boxes(boxes)
        t0 = time.perf_counter()
        est = self.estimate(boxes)
        t_plan = time.perf_counter() - t0
        use_index = path == "index" or (
            path == "auto" and est["cost_index_ns"] < est["cost_scan_ns"]
        )
        if "missing_box" in est:
            if path == "index":
                log.info("BoxIndex: %s; scanning instead", est["reason"])
            use_index = False
        elif path == "scan":
            est["reason"] = "asked for the scan"
        elif not use_index:
            est["reason"] = "the scan is estimated cheaper"
        with numba_threads(n_jobs):
            res = (
                _search_index(self, boxes) if use_index else scan(self.codes, boxes, n_jobs=n_jobs)
            )
        res.info.update(est)
        res.info["plan_s"] = t_plan
        return res


def _search_index(idx: BoxIndex, boxes: Boxes) -> ScanResult:
    """The index path: plan the runs, collect their matches, combine the votes."""
    n = idx.n_items
    _, _, runs = idx._plan(boxes, with_runs=True)[0]
    if runs:
        run_start, run_stop, run_full = (np.concatenate([r[i] for r in runs]) for i in (2, 3, 4))
        run_box = np.concatenate([np.full(r[2].shape[0], r[0], np.int64) for r in runs])
        run_row = np.concatenate([np.full(r[2].shape[0], r[1], np.int64) for r in runs])
    else:
        run_start = run_stop = run_box = run_row = np.zeros(0, np.int64)
        run_full = np.zeros(0, np.bool_)
    lengths = run_stop - run_start
    out_off = np.zeros(lengths.shape[0] + 1, np.int64)
    np.cumsum(lengths, out=out_off[1:])
    cand = int(out_off[-1])
    buf = np.empty(cand, idx.order.dtype)
    counts = np.zeros(lengths.shape[0], np.int64)
    if lengths.shape[0]:
        kernel = collect if cand >= idx.parallel_min else collect_serial
        kernel(
            idx.order,
            idx.codes,
            run_start,
            run_stop,
            run_full,
            run_row,
            run_box,
            out_off,
            *_box_arrays(boxes),
            buf,
            counts,
        )
    dst_off = np.zeros(counts.shape[0] + 1, np.int64)
    np.cumsum(counts, out=dst_off[1:])
    matched = np.empty(int(dst_off[-1]), idx.order.dtype)
    if counts.shape[0]:
        compact(buf, out_off, counts, dst_off, matched)
    del buf
    dense = idx.dense_combine(n, matched.shape[0])
    vdtype = np.uint8 if boxes.n_boxes < 256 else np.uint16
    ids, out_votes = _votes_of(matched, n, vdtype, dense, n >= 4 * idx.parallel_min)
    info = {
        "n_items": n,
        "runs": int(lengths.shape[0]),
        "ids_matched": int(matched.shape[0]),
        "combine": "dense" if dense else "sparse",
    }
    return ScanResult(ids, out_votes, "index", info)
