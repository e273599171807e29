"""What people do to works from outside, through a :class:`engine.Runtime`: steer them
(pause, resume, step, signal, breakpoints, edit, cancel, retry a compensation,
resolve), look back at any point of their history, rewind one into a fork, and
compare two. A work driven by this runtime records the events here; one a worker node
holds, or one parked or queued, gets the command through the store's inbox. The rules
of each command are :func:`engine.commands.command_events`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from . import events as ev
from .breakpoints import Breakpoint
from .commands import Command, command_events
from .definitions import MISSING
from .errors import CorruptEventError, WorkStateError
from .events import Event, RecordedEvent
from .ids import new_work_id as make_work_id
from .lease import Lease
from .plan import Plan, template_of
from .runner import DryRun, StepReport, WorkRunner
from .state import WorkState, replay

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .runtime import Store

__all__ = ["Debugging", "saga_of"]


def saga_of(stream: Sequence[RecordedEvent]) -> str:
    """The saga of a work, from its first event (``work.created``)."""
    first = stream[0].event
    if first.type != ev.WORK_CREATED or stream[0].seq != 1:
        raise CorruptEventError(f"work {stream[0].work_id!r} does not start with its "
                                f"creation (seq {stream[0].seq} is {first.type!r})")
    saga = first.payload.get("saga")
    if not isinstance(saga, str):
        raise CorruptEventError(f"event seq 1 (work.created) of work {stream[0].work_id!r} "
                                "names no saga")
    return saga


class Debugging:
    """The steering and time-travel operations of :class:`engine.Runtime` (which holds
    the works, the store and the lease they use)."""

    store: Store | None
    lease: Lease | None
    _own_lease: bool
    _works: dict[str, WorkRunner]
    _tokens: dict[str, int]
    _driven: dict[str, anyio.Event]
    _tg: anyio.abc.TaskGroup | None

    if TYPE_CHECKING:
        def plan(self, saga: str) -> Plan: ...
        def definition(self, saga: str) -> str: ...
        def check_definition(self, state: WorkState) -> None: ...
        def events(self, work_id: str) -> list[RecordedEvent]: ...
        def _runner(self, work_id: str) -> WorkRunner: ...
        async def _get(self, work_id: str) -> WorkRunner: ...
        async def _load(self, work_id: str) -> WorkRunner: ...
        def _launch(self, runner: WorkRunner) -> None: ...
        def _new_runner(self, plan: Plan, work_id: str, *, dry_run: DryRun | None = None,
                        snapshot: WorkState | None = None,
                        history: Sequence[RecordedEvent] = (),
                        queued: bool = False) -> WorkRunner: ...

    # ------------------------------------------------------------ steering

    async def _record(self, runner: WorkRunner, event: Event) -> RecordedEvent:
        try:
            return await runner.record(event, observe=False)  # its flush wakes the driver
        except Exception:
            if runner.work_id not in self._driven:
                self._works.pop(runner.work_id, None)  # read it again from the store
            raise

    async def _relet(self, runner: WorkRunner) -> None:
        """Lease a finished work again before it records more (a person retries its
        compensation or resolves it): its lease went with its end."""
        if self._own_lease and runner.sink is not None:
            assert self.store is not None and self.lease is not None
            state = runner.state
            got = await self.store.claim_works(
                owner=self.lease.owner, worker=self.lease.worker, ttl=self.lease.ttl,
                works=[(runner.work_id, state.saga, state.priority)])
            self._tokens.update(got)
            if not got:
                raise WorkStateError(f"work {runner.work_id} is held by another process; "
                                     "steer it there")

    async def _command(self, work_id: str, command: Command) -> WorkRunner | None:
        """Carry out a steering command: the rules are
        :func:`engine.commands.command_events`'s. A work driven here (or a finished one)
        records its events here; a live work this process does not drive (a worker node
        holds it, or it is parked or queued) gets the command through the store's inbox,
        checked first against its stored state, and None is returned."""
        runner = self._works.get(work_id)
        if runner is None or (not runner.driving and not runner.state.terminal):
            if self.store is None:
                runner = self._runner(work_id)  # unknown: says so
            else:
                loaded = await self._load(work_id)
                if not loaded.state.terminal:
                    command_events(loaded.plan, loaded.state, command)  # refused early
                    await self.store.send_command(work_id, command)
                    return None
                runner = await self._get(work_id)
        found = command_events(runner.plan, runner.state, command)
        if found and command.kind == "retry_compensation":
            self.check_definition(runner.state)  # its compensations would run here
        if found and runner.state.terminal:
            await self._relet(runner)
        if command.kind == "retry_compensation":
            runner.reopen()
        for event in found:
            await self._record(runner, event)
        return runner

    async def pause(self, work_id: str, *, by: str = "", reason: str = "") -> None:
        await self._command(work_id, Command(kind="pause", by=by, reason=reason))

    async def resume(self, work_id: str, *, by: str = "") -> None:
        await self._command(work_id, Command(kind="resume", by=by))

    async def step(self, work_id: str) -> RecordedEvent | None:
        return await (await self._get(work_id)).step()

    async def mstep(self, work_id: str, *, until: Sequence[Breakpoint] = (),
                    max_steps: int | None = None) -> StepReport:
        return await (await self._get(work_id)).mstep(until, max_steps)

    async def signal(self, work_id: str, name: str, payload: Any = None) -> None:
        """Deliver signal ``name``; kept until a Wait stage consumes it."""
        await self._command(work_id, Command(kind="signal",
                                             args={"name": name, "payload": payload}))

    async def add_breakpoint(self, work_id: str, breakpoint: Breakpoint) -> str:
        await self._command(work_id, Command(kind="set_breakpoint",
                                             args={"breakpoint": breakpoint}))
        return breakpoint.id

    async def remove_breakpoint(self, work_id: str, breakpoint_id: str) -> None:
        await self._command(work_id, Command(kind="clear_breakpoint",
                                             args={"id": breakpoint_id}))

    async def edit(self, work_id: str, *, path: str, by: str, reason: str,
                   output: Any = MISSING, input: Any = MISSING) -> None:
        """While paused: change a stage's recorded output, or the input of a stage to come."""
        args: dict[str, Any] = {"path": path}
        if output is not MISSING:
            args["output"] = output
        if input is not MISSING:
            args["input"] = input
        await self._command(work_id, Command(kind="edit", by=by, reason=reason, args=args))

    async def cancel(self, work_id: str, *, by: str = "", reason: str = "",
                     compensate: bool = True) -> None:
        """Stop a work; by default its completed stages are compensated first."""
        await self._command(work_id, Command(kind="cancel", by=by, reason=reason,
                                             args={"compensate": compensate}))

    async def retry_compensation(self, work_id: str, *, by: str) -> None:
        """A person fixed the cause: run the failed compensation again."""
        runner = await self._command(work_id, Command(kind="retry_compensation", by=by))
        if runner is not None:
            self._launch(runner)

    async def resolve(self, work_id: str, *, by: str, reason: str) -> None:
        """A person cleaned up by hand: the work ends as failed, resolved."""
        await self._command(work_id, Command(kind="resolve", by=by, reason=reason))

    # ------------------------------------------------------------ history and forks

    async def history(self, work_id: str) -> list[RecordedEvent]:
        """Every event of a work, from the store when there is one."""
        if self.store is not None:
            stream = await self.store.read(work_id)
            if stream:
                return stream
        return self.events(work_id)

    async def travel(self, work_id: str, seq: int) -> WorkState:
        """Time travel: the state of a work right after event ``seq`` (store or memory)."""
        stream = await self.history(work_id)
        if not 0 <= seq <= len(stream):
            raise ValueError(f"work {work_id} has events 1..{len(stream)}; no seq {seq}")
        return replay(stream[:seq])

    async def rewind(self, work_id: str, seq: int, *, paused: bool = True,
                     new_work_id: str | None = None, run: bool = True) -> str:
        """A new work forked from the first ``seq`` events of ``work_id``, to run again
        (after a fix). It starts paused unless asked otherwise. The fork is written in
        one commit; with ``run=False`` (a store needed) it is queued for worker nodes
        instead of run here. The fork is a work of this runtime's definition of the saga
        (it records that definition's hash and version), so a work left for another
        definition goes on under this one: every stage in the first ``seq`` events must
        exist in it (a ``ValueError`` names the first that does not)."""
        if not run and self.store is None:
            raise ValueError("run=False queues the fork for worker nodes: it needs a store")
        if self._tg is None:
            raise RuntimeError("use the Runtime as 'async with Runtime(...) as runtime'")
        stream = await self.history(work_id)
        if not 1 <= seq <= len(stream):
            raise ValueError(f"work {work_id} has events 1..{len(stream)}; cannot rewind to "
                             f"seq {seq}")
        saga = saga_of(stream)
        plan = self.plan(saga)
        for recorded in stream[:seq]:
            if template_of(recorded.event.path) not in plan.nodes:
                raise ValueError(
                    f"cannot rewind work {work_id} to seq {seq} onto definition "
                    f"{self.definition(saga)} of saga {saga!r}: event seq {recorded.seq} "
                    f"({recorded.event.type}) is of stage {recorded.event.path!r}, which "
                    "this definition does not have; rewind to an earlier seq")
        new_id = new_work_id or make_work_id()
        if new_id in self._works:
            raise WorkStateError(f"a work with id {new_id!r} exists already")
        if self.store is not None and await self.store.read(new_id, until=1):
            raise WorkStateError(f"a work with id {new_id!r} exists already in the store")
        runner = self._new_runner(plan, new_id, queued=not run)
        self._works[new_id] = runner
        for recorded in stream[:seq]:
            event = recorded.event
            if event.type == ev.WORK_CREATED:
                payload = {**event.payload, "paused": paused or event.payload.get("paused"),
                           "forked_from": {"work_id": work_id, "seq": seq},
                           "stages": len(plan.saga.stages),
                           "definition": self.definition(saga),
                           "definition_version": plan.saga.version}
                event = Event(type=event.type, path=event.path, attempt=event.attempt,
                              payload=payload, version=event.version)
            elif event.type == ev.WORK_COMMAND:
                # the original's inbox, not the fork's: the fork numbers its own from 1
                event = Event(type=event.type, path=event.path, attempt=event.attempt,
                              payload={**event.payload, "inherited": True},
                              version=event.version)
            await runner.record(event, observe=False, flush=False)
        if paused and not runner.state.paused and not runner.state.terminal:
            await runner.record(Event(type=ev.WORK_PAUSED, payload={
                "reason": "rewound", "from": work_id, "seq": seq}), observe=False, flush=False)
        try:
            await runner.flush()  # the fork's prefix in one commit, leased as a whole
        except BaseException:
            del self._works[new_id]  # not durable: the fork does not exist
            raise
        if not run:
            del self._works[new_id]  # the worker nodes have it
        elif not runner.state.terminal:
            if self.lease is not None:
                self._tokens[new_id] = 1
            self._launch(runner)
        return new_id

    async def compare(self, a: str, b: str) -> tuple[int, RecordedEvent | None,
                                                     RecordedEvent | None] | None:
        """The first seq where two works' events differ (type, path, attempt, payload),
        ignoring how each was created; None when one stream is a copy of the other."""
        left, right = await self.history(a), await self.history(b)
        for index in range(max(len(left), len(right))):
            x = left[index] if index < len(left) else None
            y = right[index] if index < len(right) else None
            if x is None or y is None:
                return index + 1, x, y
            ex, ey = x.event, y.event
            if ex.type == ey.type == ev.WORK_COMMAND:
                same = {k: v for k, v in ex.payload.items() if k != "inherited"} == \
                    {k: v for k, v in ey.payload.items() if k != "inherited"}
            elif ex.type == ey.type == ev.WORK_CREATED:
                same = ex.payload.get("input") == ey.payload.get("input") and \
                    ex.payload.get("saga") == ey.payload.get("saga")
            else:
                same = (ex.type, ex.path, ex.attempt, ex.payload) == \
                    (ey.type, ey.path, ey.attempt, ey.payload)
            if not same:
                return index + 1, x, y
        return None
