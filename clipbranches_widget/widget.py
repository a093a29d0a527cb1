"""The notebook widget: a thin anywidget layer over a :class:`Session`.

State lives in synced traits with one writer per key:

* the front end owns the user's intent: ``user_labels``, ``user_page``,
  ``user_query``, ``user_selection``, ``user_box`` (Python reads them, never
  writes them after construction);
* Python owns the results: ``items`` (the shown page, thumbnails as binary
  buffers), ``total``, ``page_count``, ``page_shown``, ``kind``, ``status``,
  ``timings``, ``error``, ``facets`` (results per box of the model), ... (the
  front end only reads them).

Actions (search, more, refine, reset, page, detail) arrive as custom messages
``{"type": "action", "action": ..., "req": ...}``; each gets one reply
``{"type": "ack", "req": ..., "ok": ...}``. Results never travel in the ack:
they are set on the traits under ``hold_sync()`` so every view updates at once.
All search logic lives in ``Session``; this module only translates.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import shutil
import time
from urllib.parse import urlparse

import anywidget
import numpy as np
import traitlets

from .engine.store.catalogue import Catalogue
from .session import Results, Session
from .thumbnails import Thumbnailer, full_image, is_remote, local_path, read_bytes

__all__ = ["ClipBranches", "FRONTEND_KEYS"]

log = logging.getLogger(__name__)

STATIC = pathlib.Path(__file__).parent / "static"
WIDGET_FORMAT = 1
LABELLED_VIEW = -2  # user_box value: show the labelled items instead of the results
BROWSE_MAX = 100_000  # items shown before the first search (a random sample beyond that)

#: Keys written only by the front end (the user's intent).
FRONTEND_KEYS = ("user_labels", "user_page", "user_query", "user_selection", "user_box")


def _bundle(name: str) -> pathlib.Path | str:
    path = STATIC / name
    if not path.exists():
        # a source checkout without the committed bundle: say how to get it
        log.error(
            "clipbranches_widget: %s is missing; build it with `npm ci --prefix js && "
            "npm run build --prefix js`",
            path,
        )
        return (
            "export default { render({ el }) { el.textContent = "
            "'clipbranches_widget: the front-end bundle is missing (see the README)'; } };"
            if name.endswith(".js")
            else ""
        )
    return path


def _suffix(uri: str) -> str:
    return pathlib.PurePosixPath(urlparse(uri).path if is_remote(uri) else uri).suffix


class ClipBranches(anywidget.AnyWidget):
    """Search a catalogue by text or example, label, refine, page: in a notebook.

    Parameters
    ----------
    source : Catalogue or Session
        What to search. A ``Catalogue`` gets a fresh ``Session`` built with
        ``session_kwargs`` (``k``, ``page_size``, ``n_background``,
        ``random_state``, ``classifier``, ``n_jobs``).
    thumb_size : int, default 160
        Longer side of the thumbnails made kernel-side, in pixels.

    Python access: ``labels``, ``results``, ``model``, ``session``,
    ``export(path)``, ``save(path)`` and ``ClipBranches.load(path, catalogue)``.
    """

    _esm = _bundle("widget.js")
    _css = _bundle("widget.css")

    # --- front-end owned: the user's intent ---
    user_labels = traitlets.Dict().tag(sync=True)  # {"id": +1 | -1}
    user_page = traitlets.Int(0).tag(sync=True)
    user_query = traitlets.Unicode("").tag(sync=True)
    user_selection = traitlets.List(traitlets.Int()).tag(sync=True)
    user_box = traitlets.Int(-1).tag(sync=True)  # facet: one box's items (-1 all, -2 labelled)

    # --- Python owned: the results ---
    items = traitlets.List(traitlets.Dict()).tag(sync=True)  # the shown page
    total = traitlets.Int(0).tag(sync=True)
    page_count = traitlets.Int(1).tag(sync=True)
    page_shown = traitlets.Int(0).tag(sync=True)
    page_size = traitlets.Int(60).tag(sync=True)
    kind = traitlets.Unicode("empty").tag(sync=True)  # empty | browse | knn | refined
    status = traitlets.Unicode("ready").tag(sync=True)  # "ready" or the running action
    timings = traitlets.Dict().tag(sync=True)  # milliseconds per step
    error = traitlets.Unicode("").tag(sync=True)
    n_boxes = traitlets.Int(0).tag(sync=True)
    search_path = traitlets.Unicode("").tag(sync=True)
    n_items = traitlets.Int(0).tag(sync=True)
    text_search = traitlets.Bool(False).tag(sync=True)
    rounds = traitlets.Int(0).tag(sync=True)
    facets = traitlets.List(traitlets.Dict()).tag(sync=True)  # per box: box, count, dims
    box_shown = traitlets.Int(-1).tag(sync=True)  # the facet applied (-1: all)
    shown_total = traitlets.Int(0).tag(sync=True)  # results in that facet

    def __init__(
        self, source, *, thumb_size: int = 160, _user_state: dict | None = None, **session_kwargs
    ):
        if isinstance(source, Session):
            if session_kwargs:
                raise TypeError(
                    f"ClipBranches: session options {sorted(session_kwargs)} only "
                    "apply when given a Catalogue, not a Session"
                )
            session = source
        elif isinstance(source, Catalogue):
            session = Session(source, **session_kwargs)
        else:
            raise TypeError(
                f"ClipBranches: expected a Catalogue or a Session, got {type(source).__name__}"
            )
        self._session = session
        self._thumbs = Thumbnailer(thumb_size)
        self._browse = None
        self._facet_cache = None
        # the user's intent starts from the session (a reloaded one keeps its labels);
        # this is the only time Python sets these keys, before any front end exists
        user = {
            "user_labels": {str(i): v for i, v in session.labels.items()},
            "user_query": session.query if isinstance(session.query, str) else "",
        }
        user.update(_user_state or {})
        super().__init__(
            page_size=session.page_size,
            n_items=len(session.catalogue),
            text_search=session.catalogue.has_embedder,
            **user,
        )
        self.observe(self._on_labels, names="user_labels")
        self.on_msg(self._on_message)
        self._actions = {
            "search": self._search,
            "more": self._more,
            "refine": self._refine,
            "reset": self._reset,
            "page": self._page,
            "detail": self._detail,
        }
        self._show()

    # ------------------------------------------------------------------ Python API
    @property
    def session(self) -> Session:
        return self._session

    @property
    def catalogue(self) -> Catalogue:
        return self._session.catalogue

    @property
    def labels(self) -> dict[int, int]:
        """``{id: +1 | -1}``: the labels the user gave (a copy)."""
        return self._session.labels

    @property
    def model(self):
        """The fitted ``DecisionBranchesClassifier`` of the last refine (or None)."""
        return self._session.model

    @property
    def results(self):
        """Every result (not only the shown page): DataFrame ``id, uri, votes, score, label``."""
        return self._session.results.to_frame(self.catalogue, self._session.labels)

    def export(self, path) -> pathlib.Path:
        """Write all results: ``.csv`` / ``.parquet`` a table, any other path a folder of copies.

        The folder gets one copy per result, named ``<rank>_<id><suffix>`` so
        that it sorts in result order, plus ``results.csv``.
        """
        path = pathlib.Path(path)
        df = self.results
        suffix = path.suffix.lower()
        if suffix == ".csv":
            df.to_csv(path, index=False)
        elif suffix in (".parquet", ".pq"):
            df.to_parquet(path, index=False)
        elif suffix:
            raise ValueError(f"export: expected a .csv or .parquet file or a folder, got {path}")
        else:
            if path.exists() and any(path.iterdir()):
                raise FileExistsError(f"export: the folder {path} is not empty")
            path.mkdir(parents=True, exist_ok=True)
            if self.catalogue.uris is None:
                raise ValueError(
                    "export: this catalogue has no URIs, so there is nothing to "
                    "copy; export to a .csv or .parquet file instead"
                )
            width = max(4, len(str(len(df))))
            for rank, (i, uri) in enumerate(zip(df["id"].tolist(), df["uri"].tolist())):
                target = path / f"{rank:0{width}d}_{i}{_suffix(uri)}"
                if is_remote(uri):
                    target.write_bytes(read_bytes(uri))
                else:
                    shutil.copy2(local_path(uri), target)
            df.to_csv(path / "results.csv", index=False)
        log.info("export: %d results to %s", len(df), path)
        return path

    def save(self, path) -> pathlib.Path:
        """Save the session (labels, query, model) to JSON; ``load`` replays it exactly."""
        path = pathlib.Path(path)
        data = {
            "format": WIDGET_FORMAT,
            "session": self._session.to_dict(),
            "view": {
                "user_page": self.user_page,
                "user_query": self.user_query,
                "user_selection": list(self.user_selection),
                "user_box": self.user_box,
                "thumb_size": self._thumbs.size,
            },
        }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)  # never leave a half-written session file
        return path

    @classmethod
    def load(cls, path, catalogue: Catalogue, **kwargs) -> ClipBranches:
        """A widget replaying a saved session on ``catalogue``: the same results, exactly."""
        data = json.loads(pathlib.Path(path).read_text())
        if data.get("format") != WIDGET_FORMAT:
            raise ValueError(
                f"load: expected a widget session of format {WIDGET_FORMAT}, "
                f"got {data.get('format')!r}"
            )
        session = Session.from_dict(data["session"], catalogue, **kwargs)
        view = data.get("view", {})
        state = {
            k: view[k]
            for k in ("user_page", "user_query", "user_selection", "user_box")
            if k in view
        }
        return cls(session, thumb_size=view.get("thumb_size", 160), _user_state=state)

    def __repr__(self) -> str:
        return (
            f"ClipBranches(n_items={self.n_items}, kind={self.kind!r}, total={self.total}, "
            f"labels={len(self.labels)})"
        )

    # ------------------------------------------------------------------ front end -> Python
    def _on_labels(self, change) -> None:
        try:
            labels = {int(k): int(v) for k, v in (change["new"] or {}).items()}
            self._session.set_labels(labels)
        except (TypeError, ValueError, IndexError) as e:
            # the session keeps its last valid labels; the user sees why
            self.error = f"labels: {e}"

    def _on_message(self, _widget, content, buffers) -> None:
        if not isinstance(content, dict) or content.get("type") != "action":
            return
        action, req = content.get("action"), content.get("req")
        handler = self._actions.get(action)
        if handler is None:
            self._ack(
                req,
                action,
                False,
                f"unknown action {action!r}; expected one of {sorted(self._actions)}",
            )
            return
        # "detail" only reads: it answers in its ack and leaves the shared state alone
        shared = action != "detail"
        if shared:
            self.status = action  # sent at once: the front end shows what is running
        try:
            extra, reply_buffers = handler(content) or ({}, [])
        except Exception as e:  # shown in the widget; the labels (front-end state) stay
            log.warning(
                "%s failed: %s",
                action,
                e,
                exc_info=not isinstance(e, (ValueError, TypeError, IndexError, OSError)),
            )
            message = f"{action} failed: {e}"
            if shared:
                with self.hold_sync():
                    self.error = message
                    self.status = "ready"
            self._ack(req, action, False, message)
            return
        if self.status != "ready":
            self.status = "ready"
        self._ack(req, action, True, **extra, buffers=reply_buffers)

    def _ack(self, req, action, ok: bool, error: str = "", *, buffers=(), **extra) -> None:
        msg = {"type": "ack", "req": req, "action": action, "ok": ok, **extra}
        if error:
            msg["error"] = error
        self.send(msg, list(buffers) or None)

    # ------------------------------------------------------------------ actions
    def _search(self, content):
        text = self.user_query.strip()
        if not text:
            raise ValueError("type a query first")
        self._session.search(text)
        self._show()

    def _more(self, content):
        ids = list(self.user_selection) or [i for i, v in self._session.labels.items() if v > 0]
        if not ids:
            raise ValueError("select some images (Shift+click) or mark positives first")
        self._session.search(np.asarray(ids, np.int64))
        self._show()

    def _refine(self, content):
        self._session.refine()
        self._show()

    def _reset(self, content):
        # the front end has already cleared its own keys (labels, query, selection)
        s = self._session
        s.results, s.model, s.query, s.query_vector = Results.empty(), None, None, None
        self._show()

    def _page(self, content):
        self._show()

    def _detail(self, content):
        i = (
            int(self.catalogue.check_ids([content.get("id")])[0])
            if isinstance(content.get("id"), int)
            else None
        )
        if i is None:
            raise TypeError(f"detail: expected an integer item id, got {content.get('id')!r}")
        detail, image = self.explain(i)
        return {"detail": detail}, ([image.data] if image is not None else [])

    # ------------------------------------------------------------------ results -> traits
    def _current(self) -> Results:
        res = self._session.results
        if res.kind != "empty":
            return res
        # before the first search, browse the catalogue in a fixed random order so
        # the first page shows variety (folders are often sorted by class); a huge
        # catalogue is browsed through a random sample, never a permutation of all of it
        if self._browse is None:
            n = len(self.catalogue)
            rng = np.random.default_rng(self._session.random_state)
            order = (
                rng.permutation(n) if n <= BROWSE_MAX else rng.choice(n, BROWSE_MAX, replace=False)
            )
            m = order.shape[0]
            self._browse = Results(
                order.astype(np.int64),
                np.zeros(m, np.int64),
                np.full(m, np.nan, np.float32),
                "browse",
                "browse",
            )
        return self._browse

    def _facets(self, res: Results):
        """(n_results, n_boxes) bool: which box contains which result (cached per result set)."""
        model = self._session.model
        if res.kind != "refined" or model is None:
            return None
        if self._facet_cache is None or self._facet_cache[0] is not res:
            inside = model.boxes_.contains(self.catalogue.codes[res.ids])
            self._facet_cache = (res, inside)
        return self._facet_cache[1]

    def _labelled(self) -> Results:
        """Every labelled item, positives first: labels stay reviewable when the
        results no longer show them."""
        labels = self._session.labels
        ids = np.array(sorted(labels, key=lambda i: (-labels[i], i)), np.int64)
        model = self._session.model
        votes = (
            model.boxes_.votes(self.catalogue.codes[ids]).astype(np.int64)
            if model is not None and ids.size
            else np.zeros(ids.size, np.int64)
        )
        return Results(ids, votes, np.full(ids.size, np.nan, np.float32), "labelled")

    def _show(self) -> None:
        """Put the page the user asked for into the traits, all at once."""
        res = self._current()
        inside = self._facets(res)
        box = int(self.user_box)
        shown = res
        if inside is not None and 0 <= box < inside.shape[1]:
            keep = inside[:, box]  # one box's items, still in rank order
            shown = Results(
                res.ids[keep], res.votes[keep], res.scores[keep], res.kind, res.path, res.timings
            )
        elif box == LABELLED_VIEW:
            shown = self._labelled()
        else:
            box = -1
        size = self._session.page_size
        n_pages = max(1, math.ceil(shown.count / size))
        number = min(max(int(self.user_page), 0), n_pages - 1)
        page = shown.page(number, size)
        t0 = time.perf_counter()
        items = [
            self._item(int(i), int(v), float(s))
            for i, v, s in zip(page.ids, page.votes, page.scores)
        ]
        timings = dict(res.timings)
        timings["thumbs_ms"] = (time.perf_counter() - t0) * 1e3
        model = self._session.model
        facets = (
            []
            if inside is None
            else [
                {"box": b, "count": int(c), "dims": list(model.boxes_.dims[b])}
                for b, c in enumerate(inside.sum(axis=0).tolist())
            ]
        )
        with self.hold_sync():
            self.items = items
            self.total = res.count
            self.shown_total = shown.count
            self.page_count = n_pages
            self.page_shown = number
            self.kind = res.kind
            self.timings = timings
            self.n_boxes = 0 if model is None or res.kind != "refined" else model.boxes_.n_boxes
            self.facets = facets
            self.box_shown = box
            self.search_path = res.path
            self.rounds = self._session.rounds
            self.error = ""
            self.status = "ready"

    def _item(self, i: int, votes: int, score: float) -> dict:
        uri = self.catalogue.uri(i)
        item = {
            "id": i,
            "votes": votes,
            "score": score if math.isfinite(score) else None,
            "name": os.path.basename(uri) if uri else f"#{i}",
            "thumb": None,
            "w": 0,
            "h": 0,
            "mime": "",
            "problem": "",
        }
        if uri is None:
            item["problem"] = "no image"
            return item
        thumb, problem = self._thumbs.try_get(uri)
        if thumb is None:
            item["problem"] = problem
        else:  # bytes: sent as a binary buffer by the comm, never base64
            item.update(thumb=thumb.data, w=thumb.width, h=thumb.height, mime=thumb.mime)
        return item

    def explain(self, i: int):
        """Why item ``i`` is shown: rank, votes, score, similarity and the boxes containing it.

        Returns ``(detail, image)``; ``image`` is the encoded full image (or
        None when it cannot be read; ``detail["problem"]`` says why).
        """
        i = int(self.catalogue.check_ids([i])[0])
        res = self._session.results
        where = np.flatnonzero(res.ids == i)
        uri = self.catalogue.uri(i)
        model = self._session.model
        boxes = []
        if model is not None:
            code = self.catalogue.codes[i]
            inside = model.boxes_.contains(code[None, :])[0]
            for b in np.flatnonzero(inside).tolist():
                bounds = model.boxes_.bounds(b)
                boxes.append(
                    {
                        "box": b,
                        "bounds": {str(j): list(lh) for j, lh in bounds.items()},
                        "code": {str(j): int(code[j]) for j in bounds},
                    }
                )
        similarity = None
        if self._session.query_vector is not None:
            similarity = float(self.catalogue.vector([i])[0] @ self._session.query_vector)
        detail = {
            "id": i,
            "uri": uri,
            "name": os.path.basename(uri) if uri else f"#{i}",
            "label": self._session.labels.get(i, 0),
            "rank": int(where[0]) if where.size else None,
            "votes": int(res.votes[where[0]])
            if where.size
            else (len(boxes) if model is not None else None),
            "score": float(res.scores[where[0]]) if where.size else None,
            "similarity": similarity,
            "n_boxes": 0 if model is None else model.boxes_.n_boxes,
            "boxes": boxes,
            "kind": res.kind,
            "width": 0,
            "height": 0,
            "mime": "",
            "problem": "",
        }
        image = None
        if uri is None:
            detail["problem"] = "this item has no image"
        else:
            try:
                image = full_image(uri)
                detail.update(width=image.width, height=image.height, mime=image.mime)
            except (OSError, ValueError) as e:
                detail["problem"] = str(e)
        return detail, image
