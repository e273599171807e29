"""The state of a work, and ``apply``: the only rule that changes it.

``apply(state, event)`` is pure: it returns a new state and leaves its argument
untouched. ``evolve(state, event)`` is the same rule done in place, for the one
owner of a state (a runner) that does not need the old value any more; it is
what makes the hot path cheap. Both only read the event and its envelope, never
the clock or the saga definition, so replaying a stream rebuilds the same state
on any machine.

>>> from engine.events import Event, RecordedEvent
>>> s = replay([RecordedEvent(work_id="w1", seq=1, time=0.0,
...     event=Event(type="work.created", payload={"saga": "order", "input": 1}))])
>>> s.status, s.saga, s.input
('pending', 'order', 1)
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import events as ev
from .errors import CorruptEventError
from .events import RecordedEvent

__all__ = [
    "TERMINAL",
    "StageState",
    "WorkState",
    "apply",
    "evolve",
    "join_path",
    "parent_path",
    "replay",
]

TERMINAL = frozenset({"completed", "failed", "compensation_failed", "cancelled"})


def join_path(parent: str, name: str, index: int | None = None) -> str:
    """The path of child ``name`` of ``parent``; ``index`` marks a loop iteration or map item."""
    head = parent if index is None else f"{parent}[{index}]"
    return f"{head}/{name}" if head else name


def parent_path(path: str) -> str | None:
    """The path of the stage that contains ``path`` (``""`` is the root; it has none)."""
    if not path:
        return None
    cut = path.rfind("/")
    if cut < 0:
        return ""
    head = path[:cut]
    if head.endswith("]"):
        head = head[: head.rfind("[")]
    return head


def item_index(path: str) -> int:
    """The ``[i]`` index of a map item or loop iteration path such as ``ship[7]/pack``."""
    cut = path.rfind("/")
    head = path[:cut]
    return int(head[head.rfind("[") + 1 : -1])


@dataclass(slots=True, kw_only=True)
class StageState:
    """What is known of one stage path of a work."""

    path: str
    status: str = "running"  # running, completed, failed, compensated
    input: Any = None
    output: Any = None
    error: dict[str, Any] | None = None
    attempt: int = 0
    call: str | None = None  # the user call in flight: transaction, guard, condition, compensation
    started_at: float | None = None
    finished_at: float | None = None
    not_before: float | None = None  # a retry (of transaction or compensation) is due then
    done: bool = False  # the transaction completed: its effects exist and may need undoing
    order: int = -1  # completion order among all stages of the work
    # guards
    guard_when: str | None = None
    guard: int = -1
    vetoed: bool = False
    # compensation
    comp_mode: str | None = None  # cleanup (of this stage's own failure) or rollback
    comp_attempt: int = 0
    comp_error: dict[str, Any] | None = None
    comp_outcome: str | None = None
    comp_output: Any = None
    cleaned: bool = False  # its compensation already ran as clean-up; rollback skips it
    # composites
    started_children: int = 0
    completed_children: int = 0
    running: dict[str, None] = field(default_factory=dict)
    failed_child: str | None = None
    cond_what: str | None = None
    items: list[Any] | None = None
    choice: str | None = None
    checked: int = 0  # loop: iterations whose condition was evaluated
    until: bool = False
    # waits and timers
    deadline: float | None = None
    timed_out: bool = False

    def copy(self) -> StageState:
        clone = copy.copy(self)
        clone.running = dict(self.running)
        return clone


@dataclass(slots=True, kw_only=True)
class WorkState:
    """What is known of one work, rebuilt from its events alone."""

    work_id: str = ""
    saga: str = ""
    status: str = "pending"  # pending, running, completed, failed, compensation_failed, cancelled
    paused: bool = False
    phase: str = "forward"  # forward, compensating
    input: Any = None
    output: Any = None
    failure: dict[str, Any] | None = None  # the original reason of the failure, never lost
    error: dict[str, Any] | None = None  # why the work ended badly (may add to ``failure``)
    aborted: bool = False
    cancelling: bool = False
    resolved: bool = False
    seq: int = 0
    created_at: float | None = None
    updated_at: float | None = None
    priority: int = 0  # worker nodes claim higher priorities first
    start_at: float | None = None  # a delayed work: not claimed before this time
    stages: dict[str, StageState] = field(default_factory=dict)
    open_calls: dict[str, str] = field(default_factory=dict)
    signals: list[dict[str, Any]] = field(default_factory=list)
    breakpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    stopped_at: dict[str, Any] | None = None
    resume_past: dict[str, Any] | None = None
    input_overrides: dict[str, Any] = field(default_factory=dict)
    edits: list[dict[str, Any]] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)  # path -> why its call (or Wait) waits
    retries_used: dict[str, int] = field(default_factory=dict)
    completions: int = 0
    compensated: list[str] = field(default_factory=list)
    compensation_retries: int = 0  # how often a person retried a failed compensation
    observations: dict[str, Any] = field(default_factory=dict)
    timers: dict[str, float] = field(default_factory=dict)  # path -> when it is due
    stages_total: int = 0  # stages of the root saga, for progress
    parent_work_id: str | None = None  # set when this work was forked (rewound) from another
    forked_at_seq: int | None = None
    commands_applied: int = 0  # the number of the last inbox command taken (applied or not)
    started_at: float | None = None  # when it started running
    worker: str | None = None  # the worker that recorded its latest event ("node/name")
    definition: str | None = None  # the hash of the saga's definition it started with
    definition_version: int | None = None  # that definition's version (Saga.version)
    trace: dict[str, str] | None = None  # the trace context it was created in (engine.tracing)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def display_status(self) -> str:
        """The status people see: ``paused`` while paused and not finished."""
        if self.paused and not self.terminal:
            return "paused"
        if self.waiting and not self.terminal:
            return "waiting"
        return self.status

    def copy(self) -> WorkState:
        """A deep copy: the result shares nothing mutable with this state."""
        clone = copy.copy(self)
        clone.stages = {p: s.copy() for p, s in self.stages.items()}
        clone.open_calls = dict(self.open_calls)
        clone.signals = list(self.signals)
        clone.breakpoints = dict(self.breakpoints)
        clone.waiting = dict(self.waiting)
        clone.input_overrides = dict(self.input_overrides)
        clone.edits = list(self.edits)
        clone.retries_used = dict(self.retries_used)
        clone.compensated = list(self.compensated)
        clone.observations = dict(self.observations)
        clone.timers = dict(self.timers)
        return clone

    @property
    def wake_at(self) -> float | None:
        """When the earliest timer of the work (retry, wait timeout, sleep) is due."""
        return min(self.timers.values()) if self.timers else None


def apply(state: WorkState, recorded: RecordedEvent) -> WorkState:
    """The state after ``recorded``; ``state`` itself is left as it was."""
    return evolve(state.copy(), recorded)


def replay(stream: Iterable[RecordedEvent], state: WorkState | None = None) -> WorkState:
    """The state rebuilt from a stream of events (optionally on top of ``state``, a snapshot)."""
    current = WorkState() if state is None else state.copy()
    for recorded in stream:
        evolve(current, recorded)
    return current


# ------------------------------------------------------------------ evolve


def _stage(state: WorkState, path: str, time: float, payload: Any) -> StageState:
    st = state.stages.get(path)
    if st is None:
        st = StageState(path=path, started_at=time)
        if "input" in payload:
            st.input = payload["input"]
        state.stages[path] = st
        parent = parent_path(path)
        if parent is not None:
            pst = state.stages.get(parent)
            if pst is not None:
                pst.running[path] = None
                pst.started_children += 1
    return st


def _finish(state: WorkState, st: StageState, status: str, time: float) -> None:
    state.timers.pop(st.path, None)
    state.waiting.pop(st.path, None)  # a Wait's signal, had it not come
    st.status = status
    st.finished_at = time
    st.order = state.completions
    state.completions += 1
    parent = parent_path(st.path)
    if parent is not None:
        pst = state.stages.get(parent)
        if pst is not None:
            pst.running.pop(st.path, None)
            if status == "completed":
                pst.completed_children += 1
            elif pst.failed_child is None:
                pst.failed_child = st.path


def _open(state: WorkState, st: StageState, call: str) -> None:
    st.call = call
    state.open_calls[st.path] = call


def _close(state: WorkState, st: StageState) -> None:
    st.call = None
    state.open_calls.pop(st.path, None)
    state.waiting.pop(st.path, None)


def _stage_waiting(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    state.waiting[r.event.path] = str(p.get("reason", ""))


def evolve(state: WorkState, recorded: RecordedEvent) -> WorkState:
    """Apply ``recorded`` to ``state`` in place and return it."""
    event = recorded.event
    kind = event.type
    payload = event.payload
    time = recorded.time
    if recorded.seq != state.seq + 1:
        raise CorruptEventError(
            f"event seq {recorded.seq} ({kind}) of work {recorded.work_id!r} follows seq "
            f"{state.seq}: " + ("events are missing" if recorded.seq > state.seq + 1 else
                                "the stream goes back"))
    state.seq = recorded.seq
    state.updated_at = time
    if recorded.worker is not None:
        state.worker = recorded.worker
    if state.resume_past is not None and kind != ev.WORK_RESUMED:
        state.resume_past = None
    handler = _HANDLERS.get(kind)
    if handler is None:
        raise CorruptEventError(f"event seq {recorded.seq} of work {recorded.work_id!r} has "
                                f"unknown type {kind!r}")
    for key in _REQUIRED.get(kind, ()):
        if key not in payload:
            raise CorruptEventError(f"event seq {recorded.seq} ({kind}) of work "
                                    f"{recorded.work_id!r} has no {key!r} in its payload")
    try:
        handler(state, recorded, payload, time)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        path = event.path
        if isinstance(exc, KeyError) and exc.args and exc.args[0] == path:
            what = f"its stage {path!r} has not started"
        elif isinstance(exc, KeyError):
            what = f"its payload has no {exc.args[0]!r}" if exc.args else "a key is missing"
        else:
            what = f"{type(exc).__name__}: {exc}"
        raise CorruptEventError(f"event seq {recorded.seq} ({kind}) of work "
                                f"{recorded.work_id!r} cannot be applied: {what}") from exc
    return state


def _work_created(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    state.work_id = r.work_id
    state.saga = p["saga"]
    state.input = p.get("input")
    state.paused = bool(p.get("paused", False))
    state.created_at = t
    state.stages_total = int(p.get("stages", 0))
    state.priority = int(p.get("priority", 0))
    state.start_at = p.get("start_at")
    state.definition = p.get("definition")
    version = p.get("definition_version")
    state.definition_version = version if isinstance(version, int) else None
    state.trace = p.get("trace")
    fork = p.get("forked_from")
    if fork is not None:
        state.parent_work_id = fork["work_id"]
        state.forked_at_seq = fork["seq"]
    for bp in p.get("breakpoints", ()):
        state.breakpoints[bp["id"]] = bp


def _work_started(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    state.status = "running"
    if state.started_at is None:
        state.started_at = t
    state.stages[""] = StageState(path="", input=state.input, started_at=t)


def _work_paused(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    state.paused = True
    # where it stopped, with the seq of the pause: continuing steps past that event
    state.stopped_at = {**p, "paused_seq": r.seq} if p else None


def _work_resumed(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    state.paused = False
    state.resume_past = state.stopped_at.get("pending") if state.stopped_at else None
    state.stopped_at = None


def _work_completed(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    state.status = "completed"
    state.output = p.get("output")
    root = state.stages.get("")
    if root is not None:
        root.status = "completed"
        root.output = state.output
        root.finished_at = t


def _work_compensating(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    state.phase = "compensating"
    # a Wait left open waits for nothing now (the calls still waiting for a gate do)
    state.waiting = {path: why for path, why in state.waiting.items()
                     if path in state.open_calls}
    if p.get("cancelled"):
        state.cancelling = True
    if state.failure is None:
        state.failure = dict(p["failure"])


def _work_failed(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    state.status = "failed"
    state.error = p.get("error")


def _work_compensation_failed(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    state.status = "compensation_failed"
    state.error = p.get("error")
    if state.failure is None and p.get("failure") is not None:
        # a clean-up's own compensation failed before the work compensated anything
        state.failure = dict(p["failure"])


def _work_compensation_retried(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    state.status = "running"
    state.error = None
    state.compensation_retries += 1
    if state.phase == "forward":
        # a clean-up's compensation failed: the stage goes on, its failure is not the
        # work's (yet); the work's failure is set anew if it fails
        state.failure = None
    for st in state.stages.values():
        if st.comp_error is not None and st.call is None and st.status != "compensated":
            st.comp_attempt = 0
            st.comp_error = None
            st.not_before = None
            state.timers.pop(st.path, None)


def _work_resolved(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    state.status = "failed"
    state.resolved = True


def _work_cancelled(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    state.status = "cancelled"
    state.error = p.get("error")


def _work_edited(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    state.edits.append(dict(p))
    target = p["target"]
    if target == "output":
        state.stages[p["path"]].output = p["value"]
    else:
        state.input_overrides[p["path"]] = p["value"]


def _breakpoint_set(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    state.breakpoints[p["id"]] = dict(p)


def _breakpoint_cleared(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    state.breakpoints.pop(p["id"], None)


def _signal_received(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    state.signals.append({"name": p["name"], "payload": p.get("payload"), "seq": r.seq})


def _work_command(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    if p.get("inherited"):  # copied into a fork from the original's inbox
        return
    number = int(p["number"])
    if number != state.commands_applied + 1:
        raise ValueError(f"command {number} follows command {state.commands_applied}")
    state.commands_applied = number


def _work_updated(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    if "priority" in p:
        state.priority = int(p["priority"])
    if "input" in p:
        state.input = p["input"]


def _stage_started(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    _stage(state, r.event.path, t, p)


def _stage_completed(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    st = _stage(state, r.event.path, t, p)
    st.output = p.get("output")
    if p.get("forward"):
        st.cleaned = True
    signal_seq = p.get("signal_seq")
    if signal_seq is not None:
        state.signals = [s for s in state.signals if s["seq"] != signal_seq]
    _finish(state, st, "completed", t)


def _stage_failed(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    st = _stage(state, r.event.path, t, p)
    st.error = p.get("error")
    _finish(state, st, "failed", t)


def _transaction_started(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    st = _stage(state, r.event.path, t, p)
    st.attempt = r.event.attempt
    st.error = None
    st.vetoed = False
    st.not_before = None
    st.comp_mode = None
    st.comp_outcome = None
    st.comp_attempt = 0
    st.comp_error = None
    st.cleaned = False
    st.guard_when = None
    state.timers.pop(st.path, None)
    _open(state, st, "transaction")


def _transaction_completed(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    st = state.stages[r.event.path]
    _close(state, st)
    st.output = p.get("output")
    st.done = True
    if p.get("final"):
        _finish(state, st, "completed", t)


def _transaction_failed(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    st = state.stages[r.event.path]
    _close(state, st)
    st.error = p.get("error")


def _retry_scheduled(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    st = state.stages[r.event.path]
    st.not_before = p["not_before"]
    state.timers[st.path] = st.not_before
    # every retry budget on the stage's path (older events name only the innermost)
    budgets = p.get("budgets")
    if budgets is None:
        budgets = () if p.get("budget") is None else (p["budget"],)
    used = state.retries_used
    for budget in budgets:
        used[budget] = used.get(budget, 0) + 1


def _guard_started(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    st = _stage(state, r.event.path, t, p)
    st.guard_when = p["when"]
    st.guard = p["guard"]
    if st.attempt == 0:
        st.attempt = r.event.attempt
    _open(state, st, "guard")


def _guard_completed(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    st = state.stages[r.event.path]
    _close(state, st)
    if not p.get("passed"):
        st.vetoed = True
        st.error = p.get("error")


def _condition_started(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    st = _stage(state, r.event.path, t, p)
    st.cond_what = p["what"]
    _open(state, st, "condition")


def _condition_completed(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    st = state.stages[r.event.path]
    _close(state, st)
    result = p.get("result")
    what = st.cond_what
    if what == "items":
        st.items = list(result)
    elif what == "choose":
        st.choice = result
    else:
        st.checked += 1
        st.until = bool(result)


def _condition_failed(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    st = state.stages[r.event.path]
    _close(state, st)
    st.error = p.get("error")


def _compensation_started(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    st = state.stages[r.event.path]
    st.comp_mode = p["mode"]
    st.comp_attempt = r.event.attempt
    st.comp_error = None
    st.not_before = None
    state.timers.pop(st.path, None)
    _open(state, st, "compensation")


def _compensation_completed(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    st = state.stages[r.event.path]
    _close(state, st)
    outcome = p.get("outcome", "done")
    st.comp_outcome = outcome
    if outcome == "abort":
        state.aborted = True
    if st.comp_mode == "rollback":
        st.status = "compensated"
        state.compensated.append(st.path)
    else:
        st.cleaned = True
        st.comp_output = p.get("output")


def _compensation_failed(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    st = state.stages[r.event.path]
    _close(state, st)
    st.comp_error = p.get("error")


def _wait_started(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    st = _stage(state, r.event.path, t, p)
    # the work shows waiting until the signal comes (or the wait times out)
    state.waiting[st.path] = f"signal {p.get('signal', '')}"
    timeout = p.get("timeout")
    st.deadline = None if timeout is None else t + timeout
    if st.deadline is not None:
        state.timers[st.path] = st.deadline


def _wait_timed_out(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    st = state.stages[r.event.path]
    st.timed_out = True
    state.timers.pop(st.path, None)
    st.error = p.get("error")


def _sleep_started(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    st = _stage(state, r.event.path, t, p)
    st.deadline = t + p["seconds"]
    state.timers[st.path] = st.deadline


def _observer_produced(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    state.observations[f"{r.event.path}:{p['observer']}"] = p.get("value")


def _observer_failed(state: WorkState, r: RecordedEvent, p: Any, t: float) -> None:
    pass  # recorded for people to see; it changes nothing the rules look at


_HANDLERS = {
    ev.WORK_CREATED: _work_created,
    ev.WORK_STARTED: _work_started,
    ev.WORK_PAUSED: _work_paused,
    ev.WORK_RESUMED: _work_resumed,
    ev.WORK_COMPLETED: _work_completed,
    ev.WORK_COMPENSATING: _work_compensating,
    ev.WORK_FAILED: _work_failed,
    ev.WORK_COMPENSATION_FAILED: _work_compensation_failed,
    ev.WORK_COMPENSATION_RETRIED: _work_compensation_retried,
    ev.WORK_RESOLVED: _work_resolved,
    ev.WORK_CANCELLED: _work_cancelled,
    ev.WORK_EDITED: _work_edited,
    ev.WORK_BREAKPOINT_SET: _breakpoint_set,
    ev.WORK_BREAKPOINT_CLEARED: _breakpoint_cleared,
    ev.SIGNAL_RECEIVED: _signal_received,
    ev.WORK_COMMAND: _work_command,
    ev.WORK_UPDATED: _work_updated,
    ev.STAGE_STARTED: _stage_started,
    ev.STAGE_COMPLETED: _stage_completed,
    ev.STAGE_FAILED: _stage_failed,
    ev.TRANSACTION_STARTED: _transaction_started,
    ev.STAGE_WAITING: _stage_waiting,
    ev.TRANSACTION_COMPLETED: _transaction_completed,
    ev.TRANSACTION_FAILED: _transaction_failed,
    ev.RETRY_SCHEDULED: _retry_scheduled,
    ev.GUARD_STARTED: _guard_started,
    ev.GUARD_COMPLETED: _guard_completed,
    ev.CONDITION_STARTED: _condition_started,
    ev.CONDITION_COMPLETED: _condition_completed,
    ev.CONDITION_FAILED: _condition_failed,
    ev.COMPENSATION_STARTED: _compensation_started,
    ev.COMPENSATION_COMPLETED: _compensation_completed,
    ev.COMPENSATION_FAILED: _compensation_failed,
    ev.WAIT_STARTED: _wait_started,
    ev.WAIT_TIMED_OUT: _wait_timed_out,
    ev.SLEEP_STARTED: _sleep_started,
    ev.OBSERVER_PRODUCED: _observer_produced,
    ev.OBSERVER_FAILED: _observer_failed,
}
# what an event of these types must carry: without it, replaying would make up a value
_REQUIRED: dict[str, tuple[str, ...]] = {
    ev.WORK_CREATED: ("saga",),
    ev.WORK_COMMAND: ("number", "kind", "outcome"),
    ev.WORK_COMPLETED: ("output",),
    ev.STAGE_COMPLETED: ("output",),
    ev.STAGE_FAILED: ("error",),
    ev.TRANSACTION_COMPLETED: ("output",),
    ev.TRANSACTION_FAILED: ("error",),
    ev.COMPENSATION_FAILED: ("error",),
    ev.CONDITION_COMPLETED: ("result",),
    ev.CONDITION_FAILED: ("error",),
}
assert set(_HANDLERS) == ev.EVENT_TYPES, set(ev.EVENT_TYPES) ^ set(_HANDLERS)
