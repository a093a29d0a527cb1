"""The widget's side of the comm: state updates and action messages from the front end.

A mixin of ``ClipBranches`` (it uses the widget's traits, its ``_session``
and its ``_actions`` handlers); kept apart so that the widget class reads as
the translation of actions into ``Session`` calls.
"""

from __future__ import annotations

import logging

import traitlets

from . import warmup
from .persist import labels_from_json
from .protocol import FRONTEND_KEYS, Action, parse_action

__all__ = ["READ_ONLY", "ActionChannel"]

log = logging.getLogger(__name__)

#: Actions that only read: they answer in their ack and leave the shared state alone.
READ_ONLY = ("detail", "export")


class ActionChannel:
    """Front end -> Python: key-by-key state updates, and actions applied with their state."""

    _acting: Action | None = None  # the action whose results _show puts out

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

    def _on_labels(self, change) -> None:
        try:
            self._session.set_labels(labels_from_json(change["new"] or {}))
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
        handler = self._actions.get(action) if action else None
        problem = act.problem or (
            ""
            if handler
            else f"unknown action {act.name!r:.80}; expected one of {sorted(self._actions)}"
        )
        if problem:
            self._ack(act, action, False, problem)
            return
        shared = action not in READ_ONLY
        if shared:
            # sent at once: the front end shows what is running (and why it is slow)
            first = action == "refine" and not warmup.is_warm()
            self.status = f"{action}: the first refine compiles once" if first else action
        self._acting = act
        try:
            # a read-only action leaves the state alone, but a malformed one is
            # still refused: its answer would be for a state no one has
            values = self._check_state(act.state)
            if shared:
                self._apply_state(act.state, values)
            extra, reply_buffers = handler(act.content) or ({}, [])
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
            self._acting = None
        if self.status != "ready":
            self.status = "ready"
        self._ack(act, action, True, **extra, buffers=reply_buffers)

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
