"""Breakpoints: where stepping stops.

A breakpoint matches *before* an event is recorded (only events the engine
records on its own decision: starts, schedules, completions of composites; the
result of user code exists only once it ran) or *after* any event, by event type
glob, stage path glob, and optionally a condition over the state and the event in
CEL, the Common Expression Language (:mod:`engine.expressions`; compiled, never
``eval``). The condition sees ``event`` (``type``, ``path``, ``attempt``,
``payload``) and ``state`` (``work_id``, ``saga``, ``status``, ``phase``,
``input``, ``output``, ``failure``, ``seq``, and ``stages[path]`` with
``status``, ``attempt``, ``input``, ``output``, ``error``), and nothing else.

A condition is checked when the breakpoint is made (an
:class:`~engine.errors.ExpressionError` naming the breakpoint, the condition and
the column). One that fails on the data, as CEL does on a missing key or on
operands of the wrong types, does not match: ``state.stages["charge"].status ==
"failed"`` does not match before ``charge`` has started. Test for a key with
``has()`` or ``in`` (``"charge" in state.stages && ...``). A condition that gives
anything but ``true`` does not match either.

>>> bp = Breakpoint(event="stage.transaction.*", path="charge", condition="event.attempt >= 2")
>>> bp.to_dict()["condition"]
'event.attempt >= 2'

Breakpoints are stored as :meth:`Breakpoint.to_dict` gives them, with
``"language": "cel"``; one stored without it has a condition of the language
before CEL, which :meth:`Breakpoint.from_dict` carries over
(:mod:`engine.legacy_conditions`) or refuses.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from .errors import ExpressionError
from .events import Event
from .expressions import Expression, parse_expression
from .legacy_conditions import to_cel
from .state import WorkState

__all__ = ["LANGUAGE", "VARIABLES", "Breakpoint", "event_view", "state_view"]

LANGUAGE = "cel"
"""The language of the conditions :meth:`Breakpoint.to_dict` stores."""

VARIABLES = ("event", "state")
"""The variables a condition may read."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Breakpoint:
    """Stop when an event of type ``event`` at stage path ``path`` is about to be/was recorded."""

    event: str = "*"
    path: str = "*"
    when: str = "after"
    condition: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    _expression: Expression | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.when not in ("before", "after"):
            raise ExpressionError(
                f"breakpoint {self.id}: when must be 'before' or 'after', got {self.when!r}"
            )
        for label, value in (("event", self.event), ("path", self.path)):
            if not isinstance(value, str):
                raise ExpressionError(f"breakpoint {self.id}: {label} must be a glob string")
        if self.condition is not None:
            try:
                expression = parse_expression(self.condition, names=VARIABLES)
            except ExpressionError as exc:
                raise ExpressionError(f"breakpoint {self.id}: condition {exc}") from None
            object.__setattr__(self, "_expression", expression)

    def matches(self, when: str, event: Event, state: WorkState) -> bool:
        """Whether this breakpoint stops at ``event``, ``when`` (``"before"`` or
        ``"after"``) it is recorded, with the work in ``state``."""
        if when != self.when:
            return False
        if not fnmatchcase(event.type, self.event) or not fnmatchcase(event.path, self.path):
            return False
        expression = self._expression
        if expression is None:
            return True
        names = expression.names()  # build only the views the condition reads
        variables: dict[str, Any] = {}
        if "event" in names:
            variables["event"] = event_view(event)
        if "state" in names:
            variables["state"] = state_view(state)
        try:
            return expression.evaluate(variables) is True
        except ExpressionError:
            return False  # failed on the data (a missing key...): no match, as documented

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "event": self.event, "path": self.path, "when": self.when,
                "condition": self.condition, "language": LANGUAGE}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Breakpoint:
        """The breakpoint :meth:`to_dict` stored. A condition stored without
        ``"language": "cel"`` was written before conditions were CEL: it is carried
        over (:func:`engine.legacy_conditions.to_cel`), or refused with an
        :class:`~engine.errors.ExpressionError` naming the breakpoint and the condition.

        >>> Breakpoint.from_dict({"id": "bp1", "condition": "not event.attempt > 1"}).condition
        '!(event.attempt > 1)'
        """
        condition = data.get("condition")
        language = data.get("language")
        if condition is not None and language is None:
            try:
                carried = to_cel(condition)
                parse_expression(carried, names=VARIABLES)
            except ExpressionError as exc:
                raise ExpressionError(
                    f"breakpoint {data['id']}: condition {condition!r} was written before "
                    f"conditions were CEL and cannot be carried over: {exc}; set the "
                    f"breakpoint again with a CEL condition") from None
            condition = carried
        elif condition is not None and language != LANGUAGE:
            raise ExpressionError(f"breakpoint {data['id']}: condition {condition!r} is in "
                                  f"language {language!r}; expected {LANGUAGE!r}")
        return cls(id=data["id"], event=data.get("event", "*"), path=data.get("path", "*"),
                   when=data.get("when", "after"), condition=condition)


def event_view(event: Event) -> dict[str, Any]:
    """A plain-data view of an event, as breakpoint conditions see it."""
    return {"type": event.type, "path": event.path, "attempt": event.attempt,
            "payload": dict(event.payload)}


def state_view(state: WorkState) -> dict[str, Any]:
    """A plain-data view of a work's state, as breakpoint conditions see it."""
    return {
        "work_id": state.work_id,
        "saga": state.saga,
        "status": state.display_status,
        "phase": state.phase,
        "input": state.input,
        "output": state.output,
        "failure": state.failure,
        "seq": state.seq,
        "stages": {
            path: {"status": st.status, "attempt": st.attempt, "input": st.input,
                   "output": st.output, "error": st.error}
            for path, st in state.stages.items()
        },
    }
