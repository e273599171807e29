"""Schedules, locks and services over GraphQL: their types, the queries that list them
and the mutations on schedules (graphql_api.schema puts them on Query and Mutation)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from workers import schedules as schedule_rows
from workers.health import follow as follow_health
from workers.health import history as health_history
from workers.locks import LockService

from .context import service_of
from .results import Conflict, InvalidInput, NotFound, error_result
from .service import ApiError

__all__ = ["HealthCheckRun", "LockHolder", "LockWaiter", "Locks", "ScheduleChanged",
           "ScheduleInfo", "ScheduleResult", "ServiceCheck", "ServiceHealth", "create_schedule",
           "delete_schedule", "locks", "pause_schedule", "resume_schedule", "schedule_change",
           "schedules", "service_checks", "services", "trigger_schedule", "update_schedule"]


@strawberry.type
class ScheduleInfo:
    """A cron schedule that creates works of a saga."""

    name: str
    saga: str
    input: JSON | None
    cron: str
    timezone: str
    overlap: str
    catch_up: str
    paused: bool
    next_at: float
    last_tick: float | None
    last_work_id: str | None
    fired: int

    @classmethod
    def of(cls, row: dict[str, Any]) -> ScheduleInfo:
        return cls(name=row["name"], saga=row["saga"], input=row["input"], cron=row["cron"],
                   timezone=row["timezone"], overlap=row["overlap"],
                   catch_up=row["catch_up"], paused=bool(row["paused"]),
                   next_at=row["next_at"], last_tick=row["last_tick"],
                   last_work_id=row["last_work_id"], fired=row["fired"])


@strawberry.type
class ScheduleChanged:
    """A schedule as it is after the change (null once deleted); ``workId``: the work a
    trigger created."""

    schedule: ScheduleInfo | None
    work_id: str | None


ScheduleResult = Annotated[ScheduleChanged | NotFound | InvalidInput | Conflict,
                           strawberry.union("ScheduleResult")]


@strawberry.type
class LockHolder:
    name: str
    holder: str
    acquired_at: float
    expires_at: float


@strawberry.type
class LockWaiter:
    name: str
    holder: str
    since: float
    expires_at: float


@strawberry.type
class Locks:
    """Global locks: who holds which, and who waits, in the order they will get it."""

    held: list[LockHolder]
    waiting: list[LockWaiter]


@strawberry.type
class HealthCheckRun:
    """One check of a service: ``ok``, its own check passed; ``available``, so did
    those of what it depends on. ``cursor``: resume ``serviceChecks`` after it."""

    cursor: str
    ok: bool
    available: bool
    detail: str
    node: str
    time: float

    @classmethod
    def of(cls, row: dict[str, Any]) -> HealthCheckRun:
        return cls(cursor=str(row["position"]), ok=bool(row["ok"]),
                   available=bool(row["available"]), detail=row["detail"], node=row["node"],
                   time=row["time"])


@strawberry.type
class ServiceHealth:
    """A service the stages need, with its latest checks (newest first): ``available``
    is its own check and those of what it depends on; ``dependsOn``: those services, as
    its latest check recorded them (empty for a check recorded before they were)."""

    service: str
    available: bool
    depends_on: list[str]
    history: list[HealthCheckRun]


@strawberry.field
async def schedules(info: Info) -> list[ScheduleInfo]:
    return [ScheduleInfo.of(r)
            for r in await schedule_rows.list_schedules(service_of(info).store)]


@strawberry.field
async def locks(info: Info, name: str | None = None) -> Locks:
    service = LockService(service_of(info).store)
    return Locks(held=[LockHolder(**{k: r[k] for k in ("name", "holder", "acquired_at",
                                                        "expires_at")})
                       for r in await service.holders(name)],
                 waiting=[LockWaiter(**{k: r[k] for k in ("name", "holder", "since",
                                                          "expires_at")})
                          for r in await service.waiters(name)])


@strawberry.field
async def services(info: Info, history: int = 100) -> list[ServiceHealth]:
    """The services stages need, with their latest health checks (the graph's
    history, newest first, ``history`` rows at most across services)."""
    rows = await health_history(service_of(info).store, limit=max(1, min(history, 10_000)))
    found: dict[str, list[HealthCheckRun]] = {}
    needs: dict[str, list[str]] = {}
    for row in rows:
        needs.setdefault(row["service"], row["depends_on"] or [])  # the newest row's
        found.setdefault(row["service"], []).append(HealthCheckRun.of(row))
    return [ServiceHealth(service=name, available=runs[0].available,
                          depends_on=needs[name], history=runs)
            for name, runs in sorted(found.items())]


@strawberry.type
class ServiceCheck:
    """A service's check as it is recorded; ``cursor``: resume after it."""

    cursor: str
    service: str
    depends_on: list[str]
    run: HealthCheckRun


@strawberry.subscription
async def service_checks(info: Info, after: str | None = None,
                         interval: float = 0.5) -> AsyncGenerator[ServiceCheck, None]:
    """Each service's check as the nodes record it, in commit order, after cursor
    ``after`` (a ``HealthCheckRun``'s or a ``ServiceCheck``'s; none: from now on).
    Read every ``interval`` seconds."""
    if after is not None and not after.isdigit():
        raise ValueError(f"after must be a cursor of a health check, got {after!r:.40}")
    pace = min(max(interval, 0.05), 10.0)
    async for row in follow_health(service_of(info).store,
                                   after=None if after is None else int(after), interval=pace):
        yield ServiceCheck(cursor=str(row["position"]), service=row["service"],
                           depends_on=row["depends_on"] or [], run=HealthCheckRun.of(row))


async def schedule_change(info: Info, action: str, name: str, **fields: Any) -> Any:
    """Create, update, pause, resume, trigger or delete a schedule; the schedule after
    (and, for trigger, the work it created), or the typed error."""
    service = service_of(info)
    store = service.store
    work_id = None
    try:
        if action == "create":
            service.plan(fields["saga"])
            await schedule_rows.create(store, schedule_rows.Schedule(name=name, **fields))
        elif action == "update":
            if fields.get("saga") is not None:
                service.plan(fields["saga"])
            await schedule_rows.update(store, name, **fields)
        elif action == "pause":
            await schedule_rows.pause(store, name)
        elif action == "resume":
            await schedule_rows.resume(store, name)
        elif action == "trigger":
            work_id = await schedule_rows.trigger(service.runtime, name)
        else:
            await schedule_rows.delete(store, name)
            return ScheduleChanged(schedule=None, work_id=None)
    except ApiError as exc:
        return error_result(exc)
    except KeyError as exc:
        return NotFound(message=str(exc.args[0]) if exc.args else str(exc), field="name")
    except ValueError as exc:
        field = next((f for f in ("cron", "timezone", "overlap", "catchUp", "input", "name")
                      if f.lower().replace("_", "") in str(exc).lower().replace("_", "")),
                     None)
        return error_result(ApiError("conflict" if "exists already" in str(exc) else
                                     "invalid_input", str(exc), field=field))
    row = await schedule_rows.get(store, name)
    return ScheduleChanged(schedule=ScheduleInfo.of(row), work_id=work_id)


@strawberry.mutation
async def create_schedule(info: Info, name: str, saga: str, cron: str,
                          input: JSON | None = None, timezone: str = "UTC",
                          overlap: str = "skip", catch_up: str = "last",
                          paused: bool = False) -> ScheduleResult:
    return await schedule_change(info, "create", name, saga=saga, cron=cron,
                                 input=input, timezone=timezone, overlap=overlap,
                                 catch_up=catch_up, paused=paused)


@strawberry.mutation
async def update_schedule(info: Info, name: str, saga: str | None = None,
                          cron: str | None = None, input: JSON | None = None,
                          timezone: str | None = None, overlap: str | None = None,
                          catch_up: str | None = None) -> ScheduleResult:
    return await schedule_change(info, "update", name, saga=saga, cron=cron,
                                 input=input, timezone=timezone, overlap=overlap,
                                 catch_up=catch_up)


@strawberry.mutation
async def pause_schedule(info: Info, name: str) -> ScheduleResult:
    return await schedule_change(info, "pause", name)


@strawberry.mutation
async def resume_schedule(info: Info, name: str) -> ScheduleResult:
    return await schedule_change(info, "resume", name)


@strawberry.mutation
async def trigger_schedule(info: Info, name: str) -> ScheduleResult:
    """Fire the schedule now: a new work of its saga, queued for the workers."""
    return await schedule_change(info, "trigger", name)


@strawberry.mutation
async def delete_schedule(info: Info, name: str) -> ScheduleResult:
    return await schedule_change(info, "delete", name)


def as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
