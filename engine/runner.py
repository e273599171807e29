"""The runner: executes the actions ``decide`` picks for one work and records the results.

One :class:`WorkRunner` owns one work's state. It can drive the work freely
(:meth:`WorkRunner.run`, running independent user calls concurrently), or be
stepped (:meth:`WorkRunner.step`: exactly one decide, execute, record cycle;
:meth:`WorkRunner.mstep`: until a breakpoint matches or the work ends). The user
calls themselves, and how their outcomes are recorded, are :mod:`engine.calls`'s.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import anyio
import anyio.abc

from . import events as ev
from . import metrics
from .breakpoints import Breakpoint
from .calls import DryRun, UserCalls, cancel_requested
from .clock import Clock
from .commands import STEPPING, command_events
from .context import error_data, json_problem, shown
from .errors import (
    ExpressionError,
    WorkStateError,
)
from .events import Event, RecordedEvent
from .gate import Gate
from .lease import UNTIL_WOKEN
from .plan import Plan
from .services import ServiceScope
from .state import TERMINAL, WorkState, evolve, replay
from .stepping import Action, Call, Emit, ScheduleRetry, decide, open_call

__all__ = ["DryRun", "StepReport", "WorkRunner", "cancel_requested"]

_LOG = logging.getLogger("stepsaga.runner")
# what a command's rule raises when the command does not fit: recorded as its rejection
_REJECTIONS = (WorkStateError, ValueError, TypeError, KeyError)


@dataclass(slots=True)
class StepReport:
    """What ``mstep`` did: the events it recorded and why it stopped."""

    events: list[RecordedEvent] = field(default_factory=list)
    reason: str = "finished"  # breakpoint, finished, waiting, max_steps
    breakpoint: Breakpoint | None = None
    when: str | None = None
    pending: Event | None = None  # the event a 'before' breakpoint stopped in front of


class WorkRunner(UserCalls):
    """Owns the state of one work and moves it forward."""

    def __init__(self, plan: Plan, work_id: str, *, clock: Clock, services: ServiceScope,
                 worker: str | None = None, dry_run: DryRun | None = None,
                 on_event: Callable[[RecordedEvent], None] | None = None,
                 sink: Callable[[list[RecordedEvent], WorkState], Awaitable[None]] | None = None,
                 snapshot: WorkState | None = None,
                 history: Iterable[RecordedEvent] = (), gate: Gate | None = None,
                 logs: Any = None, secrets: Any = None, metrics: bool = True) -> None:
        self.plan = plan
        # the key that opens the secrets in a call's input (engine.secrets.Secrets)
        self.secrets = secrets
        self.metrics = metrics  # count its durable events in engine.metrics
        self.logs = logs  # where ctx.logger's records go (engine.worklogs.WorkLogs)
        self.raised: dict[tuple[str, str], BaseException] = {}
        self.work_id = work_id
        self.clock = clock
        self.services = services
        self.worker = worker
        self.dry_run = dry_run
        self.on_event = on_event
        self.sink = sink  # makes events durable before the work goes on
        self.gate = gate  # admits transactions that need a lock, a rate or a service
        self._pending: list[tuple[RecordedEvent, bool]] = []
        self.state = WorkState() if snapshot is None else snapshot.copy()
        self._base = snapshot  # what events replay on when a failed append is taken back
        self.events: list[RecordedEvent] = []
        for recorded in history:
            evolve(self.state, recorded)
            self.events.append(recorded)
        self._inflight: set[str] = set()  # paths whose user call runs in a task
        # anyio primitives are made only when someone waits: most works never need them
        self._poked = False  # something changed since the driver last looked
        self._waiter: anyio.Event | None = None  # the driver sleeps on it
        self._idle: anyio.Event | None = None  # set when the last call in flight ends
        self._finished: anyio.Event | None = None
        self._step_lock: anyio.Lock | None = None
        self._breakpoints: dict[str, Breakpoint] = {}  # the stored ones, read
        self._read_from: dict[str, dict[str, Any]] = {}  # ... from these dicts of the state
        self._unreadable: dict[str, str] = {}  # breakpoint id: why its condition was dropped
        self._skip_before: tuple[str, str, int] | None = None
        self._driving = False
        # set by a leased runtime: a wait of at least this many seconds parks the work
        self.park_after: float | None = None
        self.parked_until: float | None = None  # the driver stopped until then
        self._stopping = False  # stop driving at the next step boundary
        self.stopped: BaseException | None = None
        # the store refused an append: the work stops here (nothing more is recorded)
        self._refused: Exception | None = None
        self._flushing = False  # a flush is in flight: the next one goes after it
        self._flushed: anyio.Event | None = None
        # the store's inbox of this work (engine.store.inbox): the commands numbered above
        # the given one. Set by a runtime with a store; mail() says some have come
        self.inbox: Callable[[int], Awaitable[Sequence[Any]]] | None = None
        self._mail = False
        self._delivered: dict[int, Any] = {}  # commands handed over as sent, by number

    # ------------------------------------------------------------ recording

    async def record(self, event: Event, *, observe: bool = True,
                     flush: bool = True) -> RecordedEvent:
        """Append ``event`` to the work's stream and fold it into the state.

        With ``flush=False`` the event waits for the next :meth:`flush`, so several
        events go to the store in one commit; the runner flushes before any user code
        runs, before it sleeps and before it returns, so nothing outside the process
        ever depends on an event that is not durable.
        """
        state = self.state
        recorded = RecordedEvent(work_id=self.work_id, seq=state.seq + 1, time=self.clock.now(),
                                 event=event, worker=self.worker)
        evolve(state, recorded)
        self.events.append(recorded)
        self._pending.append((recorded, observe))
        if flush:
            await self.flush()
        return recorded

    def state_at_seq(self, seq: int) -> WorkState:
        """The work's state right after its event ``seq`` (one this runner holds)."""
        return replay([r for r in self.events if r.seq <= seq], self._base)

    async def prime(self) -> None:
        """Record, without flushing, the events that must follow now whatever happens:
        while ``decide`` offers exactly one due event and nothing stops there (a pause,
        a breakpoint). They then go to the store in the same commit as what came before.
        """
        state = self.state
        while not state.paused and not state.breakpoints and state.status not in TERMINAL:
            actions = decide(self.plan, state, self._inflight)
            if len(actions) != 1 or not isinstance(actions[0], Emit):
                return
            if actions[0].not_before is not None:
                return
            await self.record(actions[0].event, flush=False)

    async def flush(self) -> None:
        """Make the recorded events durable, then tell whoever listens.

        One work's flushes reach the store one after the other, in seq order. When the
        store refuses one, the events from it on are taken back (the state returns to
        what the store holds) and the work records nothing more here: that error is
        raised to whoever records next."""
        if self._refused is not None:
            raise self._refused
        while self._flushing:
            if self._flushed is None:
                self._flushed = anyio.Event()
            await self._flushed.wait()
            if self._refused is not None:
                raise self._refused
        pending = self._pending
        if not pending:
            return
        self._pending = []
        state = self.state
        if self.sink is not None:
            self._flushing = True
            try:
                await self.sink([recorded for recorded, _ in pending], state)
            except Exception as exc:
                first = pending[0][0].seq
                self._pending = []
                self.events = [r for r in self.events if r.seq < first]
                self.state = replay(self.events, self._base)
                self._refused = exc
                self.poke()  # a driver asleep (a wait, a pause) stops on it
                raise
            finally:
                self._flushing = False
                if self._flushed is not None:
                    self._flushed.set()
                    self._flushed = None
        counted = self.dry_run is None and self.metrics
        saga = self.plan.name
        for recorded, observe in pending:
            if counted:
                metrics.observe(saga, recorded, state)
            if self.on_event is not None:
                self.on_event(recorded)
            if observe and self.plan.has_observers and self.dry_run is None:
                await self._observe(recorded)
        self._poked = True
        if self._waiter is not None:
            self._waiter.set()
        if self._finished is not None and state.status in TERMINAL:
            self._finished.set()

    async def _observe(self, recorded: RecordedEvent) -> None:
        event = recorded.event
        try:
            observers = self.plan.info(event.path).observers
        except KeyError:
            return
        for observer in observers:
            if not any(fnmatchcase(event.type, p) for p in observer.events):
                continue
            if not any(fnmatchcase(event.path, p) for p in observer.paths):
                continue
            try:
                value = observer.notify(self._context(event.path, event.attempt, "observer"),
                                        recorded)
                if inspect.isawaitable(value):
                    value = await value
            except Exception as exc:  # observers are never fatal: record and go on
                await self.record(Event(
                    type=ev.OBSERVER_FAILED, path=event.path, attempt=event.attempt,
                    payload={"observer": observer.name, "seq": recorded.seq,
                             "error": error_data(exc, retryable=False)}), observe=False)
                continue
            if value is not None:
                if json_problem(value) is not None:
                    value = shown(value)
                await self.record(Event(
                    type=ev.OBSERVER_PRODUCED, path=event.path, attempt=event.attempt,
                    payload={"observer": observer.name, "seq": recorded.seq, "value": value}),
                    observe=False)

    # ------------------------------------------------------------ breakpoints

    def _active(self, extra: Sequence[Breakpoint]) -> Sequence[Breakpoint]:
        stored = self.state.breakpoints
        if not stored:
            return extra
        # a breakpoint set again under its id is a new dict in the state
        if len(self._read_from) != len(stored) or any(self._read_from.get(k) is not v
                                                      for k, v in stored.items()):
            self._read_breakpoints(stored)
        if not extra:
            return list(self._breakpoints.values())
        return [*self._breakpoints.values(), *extra]

    def _read_breakpoints(self, stored: dict[str, dict[str, Any]]) -> None:
        self._breakpoints, self._unreadable = {}, {}
        for ident, data in stored.items():
            try:
                bp = Breakpoint.from_dict(data)
            except ExpressionError as exc:
                # a condition of the language before CEL that CEL cannot take: rather than
                # run past where a person meant to stop, stop wherever the breakpoint's
                # globs match, and say why in the pause
                _LOG.warning("work %s: %s", self.work_id, exc)
                self._unreadable[ident] = str(exc)
                bp = Breakpoint(id=ident, event=data.get("event", "*"),
                                path=data.get("path", "*"), when=data.get("when", "after"))
            self._breakpoints[ident] = bp
        self._read_from = dict(stored)

    def _match(self, when: str, event: Event, bps: Sequence[Breakpoint]) -> Breakpoint | None:
        if when == "before":
            ident = (event.type, event.path, event.attempt)
            if ident == self._skip_before:
                return None
            state = self.state
            past = state.resume_past
            if past is not None and (past["type"], past["path"], past["attempt"]) == ident:
                return None
            # paused in front of this very event (edits, signals, breakpoints recorded
            # since do not count): whoever goes on (mstep, step, resume) steps past it,
            # in this process or after a restart
            stop = state.stopped_at
            if stop is not None and state.paused:
                pending = stop.get("pending")
                if pending is not None and \
                        (pending["type"], pending["path"], pending["attempt"]) == ident:
                    return None
        for bp in bps:
            if bp.matches(when, event, self.state):
                return bp
        return None

    # ------------------------------------------------------------ executing

    async def _perform(self, action: Action, *, flush: bool = True) -> RecordedEvent:
        if isinstance(action, Emit):
            return await self.record(action.event, flush=flush)
        if isinstance(action, ScheduleRetry):
            return await self.record(self._schedule(action), flush=flush)
        return await self.record(await self._execute(action), flush=flush)

    # ------------------------------------------------------------ driving

    @property
    def driving(self) -> bool:
        """A task drives the work (see :meth:`claim`)."""
        return self._driving

    def claim(self) -> None:
        """Mark the work as driven: from now on stepping needs it paused first."""
        self._driving = True

    async def run(self, tg: anyio.abc.TaskGroup) -> None:
        """Drive the work until it ends; idle while it is paused or waits for a signal.

        Independent user calls run as tasks in ``tg`` (the caller's task group), so a
        work costs no task group of its own. Commands from the store's inbox are taken
        at the top of each pass (a step boundary), also for a work that has ended (it
        was claimed to record the outcome of a command sent to it).
        """
        self._driving = True
        try:
            while True:
                if self._mail and self._refused is None:
                    await self._take_mail()
                if self.state.terminal:
                    break
                if self._refused is not None:
                    await self._until_idle()
                    raise self._refused
                if self._stopping:
                    await self._until_idle()  # the calls in flight end and are recorded
                    break
                if self.state.paused:
                    await self.flush()
                    if self.park_after is None or self.inbox is None:
                        await self._sleep(None)
                    elif not await self._sleep(self.clock.now() + self.park_after) \
                            and self._parks(None):
                        self.parked_until = UNTIL_WOKEN  # until a command comes
                        break
                    continue
                due = await self._advance(tg)
                if due is not True:
                    if self._parks(due):
                        self.parked_until = UNTIL_WOKEN if due is None else due
                        break
                    await self._sleep(due)
            await self.flush()
        finally:
            self._driving = False

    def _parks(self, due: float | None) -> bool:
        """Whether the driver stops instead of sleeping until ``due`` (None: until woken,
        paused or waiting for a signal): parking is on, no call is in flight, nothing
        changed meanwhile and the wait is long enough. A work parked until woken needs
        an inbox: only a command (a signal is one) brings it back."""
        if self.park_after is None or self._inflight or self._stopping or self._poked \
                or self._mail:
            return False
        if due is None:
            return self.inbox is not None
        return due - self.clock.now() >= self.park_after

    def mail(self) -> None:
        """Commands came to the work's inbox: its driver takes them at the next step
        boundary."""
        self._mail = True
        self.poke()

    def deliver(self, sent: Any) -> None:
        """A command of the work's inbox, as sent (its notification carried it, or the
        sender is in this process): taken in turn without reading the inbox."""
        if sent.number > self.state.commands_applied:
            self._delivered[sent.number] = sent

    async def _take_mail(self) -> None:
        """Take the inbox's commands after the last one the state records, in order:
        those delivered if the next one is among them, else read from the inbox."""
        self._mail = False
        if self.inbox is None:
            return
        applied = self.state.commands_applied
        found: list[Any] = []
        while applied + len(found) + 1 in self._delivered:
            found.append(self._delivered.pop(applied + len(found) + 1))
        if found:
            # (each command sent wakes the driver again: one that was not delivered is
            # read from the inbox then)
            self._delivered = {n: c for n, c in self._delivered.items()
                               if n > found[-1].number}
        else:
            self._delivered.clear()
            try:
                found = list(await self.inbox(applied))
            except Exception as exc:  # the lease's heartbeat finds the mail again later
                _LOG.warning("work %s could not read its inbox: %s", self.work_id, exc)
                return
        for sent in found:
            if self._refused is not None or sent.number != self.state.commands_applied + 1:
                break
            await self._take(sent)

    async def _take(self, sent: Any) -> None:
        """Carry out one command (the rules are :func:`engine.commands.command_events`'s)
        and record its outcome; all of it goes to the store in one commit, with the next
        step's events."""
        command = sent.command
        payload: dict[str, Any] = {"number": sent.number, "kind": command.kind,
                                   "by": command.by, "outcome": "applied"}
        if sent.request_id is not None:
            payload["request_id"] = sent.request_id
        try:
            found: list[Event] | None = command_events(self.plan, self.state, command)
        except _REJECTIONS as exc:
            payload.update(outcome="rejected", error=error_data(exc, retryable=False))
            found = None
        if found is not None:
            if command.kind in STEPPING:
                payload["report"] = await self._stepped(command)
            else:
                if command.kind == "retry_compensation":
                    self.reopen()
                for event in found:
                    await self.record(event, observe=False, flush=False)
        await self.record(Event(type=ev.WORK_COMMAND, payload=payload), observe=False,
                          flush=False)

    async def _stepped(self, command: Any) -> dict[str, Any]:
        """A step or mstep command, done by the driver; what the stepping did."""
        async with self._lock():
            await self._until_idle()
            if command.kind == "step":
                # the step's event shares the commit of the command's outcome: a takeover
                # never steps twice for one command
                recorded = await self._step_once(flush=False)
                return {"reason": "stepped" if recorded is not None else "waiting",
                        "steps": 0 if recorded is None else 1,
                        "seq": None if recorded is None else recorded.seq}
            report = await self._mstep(list(command.args.get("until") or ()),
                                       command.args.get("max_steps"))
        found: dict[str, Any] = {"reason": report.reason, "steps": len(report.events)}
        if report.breakpoint is not None:
            found.update(breakpoint=report.breakpoint.id, when=report.when)
        if report.pending is not None:
            found["pending"] = {"type": report.pending.type, "path": report.pending.path,
                                "attempt": report.pending.attempt}
        return found

    async def _advance(self, tg: anyio.abc.TaskGroup) -> bool | float | None:
        """One pass: launch the calls that may run and record one due event. True if
        something happened, else when the next action is due (None: when told)."""
        inflight = self._inflight
        actions = decide(self.plan, self.state, inflight)
        due: float | None = None
        calls: list[Call] = []
        emit: Emit | ScheduleRetry | None = None
        now: float | None = None
        for action in actions:
            if isinstance(action, Call):
                calls.append(action)
                continue
            if emit is not None:
                continue
            if isinstance(action, Emit) and action.not_before is not None:
                if now is None:
                    now = self.clock.now()
                if action.not_before > now:
                    due = action.not_before if due is None else min(due, action.not_before)
                    continue
            emit = action
        if calls and emit is not None and self.state.breakpoints:
            # with breakpoints set, record first and launch later: a pause at this event
            # must find no call of this pass already running
            calls = []
        if calls:
            await self.flush()  # user code runs only on durable state
            if len(calls) == 1 and emit is None and not inflight:
                # its result shares the next commit with the events it leads to
                recorded = await self._perform(calls[0], flush=False)
                if self.state.breakpoints:
                    await self.flush()
                    await self._check_after(recorded)
                return True
            if self._idle is None:
                self._idle = anyio.Event()
            for call in calls:
                inflight.add(call.path)
                tg.start_soon(self._run_call, call)
        if emit is not None:
            if isinstance(emit, Emit):
                bps = self._active(())
                if bps:
                    bp = self._match("before", emit.event, bps)
                    if bp is not None:
                        await self._pause_at(bp, "before", emit.event)
                        return True
            recorded = await self._perform(emit, flush=False)
            state = self.state
            if state.breakpoints:
                await self.flush()
                await self._check_after(recorded)
            elif len(actions) == 1 and not inflight and not state.paused:
                # the event just recorded opened a user call and nothing else can happen:
                # run it now, exactly the Call the next decide would return
                opened = open_call(self.plan, state, recorded.event.path)
                if opened is not None:
                    await self.flush()
                    if not self._mail:  # a command came meanwhile: it goes first
                        await self._perform(opened, flush=False)
            return True
        if calls:
            return True
        await self.flush()  # before the driver sleeps
        return due

    async def _run_call(self, call: Call) -> None:
        recorded = None
        try:
            event = await self._execute(call)
            # a work cancelled meanwhile takes no more results
            recorded = None if self.state.terminal else await self.record(event)
        except Exception as exc:  # the store refused the result: the driver stops on it
            if self._refused is None:
                self._refused = exc
        finally:
            self._inflight.discard(call.path)
            if not self._inflight and self._idle is not None:
                self._idle.set()
                self._idle = None
            self.poke()
        if recorded is not None and not self.state.paused:
            try:
                await self._check_after(recorded)
            except Exception as exc:  # a pause the store refused: the driver stops on it
                if self._refused is None:
                    self._refused = exc
                self.poke()

    async def _check_after(self, recorded: RecordedEvent) -> None:
        if not self.state.breakpoints or recorded.type in (ev.WORK_PAUSED, ev.WORK_RESUMED):
            return
        bps = self._active(())
        if bps:
            bp = self._match("after", recorded.event, bps)
            if bp is not None and not self.state.terminal:
                await self._pause_at(bp, "after", recorded.event, recorded.seq)

    async def _pause_at(self, bp: Breakpoint, when: str, event: Event,
                        seq: int | None = None) -> None:
        payload: dict[str, Any] = {"reason": "breakpoint", "breakpoint": bp.id, "when": when}
        if bp.id in self._unreadable and self._breakpoints.get(bp.id) is bp:
            payload["problem"] = self._unreadable[bp.id]
        if when == "before":
            payload["pending"] = {"type": event.type, "path": event.path,
                                  "attempt": event.attempt}
        else:
            payload["seq"] = seq
        await self.record(Event(type=ev.WORK_PAUSED, payload=payload), observe=False)

    async def _sleep(self, deadline: float | None) -> bool:
        """Wait until poked, or until ``deadline`` on the clock; whether it was poked."""
        if self._poked:
            self._poked = False
            return True
        wake = self._waiter = anyio.Event()
        try:
            if deadline is None:
                await wake.wait()
            else:
                async with anyio.create_task_group() as tg:
                    async def timer() -> None:
                        await self.clock.sleep_until(deadline)
                        tg.cancel_scope.cancel()

                    async def waiter() -> None:
                        await wake.wait()
                        tg.cancel_scope.cancel()

                    tg.start_soon(timer)
                    tg.start_soon(waiter)
            return wake.is_set()
        finally:
            self._waiter = None
            self._poked = False

    def poke(self) -> None:
        """Wake the driver: something changed the state."""
        self._poked = True
        if self._waiter is not None:
            self._waiter.set()

    def stop(self) -> None:
        """Stop driving at the next step boundary: the calls in flight finish and their
        results are recorded, nothing new starts. (A worker draining hands the work on.)"""
        self._stopping = True
        self.poke()

    def reopen(self) -> None:
        """The work is to move again after it ended (a retried compensation)."""
        self._finished = None

    def stop_with(self, error: BaseException) -> None:
        """The driver stopped on an error it cannot handle; waiters get it."""
        self.stopped = error
        if self._finished is not None:
            self._finished.set()

    async def wait_finished(self) -> None:
        if self.state.status not in TERMINAL and self.stopped is None:
            if self._finished is None:
                self._finished = anyio.Event()
            await self._finished.wait()
        if self.stopped is not None and self.state.status not in TERMINAL:
            raise self.stopped

    async def _until_idle(self) -> None:
        while self._idle is not None:
            await self._idle.wait()

    def _lock(self) -> anyio.Lock:
        if self._step_lock is None:
            self._step_lock = anyio.Lock()
        return self._step_lock

    # ------------------------------------------------------------ stepping

    def _check_steppable(self) -> None:
        if self._driving and not self.state.paused:
            raise WorkStateError(
                f"work {self.work_id} is running; pause it before stepping it"
            )

    async def step(self) -> RecordedEvent | None:
        """Exactly one decide, execute, record cycle; ``None`` when nothing can happen now."""
        self._check_steppable()
        async with self._lock():
            await self._until_idle()
            return await self._step_once()

    async def _step_once(self, bps: Sequence[Breakpoint] = (),
                         report: StepReport | None = None, *,
                         flush: bool = True) -> RecordedEvent | None:
        actions = decide(self.plan, self.state)
        if not actions:
            return None
        now = self.clock.now()
        chosen: Action | None = None
        earliest: tuple[float, Action] | None = None
        for action in actions:
            not_before = action.not_before if isinstance(action, Emit) else None
            if not_before is None or not_before <= now:
                chosen = action
                break
            if earliest is None or not_before < earliest[0]:
                earliest = (not_before, action)
        if chosen is None:
            assert earliest is not None
            await self.clock.sleep_until(earliest[0])
            chosen = earliest[1]
        if bps and isinstance(chosen, Emit) and report is not None:
            bp = self._match("before", chosen.event, bps)
            if bp is not None:
                report.reason, report.breakpoint, report.when = "breakpoint", bp, "before"
                report.pending = chosen.event
                self._skip_before = (chosen.event.type, chosen.event.path, chosen.event.attempt)
                return None
        self._skip_before = None
        if not flush and isinstance(chosen, Call):
            await self.flush()  # user code runs only on durable state
        recorded = await self._perform(chosen, flush=flush)
        if report is not None:
            report.events.append(recorded)
            if bps and recorded.type not in (ev.WORK_PAUSED, ev.WORK_RESUMED):
                bp = self._match("after", recorded.event, bps)
                if bp is not None:
                    report.reason, report.breakpoint, report.when = "breakpoint", bp, "after"
        return recorded

    async def mstep(self, until: Sequence[Breakpoint] = (),
                    max_steps: int | None = None) -> StepReport:
        """Step until a breakpoint (stored, or one of ``until``) matches or the work ends."""
        self._check_steppable()
        async with self._lock():
            await self._until_idle()
            return await self._mstep(until, max_steps)

    async def _mstep(self, until: Sequence[Breakpoint], max_steps: int | None) -> StepReport:
        report = StepReport()
        steps = 0
        while True:
            if self.state.terminal:
                report.reason = "finished"
                return report
            if max_steps is not None and steps >= max_steps:
                report.reason = "max_steps"
                return report
            bps = self._active(until)
            report.reason = ""
            recorded = await self._step_once(bps, report)
            steps += 1
            if report.reason == "breakpoint":
                return report
            if recorded is None:
                report.reason = "finished" if self.state.terminal else "waiting"
                return report
