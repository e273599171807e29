"""Retention: finished works older than their saga's age are archived, then deleted, so
the store stops growing for ever.

A :class:`Retention` says how long the works of each saga are kept after they ended
(``ages``, days by saga; ``default_days`` for the others, None: kept for ever) and
where the archive goes: gzip-compressed JSON lines, one file per day the works ended
(``works-2026-12-03.jsonl.gz``), one line per work: its row (saga, status, input,
output, times) and every event of its stream; in a ``directory``, or a ``target`` of the
backups pack (``[backups.targets]``: a directory or an S3 bucket, where a day's object is
replaced by the old one, copied by the server, followed by the new lines, as objects
cannot be appended to). :func:`sweep` archives a
batch and deletes those works through :func:`engine.store.deletion.delete_work`, so
each deletion is in the ``deletions`` audit table (``by`` ``retention``, the reason
naming the age), and in the operators' audit log (``auditLog``: principal ``retention``,
action ``deleteWork``). A line is written and flushed to disk before its work is deleted: a
crash in between archives that work again at the next sweep (at least once; a reader
keeps the last line of a work id).

The sweep runs as a saga on the worker nodes (:func:`retention_saga`, one stage,
retried), fired by a schedule (:func:`retention_schedule`, nightly by default)::

    retention = Retention(directory="/var/lib/stepsaga/archive", ages={"signup": 30},
                          default_days=90)
    app = WorkerApp(sagas=[*mine, retention_saga(retention, store_url)],
                    schedules=[retention_schedule()])

``stepsaga serve`` and ``stepsaga worker`` add both to their app when the settings have
a ``[retention]`` section (:func:`parse`, :func:`retention_app`)::

    [retention]
    directory = "/var/lib/stepsaga/archive"  # where the day files go; or:
    # target = "offsite"                     # a target of [backups.targets] (directory
    #                                        # or s3), the archive under its prefix
    default_days = 90                        # the sagas not in ages (0: kept for ever)
    schedule = "17 3 * * *"                  # cron of the sweep
    timezone = "UTC"
    batch = 500                              # works archived per transaction of the sweep

    [retention.ages]                         # days by saga, kept after they ended
    signup = 30
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
from typing import TYPE_CHECKING, Any

import anyio
import sqlalchemy as sa

from engine import RetryPolicy, Saga, Stage
from engine.state import TERMINAL
from engine.store import SqlStore, audit
from engine.store.deletion import delete_work
from engine.store.schema import works

from .schedules import Schedule, next_tick

if TYPE_CHECKING:
    from .actions.backups.config import TargetSpec
    from .node import WorkerApp

__all__ = ["RETENTION_SAGA", "Retention", "RetentionSettings", "parse", "retention_app",
           "retention_saga", "retention_schedule", "sweep"]

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

    directory: str | os.PathLike[str] = ""
    # or a target of the backups pack (workers.actions.backups.config.TargetSpec)
    target: TargetSpec | None = None
    ages: Mapping[str, float] = field(default_factory=dict)  # saga -> days
    default_days: float | None = None  # the other sagas' (None: kept for ever)

    def __post_init__(self) -> None:
        if bool(str(self.directory)) == (self.target is not None):
            raise ValueError("retention needs a directory or a target to archive works "
                             "to (one of them)")
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

    @property
    def place(self) -> str:
        """Where the archive goes, as the audit's reasons name it."""
        spec = self.target
        if spec is None:
            return str(self.directory)
        where = spec.path if spec.kind == "directory" else f"s3://{spec.bucket}/{spec.prefix}"
        return f"target {spec.name} ({where})"


def _archive(retention: Retention,
             rows: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> None:
    """Add one line per work to its day's file, durably (in a thread): appended and
    fsynced in a directory; on S3 the day's object replaced by one that has the old one
    (copied by the server) then the new lines (``S3Storage.append``)."""
    by_day: dict[str, list[str]] = {}
    for row, stream in rows:
        day = dt.datetime.fromtimestamp(row["finished_at"] or row["updated_at"],
                                        dt.UTC).date().isoformat()
        by_day.setdefault(day, []).append(json.dumps({"work": row, "events": stream},
                                                     default=str) + "\n")
    from .actions.backups.config import TargetSpec
    from .actions.backups.targets import open_storage

    spec = retention.target or TargetSpec(name="archive", kind="directory",
                                          path=str(retention.directory))
    storage = open_storage(spec)
    for day, lines in by_day.items():
        # a gzip member added to the day's file: the members read as one stream
        storage.append(f"works-{day}.jsonl.gz", gzip.compress("".join(lines).encode()))


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
    await anyio.to_thread.run_sync(_archive, retention, rows)
    deleted = 0
    for row, _ in rows:
        days = retention.age_of(row["saga"])
        reason = f"retention: ended over {days:g} days ago, archived to {retention.place}"
        try:
            await delete_work(store, row["work_id"], by=by, reason=reason)
        except LookupError:  # deleted meanwhile (another sweep, a person)
            continue
        deleted += 1
        # in the operators' audit log too, as a deleteWork through the API is
        await audit.record(store, principal=by, action="deleteWork", target_kind="work",
                           target=row["work_id"], reason=reason,
                           details={"saga": row["saga"], "status": row["status"]})
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


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionSettings:
    """The ``[retention]`` section, checked: what to keep, and when the sweep runs."""

    retention: Retention
    schedule: str = "17 3 * * *"
    timezone: str = "UTC"
    batch: int = 500


_KEYS = ("directory", "target", "default_days", "ages", "schedule", "timezone", "batch")


def parse(section: Mapping[str, Any] | None,
          targets: Mapping[str, TargetSpec] | None = None) -> RetentionSettings | None:
    """The ``[retention]`` section (None or empty: no retention), with the targets of
    the backups pack a ``target`` may name; a ValueError names the key at fault.

    >>> parse({"directory": "/tmp/archive", "ages": {"signup": 30}}).retention.ages
    {'signup': 30.0}
    >>> parse({"directory": "/tmp/a", "ages": {"signup": -1}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: retention.ages.signup must be a number of days > 0, got -1
    """
    if not section:
        return None
    if not isinstance(section, Mapping):
        raise ValueError(f"retention must be a section ([retention]), got {section!r:.60}")
    unknown = sorted(set(section) - set(_KEYS))
    if unknown:
        raise ValueError(f"retention.{unknown[0]} is not a setting; [retention] has "
                         f"{', '.join(sorted(_KEYS))}")

    def text(key: str, default: str) -> str:
        value = section.get(key, default)
        if not isinstance(value, str):
            raise ValueError(f"retention.{key}: expected a string, got {value!r:.60}")
        return value

    directory, target = text("directory", ""), text("target", "")
    if bool(directory) == bool(target):
        raise ValueError("retention: give directory (where the day files go) or target (a "
                         "target of [backups.targets]), one of them")
    spec = None
    if target:
        known = dict(targets or {})
        if target not in known:
            raise ValueError(f"retention.target: {target!r} is not a target of "
                             f"[backups.targets] (have {', '.join(sorted(known)) or 'none'})")
        spec = known[target]
    ages = section.get("ages", {})
    if not isinstance(ages, Mapping):
        raise ValueError(f"retention.ages: expected a table of days by saga, got {ages!r:.60}")
    checked = {saga: _days(days, f"retention.ages.{saga}") for saga, days in ages.items()}
    default = section.get("default_days", 0)
    if isinstance(default, bool) or default != 0:
        _days(default, "retention.default_days (0: kept for ever)")
    batch = section.get("batch", 500)
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 10_000:
        raise ValueError(f"retention.batch: expected a whole number from 1 to 10000, got "
                         f"{batch!r}")
    cron, zone = text("schedule", "17 3 * * *"), text("timezone", "UTC")
    for key, (cron_of, zone_of) in (("schedule", (cron, "UTC")),
                                    ("timezone", ("0 0 * * *", zone))):
        try:
            next_tick(cron_of, zone_of, time.time())
        except ValueError as exc:
            raise ValueError(f"retention.{key}: {exc}") from None
    return RetentionSettings(
        retention=Retention(directory=directory, target=spec, ages=checked,
                            default_days=float(default) if default else None),
        schedule=cron, timezone=zone, batch=batch)


def retention_app(settings: Mapping[str, Any] | None, store_url: str) -> WorkerApp | None:
    """The retention saga and its schedule, from the ``retention`` section of
    ``settings`` (what :func:`graphql_api.config.load` returns; a ``target`` names one
    of its ``backups`` section); None when there is none. The sweep opens the store at
    ``store_url``."""
    section = (settings or {}).get("retention")
    if not section:
        return None
    targets = {}
    if (settings or {}).get("backups"):
        from .actions.backups.config import parse as parse_backups

        targets = dict(parse_backups(settings["backups"]).targets)  # type: ignore[index]
    found = parse(section, targets)
    assert found is not None
    from .node import WorkerApp

    return WorkerApp(sagas=[retention_saga(found.retention, store_url, limit=found.batch)],
                     schedules=[retention_schedule(found.schedule, found.timezone)],
                     schedule_prefix=RETENTION_SAGA)
