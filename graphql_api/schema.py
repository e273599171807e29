"""The GraphQL schema (strawberry): works, their events and stage runs, the sagas, and
the mutations and subscriptions that steer and follow them.

Names follow the README's glossary: a saga is a definition, a stage a node of one, a
work a run. Lists are Relay connections with cursors (keyset pages, never offsets);
every work is a ``Node`` with a global id. A mutation answers with a typed payload
or a typed error (``NotFound``, ``WrongState``, ``InvalidInput``, ``Conflict``), never
a bare exception, and nothing stored changes on an error.
"""

from __future__ import annotations

import enum
import json
from collections.abc import AsyncGenerator, Iterable
from typing import Annotated, Any

import strawberry
from strawberry import relay
from strawberry.extensions import ParserCache, ValidationCache
from strawberry.scalars import JSON
from strawberry.types import Info

from engine.breakpoints import Breakpoint
from engine.commands import Command
from engine.errors import ExpressionError
from engine.events import RecordedEvent
from engine.store import queries

from .context import Context, context_of, service_of
from .ops import Locks, ScheduleInfo, ServiceHealth, schedule_change
from .ops import locks as list_locks
from .ops import schedules as list_schedules
from .ops import services as list_services
from .results import Conflict, InvalidInput, NotFound, WrongState, error_result
from .service import ApiError, Outcome, check_outcome

__all__ = ["Context", "schema"]


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# ------------------------------------------------------------------ types


@strawberry.type
class Event:
    """One recorded change of a work. ``cursor`` is its place in the global feed."""

    cursor: str
    work_id: str
    seq: int
    type: str
    path: str
    attempt: int
    payload: JSON
    time: float
    worker: str | None

    @classmethod
    def of(cls, recorded: RecordedEvent) -> Event:
        return cls(cursor=str(recorded.position or 0), work_id=recorded.work_id,
                   seq=recorded.seq, type=recorded.type, path=recorded.path,
                   attempt=recorded.event.attempt, payload=dict(recorded.event.payload),
                   time=recorded.time, worker=recorded.worker)


@strawberry.type
class StageRun:
    """A stage of one work: how it went."""

    path: str
    status: str
    attempts: int
    started_at: float | None
    finished_at: float | None
    duration: float | None
    error: JSON | None
    saga: str
    template: str


@strawberry.type
class Work(relay.Node):
    """One run of a saga."""

    key: relay.NodeID[str]
    work_id: str
    saga: str
    status: str
    paused: bool
    phase: str
    input: JSON | None
    output: JSON | None
    error: JSON | None
    failure: JSON | None
    current_stage: str | None
    stages_done: int
    stages_total: int
    last_seq: int
    created_at: float
    updated_at: float
    parent_work_id: str | None
    forked_at_seq: int | None
    waiting: JSON | None
    breakpoints: JSON
    priority: int
    started_at: float | None
    finished_at: float | None
    duration: float | None
    error_type: str | None
    worker: str | None
    node: str | None
    definition: str | None

    @classmethod
    def of(cls, row: dict[str, Any]) -> Work:
        return cls(key=row["work_id"], work_id=row["work_id"], saga=row["saga"],
                   status="paused" if row["paused"] and row["status"] not in _ENDED
                   else row["status"], paused=bool(row["paused"]), phase=row["phase"],
                   input=_json(row["input"]), output=_json(row["output"]),
                   error=_json(row["error"]), failure=_json(row["failure"]),
                   current_stage=row["current_stage"], stages_done=row["stages_done"],
                   stages_total=row["stages_total"], last_seq=row["last_seq"],
                   created_at=row["created_at"], updated_at=row["updated_at"],
                   parent_work_id=row["parent_work_id"], forked_at_seq=row["forked_at_seq"],
                   waiting=_json(row["waiting"]),
                   breakpoints=_json(row["breakpoints"]) or [],
                   priority=row["priority"], started_at=row["started_at"],
                   finished_at=row["finished_at"], duration=row["duration"],
                   error_type=row["error_type"], worker=row["worker"], node=row["node"],
                   definition=row["definition"])

    @classmethod
    async def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str],
                            required: bool = False) -> list[Work | None]:
        loader = context_of(info).works
        rows = [await loader.load(key) for key in node_ids]
        return [None if row is None else cls.of(row) for row in rows]

    @strawberry.field
    def progress(self) -> float:
        """The share of the saga's top-level stages done, 0 to 1."""
        if self.status == "completed":
            return 1.0
        return self.stages_done / self.stages_total if self.stages_total else 0.0

    @strawberry.field
    async def stage_runs(self, info: Info) -> list[StageRun]:
        rows = await context_of(info).stage_runs.load(self.work_id)
        return [StageRun(path=r["path"], status=r["status"], attempts=r["attempts"],
                         started_at=r["started_at"], finished_at=r["finished_at"],
                         duration=r["duration"], error=_json(r["error"]), saga=r["saga"],
                         template=r["template"]) for r in rows]

    @strawberry.field
    async def events(self, info: Info, after_seq: int = 0, first: int = 100) -> list[Event]:
        """Its events after ``afterSeq``, at most ``first`` (up to 1,000)."""
        if isinstance(first, bool) or not 1 <= first <= 1000:
            raise ValueError(f"first must be 1 to 1000, got {first!r}")
        if after_seq < 0:
            raise ValueError(f"afterSeq must be >= 0, got {after_seq!r}")
        stream = await context_of(info).events.load((self.work_id, after_seq, first))
        return [Event.of(r) for r in stream]

    @strawberry.field
    async def state_at(self, info: Info, seq: int) -> JSON:
        """Time travel: the work's state right after event ``seq``."""
        import dataclasses

        state = await service_of(info).state_at(self.work_id, seq)
        return json.loads(json.dumps(dataclasses.asdict(state), default=str))

    @strawberry.field
    async def state_diff(self, info: Info, from_seq: int, to_seq: int) -> JSON:
        """What changed in its state from seq ``fromSeq`` to ``toSeq``: a list of
        ``{path, before, after}``."""
        found = await service_of(info).diff(self.work_id, from_seq, to_seq)
        return json.loads(json.dumps(found, default=str))

    @strawberry.field
    async def compare(self, info: Info, other_work_id: str) -> Divergence | None:
        """The first event where this work and another differ (a fork and its origin);
        null when one's events are a copy of the other's."""
        found = await service_of(info).compare(self.work_id, other_work_id)
        if found is None:
            return None
        seq, left, right = found
        return Divergence(seq=seq, mine=None if left is None else Event.of(left),
                          theirs=None if right is None else Event.of(right))

    @strawberry.field
    async def pending_commands(self, info: Info) -> list[PendingCommand]:
        """Commands sent to it that its holder has not taken yet."""
        service = service_of(info)
        state = await service.state(self.work_id)
        return [PendingCommand(number=c.number, kind=c.command.kind, by=c.command.by,
                               sent_at=c.sent_at)
                for c in await service.store.pending_commands(self.work_id,
                                                              state.commands_applied)]


_ENDED = frozenset({"completed", "failed", "compensation_failed", "cancelled"})


@strawberry.type
class Divergence:
    seq: int
    mine: Event | None
    theirs: Event | None


@strawberry.type
class PendingCommand:
    number: int
    kind: str
    by: str
    sent_at: float


@strawberry.type
class WorkEdge:
    cursor: str
    node: Work


@strawberry.type
class WorkConnection:
    edges: list[WorkEdge]
    page_info: relay.PageInfo
    total_count: int


@strawberry.type
class Worker(relay.Node):
    """A named set of slots in a worker node. ``status``: active, draining, removed, or
    lost (its heartbeat is older than the lease time)."""

    key: relay.NodeID[str]
    worker_id: str
    node: str
    name: str
    status: str
    concurrency: int
    sagas: list[str] | None
    host: str
    pid: int
    running: int
    registered_at: float
    heartbeat_at: float
    updated_at: float

    @classmethod
    def of(cls, row: dict[str, Any]) -> Worker:
        return cls(key=row["worker_id"], worker_id=row["worker_id"], node=row["node"],
                   name=row["name"], status=row["status"], concurrency=row["concurrency"],
                   sagas=row["sagas"].split(",") if row["sagas"] else None, host=row["host"],
                   pid=row["pid"], running=row["running"], registered_at=row["registered_at"],
                   heartbeat_at=row["heartbeat_at"], updated_at=row["updated_at"])

    @classmethod
    async def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str],
                            required: bool = False) -> list[Worker | None]:
        rows = {r["worker_id"]: r for r in await service_of(info).workers()}
        return [cls.of(rows[k]) if k in rows else None for k in node_ids]


@strawberry.type
class AggregateRow:
    """One group: its fields (and ``bucket``, the start of its time bucket), the
    reducer's value and how many rows it has."""

    group: JSON
    value: float | None
    count: int


@strawberry.type
class StageFigures:
    """How a stage's runs went, across works: counts by status, durations."""

    runs: int
    completed: int
    failed: int
    avg_duration: float | None
    p95_duration: float | None


@strawberry.type
class StageInfo(relay.Node):
    """A stage of a saga as its definition has it (``path`` like ``pack[*]/box``), with
    its kind, children and settings (``details``: retries, timeouts, compensation,
    schemas, keys, the parameters of its kind), and the figures of its runs."""

    key: relay.NodeID[str]  # saga:path
    saga: str
    path: str
    template: str
    name: str
    kind: str
    children: list[str]
    has_compensation: bool
    details: JSON

    @classmethod
    def of(cls, saga: str, stage: dict[str, Any]) -> StageInfo:
        return cls(key=f"{saga}:{stage['path']}", saga=saga, path=stage["path"],
                   template=stage["template"], name=stage["name"], kind=stage["kind"],
                   children=list(stage.get("children", [])),
                   has_compensation=bool(stage.get("compensation")), details=stage)

    @classmethod
    async def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str],
                            required: bool = False) -> list[StageInfo | None]:
        found: list[StageInfo | None] = []
        for key in node_ids:
            saga, _, path = key.partition(":")
            found.append(next((s for s in _stages(info, saga) if s.path == path), None))
        return found

    @strawberry.field
    async def figures(self, info: Info) -> StageFigures:
        from engine.store.aggregates import aggregate

        store = service_of(info).store
        counts = await aggregate(store, over="stage_runs", group_by=["template", "status"],
                                 saga=[self.saga])
        mine = [r for r in counts if r["group"]["template"] == self.path]
        by_status = {r["group"]["status"]: r["count"] for r in mine}
        durations = {}
        for reducer in ("avg", "p95"):
            rows = await aggregate(store, over="stage_runs", group_by=["template"],
                                   reducer=reducer, field="duration", saga=[self.saga])
            durations[reducer] = next((r["value"] for r in rows
                                       if r["group"]["template"] == self.path), None)
        return StageFigures(runs=sum(by_status.values()),
                            completed=by_status.get("completed", 0),
                            failed=by_status.get("failed", 0),
                            avg_duration=durations["avg"], p95_duration=durations["p95"])


@strawberry.type
class Running:
    """A definition of the saga that live worker nodes run, and which nodes."""

    definition: str
    version: int
    nodes: list[str]
    published_at: float


@strawberry.type
class Saga(relay.Node):
    """A registered definition: its stages, its hash and version, and the definitions
    the live worker nodes actually run (two during a rolling deployment)."""

    key: relay.NodeID[str]
    name: str
    definition: str
    version: int
    continues: list[int]
    description: str
    input_schema: JSON | None
    stages: list[StageInfo]
    enabled: bool = True
    given_as_data: bool = False  # created with createSaga, not registered in code
    disabled_by: str | None = None
    disabled_reason: str | None = None

    @classmethod
    def of(cls, description: dict[str, Any], input_schema: Any,
           row: Any = None) -> Saga:
        name = description["saga"]
        return cls(key=name, name=name, definition=description["definition"],
                   version=description["version"], continues=description["continues"],
                   description=description["description"], input_schema=input_schema,
                   stages=[StageInfo.of(name, st) for st in description["stages"]],
                   enabled=row is None or bool(row.enabled),
                   given_as_data=row is not None and row.data is not None,
                   disabled_by=None if row is None else row.disabled_by,
                   disabled_reason=None if row is None else row.disabled_reason)

    @classmethod
    def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str],
                      required: bool = False) -> list[Saga | None]:
        known = {s.name: s for s in _sagas(info)}
        return [known.get(key) for key in node_ids]

    @strawberry.field
    async def running(self, info: Info) -> list[Running]:
        from engine.store.catalog import published

        return [Running(definition=p.definition, version=p.version, nodes=list(p.nodes),
                        published_at=p.published_at)
                for p in await published(service_of(info).store, saga=self.name)]


def _sagas(info: Info) -> list[Saga]:
    service = service_of(info)
    rows = service.follower.rows if service.follower is not None else {}
    return [Saga.of(service.runtime.describe(s.name), s.input_schema, rows.get(s.name))
            for s in service.sagas()]


def _stages(info: Info, saga: str | None = None) -> list[StageInfo]:
    return [stage for s in _sagas(info) if saga is None or s.name == saga
            for stage in s.stages]


# ------------------------------------------------------------------ payloads


@strawberry.type
class WorkerChanged:
    """What a worker node did with a command sent to it: ``applied``, or ``pending``
    when it did not answer within the wait."""

    outcome: str
    worker: Worker | None


WorkerResult = Annotated[WorkerChanged | NotFound | WrongState | InvalidInput | Conflict,
                         strawberry.union("WorkerResult")]


async def _node_command(info: Info, node: str, kind: str, args: dict[str, Any], by: str,
                        request_id: str | None) -> Any:
    service = service_of(info)
    try:
        found = await service.node_command(node, kind, args, by=by, request_id=request_id)
    except ApiError as exc:
        return error_result(exc)
    if found is None:
        return WorkerChanged(outcome="pending", worker=None)
    if found.get("outcome") == "rejected":
        error = found.get("error") or {}
        kind_of = "not_found" if error.get("type") == "KeyError" else "invalid_input"
        return error_result(ApiError(kind_of, str(error.get("message", "rejected"))))
    worker = None
    if found.get("worker_id"):
        try:
            worker = Worker.of(await service.worker(str(found["worker_id"])))
        except ApiError:
            worker = None
    return WorkerChanged(outcome="applied", worker=worker)


def _split(worker_id: str) -> tuple[str, str]:
    node, _, name = worker_id.rpartition("/")
    if not node or not name:
        raise ApiError("invalid_input", f"a worker id is node/name, got {worker_id!r:.80}",
                       field="workerId")
    return node, name


@strawberry.type
class ScheduleChanged:
    """A schedule as it is after the change (null once deleted); ``workId``: the work a
    trigger created."""

    schedule: ScheduleInfo | None
    work_id: str | None


ScheduleResult = Annotated[ScheduleChanged | NotFound | InvalidInput | Conflict,
                           strawberry.union("ScheduleResult")]


@strawberry.type
class SagaChanged:
    """A saga after createSaga, enableSaga or disableSaga (null once deleted), and the
    version of its stored row."""

    saga: Saga | None
    name: str
    version: int
    enabled: bool


SagaResult = Annotated[SagaChanged | NotFound | WrongState | InvalidInput | Conflict,
                       strawberry.union("SagaResult")]


async def _change_saga(info: Info, action: str, name: str, by: str, data: Any = None,
                       reason: str = "") -> Any:
    service = service_of(info)
    try:
        row = await service.change_saga(action, name, by=by, data=data, reason=reason)
    except ApiError as exc:
        return error_result(exc)
    saga = None if action == "delete" else next(
        (s for s in _sagas(info) if s.name == name), None)
    return SagaChanged(saga=saga, name=row.name, version=row.version, enabled=row.enabled)


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


@strawberry.type
class WorkDeleted:
    """The audit record of a deleted work, which outlives it."""

    work_id: str
    saga: str
    status: str
    events: int
    deleted_by: str
    reason: str
    deleted_at: float


CommandResult = Annotated[CommandTaken | NotFound | WrongState | InvalidInput | Conflict,
                          strawberry.union("CommandResult")]
DeleteWorkResult = Annotated[WorkDeleted | NotFound | WrongState | InvalidInput,
                             strawberry.union("DeleteWorkResult")]
CreateWorkResult = Annotated[WorkCreated | NotFound | WrongState | InvalidInput | Conflict,
                             strawberry.union("CreateWorkResult")]


# what a works list may be ordered by (engine.store.queries.WORK_ORDERS), as an enum
_ORDERS = {name.upper(): name for name in queries.WORK_ORDERS}
WorkOrder: Any = strawberry.enum(enum.Enum("WorkOrder", _ORDERS),  # type: ignore[misc]
                                 description="What a works list is ordered by; ties go "
                                             "by work id.")


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


async def _create(info: Info, saga: str, input: Any, *, paused: bool, priority: int,
                  start_at: float | None, work_id: str | None = None,
                  breakpoints: list[BreakpointInput] | None = None,
                  request_id: str | None = None) -> Any:
    service = service_of(info)
    try:
        points = [b.build() for b in breakpoints or []]
        created, _ = await service.create_work(
            saga, input, paused=paused, priority=priority, start_at=start_at,
            work_id=work_id, breakpoints=points, request_id=request_id)
    except ApiError as exc:
        return error_result(exc)
    work = await _work(info, created)
    assert work is not None
    return WorkCreated(work=work)


async def _work(info: Info, work_id: str) -> Work | None:
    row = await service_of(info).store.work(work_id)
    return None if row is None else Work.of(row)


async def _steer(info: Info, work_id: str, command: Command,
                 request_id: str | None, wait: float | None = None
                 ) -> CommandTaken | NotFound | WrongState | InvalidInput | Conflict:
    service = service_of(info)
    try:
        outcome: Outcome = await service.command(work_id, command, request_id=request_id,
                                                 wait=wait)
        work = await _work(info, work_id)
        check_outcome(outcome, work.status if work else "")
    except ApiError as exc:
        return error_result(exc)
    payload = outcome.payload
    return CommandTaken(number=outcome.number, outcome=payload.get("outcome", "pending"),
                        report=payload.get("report"),
                        event=None if outcome.recorded is None else Event.of(outcome.recorded),
                        work=work)


# ------------------------------------------------------------------ root types


@strawberry.type
class Query:
    node: relay.Node = relay.node()

    @strawberry.field
    def all_sagas(self, info: Info) -> list[Saga]:
        """The catalog: every saga this node knows, with its stages."""
        return _sagas(info)

    @strawberry.field
    def saga(self, info: Info, name: str) -> Saga | None:
        return next((s for s in _sagas(info) if s.name == name), None)

    @strawberry.field
    def all_stages(self, info: Info, saga: str | None = None,
                   kind: str | None = None) -> list[StageInfo]:
        """Stage templates across sagas (of one saga, of one kind); each with the
        figures of its runs."""
        return [s for s in _stages(info, saga) if kind is None or s.kind == kind]

    @strawberry.field
    def stage(self, info: Info, saga: str, path: str) -> StageInfo | None:
        return next((s for s in _stages(info, saga) if s.path == path), None)

    @strawberry.field
    async def aggregate(self, info: Info, over: str = "works",
                        group_by: list[str] | None = None, reducer: str = "count",
                        field: str | None = None, expression: str | None = None,
                        bucket_seconds: float | None = None, saga: list[str] | None = None,
                        status: list[str] | None = None, since: float | None = None,
                        until: float | None = None) -> list[AggregateRow]:
        """Group works (``over: "works"``) or stage runs (``"stage_runs"``) by fields and
        time buckets, and fold each group with a reducer (count, sum, avg, min, max, p95)
        over a numeric field or a CEL expression mapping each row (``work`` or
        ``stage``) to a number, e.g. ``size(work.output.items)``."""
        from engine.store.aggregates import aggregate as fold

        rows = await fold(service_of(info).store, over=over, group_by=group_by or [],
                          reducer=reducer, field=field, expression=expression,
                          bucket=bucket_seconds, saga=saga, status=status, since=since,
                          until=until)
        return [AggregateRow(group=r["group"], value=r["value"], count=r["count"])
                for r in rows]

    @strawberry.field
    async def deletions(self, info: Info, work_id: str | None = None,
                        last: int = 100) -> list[WorkDeleted]:
        """The audit of deleted works, newest first."""
        from engine.store.deletion import deletions_of

        rows = await deletions_of(service_of(info).store, work_id, max(1, min(last, 1000)))
        return [WorkDeleted(**{k: r[k] for k in ("work_id", "saga", "status", "events",
                                                 "deleted_by", "reason", "deleted_at")})
                for r in rows]

    @strawberry.field
    async def schedules(self, info: Info) -> list[ScheduleInfo]:
        return await list_schedules(service_of(info).store)

    @strawberry.field
    async def locks(self, info: Info, name: str | None = None) -> Locks:
        return await list_locks(service_of(info).store, name)

    @strawberry.field
    async def services(self, info: Info, history: int = 100) -> list[ServiceHealth]:
        """The services stages need, with their latest health checks (the graph's
        history, newest first, ``history`` rows at most across services)."""
        return await list_services(service_of(info).store, history)

    @strawberry.field
    async def all_workers(self, info: Info, status: list[str] | None = None) -> list[Worker]:
        return [Worker.of(r) for r in await service_of(info).workers(status)]

    @strawberry.field
    async def worker(self, info: Info, worker_id: str) -> Worker | None:
        try:
            return Worker.of(await service_of(info).worker(worker_id))
        except ApiError:
            return None

    @strawberry.field
    async def work(self, info: Info, work_id: str) -> Work | None:
        return await _work(info, work_id)

    @strawberry.field
    async def all_works(self, info: Info, first: int = 50, after: str | None = None,
                        saga: list[str] | None = None, status: list[str] | None = None,
                        order_by: WorkOrder = WorkOrder.CREATED_AT,
                        descending: bool = True) -> WorkConnection:
        """Works filtered by saga and status, ordered by ``orderBy`` (newest first by
        default; a time a work does not have yet, as an unfinished work's
        ``finishedAt``, counts as later than any)."""
        store = service_of(info).store
        order = order_by.value
        rows, more = await queries.works_page(store, first=first, after=after, saga=saga,
                                              status=status, order=order,
                                              descending=descending)
        loader = context_of(info).works
        for row in rows:
            loader.prime(row["work_id"], row)
        edges = [WorkEdge(cursor=queries.encode_cursor(r, order), node=Work.of(r))
                 for r in rows]
        total = await queries.count_works(store, saga=saga, status=status)
        return WorkConnection(edges=edges, total_count=total, page_info=relay.PageInfo(
            has_next_page=more, has_previous_page=after is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None))


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def create_work(self, info: Info, saga: str, input: JSON | None = None,
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
    async def create_saga(self, info: Info, name: str, data: JSON, by: str) -> SagaResult:
        """Register (or replace) a saga given as data: the composites of a saga in code
        (kinds Stage, Saga, Parallel, Map, Loop, Branch, Wait, Sleep, SagaRef) naming the
        functions the app registered; the worker nodes take it at their next poll."""
        return await _change_saga(info, "put", name, by, data=data)

    @strawberry.mutation
    async def enable_saga(self, info: Info, name: str, by: str) -> SagaResult:
        return await _change_saga(info, "enable", name, by)

    @strawberry.mutation
    async def disable_saga(self, info: Info, name: str, by: str,
                           reason: str = "") -> SagaResult:
        """No new works of the saga (code or data) until enabled; its works go on."""
        return await _change_saga(info, "disable", name, by, reason=reason)

    @strawberry.mutation
    async def delete_saga(self, info: Info, name: str, by: str) -> SagaResult:
        """Delete a saga given as data; refused while works of it are unfinished."""
        return await _change_saga(info, "delete", name, by)

    @strawberry.mutation
    async def update_work(self, info: Info, work_id: str, priority: int | None = None,
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
    async def delete_work(self, info: Info, work_id: str, by: str, reason: str = ""
                          ) -> DeleteWorkResult:
        """Delete a finished work: its events, projections and commands go, the deletion
        (who, when, the saga, the final status, why) stays in the audit."""
        from engine.errors import UnknownWorkError, WorkStateError
        from engine.store.deletion import delete_work

        try:
            audit = await delete_work(service_of(info).store, work_id, by=by, reason=reason)
        except UnknownWorkError as exc:
            return NotFound(message=str(exc), field="workId")
        except WorkStateError as exc:
            row = await service_of(info).store.work(work_id)
            return WrongState(message=str(exc), status=row["status"] if row else None)
        except ValueError as exc:
            return InvalidInput(message=str(exc), field="by")
        return WorkDeleted(**audit)

    @strawberry.mutation
    async def update_or_create_work(self, info: Info, key: str, saga: str,
                                    input: JSON | None = None, paused: bool = False,
                                    priority: int = 0, start_at: float | None = None
                                    ) -> CreateWorkResult:
        """The work named ``key``: created the first time (queued for the workers), the
        same work every time after, as long as it asks for the same saga and input; a
        key used for another saga or input is a conflict."""
        return await _create(info, saga, input, paused=paused, priority=priority,
                             start_at=start_at, request_id="key:" + key)

    @strawberry.mutation
    async def create_schedule(self, info: Info, name: str, saga: str, cron: str,
                              input: JSON | None = None, timezone: str = "UTC",
                              overlap: str = "skip", catch_up: str = "last",
                              paused: bool = False) -> ScheduleResult:
        return await schedule_change(info, "create", name, saga=saga, cron=cron,
                                     input=input, timezone=timezone, overlap=overlap,
                                     catch_up=catch_up, paused=paused)

    @strawberry.mutation
    async def update_schedule(self, info: Info, name: str, saga: str | None = None,
                              cron: str | None = None, input: JSON | None = None,
                              timezone: str | None = None, overlap: str | None = None,
                              catch_up: str | None = None) -> ScheduleResult:
        return await schedule_change(info, "update", name, saga=saga, cron=cron,
                                     input=input, timezone=timezone, overlap=overlap,
                                     catch_up=catch_up)

    @strawberry.mutation
    async def pause_schedule(self, info: Info, name: str) -> ScheduleResult:
        return await schedule_change(info, "pause", name)

    @strawberry.mutation
    async def resume_schedule(self, info: Info, name: str) -> ScheduleResult:
        return await schedule_change(info, "resume", name)

    @strawberry.mutation
    async def trigger_schedule(self, info: Info, name: str) -> ScheduleResult:
        """Fire the schedule now: a new work of its saga, queued for the workers."""
        return await schedule_change(info, "trigger", name)

    @strawberry.mutation
    async def delete_schedule(self, info: Info, name: str) -> ScheduleResult:
        return await schedule_change(info, "delete", name)

    @strawberry.mutation
    async def add_workers(self, info: Info, node: str, name: str, concurrency: int = 10,
                          sagas: list[str] | None = None, by: str = "",
                          request_id: str | None = None) -> WorkerResult:
        """A new named worker on worker node ``node``."""
        return await _node_command(info, node, "add_worker", {
            "name": name, "concurrency": concurrency, "sagas": sagas}, by, request_id)

    @strawberry.mutation
    async def update_workers(self, info: Info, worker_id: str, concurrency: int,
                             by: str = "", request_id: str | None = None) -> WorkerResult:
        """Resize a worker: how many works it runs at once."""
        try:
            node, name = _split(worker_id)
        except ApiError as exc:
            return error_result(exc)
        return await _node_command(info, node, "set_concurrency", {
            "name": name, "concurrency": concurrency}, by, request_id)

    @strawberry.mutation
    async def remove_workers(self, info: Info, worker_id: str, hard: bool = False,
                             by: str = "", request_id: str | None = None) -> WorkerResult:
        """Drain a worker (its works finish their step and go to other workers), or with
        ``hard`` stop it now (its works are handed on at once, a call in flight runs
        again elsewhere)."""
        try:
            node, name = _split(worker_id)
        except ApiError as exc:
            return error_result(exc)
        return await _node_command(info, node, "remove_worker", {"name": name, "hard": hard},
                                   by, request_id)

    @strawberry.mutation
    async def rewind_work(self, info: Info, work_id: str, to_seq: int, paused: bool = True,
                          request_id: str | None = None) -> CreateWorkResult:
        """A new work forked from the first ``toSeq`` events of this one, queued for the
        worker nodes (paused unless told otherwise), to run again after a fix."""
        try:
            forked = await service_of(info).rewind(work_id, to_seq, paused=paused,
                                                   request_id=request_id)
        except ApiError as exc:
            return error_result(exc)  # type: ignore[return-value]
        work = await _work(info, forked)
        assert work is not None
        return WorkCreated(work=work)

    @strawberry.mutation
    async def pause_work(self, info: Info, work_id: str, by: str = "", reason: str = "",
                         request_id: str | None = None) -> CommandResult:
        return await _steer(info, work_id, Command(kind="pause", by=by, reason=reason),
                            request_id)

    @strawberry.mutation
    async def resume_work(self, info: Info, work_id: str, by: str = "",
                          request_id: str | None = None) -> CommandResult:
        return await _steer(info, work_id, Command(kind="resume", by=by), request_id)

    @strawberry.mutation
    async def step_work(self, info: Info, work_id: str, by: str = "",
                        request_id: str | None = None) -> CommandResult:
        return await _steer(info, work_id, Command(kind="step", by=by), request_id)

    @strawberry.mutation
    async def multi_step_work(self, info: Info, work_id: str,
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
    async def signal_work(self, info: Info, work_id: str, name: str,
                          payload: JSON | None = None, by: str = "",
                          request_id: str | None = None) -> CommandResult:
        return await _steer(info, work_id, Command(kind="signal", by=by, args={
            "name": name, "payload": payload}), request_id)

    @strawberry.mutation
    async def cancel_work(self, info: Info, work_id: str, by: str = "", reason: str = "",
                          compensate: bool = True,
                          request_id: str | None = None) -> CommandResult:
        return await _steer(info, work_id, Command(kind="cancel", by=by, reason=reason,
                                                   args={"compensate": compensate}),
                            request_id)

    @strawberry.mutation
    async def edit_work_state(self, info: Info, work_id: str, path: str, by: str,
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
    async def set_breakpoint(self, info: Info, work_id: str, breakpoint: BreakpointInput,
                             request_id: str | None = None) -> CommandResult:
        try:
            point = breakpoint.build()
        except ApiError as exc:
            return error_result(exc)
        return await _steer(info, work_id, Command(kind="set_breakpoint",
                                                   args={"breakpoint": point}), request_id)

    @strawberry.mutation
    async def clear_breakpoint(self, info: Info, work_id: str, breakpoint_id: str,
                               request_id: str | None = None) -> CommandResult:
        return await _steer(info, work_id, Command(kind="clear_breakpoint",
                                                   args={"id": breakpoint_id}), request_id)

    @strawberry.mutation
    async def retry_compensation(self, info: Info, work_id: str, by: str,
                                 request_id: str | None = None) -> CommandResult:
        return await _steer(info, work_id, Command(kind="retry_compensation", by=by),
                            request_id)

    @strawberry.mutation
    async def resolve_work(self, info: Info, work_id: str, by: str, reason: str,
                           request_id: str | None = None) -> CommandResult:
        return await _steer(info, work_id, Command(kind="resolve", by=by, reason=reason),
                            request_id)


_WORKER_FIELDS = ("status", "concurrency", "running", "sagas")
# the events after which a work's status or progress shows something new
_WORK_CHANGES = ("work.created", "work.started", "work.paused", "work.resumed",
                 "work.completed", "work.compensating", "work.failed",
                 "work.compensation_failed", "work.compensation_retried", "work.resolved",
                 "work.cancelled", "work.edited", "stage.completed", "stage.failed",
                 "stage.waiting")
_STAGE_CHANGES = ("stage.started", "stage.completed", "stage.failed", "stage.waiting",
                  "stage.transaction.started", "stage.transaction.completed",
                  "stage.transaction.failed", "stage.retry.scheduled",
                  "stage.compensation.started", "stage.compensation.completed",
                  "stage.compensation.failed")


@strawberry.type
class WorkChange:
    """A work after one of its events changed what lists show; ``cursor`` resumes."""

    cursor: str
    type: str
    work: Work


@strawberry.type
class StageChange:
    """A stage run after one of its events; ``template`` is the stage of the saga
    (``pack[*]/box``); ``cursor`` resumes."""

    cursor: str
    type: str
    work_id: str
    saga: str
    path: str
    template: str
    attempt: int
    run: StageRun | None


def _cursor(after: str | None) -> int | None:
    if after is None:
        return None
    if not after.isdigit():
        raise ValueError(f"after must be an event's cursor, got {after!r:.40}")
    return int(after)


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def workers(self, info: Info, node: list[str] | None = None,
                      status: list[str] | None = None, interval: float = 0.25
                      ) -> AsyncGenerator[Worker, None]:
        """Each worker (of these nodes, in these statuses) as it is now, then again
        whenever its status, concurrency, load or sagas change (heartbeats alone do not
        count; a worker whose heartbeat stops turns ``lost``)."""
        import anyio

        service = service_of(info)
        pace = min(max(interval, 0.05), 10.0)
        known: dict[str, tuple[Any, ...]] = {}
        while True:
            for row in await service.workers():
                if node and row["node"] not in node:
                    continue
                shape = tuple(row[k] for k in _WORKER_FIELDS)
                if known.get(row["worker_id"]) != shape:
                    known[row["worker_id"]] = shape
                    if not status or row["status"] in status:
                        yield Worker.of(row)
            await anyio.sleep(pace)

    @strawberry.subscription
    async def works(self, info: Info, saga: list[str] | None = None,
                    status: list[str] | None = None, after: str | None = None
                    ) -> AsyncGenerator[WorkChange, None]:
        """Works of these sagas (or all) each time their status or progress changes,
        when they are then in one of these statuses (or any); from cursor ``after`` (or
        from now on)."""
        service = service_of(info)
        async with service.feed.subscribe(after=_cursor(after), types=_WORK_CHANGES) as feed:
            async for recorded in feed:
                row = await service.store.work(recorded.work_id)
                if row is None or (saga and row["saga"] not in saga):
                    continue
                work = Work.of(row)
                if status and work.status not in status:
                    continue
                yield WorkChange(cursor=str(recorded.position), type=recorded.type, work=work)

    @strawberry.subscription
    async def stages(self, info: Info, saga: list[str] | None = None,
                     template: list[str] | None = None, work_id: str | None = None,
                     after: str | None = None) -> AsyncGenerator[StageChange, None]:
        """Stage runs as they start, complete, fail, retry and compensate: of these
        sagas, these stages of them (templates like ``pack[*]/box``), one work, or all."""
        from engine.store.projection import stage_template

        service = service_of(info)
        sagas_of: dict[str, str] = {}  # work id -> saga, as events come
        async with service.feed.subscribe(after=_cursor(after), work_id=work_id,
                                          types=_STAGE_CHANGES) as feed:
            async for recorded in feed:
                name = sagas_of.get(recorded.work_id)
                if name is None:
                    row = await service.store.work(recorded.work_id)
                    name = sagas_of[recorded.work_id] = row["saga"] if row else ""
                    if len(sagas_of) > 10_000:
                        sagas_of.clear()
                shape = stage_template(recorded.path)
                if (saga and name not in saga) or (template and shape not in template):
                    continue
                runs = await service.store.stage_runs(recorded.work_id)
                run = next((r for r in runs if r["path"] == recorded.path), None)
                yield StageChange(
                    cursor=str(recorded.position), type=recorded.type,
                    work_id=recorded.work_id, saga=name, path=recorded.path, template=shape,
                    attempt=recorded.event.attempt, run=None if run is None else StageRun(
                        path=run["path"], status=run["status"], attempts=run["attempts"],
                        started_at=run["started_at"], finished_at=run["finished_at"],
                        duration=run["duration"], error=_json(run["error"]),
                        saga=run["saga"], template=run["template"]))

    @strawberry.subscription
    async def work_events(self, info: Info, work_id: str | None = None,
                          after: str | None = None,
                          types: list[str] | None = None) -> AsyncGenerator[Event, None]:
        """The events of one work (or all), after cursor ``after`` (an event's
        ``cursor``; none: from now on), of some types: every later event once."""
        async with service_of(info).feed.subscribe(after=_cursor(after), work_id=work_id,
                                                   types=types) as events:
            async for recorded in events:
                yield Event.of(recorded)


schema = strawberry.Schema(query=Query, mutation=Mutation, subscription=Subscription,
                           types=[Work, Worker, Saga, StageInfo],
                           # a document is parsed and validated once, not per request
                           # (factories: each request gets its own, the caches are
                           # shared at module level by strawberry)
                           extensions=[lambda: ParserCache(maxsize=512),
                                       lambda: ValidationCache(maxsize=512)])
