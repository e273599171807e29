"""Retention on a SQLite file and a real PostgreSQL: finished works older than their
saga's age archived to gzip JSON lines by day, deleted with the audit recorded; younger
and unfinished works kept; the sweep run as a saga fired by its schedule."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import Runtime, Saga, Stage
from engine.clock import ManualClock
from engine.store import SqlStore
from engine.store.deletion import deletions_of
from engine.worklogs import logs_of
from workers import schedules
from workers.node import WorkerNode, WorkerSpec
from workers.retention import (
    RETENTION_SAGA,
    Retention,
    retention_saga,
    retention_schedule,
    sweep,
)


async def _inc(ctx: Any, n: int) -> int:
    ctx.logger.info("adding one to %s", n)
    return n + 1


SHORT = Saga(name="short", stages=[Stage(name="a", transaction=_inc)])
LONG = Saga(name="long", stages=[Stage(name="a", transaction=_inc)])
DAY = 86400.0


async def _old_and_new(store: SqlStore, now: float) -> dict[str, list[str]]:
    made: dict[str, list[str]] = {"old_short": [], "old_long": [], "new_short": [],
                                  "old_paused": []}
    async with Runtime([SHORT, LONG], store=store,
                       clock=ManualClock(start=now - 10 * DAY)) as old:
        for i in range(3):
            made["old_short"].append((await old.run("short", i)).work_id)
        made["old_long"].append((await old.run("long", 0)).work_id)
        made["old_paused"].append(await old.start("short", 9, paused=True))
    async with Runtime([SHORT], store=store) as new:
        made["new_short"].append((await new.run("short", 5)).work_id)
    return made


async def test_old_finished_works_are_archived_then_deleted(store_url: str,
                                                            tmp_path: Path) -> None:
    now = time.time()
    async with SqlStore.open(store_url) as store:
        made = await _old_and_new(store, now)
        retention = Retention(directory=tmp_path / "archive", ages={"short": 7},
                              default_days=30)
        done = await sweep(store, retention, now=now)
        assert done == {"archived": 3, "deleted": 3, "more": False}
        for work_id in made["old_short"]:
            assert await store.work(work_id) is None
            assert await store.read(work_id) == []
            assert await logs_of(store, work_id) == []  # its log records went with it
        assert len(await logs_of(store, made["old_long"][0])) == 1
        for kept in (*made["old_long"], *made["new_short"], *made["old_paused"]):
            assert await store.work(kept) is not None  # younger than its age, or unfinished
        audit = await deletions_of(store)
        assert sorted(a["work_id"] for a in audit) == sorted(made["old_short"])
        assert {a["deleted_by"] for a in audit} == {"retention"}
        assert all("ended over 7 days ago" in a["reason"] for a in audit)
        # 25 days later the long saga's work is past its 30 days, the new one its 7
        assert (await sweep(store, retention, now=now + 25 * DAY))["deleted"] == 2
        assert await store.work(made["old_paused"][0]) is not None
    files = sorted((tmp_path / "archive").iterdir())
    assert [f.name for f in files] == sorted(
        time.strftime("works-%Y-%m-%d.jsonl.gz", time.gmtime(t)) for t in (now - 10 * DAY, now))
    with gzip.open(files[0], "rt") as lines:  # two sweeps appended: one stream
        archived = [json.loads(line) for line in lines]
    assert [a["work"]["work_id"] for a in archived] == [*made["old_short"], *made["old_long"]]
    first = archived[0]
    assert first["work"]["saga"] == "short" and first["work"]["status"] == "completed"
    assert [e["type"] for e in first["events"]] == [
        "work.created", "work.started", "stage.transaction.started",
        "stage.transaction.completed", "work.completed"]


async def test_the_sweep_runs_as_a_scheduled_saga(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    now = time.time()
    retention = Retention(directory=tmp_path / "archive", default_days=1)
    async with SqlStore.open(url) as store:
        made = await _old_and_new(store, now)
        saga = retention_saga(retention, url)
        node = WorkerNode(store, [SHORT, LONG, saga], [WorkerSpec(name="w", concurrency=2)],
                          node_id="n", declared_schedules=[retention_schedule()])
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)  # it declares the nightly schedule
            assert (await schedules.get(store, RETENTION_SAGA))["cron"] == "17 3 * * *"
            async with Runtime([SHORT, LONG, saga], store=store) as client:
                work_id = await schedules.trigger(client, RETENTION_SAGA)  # fire it now
            row = None
            for _ in range(500):
                row = await store.work(work_id)
                if row is not None and row["status"] == "completed":
                    break
                await anyio.sleep(0.02)
            await node.drain()
        assert row is not None and row["status"] == "completed"
        stream = await store.read(work_id)
        assert stream[-1].event.type == "work.completed"
        assert [e.event.payload.get("output") for e in stream
                if e.event.type == "stage.transaction.completed"] == [
            {"archived": 4, "deleted": 4}]
        assert await store.work(made["old_paused"][0]) is not None


def test_a_bad_retention_is_refused_naming_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="retention age of saga 'short' must be a number "
                                         "of days > 0, got -1"):
        Retention(directory=tmp_path, ages={"short": -1})
    with pytest.raises(ValueError, match="retention default_days must be a number of days"):
        Retention(directory=tmp_path, default_days=0)
    with pytest.raises(ValueError, match="retention needs a directory"):
        Retention(directory="")
