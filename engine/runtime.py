"""The in-memory runtime: registered sagas, their works, and the operations on them.

>>> import anyio
>>> from engine import Saga, Stage
>>> async def add_one(ctx, n): return n + 1
>>> saga = Saga(name="count", stages=[Stage(name="a", transaction=add_one),
...                                   Stage(name="b", transaction=add_one)])
>>> async def main():
...     async with Runtime(sagas=[saga]) as runtime:
...         return await runtime.run("count", 1)
>>> anyio.run(main).output
3
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, cast

import anyio
import anyio.abc
import tenacity

from . import events as ev
from . import tracing
from .breakpoints import Breakpoint
from .calls import schema_problem
from .catalog import can_continue, describe, fail_globs
from .clock import Clock, SystemClock
from .commands import Command, check_json
from .debugging import Debugging, saga_of
from .definitions import Saga
from .errors import (
    ConflictError,
    DefinitionError,
    DefinitionMismatchError,
    LeaseLostError,
    SagaDisabledError,
    StoreError,
    UnknownSagaError,
    UnknownWorkError,
    WorkStateError,
)
from .events import Event, RecordedEvent
from .gate import Gate
from .ids import check_work_id
from .ids import new_work_id as make_work_id
from .lease import Lease
from .plan import Plan, compile_saga
from .runner import DryRun, WorkRunner
from .secrets import Secrets, has_secrets, secret_paths
from .services import Service, ServiceScope, check_services
from .state import WorkState, replay
from .worklogs import ErrorReport, WorkLogs

__all__ = ["Runtime", "Store", "WorkResult"]

_LOG = logging.getLogger("stepsaga.runtime")


class Store(Protocol):
    """What the runtime needs of a durable event store (see :mod:`engine.store`)."""

    async def append(self, work_id: str, records: list[RecordedEvent],
                     state: WorkState | None = None, *, lease: Lease | None = None,
                     queue: bool = False, fenced: bool = True, token: int = 0) -> None: ...

    async def read(self, work_id: str, *, after: int = 0,
                   until: int | None = None) -> list[RecordedEvent]: ...

    async def load(self, work_id: str) -> tuple[WorkState | None, list[RecordedEvent]]: ...

    async def load_many(self, work_ids: Sequence[str]
                        ) -> dict[str, tuple[WorkState | None, list[RecordedEvent]]]: ...

    async def leased(self, work_ids: Sequence[str]) -> set[str]: ...

    async def works(self, *, status: Sequence[str] | None = None, saga: str | None = None,
                    limit: int = 1000) -> list[dict[str, Any]]: ...

    async def claim_works(self, *, owner: str, worker: str, ttl: float,
                          works: Sequence[tuple[str, str, int]], free: bool = False
                          ) -> Mapping[str, int]: ...

    async def renew_leases(self, *, owner: str, ttl: float,
                           work_ids: Sequence[str]) -> Mapping[str, int]: ...

    async def expire_leases(self, *, owner: str, work_ids: Sequence[str]) -> int: ...

    async def send_command(self, work_id: str, command: Command, *,
                           request_id: str | None = None) -> Any: ...

    async def pending_commands(self, work_id: str, after: int = 0) -> Sequence[Any]: ...


# events a work may record after its terminal one (see engine.events): written unfenced,
# since the work's lease went with its end
# and the outcomes of commands it took after its end (rejected: it has ended)
_TRAILING = frozenset({ev.OBSERVER_PRODUCED, ev.OBSERVER_FAILED, ev.WORK_COMMAND})


async def _awaited(found: Any) -> None:
    try:
        await found
    except Exception:
        _LOG.exception("the error-report hook failed")


def _transient(error: BaseException) -> bool:
    return isinstance(error, StoreError) and error.transient


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkResult:
    """How a work ended. ``failure`` is the original reason, kept through compensation."""

    work_id: str
    status: str
    output: Any = None
    error: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    compensated: tuple[str, ...] = field(default_factory=tuple)
    events: int = 0  # how many events its stream holds

    @classmethod
    def of(cls, state: WorkState) -> WorkResult:
        return cls(work_id=state.work_id, status=state.display_status, output=state.output,
                   error=state.error, failure=state.failure,
                   compensated=tuple(state.compensated), events=state.seq)


class Runtime(Debugging):
    """Runs works of the registered sagas in this process, in memory.

    Use it as an async context manager: it owns the task group in which works
    run, and closes every work's services when it exits.
    """

    def __init__(self, sagas: Sequence[Saga] = (), *, services: Iterable[Service] = (),
                 clock: Clock | None = None, worker: str | None = None,
                 on_event: Callable[[RecordedEvent], None] | None = None,
                 store: Store | None = None, keep_finished: int = 256,
                 lease: Lease | None = None, gate: Gate | None = None,
                 lease_ttl: float = 10.0, store_retry_for: float = 30.0,
                 on_error: Callable[[ErrorReport], Any] | None = None,
                 secrets: Secrets | None = None, metrics: bool = True,
                 keep_logs: bool = True) -> None:
        if not isinstance(keep_finished, int) or keep_finished < 0:
            raise ValueError(f"keep_finished must be an integer >= 0, got {keep_finished!r}")
        for label, value in (("lease_ttl", lease_ttl), ("store_retry_for", store_retry_for)):
            if isinstance(value, bool) or not isinstance(value, int | float) or \
                    not math.isfinite(value) or value <= 0:
                raise ValueError(f"{label} must be a finite number of seconds > 0, "
                                 f"got {value!r}")
        # a transient store error (a lock held too long, a lost connection) is retried
        # with backoff for this long before the work is given up
        self.store_retry_for = float(store_retry_for)
        # seals the fields schemas mark secret, opens them for stage code (engine.secrets)
        self.secrets = secrets
        self.clock: Clock = clock or SystemClock()
        self.store = store
        # with a store, a finished work leaves memory (the store has it) once this many
        # more recent ones have finished: a long-running process stays the same size
        self.keep_finished = keep_finished
        self._retired: deque[str] = deque()
        if lease is not None and store is None:
            raise ValueError("a lease needs a store: leases are rows in it")
        # the works this runtime creates are leased to it in their creation's commit. A
        # worker node passes its lease and renews it; a plain runtime with a store takes
        # one of its own, renews it by heartbeat and lets it expire when it closes, so
        # two processes never both run a work (recover() claims only free works)
        self._own_lease = store is not None and lease is None
        if self._own_lease:
            from .store.leases import process_owner  # the store is there: SQLAlchemy is

            lease = Lease(owner=process_owner(), worker="runtime", ttl=float(lease_ttl))
        self.lease = lease
        self.gate = gate  # admits the transactions of stages with services, locks, rates
        self._driven: dict[str, anyio.Event] = {}  # work id -> set when its driver ends
        # work id -> the token of this runtime's claim on its lease (the fence of appends)
        self._tokens: dict[str, int] = {}
        # a slot is free again: (work id, whether the work ended, when a parked work is
        # due again or None, the number of the last command it took)
        self.on_driver_end: Callable[[str, bool, float | None, int], None] | None = None
        self.worker = worker
        self.on_event = on_event
        # told when a work ends for good on an error (engine.worklogs.ErrorReport): where a
        # Sentry client plugs in, e.g. on_error=lambda r: sentry_sdk.capture_exception(
        # r.exception) if r.exception else sentry_sdk.capture_message(r.error["message"])
        self.on_error = on_error
        # what stage code logs through ctx.logger, kept with its work in the store
        # (with a SqlStore: a store of another kind has no table for them); keep_logs=False
        # leaves them to Python's logging only
        self.logs = WorkLogs(cast(Any, store), worker) \
            if keep_logs and hasattr(store, "reader") else None
        # the works' figures in engine.metrics (off: this runtime counts nothing there)
        self.metrics = bool(metrics)
        self._sagas: dict[str, Saga] = {}
        for saga in sagas:
            if not isinstance(saga, Saga):
                raise DefinitionError(f"expected Saga definitions, got {saga!r}")
            if saga.name in self._sagas:
                raise DefinitionError(f"two sagas are registered as {saga.name!r}")
            self._sagas[saga.name] = saga
        self._services = {s.name: s for s in services}
        self._plans = {name: compile_saga(saga, self._sagas) for name, saga in self._sagas.items()}
        self._described: dict[str, dict[str, Any]] = {}  # saga -> describe(its plan)
        # saga -> (who, why, when) it was disabled: no new works of it start here
        self._disabled: dict[str, tuple[str | None, str, float | None]] = {}
        self._works: dict[str, WorkRunner] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> Runtime:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        if self._own_lease:
            self._tg.start_soon(self._heartbeat)
        if self.logs is not None:
            self._tg.start_soon(self.logs.run)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool | None:
        assert self._tg is not None
        driven = list(self._driven)
        self._tg.cancel_scope.cancel()
        try:
            return await self._tg.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # an error of the 'async with' body comes out as itself, not in a group
            if len(group.exceptions) == 1 and group.exceptions[0] is exc:
                return False
            raise
        finally:
            self._tg = None
            with anyio.CancelScope(shield=True):
                for runner in self._works.values():
                    await runner.services.aclose()
                if self.logs is not None:  # what the last drivers to end kept
                    await self.logs.flush()
                if self._own_lease and driven:
                    await self._hand_back(driven)

    async def _hand_back(self, work_ids: Sequence[str]) -> None:
        """Let this runtime's leases on these works expire now, so any driver (a worker
        node, another process's recover()) takes them over at once."""
        assert self.store is not None and self.lease is not None
        with anyio.move_on_after(5, shield=True):
            try:
                await self.store.expire_leases(owner=self.lease.owner, work_ids=work_ids)
            except Exception as exc:  # the store is away: the leases expire by themselves
                _LOG.warning("could not hand back the leases of %d works: %s",
                             len(work_ids), exc)

    async def _heartbeat(self) -> None:
        """Renew this runtime's leases on the works it drives; a work whose lease another
        process took over (this one stalled past the lease) stops here."""
        assert self.store is not None and self.lease is not None
        lease = self.lease
        while True:
            await anyio.sleep(lease.ttl / 3)
            ids = list(self._driven)
            if not ids:
                continue
            held: Mapping[str, int] | None = None
            try:
                with anyio.CancelScope(shield=True), anyio.move_on_after(lease.ttl / 3):
                    held = await self.store.renew_leases(owner=lease.owner, ttl=lease.ttl,
                                                         work_ids=ids)
            except Exception as exc:  # logged, tried again at the next beat
                _LOG.warning("could not renew the leases of %d works: %s", len(ids), exc)
                continue
            if held is None:  # no answer in time: nothing is known to be lost
                _LOG.warning("renewing the leases of %d works took over %.1f s", len(ids),
                             lease.ttl / 3)
                continue
            self.mail({w: n for w, n in held.items()})
            for work_id in ids:
                runner = self._works.get(work_id)
                if work_id not in held and runner is not None and work_id in self._driven \
                        and not runner.state.terminal:
                    lost = LeaseLostError(f"work {work_id}: its lease was taken over by "
                                          "another process; it stops here")
                    _LOG.error("%s", lost)
                    runner.stop()  # at its next step boundary, recording nothing more
                    runner.stop_with(lost)  # whoever waits for it is told

    def driven_state(self, work_id: str) -> WorkState | None:
        """The live state of ``work_id`` if this runtime drives it now (its recorded
        events, some maybe not yet durable), else None. Read it, never change it."""
        runner = self._works.get(work_id)
        if runner is None or work_id not in self._driven:
            return None
        return runner.state

    def mail(self, sent: Mapping[str, int] | Iterable[str], commands: Sequence[Any] = ()
             ) -> None:
        """Commands came to the inbox of these works (a mapping: each with the number of
        the last one sent): the ones driven here take them at their next step boundary.
        ``commands``: some of them as sent (:class:`engine.store.inbox.SentCommand`), so
        their drivers need not read them back."""
        numbers = sent if isinstance(sent, Mapping) else dict.fromkeys(sent)
        for command in commands:
            runner = self._works.get(command.work_id)
            if runner is not None and command.work_id in self._driven:
                runner.deliver(command)
        for work_id, number in numbers.items():
            runner = self._works.get(work_id)
            if runner is None or work_id not in self._driven:
                continue
            if number is None or number > runner.state.commands_applied:
                runner.mail()

    # ------------------------------------------------------------ registry

    @property
    def sagas(self) -> dict[str, Saga]:
        """The registered sagas by name, as they were given (a copy)."""
        return dict(self._sagas)

    def register(self, saga: Saga, *, replace: bool = False) -> None:
        """Register ``saga`` while the runtime runs; with ``replace``, in place of the
        saga of that name. See :meth:`update_sagas`."""
        self.update_sagas(register=[saga], replace=replace)

    def unregister(self, name: str) -> None:
        """Forget saga ``name``: no new works of it, and this runtime adopts none; the
        works it drives now go on with their plan. See :meth:`update_sagas`."""
        self.update_sagas(unregister=[name])

    def update_sagas(self, *, register: Sequence[Saga] = (), unregister: Sequence[str] = (),
                     replace: bool = False) -> None:
        """Register and unregister sagas at once, all or nothing.

        Each saga is compiled against the registry as it is after the change, so its
        :class:`~engine.SagaRef` stages resolve against the sagas registered now; a
        registered saga that uses a replaced one by name is compiled again with it. A
        saga still used by name by one that stays cannot be unregistered (a
        :class:`~engine.errors.DefinitionError` names both). The works this runtime
        drives keep the plan they started with; what it starts or adopts from now on
        takes the new one.

        >>> import anyio
        >>> from engine import Saga, Stage, SagaRef
        >>> async def step(ctx, n): return n + 1
        >>> async def main():
        ...     async with Runtime() as runtime:
        ...         runtime.register(Saga(name="inc", stages=[
        ...             Stage(name="a", transaction=step)]))
        ...         runtime.register(Saga(name="twice", stages=[
        ...             SagaRef(name="x", saga="inc"), SagaRef(name="y", saga="inc")]))
        ...         return (await runtime.run("twice", 1)).output
        >>> anyio.run(main)
        3
        """
        registry = dict(self._sagas)
        gone = list(unregister)
        for name in gone:
            if name not in registry:
                raise UnknownSagaError(f"no saga is registered as {name!r}, so it cannot be "
                                       f"unregistered (registered: {sorted(registry)})")
            del registry[name]
        added: set[str] = set()
        for saga in register:
            if not isinstance(saga, Saga):
                raise DefinitionError(f"expected Saga definitions, got {saga!r}")
            if saga.name in added:
                raise DefinitionError(f"two sagas to register are named {saga.name!r}")
            if saga.name in registry and not replace:
                raise DefinitionError(f"a saga is registered as {saga.name!r} already; pass "
                                      "replace=True to replace it")
            added.add(saga.name)
            registry[saga.name] = saga
        changed = added | set(gone)
        for name, plan in self._plans.items():
            missing = set(gone).intersection(plan.refs.values()) - added
            if name in registry and name not in added and missing:
                raise DefinitionError(
                    f"saga {sorted(missing)[0]!r} cannot be unregistered: saga {name!r} "
                    "uses it by name; unregister or replace that one too")
        # compiled before anything changes: one that fails changes nothing
        plans = {name: compile_saga(registry[name], registry) for name in sorted(added)}
        for name, plan in self._plans.items():
            if name in registry and name not in added and changed & set(plan.refs.values()):
                plans[name] = compile_saga(registry[name], registry)
        self._sagas = registry
        self._plans = {name: plans.get(name) or self._plans[name] for name in registry}
        for name in (*plans, *gone):
            self._described.pop(name, None)

    def disable(self, saga: str, *, by: str | None = None, reason: str = "",
                at: float | None = None) -> None:
        """No new works of ``saga`` start here (:meth:`start` raises
        :class:`~engine.errors.SagaDisabledError`, saying ``by`` whom, why and when
        (``at``, a Unix time), as far as they are given); its works already started go
        on. A name that is not registered (yet) may be disabled too."""
        self._disabled[saga] = (by or None, reason, at)

    def enable(self, saga: str) -> None:
        """New works of ``saga`` may start again."""
        self._disabled.pop(saga, None)

    def is_enabled(self, saga: str) -> bool:
        """Whether new works of ``saga`` may start (it may not be registered, though)."""
        return saga not in self._disabled

    def _check_enabled(self, saga: str) -> None:
        found = self._disabled.get(saga)
        if found is None:
            return
        by, reason, at = found
        told = [f"by {by}"] if by else []
        if at is not None:
            told.append(f"at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(at))}")
        said = f" ({' '.join(told)}{': ' + reason if reason and told else reason})" \
            if told or reason else ""
        raise SagaDisabledError(
            f"saga {saga!r} is disabled{said}: new works of it are refused (its works "
            "started before go on); enable it to start works", saga=saga, by=by,
            reason=reason, at=at)

    # ------------------------------------------------------------ lookup

    def plan(self, saga: str) -> Plan:
        try:
            return self._plans[saga]
        except KeyError:
            raise UnknownSagaError(
                f"no saga is registered as {saga!r} (registered: {sorted(self._plans)})"
            ) from None

    def describe(self, saga: str) -> dict[str, Any]:
        """The registered definition of ``saga`` as JSON-ready data, with its hash under
        ``definition`` (see :func:`engine.catalog.describe`). Do not change it."""
        found = self._described.get(saga)
        if found is None:
            found = self._described[saga] = describe(self.plan(saga))
        return found

    def definition(self, saga: str) -> str:
        """The hash of the registered definition of ``saga``: what its works record."""
        return str(self.describe(saga)["definition"])

    def catalog(self) -> list[dict[str, Any]]:
        """:meth:`describe` of every registered saga, by name."""
        return [self.describe(name) for name in sorted(self._plans)]

    def check_definition(self, state: WorkState) -> None:
        """Raise :class:`~engine.errors.DefinitionMismatchError` when the work of
        ``state`` was started on a definition of its saga that this runtime's does not
        continue (see :class:`engine.Saga`): it must not run here."""
        plan = self.plan(state.saga)
        current = self.definition(state.saga)
        if can_continue(plan, state.definition, state.definition_version, current=current):
            return
        version = state.definition_version
        continued = ", ".join(map(str, plan.saga.continues)) or "none"
        raise DefinitionMismatchError(
            f"work {state.work_id} was started on definition {state.definition} "
            f"(version {version if version is not None else 'unknown'}) of saga "
            f"{state.saga!r}; this runtime has definition {current} (version "
            f"{plan.saga.version}, continuing versions: {continued}), so the work is left "
            f"for a node that runs its definition. To go on with it here, declare version "
            f"{version if version is not None else '?'} in the saga's continues, or rewind "
            "it onto this definition", work_id=state.work_id, saga=state.saga,
            definition=str(state.definition), version=version, current=current,
            current_version=plan.saga.version)

    def _runner(self, work_id: str) -> WorkRunner:
        try:
            return self._works[work_id]
        except KeyError:
            if self.store is not None:
                raise UnknownWorkError(
                    f"work {work_id!r} is not in this process's memory (a finished work "
                    "leaves it; read it with 'await runtime.history()' or 'travel()')"
                ) from None
            raise UnknownWorkError(f"no work has id {work_id!r}") from None

    async def _get(self, work_id: str) -> WorkRunner:
        """The work's runner; a finished work that left memory is loaded from the store."""
        runner = self._works.get(work_id)
        if runner is not None or self.store is None:
            return self._runner(work_id)
        runner = await self._load(work_id)
        if not runner.state.terminal:
            raise WorkStateError(
                f"work {work_id!r} is {runner.state.display_status} and this process does "
                "not drive it (it is queued for worker nodes, or another process drives "
                "it): only the process that drives a work can steer it")
        self._works[work_id] = runner
        self._retire(runner)
        return runner

    async def _load(self, work_id: str) -> WorkRunner:
        """A runner for a work as the store has it (not registered, not driven)."""
        assert self.store is not None
        snapshot, rest = await self.store.load(work_id)
        if snapshot is None and not rest:
            raise UnknownWorkError(f"no work has id {work_id!r} in this runtime or its store")
        saga = snapshot.saga if snapshot is not None else saga_of(rest)
        return self._new_runner(self.plan(saga), work_id, snapshot=snapshot, history=rest)

    def _retire(self, runner: WorkRunner) -> None:
        """A durable work ended: forget the oldest finished ones beyond keep_finished."""
        if runner.sink is None:
            return  # memory is its only copy
        retired = self._retired
        retired.append(runner.work_id)
        while len(retired) > self.keep_finished:
            old = self._works.get(retired.popleft())
            if old is not None and old.state.terminal and not old.driving:
                del self._works[old.work_id]

    def state(self, work_id: str) -> WorkState:
        """The current state of a work (a copy)."""
        return self._runner(work_id).state.copy()

    def events(self, work_id: str) -> list[RecordedEvent]:
        return list(self._runner(work_id).events)

    def state_at(self, work_id: str, seq: int) -> WorkState:
        """Time travel: the state of a work right after event ``seq``."""
        stream = self._runner(work_id).events
        if not 0 <= seq <= len(stream):
            raise ValueError(f"work {work_id} has events 1..{len(stream)}; no seq {seq}")
        return replay(stream[:seq])

    def works(self) -> list[str]:
        return list(self._works)

    # ------------------------------------------------------------ lifecycle

    async def start(self, saga: str, input: Any = None, *, paused: bool = False,
                    work_id: str | None = None, breakpoints: Sequence[Breakpoint] = (),
                    dry_run: DryRun | None = None, run: bool = True, priority: int = 0,
                    start_at: float | None = None) -> str:
        """Create a work of ``saga`` and run it (or leave it paused, to be stepped).

        With ``run=False`` (a store needed) the work is only created, durably and without
        a lease, for a worker node to claim (higher ``priority`` first, not before
        ``start_at``, a Unix time); this runtime forgets it.
        """
        if not run and (self.store is None or dry_run is not None):
            raise ValueError("run=False creates a work for worker nodes: it needs a store "
                             "and no dry run")
        if isinstance(priority, bool) or not isinstance(priority, int) \
                or not -1_000_000 <= priority <= 1_000_000:
            raise ValueError(f"priority must be a whole number from -1000000 to 1000000, "
                             f"got {priority!r}")
        if start_at is not None:
            if run:
                raise ValueError("start_at delays a work for worker nodes: use run=False")
            if isinstance(start_at, bool) or not isinstance(start_at, int | float) \
                    or not math.isfinite(start_at):
                raise ValueError(f"start_at must be a Unix time in seconds, got {start_at!r}")
        if self._tg is None:
            raise RuntimeError("use the Runtime as 'async with Runtime(...) as runtime'")
        plan = self.plan(saga)
        self._check_enabled(saga)
        if dry_run is None:
            check_services(self._services, plan.services)
        if plan.saga.input_schema is not None:
            problem = schema_problem(plan.saga.input_schema, input)
            if problem is not None:
                raise ValueError(f"input of saga {saga!r} does not match its schema: {problem}")
        check_json(input, f"input of saga {saga!r}")
        if has_secrets(plan.saga.input_schema):
            if self.secrets is None:
                raise ValueError(f"saga {saga!r}'s input schema marks secret fields "
                                 f"({', '.join(secret_paths(plan.saga.input_schema))}): "
                                 f"they are stored encrypted, and this runtime has no key "
                                 f"([secrets] key)")
            input = self.secrets.seal(input, plan.saga.input_schema)
        if work_id is None:
            work_id = make_work_id()  # time-ordered and random: no need to ask the store
        elif check_work_id(work_id) in self._works:
            raise WorkStateError(f"a work with id {work_id!r} exists already")
        elif self.store is not None and await self.store.read(work_id, until=1):
            raise WorkStateError(f"a work with id {work_id!r} exists already in the store")
        # run=False: no lease, the work waits in the leases table for a worker node
        runner = self._new_runner(plan, work_id, dry_run=dry_run, queued=not run)
        self._works[work_id] = runner
        payload: dict[str, Any] = {"saga": saga, "input": input, "paused": paused,
                                   "stages": len(plan.saga.stages),
                                   "breakpoints": [b.to_dict() for b in breakpoints],
                                   "definition": self.definition(saga),
                                   "definition_version": plan.saga.version}
        if dry_run is not None:
            payload["dry_run"] = {"fail": list(dry_run.fail)}
        if priority:
            payload["priority"] = priority
        if start_at is not None:
            payload["start_at"] = float(start_at)
        carried = tracing.carrier()
        if carried is not None:  # the work's spans join the trace it was created in
            payload["trace"] = carried
        try:
            await runner.record(Event(type=ev.WORK_CREATED, payload=payload), flush=False)
            if run:
                await runner.prime()  # what follows for sure shares the creation's commit
            await runner.flush()
        except BaseException:
            del self._works[work_id]  # not durable: the work does not exist
            raise
        if run:
            if self.lease is not None:
                self._tokens[work_id] = 1  # the creation's commit took the first claim
            self._launch(runner)
        else:
            del self._works[work_id]
        return work_id

    def _new_runner(self, plan: Plan, work_id: str, *, dry_run: DryRun | None = None,
                    snapshot: WorkState | None = None,
                    history: Sequence[RecordedEvent] = (), queued: bool = False) -> WorkRunner:
        sink = None
        if self.store is not None and dry_run is None:
            store = self.store

            lease = None if queued else self.lease

            async def sink(records: list[RecordedEvent], state: WorkState) -> None:
                # the work ended and its lease went with its end, or was freed for a node
                # to take the commands that came meanwhile: what trails it is unfenced
                fenced = not (state.terminal and
                              all(r.event.type in _TRAILING for r in records))
                await self._append(store, work_id, records, state, lease, queued,
                                   lambda seq: runner.state_at_seq(seq), fenced,
                                   self._tokens.get(work_id, 0))

        runner = WorkRunner(plan, work_id, clock=self.clock,
                            services=ServiceScope(self._services, self.store),
                            worker=self.worker,
                            dry_run=dry_run, on_event=self.on_event, sink=sink,
                            snapshot=snapshot, history=history, gate=self.gate,
                            logs=None if dry_run is not None else self.logs,
                            secrets=self.secrets, metrics=self.metrics)
        if sink is not None and not queued and self.lease is not None:
            runner.park_after = self.lease.park_after
            box = self.store
            assert box is not None
            runner.inbox = lambda after: box.pending_commands(work_id, after)
        return runner

    async def _append(self, store: Store, work_id: str, records: list[RecordedEvent],
                      state: WorkState, lease: Lease | None, queue: bool,
                      state_then: Callable[[int], WorkState], fenced: bool = True,
                      token: int = 0) -> None:
        """Append, trying again with backoff while the store's error is transient. A
        retry that finds its seqs taken checks whether the earlier try did commit."""
        try:
            await store.append(work_id, records, state, lease=lease, queue=queue,
                                   fenced=fenced, token=token)
            return
        except StoreError as exc:
            if not exc.transient:
                raise
            _LOG.warning("work %s: the store refused an append for now, trying again: %s",
                         work_id, exc)
        # while it backs off the work may move on in memory: a retry writes the
        # projections of the state right after these records, not of the live one
        state = state_then(records[-1].seq)
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_delay(self.store_retry_for),
            wait=tenacity.wait_exponential_jitter(multiplier=0.05, max=2.0, jitter=0.05),
            retry=tenacity.retry_if_exception(_transient), sleep=anyio.sleep, reraise=True)
        async for attempt in retrying:
            with attempt:
                try:
                    await store.append(work_id, records, state, lease=lease, queue=queue,
                                   fenced=fenced, token=token)
                except (ConflictError, LeaseLostError):
                    # the try whose answer was lost may have committed (and, ending the
                    # work, dropped its lease)
                    if await self._landed(store, work_id, records):
                        return
                    raise
        _LOG.info("work %s: the store took the append again", work_id)

    @staticmethod
    async def _landed(store: Store, work_id: str, records: list[RecordedEvent]) -> bool:
        stored = await store.read(work_id, after=records[0].seq - 1, until=records[-1].seq)
        return [(r.seq, r.event) for r in stored] == [(r.seq, r.event) for r in records]

    async def recover(self) -> list[str]:
        """Load every unfinished work from the store and go on running it.

        A user call that was started but whose result was not recorded runs again,
        with the same attempt number (a crash does not count as an attempt), hence the
        same idempotency key. Paused works stay paused.
        """
        if self.store is None:
            raise RuntimeError("recover() needs a Runtime with a store")
        if self._tg is None:
            raise RuntimeError("use the Runtime as 'async with Runtime(...) as runtime'")
        rows = await self.store.works(status=["pending", "running", "paused", "waiting"],
                                      limit=10**9)
        rows = [row for row in rows if row["work_id"] not in self._works]
        if not self._own_lease:
            # works for worker nodes (queued or leased) are theirs to run, not ours
            theirs = await self.store.leased([row["work_id"] for row in rows])
            return await self._take_on([row["work_id"] for row in rows
                                        if row["work_id"] not in theirs])
        # only works nobody holds: their lease expired, their process has gone, or they
        # were made before leases; works queued for worker nodes stay theirs. Claimed a
        # chunk at a time and driven at once, so the heartbeat renews what was claimed
        # before it could expire while the rest loads
        assert self.lease is not None
        unknown = sorted({row["saga"] for row in rows if row["saga"] not in self._plans})
        if unknown:
            _LOG.warning("recover() leaves the works of sagas it does not know: %s", unknown)
        wanted = [(row["work_id"], row["saga"], int(row.get("priority") or 0))
                  for row in rows if row["saga"] in self._plans]
        recovered: list[str] = []
        for start in range(0, len(wanted), 100):
            mine = await self.store.claim_works(
                owner=self.lease.owner, worker=self.lease.worker, ttl=self.lease.ttl,
                works=wanted[start:start + 100])
            self._tokens.update(mine)
            recovered += await self._take_on(list(mine))
        return recovered

    async def _take_on(self, work_ids: Sequence[str]) -> list[str]:
        """Load these works and drive them; one that cannot be loaded is logged (naming
        the work, the seq and what is wrong) and handed back, the others go on."""
        recovered = []
        for work_id in work_ids:
            try:
                runner = await self._load(work_id)
                self.check_definition(runner.state)
            except DefinitionMismatchError as exc:
                _LOG.warning("recover() leaves work %s: %s", work_id, exc)
                if self._own_lease:
                    await self._hand_back([work_id])
                continue
            except Exception as exc:
                _LOG.error("recover() cannot load work %s: %s", work_id, exc)
                if self._own_lease:
                    await self._hand_back([work_id])
                continue
            if runner.state.terminal:
                continue
            runner.mail()  # commands may have come while nobody drove it
            self._works[work_id] = runner
            self._launch(runner)
            recovered.append(work_id)
        return recovered

    async def _drive(self, runner: WorkRunner) -> None:
        assert self._tg is not None
        state = runner.state
        try:
            tracer = tracing.active()
            if tracer is None:
                await runner.run(self._tg)
            else:
                with tracing.Span(tracer, f"work {state.saga}",
                                  {"stepsaga.saga": state.saga,
                                   "stepsaga.work_id": runner.work_id},
                                  tracing.parent_context(state.trace)) as span:
                    try:
                        await runner.run(self._tg)
                    finally:
                        span.set_attribute("stepsaga.outcome", runner.state.status)
        except Exception as exc:
            # the store refused an event (another writer, or the database is gone), or a
            # fault of the engine's: this process's copy of the work is stale; drop it,
            # the store keeps the truth. No other work notices.
            if isinstance(exc, StoreError):
                _LOG.error("work %s stopped here: %s", runner.work_id, exc)
            else:
                _LOG.exception("work %s stopped here on an unexpected error", runner.work_id)
            self._works.pop(runner.work_id, None)
            runner.stop_with(exc)
            if self._own_lease and not isinstance(exc, LeaseLostError):
                await self._hand_back([runner.work_id])  # another driver goes on now
        finally:
            terminal = runner.state.terminal
            if not terminal and not runner.driving:  # released: another process goes on
                self._works.pop(runner.work_id, None)
            with anyio.CancelScope(shield=True):
                if terminal or runner.work_id not in self._works:
                    await runner.services.aclose()
            if terminal:
                self._retire(runner)
            self._ended(runner, terminal)
            done = self._driven.pop(runner.work_id, None)
            self._tokens.pop(runner.work_id, None)  # a later drive claims again
            if done is not None:
                done.set()
            if self.on_driver_end is not None:
                self.on_driver_end(runner.work_id, terminal,
                                   None if terminal else runner.parked_until,
                                   runner.state.commands_applied)

    def _ended(self, runner: WorkRunner, terminal: bool) -> None:
        """The driver stopped: the work's held log records kept or dropped, and the
        error-report hook told of a work that ended for good on an error."""
        state = runner.state
        if self.logs is not None:
            if terminal:
                self.logs.ended(runner.work_id, state.status)
            else:
                self.logs.forget(runner.work_id)
        if not terminal or self.on_error is None or runner.dry_run is not None or \
                state.status not in ("failed", "compensation_failed"):
            return
        failure = state.failure or {}
        if state.status == "compensation_failed":
            path = str((state.error or {}).get("path", failure.get("path", "")))
            exc = runner.raised.get(("compensation", path))
            error = state.error or failure
        else:
            path = str(failure.get("path", ""))
            exc = runner.raised.get(("transaction", path))
            error = failure.get("error") or state.error or {}
        report = ErrorReport(work_id=runner.work_id, saga=state.saga, status=state.status,
                             path=path, error=dict(error), exception=exc)
        try:
            found = self.on_error(report)
            if inspect.isawaitable(found):
                assert self._tg is not None
                self._tg.start_soon(_awaited, found)
        except Exception:  # a broken hook never stops a work
            _LOG.exception("the error-report hook failed on work %s", runner.work_id)

    def _launch(self, runner: WorkRunner) -> None:
        assert self._tg is not None
        runner.claim()  # before the task runs: no step may slip in between
        self._driven[runner.work_id] = anyio.Event()
        self._tg.start_soon(self._drive, runner)

    def driven(self) -> list[str]:
        """The ids of the works this runtime drives now."""
        return list(self._driven)

    @property
    def running(self) -> int:
        """How many works this runtime drives now."""
        return len(self._driven)

    async def adopt(self, work_id: str) -> bool:
        """Load a work from the store and drive it here (a worker claimed it); False if
        it has ended. A work whose stream cannot be loaded raises why."""
        broken: dict[str, Exception] = {}
        adopted = (await self.adopt_many([work_id], broken=broken))[0]
        if adopted is None:
            raise broken[work_id]
        return adopted

    async def adopt_many(self, work_ids: Sequence[str], *,
                         broken: dict[str, Exception] | None = None,
                         mail: Mapping[str, int] | None = None,
                         tokens: Mapping[str, int] | None = None) -> list[bool | None]:
        """:meth:`adopt` for many works, loaded together: for each, True (driven here),
        False (it has ended) or None (its stream cannot be loaded: logged, naming the
        work, the seq and what is wrong, and kept in ``broken``); one broken work does
        not keep the others back. ``mail``: the number of the last command sent to each
        (a claim returns it); a work with commands it has not taken takes them first,
        even one that has ended (it was queued to record their outcome). Without it, a
        plain runtime looks in each adopted work's inbox. ``tokens``: the token of each
        work's claim (the fence of its appends)."""
        if self.store is None:
            raise RuntimeError("adopt() needs a Runtime with a store")
        if self._tg is None:
            raise RuntimeError("use the Runtime as 'async with Runtime(...) as runtime'")
        if tokens is not None:
            self._tokens.update((w, t) for w, t in tokens.items() if w not in self._driven)
        loaded = await self.store.load_many([w for w in work_ids if w not in self._driven])
        runners: dict[str, WorkRunner] = {}
        failed: dict[str, Exception] = {} if broken is None else broken
        for work_id, (snapshot, rest) in loaded.items():
            if snapshot is None and not rest:
                raise UnknownWorkError(f"no work has id {work_id!r} in the store")
            try:
                saga = snapshot.saga if snapshot is not None else saga_of(rest)
                runner = self._new_runner(self.plan(saga), work_id, snapshot=snapshot,
                                          history=rest)
                self.check_definition(runner.state)
            except DefinitionMismatchError as exc:
                _LOG.warning("not adopting work %s: %s", work_id, exc)
                failed[work_id] = exc
                continue
            except Exception as exc:
                _LOG.error("cannot adopt work %s: %s", work_id, exc)
                failed[work_id] = exc
                continue
            applied = runner.state.commands_applied
            if mail is not None:
                waiting = mail.get(work_id, 0) > applied
            elif runner.state.terminal:
                waiting = bool(await self.store.pending_commands(work_id, applied))
            else:
                waiting = True  # its first pass looks in its inbox
            if waiting:
                runner.mail()  # before it drives: the first pass takes the commands
            if not runner.state.terminal or waiting:
                runners[work_id] = runner
        if self._own_lease and runners:
            # a plain runtime claims them first (a worker node has claimed them already)
            assert self.lease is not None
            tokens = await self.store.claim_works(
                owner=self.lease.owner, worker=self.lease.worker, ttl=self.lease.ttl,
                works=[(w, r.state.saga, r.state.priority) for w, r in runners.items()],
                free=True)
            self._tokens.update(tokens)
            claimed = set(tokens)
            held = sorted(set(runners) - claimed)
            if held:
                await self._hand_back(sorted(claimed))
                raise WorkStateError(f"work {held[0]} is held by another process (or not "
                                     "due yet); it cannot be adopted here")
            # read again now that they are ours: a holder whose lease ran out may have
            # recorded more between the first read and the claim
            for work_id, (snapshot, rest) in (await self.store.load_many(
                    sorted(claimed))).items():
                again = self._new_runner(self.plan(runners[work_id].state.saga), work_id,
                                         snapshot=snapshot, history=rest)
                again.mail()
                if again.state.terminal and not await self.store.pending_commands(
                        work_id, again.state.commands_applied):
                    # it ended meanwhile: a node finds it so, drops it
                    del runners[work_id]
                    await self._hand_back([work_id])
                else:
                    runners[work_id] = again
        adopted: list[bool | None] = []
        for work_id in work_ids:
            if work_id in self._driven:
                adopted.append(True)
                continue
            if work_id in failed:
                adopted.append(None)
                continue
            ready = runners.get(work_id)
            if ready is None:
                adopted.append(False)  # it has ended
                continue
            self._works[work_id] = ready
            self._launch(ready)
            adopted.append(True)
        return adopted

    async def release(self, work_id: str) -> None:
        """Stop driving a work at its next step boundary and forget it: the calls in
        flight finish and are recorded first. The store keeps it for whoever goes on."""
        runner = self._works.get(work_id)
        done = self._driven.get(work_id)
        if runner is None or done is None:
            return
        runner.stop()
        await done.wait()
        if self._own_lease and not runner.state.terminal:
            await self._hand_back([work_id])  # anyone (this runtime too) may take it on

    async def wait(self, work_id: str) -> WorkResult:
        """Wait until the work ends."""
        runner = await self._get(work_id)
        await runner.wait_finished()
        return WorkResult.of(runner.state)

    async def run(self, saga: str, input: Any = None) -> WorkResult:
        """Start a work and wait for its end."""
        return await self.wait(await self.start(saga, input))

    async def dry_run(self, saga: str, input: Any = None, *,
                      fail: Sequence[str] = ()) -> WorkResult:
        """Run ``saga`` with each stage's example output; stages matching ``fail`` fail.

        ``fail`` names stages as :func:`engine.catalog.fail_globs` reads them (a stage's
        path, ``pack[*]/box`` for every item, ``pack[1]/box`` for one, or a glob); one
        that names no stage with a transaction raises ``ValueError``."""
        globs = fail_globs(self.plan(saga), fail)
        return await self.wait(await self.start(saga, input, dry_run=DryRun(fail=globs)))
