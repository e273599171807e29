"""The GraphQL schema (strawberry): works, their events and stage runs, the sagas, and
the mutations and subscriptions that steer and follow them.

Names follow the README's glossary: a saga is a definition, a stage a node of one, a
work a run. Lists are Relay connections with cursors (keyset pages, never offsets);
every work is a ``Node`` with a global id. A mutation answers with a typed payload
or a typed error (``NotFound``, ``WrongState``, ``InvalidInput``, ``Conflict``), never
a bare exception, and nothing stored changes on an error.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable
from typing import Annotated, Any

import strawberry
from strawberry import relay
from strawberry.extensions import ParserCache, ValidationCache
from strawberry.scalars import JSON
from strawberry.types import Info

from . import feed, work_mutations, works
from .context import Context, service_of
from .ops import Locks, ScheduleInfo, ServiceHealth, schedule_change
from .ops import locks as list_locks
from .ops import schedules as list_schedules
from .ops import services as list_services
from .results import Conflict, InvalidInput, NotFound, WrongState, error_result
from .service import ApiError

__all__ = ["Context", "schema"]


# ------------------------------------------------------------------ types


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

    aggregate = works.aggregate
    deletions = works.deletions

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

    work = works.work
    all_works = works.all_works


@strawberry.type
class Mutation:
    create_work = work_mutations.create_work

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

    update_work = work_mutations.update_work
    delete_work = work_mutations.delete_work
    update_or_create_work = work_mutations.update_or_create_work

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

    rewind_work = work_mutations.rewind_work
    pause_work = work_mutations.pause_work
    resume_work = work_mutations.resume_work
    step_work = work_mutations.step_work
    multi_step_work = work_mutations.multi_step_work
    signal_work = work_mutations.signal_work
    cancel_work = work_mutations.cancel_work
    edit_work_state = work_mutations.edit_work_state
    set_breakpoint = work_mutations.set_breakpoint
    clear_breakpoint = work_mutations.clear_breakpoint
    retry_compensation = work_mutations.retry_compensation
    resolve_work = work_mutations.resolve_work


_WORKER_FIELDS = ("status", "concurrency", "running", "sagas")


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

    works = feed.works
    stages = feed.stages
    work_events = feed.work_events


schema = strawberry.Schema(query=Query, mutation=Mutation, subscription=Subscription,
                           types=[works.Work, Worker, Saga, StageInfo],
                           # a document is parsed and validated once, not per request
                           # (factories: each request gets its own, the caches are
                           # shared at module level by strawberry)
                           extensions=[lambda: ParserCache(maxsize=512),
                                       lambda: ValidationCache(maxsize=512)])
