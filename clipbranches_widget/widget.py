"""The notebook widget: a thin anywidget layer over a :class:`Session`.

State lives in synced traits with one writer per key:

* the front end owns the user's intent: ``user_labels``, ``user_page``,
  ``user_query``, ``user_selection``, ``user_box`` (Python reads them, never
  writes them after construction);
* Python owns the results: ``items`` (the shown page, thumbnails as binary
  buffers), ``total``, ``page_count``, ``page_shown``, ``kind``, ``status``,
  ``timings``, ``error``, ``facets`` (results per box of the model), ... (the
  front end only reads them).

Actions (search, more, refine, check, reset, page, detail, export, cancel) arrive as custom
messages ``{"type": "action", "action": ..., "req": ..., "seq": ..., "state":
{...}}`` (see ``protocol``): the state the user acted on is applied first, so
an action never runs on labels or a page its own state update has not yet
delivered. Each gets one reply ``{"type": "ack", "req": ..., "seq": ..., "ok":
...}``. Results never travel in the ack: they are set on the traits under
``hold_sync()`` with ``reply`` (the view and sequence number they answer), so
every view updates at once and a view ignores results older than its last
action. A refine runs in a worker thread, so a ``cancel`` can reach it;
meanwhile later messages wait their turn (``jobs.py``). All search logic
lives in ``Session``; this module only translates.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import time

import anywidget
import numpy as np
import traitlets

from . import views
from .channel import ActionChannel
from .engine._atomic import write_text
from .engine.store.catalogue import Catalogue
from .export import export_results
from .jobs import Job, refine_cancellably
from .protocol import FRONTEND_KEYS, StrictInt
from .session import Session
from .thumbnails import Thumbnailer, full_image

__all__ = ["ClipBranches", "FRONTEND_KEYS"]

log = logging.getLogger(__name__)

STATIC = pathlib.Path(__file__).parent / "static"
WIDGET_FORMAT = 1
CHECK_SIZE = 20  # items of a random check (Session.check): ~1/3 of a page to label
NO_TEXT_ENCODER = (
    "this catalogue has no text encoder, so it cannot be searched by words: "
    "Shift+click some images (or mark positives) and press More like these"
)


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


def _page_item(catalogue, thumbs, i: int, votes: int, score: float, badge: str) -> dict:
    """One grid cell of the ``items`` trait: its thumbnail as bytes, or why not."""
    uri = catalogue.uri(i)
    item = {
        "id": i,
        "votes": votes,
        "badge": badge,
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
    thumb, problem = thumbs.try_get(uri)
    if thumb is None:
        item["problem"] = problem
    else:  # bytes: sent as a binary buffer by the comm, never base64
        item.update(thumb=thumb.data, w=thumb.width, h=thumb.height, mime=thumb.mime)
    return item


class ClipBranches(ActionChannel, anywidget.AnyWidget):
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
    user_page = StrictInt(0).tag(sync=True)
    user_query = traitlets.Unicode("").tag(sync=True)
    user_selection = traitlets.List(StrictInt()).tag(sync=True)
    # facet: one box's items (-1 all, -2 labelled, -3 random check, -4 near misses)
    user_box = StrictInt(-1).tag(sync=True)

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
    summary = traitlets.Unicode("").tag(sync=True)  # what the last step did, in words
    reply = traitlets.Dict().tag(sync=True)  # the action the traits answer: view, seq, action, ok

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
            "export": self._export,
            "check": self._check,
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
        return export_results(self.results, path, self.catalogue)

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
        write_text(path, json.dumps(data))  # never a half-written session file
        return path

    @classmethod
    def load(cls, path, catalogue: Catalogue, **kwargs) -> ClipBranches:
        """A widget replaying a saved session on ``catalogue``: the same results, exactly."""
        data = json.loads(pathlib.Path(path).read_text())
        if not isinstance(data, dict) or data.get("format") != WIDGET_FORMAT:
            raise ValueError(
                f"load: expected a widget session of format {WIDGET_FORMAT}, "
                f"got {data.get('format')!r}"
            )
        session = Session.from_dict(data.get("session"), catalogue, **kwargs)
        view = data.get("view", {})
        if not isinstance(view, dict):
            raise ValueError(f"load: view: expected an object, got {view!r:.80}")
        state = {
            k: view[k]
            for k in ("user_page", "user_query", "user_selection", "user_box")
            if k in view
        }
        try:
            return cls(session, thumb_size=view.get("thumb_size", 160), _user_state=state)
        except traitlets.TraitError as e:
            raise ValueError(f"load: view: {e}") from None

    def __repr__(self) -> str:
        return (
            f"ClipBranches(n_items={self.n_items}, kind={self.kind!r}, total={self.total}, "
            f"labels={len(self.labels)})"
        )

    # ------------------------------------------------------------------ actions
    def _search(self, content):
        if not self.catalogue.has_embedder:
            raise ValueError(NO_TEXT_ENCODER)
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
        # in a worker thread: stops at a cancel where the work can (jobs.py)
        refine_cancellably(self._session, self._job or Job(lambda job: None))
        self._show()

    def _check(self, content):
        if self._session.current_check() is None:  # one draw per result set
            self._session.check(CHECK_SIZE)
        self._show()

    def _reset(self, content):
        # the front end has already cleared its own keys (labels, query, selection)
        self._session.reset()
        self._show()

    def _page(self, content):
        self._show()

    def _detail(self, content):
        i = content.get("id")
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"detail: expected an integer item id, got {i!r:.80}")
        detail, image = self.explain(i)
        return {"detail": detail}, ([image.data] if image is not None else [])

    def _export(self, content):
        fmt = content.get("format", "csv")
        if fmt not in ("csv", "parquet"):
            raise ValueError(f"export: expected the format 'csv' or 'parquet', got {fmt!r:.40}")
        if self._session.results.kind == "empty":
            raise ValueError("nothing to export yet: search or refine first")
        stem = time.strftime("clipbranches-results-%Y%m%d-%H%M%S")
        path = pathlib.Path(f"{stem}.{fmt}").resolve()
        n = 1
        while path.exists():  # two exports in one second keep both files
            n += 1
            path = path.with_name(f"{stem}-{n}.{fmt}")
        self.export(path)
        return {"path": str(path), "count": self._session.results.count}, []

    # ------------------------------------------------------------------ results -> traits
    def _show(self) -> None:
        """Put the page the user asked for into the traits, all at once."""
        s = self._session
        res = s.current()
        shown, box = s.view(int(self.user_box))
        size = s.page_size
        n_pages = max(1, math.ceil(shown.count / size))
        number = min(max(int(self.user_page), 0), n_pages - 1)
        page = shown.page(number, size)
        t0 = time.perf_counter()
        # one score per item, decreasing in the order shown (views.rank_scores)
        shown_scores = views.rank_scores(page, res)
        # labelled, random-check or near-miss items are not this round's finds: no "new"
        badges = s.badges(page.ids, labelled_view=shown.kind in ("labelled", "check", "near"))
        items = [
            _page_item(self.catalogue, self._thumbs, int(i), int(v), float(sc), badge)
            for i, v, sc, badge in zip(page.ids, page.votes, shown_scores, badges)
        ]
        timings = dict(res.timings)
        timings["thumbs_ms"] = (time.perf_counter() - t0) * 1e3
        refined = s.model is not None and res.kind == "refined"
        with self.hold_sync():
            self.items = items
            self.total = res.count
            self.shown_total = shown.count
            self.page_count = n_pages
            self.page_shown = number
            self.kind = res.kind
            self.timings = timings
            self.n_boxes = s.model.boxes_.n_boxes if refined else 0
            self.facets = s.facets()
            self.box_shown = box
            self.search_path = res.path
            self.rounds = s.rounds
            self.summary = s.summary()
            self.error = ""
            self.status = "ready"
            self.reply = self._reply()

    def explain(self, i: int):
        """Why item ``i`` is shown (``Session.explain``), with its full image.

        Returns ``(detail, image)``; ``image`` is the encoded full image (or
        None when it cannot be read; ``detail["problem"]`` says why).
        """
        detail = self._session.explain(i)
        detail.update(width=0, height=0, mime="", problem="")
        res = self._session.results
        where = np.flatnonzero(res.ids == i)
        detail["rank_score"] = (
            float(views.rank_scores(res.subset(where[:1]), res)[0]) if where.size else None
        )
        if detail["rank_score"] is not None and not math.isfinite(detail["rank_score"]):
            detail["rank_score"] = None
        detail["path"] = views.display_path(detail["uri"])
        image = None
        if detail["uri"] is None:
            detail["problem"] = "this item has no image"
        else:
            try:
                image = full_image(detail["uri"])
                detail.update(width=image.width, height=image.height, mime=image.mime)
            except Exception as e:  # any unreadable image is a message, not a crash
                detail["problem"] = str(e)
        return detail, image
