"""Retention: finished works older than their saga's age are archived, then deleted, so
the store stops growing for ever.

A :class:`Retention` says how long the works of each saga are kept after they ended
(``ages``, days by saga; ``default_days`` for the others, None: kept for ever) and
where the archive goes: a directory of gzip-compressed JSON lines, one file per day
the works ended (``works-2026-12-03.jsonl.gz``), one line per work: its row (saga,
status, input, output, times) and every event of its stream. :func:`sweep` archives a
batch and deletes those works through :func:`engine.store.deletion.delete_work`, so
each deletion is in the ``deletions`` audit table (``by`` ``retention``, the reason
naming the age). A line is written and flushed to disk before its work is deleted: a
crash in between archives that work again at the next sweep (at least once; a reader
keeps the last line of a work id).

The sweep runs as a saga on the worker nodes (:func:`retention_saga`, one stage,
retried), fired by a schedule (:func:`retention_schedule`, nightly by default)::

    retention = Retention(directory="/var/lib/stepsaga/archive", ages={"signup": 30},
                          default_days=90)
    app = WorkerApp(sagas=[*mine, retention_saga(retention, store_url)],
                    schedules=[retention_schedule()])
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import sqlalchemy as sa

from engine import RetryPolicy, Saga, Stage
from engine.state import TERMINAL
from engine.store import SqlStore
from engine.store.deletion import delete_work
from engine.store.schema import works

from .schedules import Schedule

__all__ = ["RETENTION_SAGA", "Retention", "retention_saga", "retention_schedule", "sweep"]

RETENTION_SAGA = "stepsaga.retention"
_DAY = 86400.0


def _days(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where} must be a number of days > 0, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Retention:
    """How long finished works are kept, by saga, and where they are archived."""

    directory: str | os.PathLike[str]
    ages: Mapping[str, float] = field(default_factory=dict)  # saga -> days
    default_days: float | None = None  # the other sagas' (None: kept for ever)

    def __post_init__(self) -> None:
        if not str(self.directory):
            raise ValueError("retention needs a directory to archive works to")
        ages = {}
        for saga, days in dict(self.ages).items():
            if not isinstance(saga, str) or not saga:
                raise ValueError(f"retention ages: {saga!r} is not a saga name")
            ages[saga] = _days(days, f"retention age of saga {saga!r}")
        object.__setattr__(self, "ages", ages)
        if self.default_days is not None:
            _days(self.default_days, "retention default_days")

    def age_of(self, saga: str) -> float | None:
        """Days the works of ``saga`` are kept after they ended (None: for ever)."""
        return self.ages.get(saga, self.default_days)


def _archive(directory: Path, rows: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> None:
    """Append one line per work to its day's file, flushed and fsynced (in a thread)."""
    by_day: dict[str, list[str]] = {}
    for row, stream in rows:
        day = dt.datetime.fromtimestamp(row["finished_at"] or row["updated_at"],
                                        dt.UTC).date().isoformat()
        by_day.setdefault(day, []).append(json.dumps({"work": row, "events": stream},
                                                     default=str) + "\n")
    directory.mkdir(parents=True, exist_ok=True)
    for day, lines in by_day.items():
        path = directory / f"works-{day}.jsonl.gz"
        with open(path, "ab") as raw:  # each append a gzip member: one stream to readers
            with gzip.GzipFile(fileobj=raw, mode="ab") as packed:
                packed.write("".join(lines).encode())
            raw.flush()
            os.fsync(raw.fileno())


async def sweep(store: SqlStore, retention: Retention, *, now: float | None = None,
                limit: int = 500, by: str = "retention") -> dict[str, Any]:
    """Archive and delete up to ``limit`` finished works older than their saga's age;
    what was done: ``{"archived": n, "deleted": n, "more": bool}`` (``more``: there may
    be others; sweep again)."""
    at = time.time() if now is None else now
    sagas = [s for s in retention.ages]
    conditions = [sa.and_(works.c.saga == saga, works.c.finished_at < at - days * _DAY)
                  for saga, days in retention.ages.items()]
    if retention.default_days is not None:
        conditions.append(sa.and_(works.c.saga.not_in(sagas) if sagas else sa.true(),
                                  works.c.finished_at < at - retention.default_days * _DAY))
    if not conditions:
        return {"archived": 0, "deleted": 0, "more": False}
    query = (sa.select(works).where(works.c.status.in_(sorted(TERMINAL)), sa.or_(*conditions))
             .order_by(works.c.finished_at).limit(limit))
    async with store.reader.connect() as conn:
        found = [dict(r) for r in (await conn.execute(query)).mappings()]
    rows = []
    for row in found:
        stream = await store.read(row["work_id"])
        rows.append((row, [{"seq": r.seq, "type": r.event.type, "path": r.event.path,
                            "attempt": r.event.attempt, "payload": dict(r.event.payload),
                            "version": r.event.version, "time": r.time, "worker": r.worker}
                           for r in stream]))
    await anyio.to_thread.run_sync(_archive, Path(retention.directory), rows)
    deleted = 0
    for row, _ in rows:
        days = retention.age_of(row["saga"])
        try:
            await delete_work(store, row["work_id"], by=by,
                              reason=f"retention: ended over {days:g} days ago, archived "
                                     f"to {retention.directory}")
            deleted += 1
        except LookupError:  # deleted meanwhile (another sweep, a person)
            continue
    return {"archived": len(rows), "deleted": deleted, "more": len(found) == limit}


def retention_saga(retention: Retention, store_url: str, *, limit: int = 500) -> Saga:
    """The saga that sweeps (its stage opens the store at ``store_url``, and sweeps
    until nothing is left); its output says how many works went."""

    async def run_sweep(ctx: Any, _: Any) -> dict[str, Any]:
        total = {"archived": 0, "deleted": 0}
        async with SqlStore.open(store_url, create=False) as store:
            while True:
                done = await sweep(store, retention, limit=limit)
                total["archived"] += done["archived"]
                total["deleted"] += done["deleted"]
                if not done["more"]:
                    break
        ctx.logger.info("retention archived %d works and deleted %d", total["archived"],
                        total["deleted"])
        return total

    return Saga(name=RETENTION_SAGA, stages=[Stage(
        name="sweep", transaction=run_sweep,
        retry=RetryPolicy(attempts=5))])


def retention_schedule(cron: str = "17 3 * * *", timezone: str = "UTC") -> Schedule:
    """The schedule that fires the sweep (nightly at 03:17 unless told; one at a time)."""
    return Schedule(name=RETENTION_SAGA, saga=RETENTION_SAGA, cron=cron, timezone=timezone,
                    overlap="skip")
