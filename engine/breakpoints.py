"""Breakpoints: where stepping stops.

A breakpoint matches *before* an event is recorded (only events the engine
records on its own decision: starts, schedules, completions of composites; the
result of user code exists only once it ran) or *after* any event, by event type
glob, stage path glob, and optionally a condition over the state and the event in
the small expression language of :mod:`engine.expressions` (parsed, never
``eval``). The condition sees ``event`` (``type``, ``path``, ``attempt``,
``payload``) and ``state`` (``status``, ``phase``, ``input``, ``output``,
``failure``, and ``stages[path]`` with ``status``, ``attempt``, ``input``,
``output``, ``error``).

>>> bp = Breakpoint(event="stage.transaction.*", path="charge", condition="event.attempt >= 2")
>>> bp.to_dict()["condition"]
'event.attempt >= 2'
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from .errors import ExpressionError
from .events import Event
from .expressions import Expression, parse_expression
from .state import WorkState

__all__ = ["Breakpoint", "state_view"]


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
            object.__setattr__(self, "_expression", parse_expression(self.condition))

    def matches(self, when: str, event: Event, state: WorkState) -> bool:
        if when != self.when:
            return False
        if not fnmatchcase(event.type, self.event) or not fnmatchcase(event.path, self.path):
            return False
        if self._expression is None:
            return True
        return bool(self._expression.evaluate({"event": event_view(event),
                                               "state": state_view(state)}))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "event": self.event, "path": self.path, "when": self.when,
                "condition": self.condition}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Breakpoint:
        return cls(id=data["id"], event=data.get("event", "*"), path=data.get("path", "*"),
                   when=data.get("when", "after"), condition=data.get("condition"))


def event_view(event: Event) -> dict[str, Any]:
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
