"""The widget's side of the comm: state updates and action messages from the front end.

A mixin of ``ClipBranches`` (it uses the widget's traits, its ``_session``
and its ``_actions`` handlers); kept apart so that the widget class reads as
the translation of actions into ``Session`` calls.
"""

from __future__ import annotations

import logging

import traitlets

from . import warmup
from .jobs import Cancelled, Job, JobQueue
from .persist import labels_from_json
from .protocol import FRONTEND_KEYS, Action, parse_action

__all__ = ["BACKGROUND", "READ_ONLY", "ActionChannel"]

log = logging.getLogger(__name__)

#: Actions that only read: they answer in their ack and leave the shared state alone.
READ_ONLY = ("detail", "export")
#: Actions run in a worker thread, so that a cancel can reach them while they run.
BACKGROUND = ("refine",)


class ActionChannel:
    """Front end -> Python: key-by-key state updates, and actions applied with their state."""

    _acting: Action | None = None  # the action whose results _show puts out
    _job: Job | None = None  # ... and its job (a cancel marks it)
    _job_queue: JobQueue | None = None

    def set_state(self, sync_data) -> None:
        """Apply a front-end state update key by key. Only the front end's own keys
        (``FRONTEND_KEYS``) may be set: one writer per key, so a front end can
        never overwrite a result. A refused key or value is shown as an error
        (the key keeps its value), never raised in the kernel."""
        if not isinstance(sync_data, dict):
            self._refuse_update([f"state: expected an object, got {sync_data!r:.80}"])
            return
        problems = []
        for key, value in sync_data.items():
            if key not in FRONTEND_KEYS:
                problems.append(_not_frontend_key(key, self.has_trait(str(key))))
                continue
            try:
                super().set_state({key: value})
            except (traitlets.TraitError, TypeError, ValueError) as e:
                problems.append(f"{key}: {e}")
        if problems:
            self._refuse_update(problems)

    def _refuse_update(self, problems: list[str]) -> None:
        text = "; ".join(problems)
        log.warning("front-end state refused: %s", text)
        self.error = text

    @property
    def _jobs(self) -> JobQueue:
        if self._job_queue is None:
            self._job_queue = JobQueue()
        return self._job_queue

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every action sent so far has been answered (a refine runs
        in a worker thread); False if ``timeout`` seconds pass first."""
        return self._jobs.wait(timeout)

    def _on_labels(self, change) -> None:
        labels = change["new"] or {}
        # in turn: while a refine runs, after it (it trains on the labels it carries)
        self._jobs.submit(Job(lambda job: self._set_labels(labels)))

    def _set_labels(self, labels) -> None:
        try:
            self._session.set_labels(labels_from_json(labels))
            if self._session.current_check() is not None:
                self.summary = self._session.summary()  # the check's estimate, as it is labelled
        except (TypeError, ValueError, IndexError) as e:
            # the session keeps its last valid labels; the user sees why
            text = str(e)
            self.error = text if text.startswith("labels:") else f"labels: {text}"

    def _on_message(self, _widget, content, buffers) -> None:
        act = parse_action(content)
        if act is None:
            log.warning("ignored a front-end message that is not an action: %.200r", content)
            return
        action = act.name if isinstance(act.name, str) else None
        if action == "cancel" and not act.problem:
            self._cancel(act)  # at once, also while a refine runs
            return
        handler = self._actions.get(action) if action else None
        problem = act.problem or (
            ""
            if handler
            else f"unknown action {act.name!r:.80}; expected one of {sorted(self._actions)}"
        )
        if problem:
            self._ack(act, action, False, problem)
            return
        self._jobs.submit(
            Job(
                lambda job: self._perform(act, action, handler, job),
                background=action in BACKGROUND,
                key=(act.view, act.seq),
            )
        )

    def _cancel(self, act: Action) -> None:
        target = act.content.get("target")
        if isinstance(target, bool) or not isinstance(target, int):
            self._ack(
                act,
                "cancel",
                False,
                f"cancel: expected the sequence number of an action, got {target!r:.80}",
            )
            return
        where = self._jobs.cancel(lambda job: job.key == (act.view, target))
        log.info("cancel of action %s: %s", target, where or "nothing to cancel (done)")
        # found "running" / "queued": its own ack says cancelled; "": it had finished
        self._ack(act, "cancel", True, found=where)

    def _perform(self, act: Action, action: str, handler, job: Job) -> None:
        shared = action not in READ_ONLY
        self._acting, self._job = act, job
        before = {}
        try:
            if job.cancelled():  # cancelled while it waited its turn
                raise Cancelled
            if shared:
                # sent at once: the front end shows what is running (and why it is slow)
                first = action == "refine" and not warmup.is_warm()
                self.status = f"{action}: the first refine compiles once" if first else action
            # a read-only action leaves the state alone, but a malformed one is
            # still refused: its answer would be for a state no one has
            values = self._check_state(act.state)
            if shared:
                before = {k: getattr(self, k) for k in values if k != "user_labels"}
                self._apply_state(act.state, values)
            extra, reply_buffers = handler(act.content) or ({}, [])
        except Cancelled:
            self._answer_cancelled(act, action, before)
            return
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
                    self.reply = self._reply(ok=False)
            self._ack(act, action, False, message)
            return
        finally:
            self._acting = self._job = None
        if self.status != "ready":
            self.status = "ready"
        self._ack(act, action, True, **extra, buffers=reply_buffers)

    def _answer_cancelled(self, act: Action, action: str, before: dict) -> None:
        """Labels as carried (the front end shows them), the page and facet as
        they were before the action, results untouched; said in the reply."""
        with self.hold_sync():
            if before:
                self._apply_state(before, before)
            self.status = "ready"
            self.reply = {**self._reply(ok=False), "cancelled": True}
        self._ack(act, action, False, f"{action} cancelled", cancelled=True)

    def _reply(self, ok: bool = True) -> dict:
        act = self._acting
        if act is None:  # Python's own refresh (construction)
            return {"view": "", "seq": -1, "action": "", "ok": ok}
        return {"view": act.view, "seq": act.seq, "action": act.name, "ok": ok}

    def _ack(self, act: Action, action, ok: bool, error: str = "", *, buffers=(), **extra):
        msg = {"type": "ack", "req": act.req, "seq": act.seq, "action": action, "ok": ok, **extra}
        if error:
            msg["error"] = error
        self.send(msg, list(buffers) or None)

    def _check_state(self, state: dict) -> dict:
        """The front-end keys an action carries, validated (none is set here)."""
        values = {}
        for key, value in state.items():
            try:
                values[key] = getattr(type(self), key).validate(self, value)
            except traitlets.TraitError as e:
                raise ValueError(f"state: {key}: {e}") from None
        if "user_labels" in values:  # the labels' own checks, ids against the catalogue
            try:
                labels = labels_from_json(values["user_labels"] or {}, "user_labels")
                if labels:
                    self._session.catalogue.check_ids(list(labels))
            except (TypeError, ValueError, IndexError) as e:
                text = str(e)
                text = text if text.startswith("user_labels:") else f"user_labels: {text}"
                raise ValueError(f"state: {text}") from None
        return values

    def _apply_state(self, state: dict, values: dict) -> None:
        """Set the checked front-end keys of an action, all at once.

        Not echoed back (the front end sent these values): the property lock
        keeps the changes off the comm, as for a state update."""
        if not values:
            return
        if "user_labels" in values:
            self._session.set_labels(labels_from_json(values["user_labels"] or {}))
        with self._lock_property(**state), self.hold_trait_notifications():
            for key, value in values.items():
                self.set_trait(key, value)


def _not_frontend_key(key, exists: bool) -> str:
    if exists:
        return (
            f"{key!r:.80}: set by Python, not by the front end "
            f"(the front end sets only {', '.join(FRONTEND_KEYS)})"
        )
    return f"{key!r:.80}: not a key of this widget; expected one of {', '.join(FRONTEND_KEYS)}"
