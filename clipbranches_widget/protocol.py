"""The front end's action messages, checked before the widget acts on one.

An action message is ``{"type": "action", "action": ..., "req": ...}`` plus,
from the current front end, ``"seq"`` (the view's running number of the
action), ``"view"`` (which view of the model sent it) and ``"state"`` (the
front-end-owned keys as the user saw them when acting). The state travels
in the action because ipywidgets throttles state updates but not custom
messages: an action sent right after a click can overtake the click's
update, and would then run on old labels or an old page (issue 17).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import traitlets

__all__ = ["Action", "FRONTEND_KEYS", "StrictInt", "parse_action"]

#: Keys written only by the front end (the user's intent).
FRONTEND_KEYS = ("user_labels", "user_page", "user_query", "user_selection", "user_box")


class StrictInt(traitlets.Int):
    """An integer trait that refuses bools: ``traitlets.Int`` takes ``False`` as 0,
    so a front end sending ``{"user_page": false}`` would turn to page 0 unseen."""

    def validate(self, obj, value):
        if isinstance(value, bool):
            self.error(obj, value)
        return super().validate(obj, value)


@dataclass
class Action:
    name: object  # checked against the widget's handlers by the widget
    req: str | int
    seq: int = -1  # -1: a message without a sequence number
    view: str = ""
    state: dict = field(default_factory=dict)
    content: dict = field(default_factory=dict)
    problem: str = ""  # why the message is refused ("" when it is well formed)


def parse_action(content) -> Action | None:
    """The action in ``content``; None for a message that cannot be answered
    (not an action, or no request id). A malformed one says why in ``problem``."""
    if not isinstance(content, dict) or content.get("type") != "action":
        return None
    req = content.get("req")
    if not isinstance(req, (str, int)) or isinstance(req, bool):
        return None
    action = Action(content.get("action"), req, content=content)
    seq = content.get("seq", -1)
    view = content.get("view", "")
    state = content.get("state", {})
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < -1:
        action.problem = f"seq: expected a non-negative integer, got {seq!r:.80}"
    elif not isinstance(view, str) or len(view) > 64:
        action.problem = f"view: expected a short text, got {view!r:.80}"
    elif not isinstance(state, dict):
        action.problem = f"state: expected an object, got {state!r:.80}"
    elif unknown := sorted(set(state) - set(FRONTEND_KEYS)):
        action.problem = (
            f"state: unknown keys {unknown!r:.120}; expected some of {list(FRONTEND_KEYS)}"
        )
    else:
        action.seq, action.view, action.state = seq, view, state
    return action
