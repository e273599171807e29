"""The event vocabulary of a work.

An :class:`Event` is what happened (a stable type string, a schema version, the
stage path, the attempt and a JSON-serialisable payload); a
:class:`RecordedEvent` is the envelope the log adds around it (work id, seq,
time, worker, global position). Types are plain strings so that stored events
never depend on an import path.

Events after the end: a work's terminal event (``work.completed``,
``work.failed``, ``work.cancelled``, ``work.compensation_failed``) is its last,
with two exceptions. Observers run after the event they observe is committed, so
``stage.observer.produced`` and ``stage.observer.failed`` may follow it (they
change no status and are written without a lease, which ended with the work); and
a person may move a ``compensation_failed`` work on (``work.compensation_retried``,
``work.resolved``); and a command sent to a finished work is taken and rejected
(``work.command``), so its sender learns why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "COMPENSATION_COMPLETED",
    "COMPENSATION_FAILED",
    "COMPENSATION_STARTED",
    "CONDITION_COMPLETED",
    "CONDITION_FAILED",
    "CONDITION_STARTED",
    "EVENT_TYPES",
    "GUARD_COMPLETED",
    "GUARD_STARTED",
    "OBSERVER_FAILED",
    "OBSERVER_PRODUCED",
    "RETRY_SCHEDULED",
    "SIGNAL_RECEIVED",
    "SLEEP_STARTED",
    "STAGE_COMPLETED",
    "STAGE_FAILED",
    "STAGE_STARTED",
    "STAGE_WAITING",
    "TRANSACTION_COMPLETED",
    "TRANSACTION_FAILED",
    "TRANSACTION_STARTED",
    "WAIT_STARTED",
    "WAIT_TIMED_OUT",
    "WORK_BREAKPOINT_CLEARED",
    "WORK_BREAKPOINT_SET",
    "WORK_CANCELLED",
    "WORK_COMMAND",
    "WORK_COMPENSATING",
    "WORK_COMPENSATION_FAILED",
    "WORK_COMPENSATION_RETRIED",
    "WORK_COMPLETED",
    "WORK_CREATED",
    "WORK_EDITED",
    "WORK_FAILED",
    "WORK_PAUSED",
    "WORK_RESOLVED",
    "WORK_RESUMED",
    "WORK_STARTED",
    "WORK_UPDATED",
    "Event",
    "RecordedEvent",
]

# work lifecycle
WORK_CREATED = "work.created"
WORK_STARTED = "work.started"
WORK_PAUSED = "work.paused"
WORK_RESUMED = "work.resumed"
WORK_COMPLETED = "work.completed"
WORK_COMPENSATING = "work.compensating"
WORK_FAILED = "work.failed"
WORK_COMPENSATION_FAILED = "work.compensation_failed"
WORK_COMPENSATION_RETRIED = "work.compensation_retried"
WORK_RESOLVED = "work.resolved"
WORK_CANCELLED = "work.cancelled"
WORK_EDITED = "work.edited"
WORK_BREAKPOINT_SET = "work.breakpoint.set"
WORK_BREAKPOINT_CLEARED = "work.breakpoint.cleared"
SIGNAL_RECEIVED = "signal.received"
# a command of the store's inbox was taken: its number, kind, sender, outcome (applied or
# rejected, with the error) and, for step and mstep, what the stepping did; recorded
# after the events the command caused, in the same commit
WORK_COMMAND = "work.command"
# a person changed a work's priority, or its input before it started
WORK_UPDATED = "work.updated"

# stages
STAGE_STARTED = "stage.started"
STAGE_COMPLETED = "stage.completed"
STAGE_FAILED = "stage.failed"
STAGE_WAITING = "stage.waiting"  # a call waits to be let through (a lock, a rate, a service)
TRANSACTION_STARTED = "stage.transaction.started"
TRANSACTION_COMPLETED = "stage.transaction.completed"
TRANSACTION_FAILED = "stage.transaction.failed"
RETRY_SCHEDULED = "stage.retry.scheduled"
GUARD_STARTED = "stage.guard.started"
GUARD_COMPLETED = "stage.guard.completed"
CONDITION_STARTED = "stage.condition.started"
CONDITION_COMPLETED = "stage.condition.completed"
CONDITION_FAILED = "stage.condition.failed"
COMPENSATION_STARTED = "stage.compensation.started"
COMPENSATION_COMPLETED = "stage.compensation.completed"
COMPENSATION_FAILED = "stage.compensation.failed"
WAIT_STARTED = "stage.wait.started"
WAIT_TIMED_OUT = "stage.wait.timed_out"
SLEEP_STARTED = "stage.sleep.started"
OBSERVER_FAILED = "stage.observer.failed"
OBSERVER_PRODUCED = "stage.observer.produced"

EVENT_TYPES: frozenset[str] = frozenset(
    value for name, value in dict(globals()).items() if name.isupper() and isinstance(value, str)
)

_EMPTY: Mapping[str, Any] = {}


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """What happened to a work: ``type`` is stable, ``payload`` is JSON-serialisable.

    >>> e = Event(type="stage.transaction.started", path="charge", attempt=1, payload={"input": 3})
    >>> e.type, e.version
    ('stage.transaction.started', 1)
    """

    type: str
    path: str = ""
    attempt: int = 0
    payload: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    version: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedEvent:
    """The envelope of an event in a work's stream, ordered by ``(work_id, seq)``."""

    work_id: str
    seq: int
    time: float
    event: Event
    worker: str | None = None
    position: int | None = field(default=None, compare=False)  # set by a store when read

    @property
    def type(self) -> str:
        return self.event.type

    @property
    def path(self) -> str:
        return self.event.path
