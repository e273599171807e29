"""What the GraphQL schema does, without GraphQL: read works from the store, send
commands through the inbox and wait for their outcome on the event feed.

An API node never appends to a work: every steering request is a command in the
work's inbox (:mod:`engine.store.inbox`), checked first against the stored state
with the same rule the holder applies (:func:`engine.commands.command_events`), then
carried out by the node that holds the work. The request waits (up to a timeout) for
the holder's ``work.command`` event on this process's feed and answers with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from engine import Runtime, Saga
from engine.commands import Command, command_events
from engine.errors import (
    ConflictError,
    SagaDisabledError,
    UnknownSagaError,
    UnknownWorkError,
    WorkStateError,
)
from engine.events import RecordedEvent
from engine.plan import Plan
from engine.state import TERMINAL, WorkState, evolve, replay
from engine.store import SqlStore
from engine.store.aggregates import plain_row
from engine.store.feed import Feed

__all__ = ["CHECKPOINT_EVERY", "CHECKPOINT_WORKS", "DRY_RUN_LIMIT", "ApiError", "Outcome",
           "Rehearsal", "Service"]

# the events after which a work has ended (TERMINAL, its statuses)
_ENDS = frozenset({"work.completed", "work.failed", "work.compensation_failed",
                   "work.cancelled"})
CHECKPOINT_EVERY = 100  # events between the states kept for time travel
CHECKPOINT_WORKS = 32  # works whose states are kept, the most recently asked about
LATEST_WORKS = 64  # works whose latest known state is kept (see Service.state)
# seconds a dry run may take: its Sleep stages sleep and its Wait stages wait for real
DRY_RUN_LIMIT = 10.0


class ApiError(Exception):
    """A request that cannot be done: ``kind`` is not_found, wrong_state, invalid_input,
    conflict or quota_exceeded; ``field`` names the argument at fault, ``status`` the
    work's status, ``headers`` what an HTTP answer carries (a quota's RateLimit)."""

    def __init__(self, kind: str, message: str, *, field: str | None = None,
                 status: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.field = field
        self.status = status
        self.headers = dict(headers or {})


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the holder recorded for a command: its ``work.command`` event's payload
    (``None`` while no holder has taken it within the wait)."""

    work_id: str
    number: int
    recorded: RecordedEvent | None

    @property
    def payload(self) -> dict[str, Any]:
        return dict(self.recorded.event.payload) if self.recorded is not None else {}


def _points(found: Any) -> list[str]:
    """Breakpoints as a request asks for them: what they stop at, not their random ids."""
    return sorted(json.dumps({k: b.get(k) for k in ("event", "path", "when", "condition")},
                             sort_keys=True) for b in found)


def _digest(request_id: str) -> str:
    """The id a request id names (of a work it creates, of a fork it makes)."""
    if not isinstance(request_id, str) or not 1 <= len(request_id) <= 200:
        raise ApiError("invalid_input", f"a request id must be 1 to 200 characters, got "
                       f"{request_id!r:.60}", field="requestId")
    return hashlib.sha256(request_id.encode()).hexdigest()[:40]


def rejection(work_id: str, error: BaseException, status: str) -> ApiError:
    """The API error for a command the rules refused."""
    if isinstance(error, WorkStateError):
        return ApiError("wrong_state", str(error), status=status)
    if isinstance(error, KeyError):
        return ApiError("not_found", str(error.args[0]) if error.args else str(error))
    return ApiError("invalid_input", str(error))


@dataclass(frozen=True, slots=True)
class Rehearsal:
    """How a dry run went: the work's state at its end (or when its time ran out:
    ``ended`` false), its events, and the globs its ``fail`` patterns became."""

    state: WorkState
    events: list[RecordedEvent]
    fail: tuple[str, ...]
    ended: bool

    def forced(self, path: str) -> bool:
        """Whether the stage at ``path`` failed because ``fail`` named it."""
        from fnmatch import fnmatchcase

        st = self.state.stages.get(path)
        return st is not None and st.status in ("failed", "compensated") and \
            st.error is not None and any(fnmatchcase(path, g) for g in self.fail)


class Service:
    """The API's operations over one store; ``wake`` is told of every command sent (a
    worker node in this process takes it at once)."""

    def __init__(self, store: SqlStore, feed: Feed, runtime: Runtime, *,
                 wake: Any = None, local: Any = None, command_timeout: float = 10.0,
                 lost_after: float = 10.0, app: Any = None, follower: Any = None,
                 limits: Any = None, secrets: Any = None) -> None:
        self.store = store
        self.feed = feed
        self.runtime = runtime  # the sagas' plans; creates works for the worker nodes
        self.wake = wake
        # the live state of a work a worker of this process drives (None: not driven
        # here): a command to it is checked without reading the store
        self.local = local
        self.command_timeout = command_timeout
        # a worker whose last heartbeat is older than this (the nodes' lease time) is lost
        self.lost_after = lost_after
        self._policies: tuple[float, Any] | None = None  # (when read, Policies)
        self._checkpoints: dict[str, dict[int, WorkState]] = {}  # work -> seq -> state
        # work -> (its latest state known here, the position of its last event or None)
        self._latest: dict[str, tuple[WorkState, int | None]] = {}
        self.app = app  # its code sagas and the functions sagas given as data may use
        # the reducers its aggregate folds with besides the built-in ones
        self.reducers: dict[str, Any] = dict(getattr(app, "reducers", None) or {})
        self.follower = follower  # keeps the runtime in step with the store's sagas
        # the API clients' quotas (graphql_api.limits.LimitsSource; None: none)
        self.limits = limits
        # the deployment's key (engine.secrets), to open secrets for who may read them
        self.secrets = secrets

    # ------------------------------------------------------------ sagas

    async def change_saga(self, action: str, name: str, *, by: str, data: Any = None,
                          reason: str = "") -> Any:
        """Create or replace a saga given as data, enable or disable any saga, or delete
        a saga given as data; the stored row (the deleted one for a delete). The API's
        runtime takes the change at once; worker nodes at their next poll."""
        from engine.errors import DefinitionError
        from engine.store import sagas as saga_rows

        code = list(getattr(self.app, "sagas", ()) or ())
        functions = getattr(self.app, "functions", None) or {}
        try:
            if action == "put":
                row = await saga_rows.put_saga(self.store, name, data, functions=functions,
                                               by=by, code_sagas=code)
            elif action == "enable":
                row = await saga_rows.enable_saga(self.store, name, by=by, code_sagas=code)
            elif action == "disable":
                row = await saga_rows.disable_saga(self.store, name, by=by, reason=reason,
                                                   code_sagas=code)
            else:
                row = await saga_rows.delete_saga(self.store, name, by=by)
                self.policies_changed()  # the policies naming it went with it
        except UnknownSagaError as exc:
            raise ApiError("not_found", str(exc), field="name") from None
        except WorkStateError as exc:
            raise ApiError("wrong_state", str(exc)) from None
        except ConflictError as exc:
            raise ApiError("conflict", str(exc)) from None
        except DefinitionError as exc:
            raise ApiError("invalid_input", str(exc), field="data") from None
        except ValueError as exc:
            raise ApiError("invalid_input", str(exc),
                           field="by" if "by" in str(exc) else "data") from None
        if self.follower is not None:
            await self.follower.refresh(force=True)
        return row

    # ------------------------------------------------------------ workers

    def shown_worker(self, row: dict[str, Any], now: float | None = None) -> dict[str, Any]:
        """A worker's row as people see it: ``lost`` when it is not removed and its
        heartbeat is older than the lease time (its node died or cannot reach the store)."""
        import time

        shown = dict(row)
        moment = time.time() if now is None else now
        if shown["status"] != "removed" and shown["heartbeat_at"] < moment - self.lost_after:
            shown["status"] = "lost"
        return shown

    async def workers(self, status: list[str] | None = None) -> list[dict[str, Any]]:
        from workers import registry

        rows = [self.shown_worker(r) for r in await registry.list_workers(self.store)]
        return [r for r in rows if not status or r["status"] in status]

    async def worker(self, worker_id: str) -> dict[str, Any]:
        for row in await self.workers():
            if row["worker_id"] == worker_id:
                return row
        raise ApiError("not_found", f"no worker has id {worker_id!r}", field="workerId")

    async def node_command(self, node_id: str, kind: str, args: dict[str, Any], *,
                           by: str = "", request_id: str | None = None,
                           wait: float | None = None) -> dict[str, Any] | None:
        """Send a command to worker node ``node_id`` and wait for the outcome it records
        (None: not taken within the wait). A node none of whose workers is alive is not
        sent anything."""
        from engine.store import inbox
        from workers import registry

        alive = [w for w in await self.workers() if w["node"] == node_id
                 and w["status"] in ("active", "draining")]
        if not alive:
            raise ApiError("not_found", f"no live worker node has id {node_id!r}",
                           field="node")
        try:
            sent = await inbox.send_to_node(self.store, node_id, kind, args, by=by,
                                            request_id=request_id)
        except ConflictError as exc:
            raise ApiError("conflict", str(exc), field="requestId") from None
        except ValueError as exc:
            raise ApiError("invalid_input", str(exc)) from None
        if self.wake is not None:
            self.wake([inbox.NODE_PREFIX + node_id])
        limit = self.command_timeout if wait is None else wait
        for _ in range(max(1, int(limit / 0.02))):
            found = await registry.command_outcome(self.store, node_id, sent.number)
            if found is not None:
                return found
            await anyio.sleep(0.02)
        return None

    # ------------------------------------------------------------ reading

    def plan(self, saga: str) -> Plan:
        try:
            return self.runtime.plan(saga)
        except UnknownSagaError as exc:
            raise ApiError("not_found", str(exc), field="saga") from None

    def sagas(self) -> list[Saga]:
        return [self.runtime.plan(d["saga"]).saga for d in self.runtime.catalog()]

    async def state(self, work_id: str) -> WorkState:
        """A work's state as the store has it."""
        return (await self._state(work_id))[0]

    async def _state(self, work_id: str) -> tuple[WorkState, int | None]:
        """A work's state and the position of its last event (None: not known). The
        latest states of the works asked about lately are kept: asked again, only the
        events since are read, from the last one known on (if that is gone, the work
        was deleted or replaced: it is loaded afresh)."""
        kept = self._latest.pop(work_id, None)
        if kept is not None:
            known, position = kept
            stream = await self.store.read(work_id, after=known.seq - 1)
            if stream and stream[0].seq == known.seq and (
                    position is None or stream[0].position == position):
                if len(stream) > 1:
                    known, position = replay(stream[1:], known), stream[-1].position
                self._keep(work_id, known, position)
                return known, position
        snapshot, rest = await self.store.load(work_id)
        if snapshot is None and not rest:
            raise ApiError("not_found", f"no work has id {work_id!r}", field="workId")
        state = replay(rest, snapshot)
        position = rest[-1].position if rest else None
        self._keep(work_id, state, position)
        return state, position

    def _keep(self, work_id: str, state: WorkState, position: int | None) -> None:
        self._latest[work_id] = (state, position)  # the most recently used last
        while len(self._latest) > LATEST_WORKS:
            self._latest.pop(next(iter(self._latest)))

    async def policies(self) -> Any:
        """The deployment's policies, read again at most every half second: a change is
        in force on every node within a second."""
        import time

        from engine.store import policies

        now = time.monotonic()
        if self._policies is None or now - self._policies[0] > 0.5:
            self._policies = (now, await policies.load(self.store))
        return self._policies[1]

    def policies_changed(self) -> None:
        """This node changed the policies (or removed what they name): its next request
        reads them again, not in half a second."""
        self._policies = None

    async def events(self, work_id: str, *, after: int = 0, first: int = 100
                     ) -> list[RecordedEvent]:
        if isinstance(first, bool) or not 1 <= first <= 1000:
            raise ApiError("invalid_input", f"first must be 1 to 1000, got {first!r}",
                           field="first")
        return await self.store.read(work_id, after=after, limit=first)

    async def state_at(self, work_id: str, seq: int) -> WorkState:
        """Time travel: the state right after event ``seq``. A work's events never change
        once written, so states along its stream are kept (every CHECKPOINT_EVERY events,
        for the last few works asked about) and a scrub through a long work replays only
        the events after the nearest one."""
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ApiError("invalid_input", f"seq must be a whole number >= 0, got {seq!r}",
                           field="seq")
        kept = self._checkpoints.pop(work_id, {})
        self._checkpoints[work_id] = kept  # the most recently used last
        while len(self._checkpoints) > CHECKPOINT_WORKS:
            self._checkpoints.pop(next(iter(self._checkpoints)))
        base = max((s for s in kept if s <= seq), default=0)
        state = kept[base].copy() if base else WorkState()
        stream = await self.store.read(work_id, after=base, until=seq)
        if not stream and not base:
            if await self.store.read(work_id, until=1):
                return WorkState()  # seq 0: before anything happened
            raise ApiError("not_found", f"no work has id {work_id!r}", field="workId")
        for recorded in stream:
            evolve(state, recorded)
            if recorded.seq % CHECKPOINT_EVERY == 0 and recorded.seq not in kept:
                kept[recorded.seq] = state.copy()
        if state.seq != seq:
            raise ApiError("invalid_input", f"work {work_id} has events 1..{state.seq}; no "
                           f"seq {seq}", field="seq")
        return state

    # ------------------------------------------------------------ creating

    async def create_work(self, saga: str, input: Any, *, paused: bool = False,
                          priority: int = 0, start_at: float | None = None,
                          work_id: str | None = None, breakpoints: Sequence[Any] = (),
                          request_id: str | None = None,
                          client: tuple[Any, str | None] | None = None) -> tuple[str, bool]:
        """Create a work queued for the worker nodes; its id and whether it is new. A
        request id (or a work id given) makes it idempotent: the same request again
        answers the work it made; another request with that id is a conflict.
        ``client``: the principal and address of the API client asking, whose quotas
        (graphql_api.limits) a new work is charged to."""
        self.plan(saga)
        if request_id is not None:
            if work_id is not None:
                raise ApiError("invalid_input", "give a work id or a request id, not both",
                               field="requestId")
            work_id = "req-" + _digest(request_id)
        if work_id is not None:
            earlier = await self.store.read(work_id, until=1)
            if earlier:
                first = earlier[0].event.payload
                asked = {"saga": saga, "input": input, "paused": paused,
                         "priority": priority, "start_at": start_at,
                         "breakpoints": _points(b.to_dict() for b in breakpoints)}
                had = {"saga": first.get("saga"), "input": first.get("input"),
                       "paused": bool(first.get("paused")),
                       "priority": first.get("priority", 0), "start_at": first.get("start_at"),
                       "breakpoints": _points(first.get("breakpoints", []))}
                if request_id is not None and asked == had:
                    return work_id, False
                which = f"request id {request_id!r}" if request_id is not None else \
                    f"work id {work_id!r}"
                raise ApiError("conflict", f"{which} was used before for another work "
                               f"(of saga {had['saga']!r}); use a new one",
                               field="requestId" if request_id is not None else "workId")
        paid = None
        if client is not None and self.limits is not None:
            from .limits import charge

            paid = await charge(self.store, self.limits.current(), *client, saga)
            if paid.refused is not None:
                raise ApiError("quota_exceeded", paid.message, headers=paid.headers)
        try:
            made = await self._start(saga, input, paused=paused, priority=priority,
                                     start_at=start_at, work_id=work_id,
                                     breakpoints=breakpoints)
        except BaseException:
            if paid is not None:
                from .limits import refund

                with anyio.CancelScope(shield=True):
                    await refund(self.store, paid)
            raise
        if paid is not None:
            from .limits import keep_charges

            await keep_charges(self.store, made, paid)
        return made, True

    async def _start(self, saga: str, input: Any, *, paused: bool, priority: int,
                     start_at: float | None, work_id: str | None,
                     breakpoints: Sequence[Any]) -> str:
        try:
            return await self.runtime.start(saga, input, paused=paused, run=False,
                                            priority=priority, start_at=start_at,
                                            work_id=work_id, breakpoints=breakpoints)
        except WorkStateError as exc:
            raise ApiError("conflict", str(exc), field="workId") from None
        except SagaDisabledError as exc:
            raise ApiError("wrong_state", str(exc), status="disabled") from None
        except (ValueError, TypeError) as exc:
            field = "input" if "input" in str(exc) else (
                "priority" if "priority" in str(exc) else
                "workId" if "work id" in str(exc) else "startAt")
            raise ApiError("invalid_input", str(exc), field=field) from None

    async def run_work(self, saga: str, input: Any, *, request_id: str | None = None,
                       wait: float = 30.0, client: tuple[Any, str | None] | None = None
                       ) -> dict[str, Any]:
        """Create a work (as :meth:`create_work`) and wait, up to ``wait`` seconds,
        until it ends: its row then, JSON decoded (status, output, error, ...). What a
        pack's field does
        for an operation that is a saga (an upload, a sign-up's first step); when the
        wait is over, ``ApiError`` wrong_state with the work's status (it goes on)."""
        async with self.feed.subscribe(after=None) as following:
            work_id, _ = await self.create_work(saga, input, request_id=request_id,
                                                client=client)
            row = await self.store.work(work_id)
            with anyio.move_on_after(wait):
                if row is not None and row["status"] not in TERMINAL:
                    async for recorded in following:
                        if recorded.work_id == work_id and \
                                recorded.event.type in _ENDS:
                            break
            row = await self.store.work(work_id)
        if row is None or row["status"] not in TERMINAL:
            raise ApiError("wrong_state", f"work {work_id} of saga {saga!r} has not ended "
                           f"within {wait:g} s; it goes on",
                           status=None if row is None else row["status"])
        return plain_row(row)

    async def rewind(self, work_id: str, seq: int, *, paused: bool = True,
                     request_id: str | None = None) -> str:
        """Fork ``work_id`` at ``seq`` into a new work queued for the worker nodes, in one
        commit. A request id names the fork: the same request again answers the same
        fork; the id used for another fork is a conflict."""
        state = await self.state(work_id)
        if isinstance(seq, bool) or not 1 <= seq <= state.seq:
            raise ApiError("invalid_input", f"work {work_id} has events 1..{state.seq}; "
                           f"cannot rewind to seq {seq}", field="toSeq")
        self.plan(state.saga)
        new_id = None
        if request_id is not None:
            new_id = "fork-" + _digest(request_id)
            earlier = await self.store.read(new_id, until=1)
            if earlier:
                came = earlier[0].event.payload.get("forked_from") or {}
                if came == {"work_id": work_id, "seq": seq}:
                    return new_id
                raise ApiError("conflict", f"request id {request_id!r} was used before for "
                               f"another fork (of {came.get('work_id')} at seq "
                               f"{came.get('seq')}); use a new one", field="requestId")
        return await self.runtime.rewind(work_id, seq, paused=paused, new_work_id=new_id,
                                         run=False)

    async def dry_run(self, saga: str, input: Any, fail: Sequence[str] = (), *,
                      limit: float = DRY_RUN_LIMIT) -> Rehearsal:
        """Rehearse a work of ``saga`` with the engine's dry run (:meth:`Runtime.dry_run`,
        :class:`engine.DryRun`): each stage's transaction is replaced by its example
        output (its input when it declares none), the stages ``fail`` names (see
        :func:`engine.catalog.fail_globs`) fail for good instead, and compensations are
        recorded as done without being called. The input and the stages' schemas are
        checked; guards, map items, branch choices and loop conditions are user code
        that runs for real, since they decide the path; observers are not told, and
        Sleep and Wait stages take their time. Nothing is stored: the work
        lives in a runtime of its own, in memory, for this call alone, and is gone when
        it returns (stopped where it was if it takes over ``limit`` seconds: a Sleep or
        a Wait). A disabled saga may be rehearsed: no work of it is created."""
        from engine import DryRun
        from engine.catalog import fail_globs

        plan = self.plan(saga)
        try:
            globs = fail_globs(plan, list(fail))
        except ValueError as exc:
            raise ApiError("invalid_input", str(exc), field="fail") from None
        sagas = list(self.runtime.sagas.values())  # with those its SagaRefs name
        services = list(getattr(self.app, "services", ()) or ())
        async with Runtime(sagas, services=services) as runtime:
            try:
                work_id = await runtime.start(saga, input, dry_run=DryRun(fail=globs))
            except (ValueError, TypeError) as exc:
                raise ApiError("invalid_input", str(exc), field="input") from None
            with anyio.move_on_after(limit):
                await runtime.wait(work_id)
            state = runtime.state(work_id)
            # the rest is cancelled as the runtime closes
            return Rehearsal(state=state, events=runtime.events(work_id), fail=globs,
                             ended=state.terminal)

    async def compare(self, a: str, b: str) -> tuple[int, RecordedEvent | None,
                                                     RecordedEvent | None] | None:
        """The first seq where two works' events differ (see Runtime.compare)."""
        for work_id in (a, b):
            await self.state(work_id)  # not found: says which
        return await self.runtime.compare(a, b)

    async def diff(self, work_id: str, before: int, after: int) -> list[dict[str, Any]]:
        """What changed in a work's state between two seqs: one entry per changed path
        (``stages/pay/status``), with the value before and after."""
        import dataclasses

        old = dataclasses.asdict(await self.state_at(work_id, before))
        new = dataclasses.asdict(await self.state_at(work_id, after))
        found: list[dict[str, Any]] = []
        _diff("", old, new, found)
        return found

    # ------------------------------------------------------------ steering

    async def command(self, work_id: str, command: Command, *,
                      request_id: str | None = None, wait: float | None = None) -> Outcome:
        """Check ``command`` against the work's stored state, send it to the work's
        inbox and wait for the holder to take it."""
        local = None if self.local is None else self.local(work_id)
        if local is not None:  # the outcome is followed from now on (position None)
            state, position = local, None
        else:
            state, position = await self._state(work_id)
        plan = self.plan(state.saga)
        try:
            command_events(plan, state, command)
        except (WorkStateError, ValueError, TypeError, KeyError) as exc:
            raise rejection(work_id, exc, state.display_status) from None
        limit = self.command_timeout if wait is None else wait
        if not (math.isfinite(limit) and limit >= 0):
            raise ApiError("invalid_input", f"a wait must be >= 0 seconds, got {limit!r}")
        # the outcome comes after the last event known here: followed from there, the
        # subscription may start once the command is sent (off the way to the holder)
        async with contextlib.AsyncExitStack() as stack:
            if position is None:
                taken = await stack.enter_async_context(self.feed.subscribe(
                    work_id=work_id, types=["work.command"]))
            try:
                sent = await self.store.send_command(work_id, command, request_id=request_id)
            except UnknownWorkError as exc:
                raise ApiError("not_found", str(exc), field="workId") from None
            except ConflictError as exc:
                raise ApiError("conflict", str(exc), field="requestId") from None
            except ValueError as exc:
                raise ApiError("invalid_input", str(exc)) from None
            if self.wake is not None:  # a worker of this process may hold it
                self.wake([work_id], [sent])
            if position is not None:
                taken = await stack.enter_async_context(self.feed.subscribe(
                    after=position, work_id=work_id, types=["work.command"]))
            # only a retried request id can name a command taken before this request
            found = None if request_id is None else await self._earlier(work_id,
                                                                        sent.number)
            if found is None and limit > 0:
                with anyio.move_on_after(limit):
                    async for recorded in taken:
                        if recorded.event.payload.get("number") == sent.number:
                            found = recorded
                            break
        return Outcome(work_id=work_id, number=sent.number, recorded=found)

    async def _earlier(self, work_id: str, number: int) -> RecordedEvent | None:
        """The outcome of command ``number`` if it was recorded already (a retried
        request id), else None."""
        state = await self.state(work_id)
        if state.commands_applied < number:
            return None
        for recorded in await self.store.read(work_id):
            if recorded.type == "work.command" and \
                    recorded.event.payload.get("number") == number:
                return recorded
        return None


def check_outcome(outcome: Outcome, status: str) -> None:
    """Raise the holder's rejection of a command as the API error it is."""
    payload = outcome.payload
    if payload.get("outcome") != "rejected":
        return
    error = payload.get("error") or {}
    # the recorded type may carry its module (engine.errors.WorkStateError)
    name = str(error.get("type")).rsplit(".", 1)[-1]
    kind = {"WorkStateError": "wrong_state", "KeyError": "not_found"}.get(
        name, "invalid_input")
    if name.endswith("StateError") or name == "DefinitionMismatchError":
        kind = "wrong_state"
    raise ApiError(kind, str(error.get("message", "rejected")), status=status)



_GONE = object()


def _diff(where: str, old: Any, new: Any, found: list[dict[str, Any]]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            _diff(f"{where}/{key}" if where else str(key), old.get(key, _GONE),
                  new.get(key, _GONE), found)
        return
    if old != new:
        found.append({"path": where, "before": None if old is _GONE else old,
                      "after": None if new is _GONE else new})
