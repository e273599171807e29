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

from . import feed, sagas, work_mutations, works
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


# ------------------------------------------------------------------ root types


@strawberry.type
class Query:
    node: relay.Node = relay.node()

    all_sagas = sagas.all_sagas
    saga = sagas.saga
    all_stages = sagas.all_stages
    stage = sagas.stage
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
    create_saga = sagas.create_saga
    enable_saga = sagas.enable_saga
    disable_saga = sagas.disable_saga
    delete_saga = sagas.delete_saga
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
                           types=[works.Work, Worker, sagas.Saga, sagas.StageInfo],
                           # a document is parsed and validated once, not per request
                           # (factories: each request gets its own, the caches are
                           # shared at module level by strawberry)
                           extensions=[lambda: ParserCache(maxsize=512),
                                       lambda: ValidationCache(maxsize=512)])
