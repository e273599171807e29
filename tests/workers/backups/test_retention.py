"""Retention keeps the last N and daily, weekly and monthly generations, drops what
is older than its age, and never deletes the only verified backup; a fake clock
dates the backups. Schedules from the config fire once per tick, across nodes."""

from __future__ import annotations

import calendar
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from engine import ManualClock
from engine.store import SqlStore
from engine.store.schema import works
from workers import schedules
from workers.actions.backups import backups_app, parse
from workers.actions.backups.retention import select
from workers.node import WorkerSpec
from workers.schedules import Scheduler, tick_work_id

from .conftest import running
from .helpers import make_sqlite, section

DAY = 86400.0
MONDAY_NOON = float(calendar.timegm((2026, 1, 5, 12, 0, 0)))  # Monday 5 January 2026


def _ids(found: list[dict[str, Any]]) -> list[str]:
    return [b["id"] for b in found]


def _days(count: int, verified: bool = True) -> list[dict[str, Any]]:
    return [{"id": f"d{i}", "created_at": MONDAY_NOON + i * DAY, "verified": verified}
            for i in range(count)]


def test_generations_keep_the_newest_of_each_day_week_and_month() -> None:
    found = [*_days(40), {"id": "d39-early", "created_at": MONDAY_NOON + 39 * DAY - 3600,
                          "verified": True}]
    keep, drop = select(found, now=MONDAY_NOON + 40 * DAY, keep_daily=3)
    assert _ids(keep) == ["d39", "d38", "d37"]  # one a day: not d39-early
    keep, _ = select(found, now=0, keep_weekly=3)
    # d39 is Saturday 14 February; the weeks before end on Sundays d34 and d27
    assert _ids(keep) == ["d39", "d34", "d27"]
    keep, _ = select(found, now=0, keep_monthly=2)
    assert _ids(keep) == ["d39", "d26"]  # 14 February, 31 January
    keep, drop = select(found, now=0, keep_last=2, keep_monthly=2)
    assert _ids(keep) == ["d39", "d39-early", "d26"] and len(drop) == 38


def test_an_age_keeps_the_young_and_a_count_keeps_some_however_old() -> None:
    found = _days(10)
    now = MONDAY_NOON + 9 * DAY
    keep, drop = select(found, now=now, max_age_days=2.5)
    assert _ids(keep) == ["d9", "d8", "d7"] and _ids(drop) == [f"d{i}" for i in range(6, -1, -1)]
    keep, _ = select(found, now=now + 100 * DAY, max_age_days=2, keep_last=1)
    assert _ids(keep) == ["d9"]
    assert select(found, now=now)[1] == []  # no rule: nothing goes


def test_the_only_verified_backup_is_never_deleted() -> None:
    found = _days(5, verified=False)
    found[1]["verified"] = True
    keep, drop = select(found, now=MONDAY_NOON + 5 * DAY, keep_last=2)
    # the rule keeps two, and the one verified stays
    assert _ids(keep) == ["d4", "d3", "d1"] and _ids(drop) == ["d2", "d0"]
    keep, _ = select(found, now=MONDAY_NOON + 500 * DAY, max_age_days=1)
    assert _ids(keep) == ["d1"]


async def test_the_retention_saga_prunes_backups_dated_by_a_fake_clock(tmp_path: Path) -> None:
    make_sqlite(tmp_path / "a.sqlite", rows=20)
    clock = ManualClock(start=MONDAY_NOON)
    settings = section({"kind": "sqlite", "path": str(tmp_path / "a.sqlite")},
                       {"kind": "directory", "path": str(tmp_path / "backups")},
                       steps=["gzip"], keep_last=2, keep_daily=4, keep_weekly=2)
    app = backups_app(config=parse(settings), clock=clock)
    made: list[str] = []
    async with running(app, str(tmp_path / "s.sqlite")) as rt:
        for _ in range(10):  # Monday 5 to Wednesday 14 January, at noon
            done = await rt.run("backups.backup", {"job": "job"})
            made.append(done.output["id"])
            clock.advance(DAY)
        pruned = await rt.run("backups.retention", {"job": "job"})
        assert pruned.status == "completed", pruned.error
        # the last 4 days (14, 13, 12, 11: the last 2 among them), and the newest of
        # the two weeks (14 January, and Sunday 11 January)
        assert pruned.output["keep"] == made[:-5:-1]
        assert sorted(pruned.output["delete"]) == sorted(made[:6])
        left = sorted(p.name for p in (tmp_path / "backups" / "job").iterdir())
        assert left == sorted(made[6:])
        # the newest backup loses its object: it is no longer verified, so retention
        # with keep_last=1 keeps it (the rule) and the newest verified one too
        (tmp_path / "backups" / "job" / made[-1] / "data").unlink()
    settings["jobs"]["job"].update(keep_last=1, keep_daily=0, keep_weekly=0)
    app = backups_app(config=parse(settings), clock=clock)
    async with running(app, str(tmp_path / "s.sqlite")) as rt:
        pruned = await rt.run("backups.retention", {"job": "job"})
        assert pruned.output["keep"] == [made[-1], made[-2]]
        later = await rt.run("backups.retention", {"job": "job", "now": clock.now() + 90 * DAY})
        assert later.output["keep"] == [made[-1], made[-2]]
        restored = await rt.run("backups.restore", {
            "job": "job", "into": {"kind": "sqlite", "path": str(tmp_path / "r.sqlite")}})
        assert restored.status == "completed", restored.error  # latest that reads: made[-2]
        assert restored.output["backup"] == made[-2]


def _count_rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        found = int(db.execute("SELECT count(*) FROM works WHERE saga = 'backups.backup'")
                    .fetchone()[0])
    db.close()
    return found


async def test_a_job_schedule_fires_once_per_tick_across_two_nodes(tmp_path: Path) -> None:
    make_sqlite(tmp_path / "a.sqlite", rows=20)
    settings = section({"kind": "sqlite", "path": str(tmp_path / "a.sqlite")},
                       {"kind": "directory", "path": str(tmp_path / "backups")},
                       steps=["zstd"], schedule="* * * * * */2")  # every 2 s
    app = backups_app(config=parse(settings))
    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    async with SqlStore.open(url) as first, SqlStore.open(url) as second:
        nodes = [app.node(store, [WorkerSpec(name="main", concurrency=2)], node_id=f"n{i}",
                          lease_ttl=2.0) for i, store in enumerate((first, second))]
        async with anyio.create_task_group() as tg:
            for node in nodes:
                await tg.start(node.run)
            row = await schedules.get(first, "backups.job")
            assert (row["saga"], row["input"], row["cron"]) == (
                "backups.backup", {"job": "job"}, "* * * * * */2")
            for _ in range(200):  # up to 20 s
                if (await schedules.get(first, "backups.job"))["fired"] >= 3:
                    break
                await anyio.sleep(0.1)
            for node in nodes:
                await node.drain()
        row = await schedules.get(first, "backups.job")
        ticks = [row["last_tick"] - 2 * i for i in range(row["fired"])]
        async with first.reader.connect() as conn:
            ids = {r[0] for r in await conn.execute(sa.select(works.c.work_id).where(
                works.c.saga == "backups.backup"))}
    assert ids == {tick_work_id("backups.job", t) for t in ticks}  # one work per tick
    assert row["fired"] >= 3


async def test_starting_again_brings_a_changed_schedule_in_line(tmp_path: Path) -> None:
    make_sqlite(tmp_path / "a.sqlite", rows=1)
    settings = section({"kind": "sqlite", "path": str(tmp_path / "a.sqlite")},
                       {"kind": "directory", "path": str(tmp_path / "b")},
                       schedule="0 3 * * *")
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        for cron in ("0 3 * * *", "30 4 * * *"):
            settings["jobs"]["job"]["schedule"] = cron
            for schedule in backups_app(config=parse(settings)).schedules:
                await schedules.ensure(store, schedule)
            assert (await schedules.get(store, "backups.job"))["cron"] == cron
        async with running(backups_app(config=parse(settings)),
                           str(tmp_path / "s.sqlite")) as rt:
            scheduler = Scheduler(rt)
            due = (await schedules.get(store, "backups.job"))["next_at"]
            await scheduler.run_due(now=due)
            await scheduler.run_due(now=due + 1)
            assert scheduler.fired == 1
    assert _count_rows(tmp_path / "s.sqlite") == 1
    # a node of a config without the job's schedule deletes it when it starts
    del settings["jobs"]["job"]["schedule"]
    app = backups_app(config=parse(settings))
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        await schedules.create(store, schedules.Schedule(name="other", saga="x",
                                                         cron="0 1 * * *"))
        node = app.node(store, [WorkerSpec(name="w")], node_id="n")
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)
            names = [s["name"] for s in await schedules.list_schedules(store)]
            await node.drain()
    assert names == ["other"]  # not the app's: left alone


@pytest.mark.parametrize("cron", ["61 * * * *", "@daily"])
def test_a_bad_schedule_names_the_job(tmp_path: Path, cron: str) -> None:
    settings = section({"kind": "sqlite", "path": "x"}, {"kind": "directory", "path": "y"},
                       schedule=cron)
    with pytest.raises(ValueError, match=r"backups\.jobs\.job\.schedule: invalid cron"):
        parse(settings)
