"""Schedules, locks and services over GraphQL: their types and the resolvers behind the
schema's fields (graphql_api.schema puts them on Query and Mutation)."""

from __future__ import annotations

import json
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from workers import schedules as schedule_rows
from workers.health import history
from workers.locks import LockService

from .context import service_of
from .results import NotFound, error_result
from .service import ApiError

__all__ = ["HealthCheckRun", "LockHolder", "LockWaiter", "Locks", "ScheduleInfo", "ServiceHealth",
           "locks", "schedule_change", "schedules", "services"]


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
    ok: bool
    available: bool
    detail: str
    node: str
    time: float


@strawberry.type
class ServiceHealth:
    """A service the stages need, with its latest checks (newest first): ``available``
    is its own check and those of what it depends on."""

    service: str
    available: bool
    history: list[HealthCheckRun]


async def schedules(store: Any) -> list[ScheduleInfo]:
    return [ScheduleInfo.of(r) for r in await schedule_rows.list_schedules(store)]


async def locks(store: Any, name: str | None) -> Locks:
    service = LockService(store)
    return Locks(held=[LockHolder(**{k: r[k] for k in ("name", "holder", "acquired_at",
                                                        "expires_at")})
                       for r in await service.holders(name)],
                 waiting=[LockWaiter(**{k: r[k] for k in ("name", "holder", "since",
                                                          "expires_at")})
                          for r in await service.waiters(name)])


async def services(store: Any, limit: int) -> list[ServiceHealth]:
    rows = await history(store, limit=max(1, min(limit, 10_000)))
    found: dict[str, list[HealthCheckRun]] = {}
    for row in rows:
        found.setdefault(row["service"], []).append(HealthCheckRun(
            ok=bool(row["ok"]), available=bool(row["available"]), detail=row["detail"],
            node=row["node"], time=row["time"]))
    return [ServiceHealth(service=name, available=runs[0].available, history=runs)
            for name, runs in sorted(found.items())]


async def schedule_change(info: Info, action: str, name: str, **fields: Any) -> Any:
    """Create, update, pause, resume, trigger or delete a schedule; the schedule after
    (and, for trigger, the work it created), or the typed error."""
    from .schema import ScheduleChanged

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


def as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
