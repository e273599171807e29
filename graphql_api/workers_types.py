"""Workers over GraphQL: ``Worker`` (a ``Node``: a named set of slots in a worker
node), the queries that list them, the mutations that add, resize and remove them (sent
to their worker node, which applies them), and the ``workers`` subscription."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable
from typing import Annotated, Any

import strawberry
from strawberry import relay
from strawberry.types import Info

from .audit import actor
from .context import service_of
from .results import Conflict, InvalidInput, NotFound, WrongState, error_result
from .service import ApiError

__all__ = ["LoadPoint", "Worker", "WorkerChange", "WorkerChanged", "WorkerResult", "add_workers",
           "all_workers", "remove_workers", "update_workers", "worker", "workers"]


@strawberry.type
class LoadPoint:
    """A worker's load at one moment: ``running`` of its ``concurrency`` slots in use."""

    time: float
    running: int
    concurrency: int


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

    @strawberry.field
    async def load(self, info: Info, since: float | None = None,
                   first: int = 1000) -> list[LoadPoint]:
        """Its slots in use over time, from its heartbeats, registration and resizes
        at or after ``since`` (seconds since the epoch; none: from the start), oldest
        first, ``first`` points at most (up to 10,000)."""
        from workers import registry

        points = await registry.load_of(service_of(info).store, self.worker_id,
                                        since=since, first=max(0, min(first, 10_000)))
        return [LoadPoint(**p) for p in points]

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
        found = await service.node_command(node, kind, args, by=actor(info, by),
                                           request_id=request_id)
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


@strawberry.field
async def all_workers(info: Info, status: list[str] | None = None) -> list[Worker]:
    return [Worker.of(r) for r in await service_of(info).workers(status)]


@strawberry.field
async def worker(info: Info, worker_id: str) -> Worker | None:
    try:
        return Worker.of(await service_of(info).worker(worker_id))
    except ApiError:
        return None


@strawberry.mutation
async def add_workers(info: Info, node: str, name: str, concurrency: int = 10,
                      sagas: list[str] | None = None, by: str = "",
                      request_id: str | None = None) -> WorkerResult:
    """A new named worker on worker node ``node``."""
    return await _node_command(info, node, "add_worker", {
        "name": name, "concurrency": concurrency, "sagas": sagas}, by, request_id)


@strawberry.mutation
async def update_workers(info: Info, worker_id: str, concurrency: int,
                         by: str = "", request_id: str | None = None) -> WorkerResult:
    """Resize a worker: how many works it runs at once."""
    try:
        node, name = _split(worker_id)
    except ApiError as exc:
        return error_result(exc)
    return await _node_command(info, node, "set_concurrency", {
        "name": name, "concurrency": concurrency}, by, request_id)


@strawberry.mutation
async def remove_workers(info: Info, worker_id: str, hard: bool = False,
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




@strawberry.type
class WorkerChange:
    """A worker as it is after a change. ``type``: the worker event that changed it
    (``worker.registered``, ``worker.updated``, ``worker.draining``, ``worker.removed``,
    ``worker.heartbeat`` when the works it runs changed), ``worker.current`` for each
    worker as it was when a subscription without a cursor started, ``worker.lost``
    when its heartbeats stopped. Resume from ``cursor`` to miss no change."""

    cursor: str
    type: str
    worker: Worker


@strawberry.subscription
async def workers(info: Info, node: list[str] | None = None,
                  status: list[str] | None = None, after: str | None = None,
                  interval: float = 0.25) -> AsyncGenerator[WorkerChange, None]:
    """The workers (of these nodes, in these statuses) as they change, from cursor
    ``after`` (none: each as it is now first); heartbeats alone do not count, and a
    worker whose heartbeat stops turns ``lost``. Read every ``interval`` seconds."""
    from workers import registry

    if after is not None and not after.isdigit():
        raise ValueError(f"after must be a cursor of this subscription, got {after!r:.40}")
    service = service_of(info)
    pace = min(max(interval, 0.05), 10.0)
    async for position, kind, row in registry.follow(
            service.store, after=None if after is None else int(after), interval=pace,
            shown=service.shown_worker):
        if (node and row["node"] not in node) or (status and row["status"] not in status):
            continue
        yield WorkerChange(cursor=str(position), type=kind, worker=Worker.of(row))
