"""Recurring works from cron expressions, fired exactly once per tick by any node.

A schedule names a saga, an input, a cron expression (croniter: five fields, or six
with seconds last) and a time zone. Every worker node runs a :class:`Scheduler`; the
first to see a due tick fires it:

1. it creates the tick's work for worker nodes to claim, with an id derived from the
   schedule and the tick, so a second node firing the same tick is refused (the work
   exists) instead of creating a twin;
2. it moves ``next_at`` on with a compare-and-set on the schedule's ``version``: the
   node that loses the race changes nothing.

A node that dies between the two leaves ``next_at`` where it was; the next node
fires the same tick, finds its work there, and moves on: each tick once.

Overlap, when the last tick's work has not ended: ``skip`` the tick, ``queue`` it
(it fires when that work ends), or ``allow`` it. Catch-up, when ticks were missed
(every node was down): ``last`` fires the most recent one, ``none`` none of them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
import sqlalchemy as sa
from croniter import croniter

from engine import Runtime, SagaDisabledError, WorkStateError
from engine.context import jsonable
from engine.store import ConflictError, SqlStore
from engine.store.schema import schedules, works

__all__ = ["Schedule", "Scheduler", "create", "delete", "ensure", "get", "list_schedules",
           "next_tick", "pause", "prune", "resume", "tick_work_id", "trigger", "update"]

_LOG = logging.getLogger("stepsaga.schedules")
OVERLAP = ("skip", "queue", "allow")
CATCH_UP = ("last", "none")
_TERMINAL = ("completed", "failed", "compensation_failed", "cancelled")


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as "
                         "'Europe/Paris' or 'UTC')") from None


def next_tick(cron: str, timezone: str, after: float) -> float:
    """The first tick of ``cron`` in ``timezone`` strictly after Unix time ``after``.

    >>> import datetime as dt
    >>> t = dt.datetime(2026, 1, 10, 12, 0, tzinfo=dt.timezone.utc).timestamp()
    >>> dt.datetime.fromtimestamp(next_tick("0 9 * * *", "Europe/Paris", t), dt.timezone.utc)
    datetime.datetime(2026, 1, 11, 8, 0, tzinfo=datetime.timezone.utc)
    """
    zone = _zone(timezone)
    fields = "five fields: minute hour day-of-month month day-of-week; a sixth for seconds"
    if not isinstance(cron, str) or not croniter.is_valid(cron):
        raise ValueError(f"invalid cron expression {cron!r} ({fields})")
    # croniter also takes a seventh field (the year) and '@daily'-style names: neither is
    # a schedule the docs promise, nor one every node's croniter would read alike
    count = len(cron.split())
    if count not in (5, 6):
        raise ValueError(f"invalid cron expression {cron!r}: {count} field"
                         f"{'' if count == 1 else 's'}, expected {fields}")
    base = datetime.fromtimestamp(after, UTC).astimezone(zone)
    return float(croniter(cron, base).get_next(float))


def tick_work_id(schedule: str, tick: float) -> str:
    """The work id of a schedule's tick: the same on every node, time-ordered like other
    work ids (48 bits of milliseconds, then 80 bits of a hash of the schedule)."""
    digest = hashlib.sha256(schedule.encode()).hexdigest()[:20]
    return f"{round(tick * 1000):012x}{digest}"


@dataclass(frozen=True, slots=True)
class Schedule:
    name: str
    saga: str
    cron: str
    input: Any = None
    timezone: str = "UTC"
    overlap: str = "skip"
    catch_up: str = "last"
    paused: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not 0 < len(self.name) <= 64:
            raise ValueError(f"schedule name must be 1 to 64 characters, got {self.name!r}")
        if self.overlap not in OVERLAP:
            raise ValueError(f"schedule {self.name!r}: overlap {self.overlap!r} is not one of "
                             f"{', '.join(OVERLAP)}")
        if self.catch_up not in CATCH_UP:
            raise ValueError(f"schedule {self.name!r}: catch_up {self.catch_up!r} is not one "
                             f"of {', '.join(CATCH_UP)}")
        if not jsonable(self.input):
            raise ValueError(f"schedule {self.name!r}: input is not JSON-serialisable")
        try:
            next_tick(self.cron, self.timezone, time.time())
        except ValueError as exc:
            raise ValueError(f"schedule {self.name!r}: {exc}") from None


async def create(store: SqlStore, schedule: Schedule, *, after: float | None = None) -> float:
    """Store a new schedule; its first tick is the first after ``after`` (default now).
    Returns that tick."""
    now = time.time()
    first = next_tick(schedule.cron, schedule.timezone, now if after is None else after)
    row = {"name": schedule.name, "saga": schedule.saga, "input": json.dumps(schedule.input),
           "cron": schedule.cron, "timezone": schedule.timezone, "overlap": schedule.overlap,
           "catch_up": schedule.catch_up, "paused": schedule.paused, "next_at": first,
           "queued": "[]", "last_tick": None, "last_work_id": None, "fired": 0, "version": 1,
           "created_at": now, "updated_at": now}
    async with store.engine.begin() as conn:
        exists = (await conn.execute(sa.select(schedules.c.name).where(
            schedules.c.name == schedule.name))).first()
        if exists is not None:
            raise ValueError(f"a schedule named {schedule.name!r} exists already")
        await conn.execute(schedules.insert().values(**row))
    return first


async def ensure(store: SqlStore, schedule: Schedule) -> None:
    """Create ``schedule``, or bring the stored one of its name in line with it (its saga,
    input, cron, time zone, overlap and catch-up; paused or not is left as a person set
    it): what a node does at start for the schedules its app declares (a config's)."""
    try:
        row = await get(store, schedule.name)
    except KeyError:
        try:
            await create(store, schedule)
            return
        except ValueError:  # another node created it meanwhile
            row = await get(store, schedule.name)
    fields = ("saga", "input", "cron", "timezone", "overlap", "catch_up")
    changed = {f: getattr(schedule, f) for f in fields if row[f] != getattr(schedule, f)}
    if changed:
        await update(store, schedule.name, **changed)


async def prune(store: SqlStore, prefix: str, keep: set[str]) -> list[str]:
    """Delete the schedules named ``prefix...`` that are not in ``keep``; their names."""
    async with store.reader.connect() as conn:
        names = [r[0] for r in await conn.execute(sa.select(schedules.c.name).where(
            schedules.c.name.startswith(prefix, autoescape=True)))]
    gone = sorted(set(names) - keep)
    for name in gone:
        try:
            await delete(store, name)
        except KeyError:  # another node deleted it meanwhile
            pass
        _LOG.info("schedule %r deleted: its app no longer declares it", name)
    return gone


async def get(store: SqlStore, name: str) -> dict[str, Any]:
    async with store.reader.connect() as conn:
        row = (await conn.execute(sa.select(schedules).where(schedules.c.name == name))
               ).mappings().first()
    if row is None:
        raise KeyError(f"no schedule named {name!r}")
    return {**row, "input": json.loads(row["input"]), "queued": json.loads(row["queued"])}


async def list_schedules(store: SqlStore) -> list[dict[str, Any]]:
    async with store.reader.connect() as conn:
        names = [r[0] for r in await conn.execute(
            sa.select(schedules.c.name).order_by(schedules.c.name))]
    return [await get(store, name) for name in names]


async def _update(store: SqlStore, name: str, version: int, **values: Any) -> bool:
    """Compare-and-set: change the schedule only if nobody changed it since ``version``."""
    values.update(version=version + 1, updated_at=time.time())
    async with store.engine.begin() as conn:
        result = await conn.execute(schedules.update().where(
            schedules.c.name == name, schedules.c.version == version).values(**values))
    return bool(result.rowcount)


async def pause(store: SqlStore, name: str) -> None:
    row = await get(store, name)
    if not await _update(store, name, row["version"], paused=True):
        await pause(store, name)  # changed meanwhile: read again


async def resume(store: SqlStore, name: str) -> None:
    """Resume a paused schedule from now on (ticks missed while paused are not fired)."""
    row = await get(store, name)
    upcoming = next_tick(row["cron"], row["timezone"], time.time())
    if not await _update(store, name, row["version"], paused=False, next_at=upcoming):
        await resume(store, name)


async def update(store: SqlStore, name: str, **changes: Any) -> dict[str, Any]:
    """Change a schedule's saga, input, cron, time zone, overlap or catch-up (checked like
    a new one; the next tick follows the new cron from now on); the schedule after."""
    allowed = {"saga", "input", "cron", "timezone", "overlap", "catch_up"}
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise ValueError(f"a schedule has no field {unknown[0]!r} to change; one of "
                         f"{sorted(allowed)}")
    while True:
        row = await get(store, name)
        fields = {k: row[k] for k in allowed} | {k: v for k, v in changes.items()
                                                 if v is not None}
        checked = Schedule(name=name, paused=row["paused"], **fields)  # refuses what is bad
        values: dict[str, Any] = {k: getattr(checked, k) for k in allowed}
        values["input"] = json.dumps(checked.input)
        if changes.get("cron") is not None or changes.get("timezone") is not None:
            values["next_at"] = next_tick(checked.cron, checked.timezone, time.time())
        if await _update(store, name, row["version"], **values):
            return await get(store, name)


async def delete(store: SqlStore, name: str) -> None:
    async with store.engine.begin() as conn:
        result = await conn.execute(schedules.delete().where(schedules.c.name == name))
    if not result.rowcount:
        raise KeyError(f"no schedule named {name!r}")


async def trigger(runtime: Runtime, name: str) -> str:
    """Fire a schedule now, outside its ticks (paused or not): the new work's id."""
    store = _store(runtime)
    row = await get(store, name)
    work_id = await runtime.start(row["saga"], row["input"], run=False)
    async with store.engine.begin() as conn:
        await conn.execute(schedules.update().where(schedules.c.name == name).values(
            fired=schedules.c.fired + 1, last_work_id=work_id, updated_at=time.time()))
    return work_id


def _store(runtime: Runtime) -> SqlStore:
    if not isinstance(runtime.store, SqlStore):
        raise ValueError("schedules need a runtime on a SqlStore")
    return runtime.store


class Scheduler:
    """Fires the due ticks of every schedule; runs in every worker node."""

    def __init__(self, runtime: Runtime, *, poll_interval: float = 0.5,
                 grace: float | None = None) -> None:
        self.runtime = runtime
        self.store = _store(runtime)
        self.poll_interval = poll_interval
        # a tick overdue by more than this was missed (every node was down), not just
        # seen late by a busy scheduler: catch_up decides whether it still fires
        self.grace = max(1.0, 4 * poll_interval) if grace is None else grace
        self.fired = 0  # works this scheduler created
        self._skipping: set[str] = set()  # schedules whose saga is disabled, logged

    async def run(self) -> None:
        while True:
            wait = await self.run_due()
            await anyio.sleep(wait)

    async def run_due(self, now: float | None = None) -> float:
        """Fire what is due now; how long to sleep until the next look."""
        now = time.time() if now is None else now
        async with self.store.reader.connect() as conn:
            rows = (await conn.execute(sa.select(schedules).where(
                schedules.c.paused.is_(False)))).mappings().all()
        soonest = now + self.poll_interval
        for row in rows:
            try:
                await self._fire(dict(row), now)
            except Exception:  # one broken schedule (an unknown saga...) stops no other
                _LOG.exception("schedule %r could not fire", row["name"])
        for row in rows:
            soonest = min(soonest, max(row["next_at"], now + 0.01))
        return max(0.01, soonest - now)

    async def _last_ended(self, work_id: str | None) -> bool:
        if work_id is None:
            return True
        async with self.store.reader.connect() as conn:
            status = (await conn.execute(sa.select(works.c.status).where(
                works.c.work_id == work_id))).scalar()
        return status is None or status in _TERMINAL

    async def _create(self, row: dict[str, Any], tick: float) -> str | None:
        """The work of this tick (None: its saga is disabled, the tick is skipped)."""
        work_id = tick_work_id(row["name"], tick)
        try:
            await self.runtime.start(row["saga"], json.loads(row["input"]), run=False,
                                     work_id=work_id)
            self.fired += 1
        except (WorkStateError, ConflictError):
            pass  # another node fired this tick first (or we did, before a crash)
        except SagaDisabledError as exc:
            if row["name"] not in self._skipping:
                self._skipping.add(row["name"])
                _LOG.warning("schedule %r skips its ticks while its saga is disabled: %s",
                             row["name"], exc)
            return None
        self._skipping.discard(row["name"])
        return work_id

    async def _fire(self, row: dict[str, Any], now: float) -> None:
        queued: list[float] = json.loads(row["queued"])
        ended = await self._last_ended(row["last_work_id"])
        if queued and ended:  # overlap=queue: the oldest waiting tick goes now
            tick = queued[0]
            work_id = await self._create(row, tick)
            if work_id is None:  # its saga is disabled: the tick is skipped
                await _update(self.store, row["name"], row["version"],
                              queued=json.dumps(queued[1:]))
                return
            await _update(self.store, row["name"], row["version"], queued=json.dumps(
                queued[1:]), last_work_id=work_id, fired=row["fired"] + 1)
            return
        if row["next_at"] > now:
            return
        due, upcoming = row["next_at"], next_tick(row["cron"], row["timezone"], row["next_at"])
        while upcoming <= now:  # ticks missed while no node ran: keep the latest
            due, upcoming = upcoming, next_tick(row["cron"], row["timezone"], upcoming)
        missed = now - due > self.grace
        values: dict[str, Any] = {"next_at": upcoming, "last_tick": due}
        fire = not (missed and row["catch_up"] == "none")
        if fire and not ended and row["overlap"] == "skip":
            fire = False
        elif fire and not ended and row["overlap"] == "queue":
            values["queued"] = json.dumps([*queued, due])
            fire = False
        work_id = await self._create(row, due) if fire else None
        if work_id is not None:
            values["last_work_id"] = work_id
            values["fired"] = row["fired"] + 1
        await _update(self.store, row["name"], row["version"], **values)
