"""The mutations on works: create one (``createWork``, ``updateOrCreateWork``, a fork
with ``rewindWork``), change or delete it, and steer it with commands its holder takes
(pause, resume, step, signal, cancel, edit its state, breakpoints, compensation).
Each answers with a typed payload or one of :mod:`graphql_api.results`' errors."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from engine.breakpoints import Breakpoint
from engine.commands import Command
from engine.errors import ExpressionError

from .access import require
from .audit import actor
from .context import client_of, service_of
from .results import (
    Conflict,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    WrongState,
    error_result,
    quota_exceeded,
)
from .service import ApiError, Outcome, check_outcome
from .works import Event, Work, WorkDeleted, work_of

__all__ = ["BreakpointInput", "CommandResult", "CommandTaken", "CreateWorkResult",
           "DeleteWorkResult", "WorkCreated", "cancel_work", "clear_breakpoint", "create_work",
           "delete_work", "edit_work_state", "multi_step_work", "pause_work", "resolve_work",
           "resume_work", "retry_compensation", "rewind_work", "set_breakpoint", "signal_work",
           "step_work", "update_or_create_work", "update_work"]


@strawberry.type
class CommandTaken:
    """A command the work's holder took: its number, what it recorded (``outcome``
    ``applied``; for step and mstep a ``report``) and the work now. ``outcome`` is
    ``pending`` when no holder took it within the wait: it stays in the inbox."""

    number: int
    outcome: str
    report: JSON | None
    event: Event | None
    work: Work | None


@strawberry.type
class WorkCreated:
    work: Work


CommandResult = Annotated[CommandTaken | NotFound | WrongState | InvalidInput | Conflict,
                          strawberry.union("CommandResult")]
DeleteWorkResult = Annotated[WorkDeleted | NotFound | WrongState | InvalidInput,
                             strawberry.union("DeleteWorkResult")]
CreateWorkResult = Annotated[WorkCreated | NotFound | WrongState | InvalidInput | Conflict
                             | QuotaExceeded, strawberry.union("CreateWorkResult")]


@strawberry.input
class BreakpointInput:
    event: str = "*"
    path: str = "*"
    when: str = "after"
    condition: str | None = None
    id: str | None = None

    def build(self) -> Breakpoint:
        try:
            if self.id is None:
                return Breakpoint(event=self.event, path=self.path, when=self.when,
                                  condition=self.condition)
            return Breakpoint(id=self.id, event=self.event, path=self.path, when=self.when,
                              condition=self.condition)
        except ExpressionError as exc:
            raise ApiError("invalid_input", str(exc), field="breakpoint") from None


# what each command to a work needs (graphql_api.access)
_ACTIONS = {**dict.fromkeys(("update", "signal"), "write"),
            **dict.fromkeys(("pause", "resume", "step", "mstep", "cancel",
                             "retry_compensation", "resolve"), "steer"),
            **dict.fromkeys(("edit", "set_breakpoint", "clear_breakpoint"), "debug")}


async def _create(info: Info, saga: str, input: Any, *, paused: bool, priority: int,
                  start_at: float | None, work_id: str | None = None,
                  breakpoints: list[BreakpointInput] | None = None,
                  request_id: str | None = None) -> Any:
    service = service_of(info)
    await require(info, "write", {"saga": saga, "input": input})
    try:
        points = [b.build() for b in breakpoints or []]
        created, _ = await service.create_work(
            saga, input, paused=paused, priority=priority, start_at=start_at,
            work_id=work_id, breakpoints=points, request_id=request_id,
            client=client_of(info))
    except ApiError as exc:
        return quota_exceeded(exc, info) if exc.kind == "quota_exceeded" else error_result(exc)
    work = await work_of(info, created)
    assert work is not None
    return WorkCreated(work=work)


async def _steer(info: Info, work_id: str, command: Command,
                 request_id: str | None, wait: float | None = None
                 ) -> CommandTaken | NotFound | WrongState | InvalidInput | Conflict:
    service = service_of(info)
    command = dataclasses.replace(command, by=actor(info, command.by))  # who, for its events
    row = await service.store.work(work_id)
    if row is not None:  # (none: the command's own check says not found)
        await require(info, _ACTIONS.get(command.kind, "admin"), row)
    try:
        outcome: Outcome = await service.command(work_id, command, request_id=request_id,
                                                 wait=wait)
        work = await work_of(info, work_id)
        check_outcome(outcome, work.status if work else "")
    except ApiError as exc:
        return error_result(exc)
    payload = outcome.payload
    return CommandTaken(number=outcome.number, outcome=payload.get("outcome", "pending"),
                        report=payload.get("report"),
                        event=None if outcome.recorded is None else Event.of(outcome.recorded),
                        work=work)


@strawberry.mutation
async def create_work(info: Info, saga: str, input: JSON | None = None,
                      paused: bool = False, priority: int = 0,
                      start_at: float | None = None, work_id: str | None = None,
                      breakpoints: list[BreakpointInput] | None = None,
                      request_id: str | None = None) -> CreateWorkResult:
    """A work of ``saga`` queued for the worker nodes: started paused, with a
    priority (higher first), not before ``startAt`` (Unix time), with breakpoints.
    With a ``requestId`` the same request again answers the same work."""
    return await _create(info, saga, input, paused=paused, priority=priority,
                         start_at=start_at, work_id=work_id, breakpoints=breakpoints,
                         request_id=request_id)


@strawberry.mutation
async def update_work(info: Info, work_id: str, priority: int | None = None,
                      input: JSON | None = None, set_input: bool = False, by: str = "",
                      request_id: str | None = None) -> CommandResult:
    """Change a work's priority (the claim order takes it at once), or its input
    (``setInput: true``) while it is still queued; breakpoints change with
    ``setBreakpoint`` and ``clearBreakpoint``."""
    args: dict[str, Any] = {}
    if priority is not None:
        args["priority"] = priority
    if set_input:
        args["input"] = input
    return await _steer(info, work_id, Command(kind="update", by=by, args=args),
                        request_id)


@strawberry.mutation
async def delete_work(info: Info, work_id: str, by: str, reason: str = ""
                      ) -> DeleteWorkResult:
    """Delete a finished work: its events, projections and commands go, the deletion
    (who, when, the saga, the final status, why) stays in the audit."""
    from engine.errors import UnknownWorkError, WorkStateError
    from engine.store.deletion import delete_work

    row = await service_of(info).store.work(work_id)
    if row is not None:
        await require(info, "admin", row)
    try:
        audit = await delete_work(service_of(info).store, work_id, by=actor(info, by),
                                  reason=reason)
    except UnknownWorkError as exc:
        return NotFound(message=str(exc), field="workId")
    except WorkStateError as exc:
        row = await service_of(info).store.work(work_id)
        return WrongState(message=str(exc), status=row["status"] if row else None)
    except ValueError as exc:
        return InvalidInput(message=str(exc), field="by")
    return WorkDeleted(**audit)


@strawberry.mutation
async def update_or_create_work(info: Info, key: str, saga: str,
                                input: JSON | None = None, paused: bool = False,
                                priority: int = 0, start_at: float | None = None
                                ) -> CreateWorkResult:
    """The work named ``key``: created the first time (queued for the workers), the
    same work every time after, as long as it asks for the same saga and input; a
    key used for another saga or input is a conflict."""
    return await _create(info, saga, input, paused=paused, priority=priority,
                         start_at=start_at, request_id="key:" + key)


@strawberry.mutation
async def rewind_work(info: Info, work_id: str, to_seq: int, paused: bool = True,
                      request_id: str | None = None) -> CreateWorkResult:
    """A new work forked from the first ``toSeq`` events of this one, queued for the
    worker nodes (paused unless told otherwise), to run again after a fix."""
    row = await service_of(info).store.work(work_id)
    if row is not None:
        await require(info, "debug", row)
    try:
        forked = await service_of(info).rewind(work_id, to_seq, paused=paused,
                                               request_id=request_id)
    except ApiError as exc:
        return error_result(exc)  # type: ignore[return-value]
    work = await work_of(info, forked)
    assert work is not None
    return WorkCreated(work=work)


@strawberry.mutation
async def pause_work(info: Info, work_id: str, by: str = "", reason: str = "",
                     request_id: str | None = None) -> CommandResult:
    return await _steer(info, work_id, Command(kind="pause", by=by, reason=reason),
                        request_id)


@strawberry.mutation
async def resume_work(info: Info, work_id: str, by: str = "",
                      request_id: str | None = None) -> CommandResult:
    return await _steer(info, work_id, Command(kind="resume", by=by), request_id)


@strawberry.mutation
async def step_work(info: Info, work_id: str, by: str = "",
                    request_id: str | None = None) -> CommandResult:
    return await _steer(info, work_id, Command(kind="step", by=by), request_id)


@strawberry.mutation
async def multi_step_work(info: Info, work_id: str,
                          until: list[BreakpointInput] | None = None,
                          max_steps: int | None = None, by: str = "",
                          request_id: str | None = None) -> CommandResult:
    try:
        points = [b.build() for b in until or []]
    except ApiError as exc:
        return error_result(exc)
    args: dict[str, Any] = {"until": points}
    if max_steps is not None:
        args["max_steps"] = max_steps
    return await _steer(info, work_id, Command(kind="mstep", by=by, args=args), request_id)


@strawberry.mutation
async def signal_work(info: Info, work_id: str, name: str,
                      payload: JSON | None = None, by: str = "",
                      request_id: str | None = None) -> CommandResult:
    return await _steer(info, work_id, Command(kind="signal", by=by, args={
        "name": name, "payload": payload}), request_id)


@strawberry.mutation
async def cancel_work(info: Info, work_id: str, by: str = "", reason: str = "",
                      compensate: bool = True,
                      request_id: str | None = None) -> CommandResult:
    return await _steer(info, work_id, Command(kind="cancel", by=by, reason=reason,
                                               args={"compensate": compensate}),
                        request_id)


@strawberry.mutation
async def edit_work_state(info: Info, work_id: str, path: str, by: str,
                          reason: str, output: JSON | None = None,
                          input: JSON | None = None, set_output: bool = False,
                          request_id: str | None = None) -> CommandResult:
    """Change a completed stage's recorded output (``setOutput: true``, ``output``)
    or the input of a stage to come (``input``), while the work is paused."""
    args: dict[str, Any] = {"path": path}
    if set_output:
        args["output"] = output
    else:
        args["input"] = input
    return await _steer(info, work_id, Command(kind="edit", by=by, reason=reason,
                                               args=args), request_id)


@strawberry.mutation
async def set_breakpoint(info: Info, work_id: str, breakpoint: BreakpointInput,
                         request_id: str | None = None) -> CommandResult:
    try:
        point = breakpoint.build()
    except ApiError as exc:
        return error_result(exc)
    return await _steer(info, work_id, Command(kind="set_breakpoint",
                                               args={"breakpoint": point}), request_id)


@strawberry.mutation
async def clear_breakpoint(info: Info, work_id: str, breakpoint_id: str,
                           request_id: str | None = None) -> CommandResult:
    return await _steer(info, work_id, Command(kind="clear_breakpoint",
                                               args={"id": breakpoint_id}), request_id)


@strawberry.mutation
async def retry_compensation(info: Info, work_id: str, by: str,
                             request_id: str | None = None) -> CommandResult:
    return await _steer(info, work_id, Command(kind="retry_compensation", by=by),
                        request_id)


@strawberry.mutation
async def resolve_work(info: Info, work_id: str, by: str, reason: str,
                       request_id: str | None = None) -> CommandResult:
    return await _steer(info, work_id, Command(kind="resolve", by=by, reason=reason),
                        request_id)
