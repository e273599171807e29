"""The rules of steering a work: one pure function, whoever steers.

:func:`command_events` takes a command (pause, resume, signal, a breakpoint set or
cleared, an edit, a cancel, a retried compensation, a resolution) and the work's
state, and returns the events that carry it out, or raises why it may not be done
now. The local :class:`engine.Runtime` calls it, and so will the node that holds a
work when commands reach it through the store: no rule of steering is written twice.

Rejections are the engine's errors: :class:`~engine.errors.WorkStateError` when the
command does not fit the work's status (the message names the status),
``ValueError``/``TypeError`` naming the field for a bad value, ``KeyError`` for an
unknown breakpoint. Nothing is recorded for a rejected command.

>>> from engine.state import WorkState
>>> state = WorkState(work_id="w1", status="running")
>>> [e.type for e in command_events(None, state, Command(kind="pause", by="ann"))]
['work.paused']
>>> command_events(None, state, Command(kind="resume"))
Traceback (most recent call last):
...
engine.errors.WorkStateError: work w1 is not paused; cannot resume it
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import events as ev
from .breakpoints import Breakpoint
from .context import json_problem, shown
from .definitions import MISSING
from .errors import ExpressionError, WorkStateError
from .events import Event
from .plan import Plan
from .state import WorkState

__all__ = ["COMMANDS", "STEPPING", "Command", "check_json", "check_text", "command_data",
           "command_events", "command_from_data"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """One steering command: its ``kind`` (one of :data:`COMMANDS`), who sent it, why,
    and the arguments of its kind (``name``/``payload`` of a signal, ``breakpoint`` or
    ``id``, ``path`` with ``output`` or ``input`` for an edit, ``compensate``)."""

    kind: str
    by: str = ""
    reason: str = ""
    args: Mapping[str, Any] = field(default_factory=dict)


def check_text(value: object, what: str) -> str:
    """``value`` if it is a string, else a ``TypeError`` naming ``what``."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {shown(value)}")
    return value


def check_json(value: object, what: str) -> None:
    """A ``ValueError`` naming ``what`` when ``value`` cannot be stored as JSON."""
    problem = json_problem(value)
    if problem is not None:
        raise ValueError(f"{what} is not JSON-serialisable: {problem}: {shown(value)}")


def _alive(state: WorkState, what: str) -> None:
    if state.terminal:
        raise WorkStateError(f"work {state.work_id} is {state.status}; cannot {what} it")


def _pause(plan: Plan | None, state: WorkState, command: Command) -> list[Event]:
    _alive(state, "pause")
    if state.paused:
        return []  # paused already: nothing to do
    return [Event(type=ev.WORK_PAUSED, payload={
        "reason": "requested", "by": command.by, "note": command.reason})]


def _resume(plan: Plan | None, state: WorkState, command: Command) -> list[Event]:
    _alive(state, "resume")
    if not state.paused:
        raise WorkStateError(f"work {state.work_id} is not paused; cannot resume it")
    return [Event(type=ev.WORK_RESUMED, payload={"by": command.by})]


def _signal(plan: Plan | None, state: WorkState, command: Command) -> list[Event]:
    name = command.args.get("name")
    if not check_text(name, "a signal's name"):
        raise ValueError("a signal's name must not be empty")
    payload = command.args.get("payload")
    check_json(payload, f"the payload of signal {name!r}")
    _alive(state, f"signal {name!r} to")
    return [Event(type=ev.SIGNAL_RECEIVED, payload={"name": name, "payload": payload})]


def _set_breakpoint(plan: Plan | None, state: WorkState, command: Command) -> list[Event]:
    breakpoint = command.args.get("breakpoint")
    if isinstance(breakpoint, dict):  # stored, and unreadable: see command_from_data
        breakpoint = Breakpoint.from_dict(breakpoint)
    if not isinstance(breakpoint, Breakpoint):
        raise TypeError(f"a breakpoint must be a Breakpoint, got {shown(breakpoint)}")
    _alive(state, "set a breakpoint on")
    return [Event(type=ev.WORK_BREAKPOINT_SET, payload=breakpoint.to_dict())]


def _clear_breakpoint(plan: Plan | None, state: WorkState, command: Command) -> list[Event]:
    ident = command.args.get("id")
    if ident not in state.breakpoints:
        raise KeyError(f"work {state.work_id} has no breakpoint {ident!r}")
    return [Event(type=ev.WORK_BREAKPOINT_CLEARED, payload={"id": ident})]


def _edit(plan: Plan | None, state: WorkState, command: Command) -> list[Event]:
    by, reason = command.by, command.reason
    path = check_text(command.args.get("path"), "path")
    output = command.args.get("output", MISSING)
    inp = command.args.get("input", MISSING)
    for label, value in (("output", output), ("input", inp)):
        if value is not MISSING:
            check_json(value, f"the edited {label} of stage {path!r}")
    _alive(state, "edit")
    if not state.paused:
        raise WorkStateError(f"work {state.work_id} must be paused to be edited")
    if (output is MISSING) == (inp is MISSING):
        raise ValueError("edit exactly one of output= or input=")
    if not by or not reason:
        raise ValueError("an edit needs who made it (by=) and why (reason=)")
    if plan is not None:
        try:
            plan.info(path)
        except KeyError:
            raise ValueError(f"saga {state.saga!r} has no stage at path {path!r}") from None
    if output is not MISSING:
        st = state.stages.get(path)
        if st is None or st.status != "completed":
            raise WorkStateError(
                f"stage {path!r} of work {state.work_id} has no recorded output to edit")
        target, value, previous = "output", output, st.output
    else:
        if path in state.stages:
            raise WorkStateError(
                f"stage {path!r} of work {state.work_id} has started; its input is recorded")
        target, value, previous = "input", inp, state.input_overrides.get(path)
    return [Event(type=ev.WORK_EDITED, payload={
        "by": by, "reason": reason, "target": target, "path": path, "value": value,
        "previous": previous})]


def _cancel(plan: Plan | None, state: WorkState, command: Command) -> list[Event]:
    _alive(state, "cancel")
    by = command.by
    error = {"type": "Cancelled", "message": command.reason or "cancelled",
             "retryable": False, "by": by}
    found: list[Event] = []
    if state.paused:
        found.append(Event(type=ev.WORK_RESUMED, payload={"by": by}))
    if not command.args.get("compensate", True) or state.status == "pending":
        found.append(Event(type=ev.WORK_CANCELLED, payload={"error": error}))
    elif state.phase == "forward":
        found.append(Event(type=ev.WORK_COMPENSATING, payload={
            "failure": {"path": "", "error": error}, "cancelled": True}))
    return found


def _needs_compensation_failed(state: WorkState) -> None:
    if state.status != "compensation_failed":
        raise WorkStateError(f"work {state.work_id} is {state.status}, "
                             "not compensation_failed")


def _retry_compensation(plan: Plan | None, state: WorkState,
                        command: Command) -> list[Event]:
    _needs_compensation_failed(state)
    return [Event(type=ev.WORK_COMPENSATION_RETRIED, payload={"by": command.by})]


def _step(plan: Plan | None, state: WorkState, command: Command) -> list[Event]:
    """Stepping is done by whoever holds the work (it runs user code): the rule only says
    whether it may be stepped now. ``mstep`` takes ``until`` (breakpoints) and
    ``max_steps``."""
    what = "step" if command.kind == "step" else "multi-step"
    until = command.args.get("until", ())
    if isinstance(until, list):  # stored, and unreadable: see command_from_data
        until = [Breakpoint.from_dict(b) if isinstance(b, dict) else b for b in until]
    if not isinstance(until, list | tuple) or not all(isinstance(b, Breakpoint) for b in until):
        raise TypeError(f"until must be a list of Breakpoints, got {shown(until)}")
    most = command.args.get("max_steps")
    if most is not None and (isinstance(most, bool) or not isinstance(most, int) or most < 1):
        raise ValueError(f"max_steps must be a whole number >= 1, got {most!r}")
    _alive(state, what)
    if not state.paused:
        raise WorkStateError(f"work {state.work_id} is {state.display_status}; pause it "
                             f"before you {what} it")
    return []


def _update(plan: Plan | None, state: WorkState, command: Command) -> list[Event]:
    """A new priority (any time before the end), a new input (only before the work
    started: after, it is recorded in what ran)."""
    args = command.args
    unknown = sorted(set(args) - {"priority", "input"})
    if unknown:
        raise ValueError(f"a work's update may change priority or input, not {unknown[0]!r}")
    if not args:
        raise ValueError("an update needs a priority or an input")
    payload: dict[str, Any] = {"by": command.by}
    if "priority" in args:
        priority = args["priority"]
        if isinstance(priority, bool) or not isinstance(priority, int) or \
                not -1_000_000 <= priority <= 1_000_000:
            raise ValueError(f"priority must be a whole number from -1000000 to 1000000, "
                             f"got {priority!r}")
        payload.update(priority=priority, previous_priority=state.priority)
    if "input" in args:
        value = args["input"]
        check_json(value, "the work's input")
        if plan is not None and plan.saga.input_schema is not None:
            from .calls import schema_problem  # jsonschema only when a schema is there

            problem = schema_problem(plan.saga.input_schema, value)
            if problem is not None:
                raise ValueError(f"input of saga {state.saga!r} does not match its schema: "
                                 f"{problem}")
        payload.update(input=value, previous_input=state.input)
    _alive(state, "update")
    if "input" in args and (state.status != "pending" or state.stages):
        raise WorkStateError(f"work {state.work_id} is {state.display_status}: it has "
                             "started, its input is recorded; only a queued work's input "
                             "may change")
    return [Event(type=ev.WORK_UPDATED, payload=payload)]


def _resolve(plan: Plan | None, state: WorkState, command: Command) -> list[Event]:
    _needs_compensation_failed(state)
    return [Event(type=ev.WORK_RESOLVED, payload={"by": command.by,
                                                  "reason": command.reason})]


_RULES: dict[str, Callable[[Plan | None, WorkState, Command], list[Event]]] = {
    "pause": _pause,
    "resume": _resume,
    "signal": _signal,
    "set_breakpoint": _set_breakpoint,
    "clear_breakpoint": _clear_breakpoint,
    "edit": _edit,
    "cancel": _cancel,
    "retry_compensation": _retry_compensation,
    "resolve": _resolve,
    "update": _update,
    "step": _step,
    "mstep": _step,
}

STEPPING = frozenset({"step", "mstep"})
"""The commands whose work (running stages) only the work's holder can do."""

COMMANDS = frozenset(_RULES)
"""The kinds of command :func:`command_events` knows."""


def command_events(plan: Plan | None, state: WorkState, command: Command) -> list[Event]:
    """The events that carry out ``command`` on a work in ``state`` (none: nothing to
    do), or the error that says why it may not be done. Pure: it reads the state and
    the saga's plan (``None`` skips the checks that need the definition) and records
    nothing."""
    rule = _RULES.get(command.kind)
    if rule is None:
        raise ValueError(f"unknown command {command.kind!r}; expected one of "
                         f"{sorted(_RULES)}")
    check_text(command.by, "by")
    check_text(command.reason, "reason")
    return rule(plan, state, command)


def command_data(command: Command) -> dict[str, Any]:
    """``command`` as JSON-ready data (breakpoints as their dicts), to be stored in the
    inbox; a ``ValueError`` naming what cannot be stored."""
    args: dict[str, Any] = {}
    for key, value in command.args.items():
        if isinstance(value, Breakpoint):
            value = value.to_dict()
        elif key == "until" and isinstance(value, list | tuple):
            value = [b.to_dict() if isinstance(b, Breakpoint) else b for b in value]
        args[key] = value
    check_json(args, f"the arguments of command {command.kind!r}")
    return {"kind": command.kind, "by": command.by, "reason": command.reason, "args": args}


def _read_breakpoint(data: dict[str, Any]) -> Breakpoint | dict[str, Any]:
    try:
        return Breakpoint.from_dict(data)
    except ExpressionError:
        return data


def command_from_data(data: Mapping[str, Any]) -> Command:
    """The :class:`Command` that :func:`command_data` stored. A breakpoint that cannot
    be read back (a condition from before CEL that has no CEL counterpart) stays a
    dict: the command's rule reads it again and rejects the command, saying why."""
    args = dict(data.get("args") or {})
    if isinstance(args.get("breakpoint"), dict):
        args["breakpoint"] = _read_breakpoint(args["breakpoint"])
    if isinstance(args.get("until"), list):
        args["until"] = [_read_breakpoint(b) if isinstance(b, dict) else b
                         for b in args["until"]]
    return Command(kind=str(data["kind"]), by=str(data.get("by", "")),
                   reason=str(data.get("reason", "")), args=args)
