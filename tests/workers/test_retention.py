"""Retention on a SQLite file and a real PostgreSQL: finished works older than their
saga's age archived to gzip JSON lines by day (in a directory, or an S3 target of the
backups pack on a real S3 server), deleted with the audit recorded; younger and
unfinished works kept; the sweep run as a saga fired by its schedule, and by a real
``stepsaga worker`` whose config file has a ``[retention]`` section."""

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
from engine.store.audit import entries as audit_entries
from engine.store.deletion import deletions_of
from engine.worklogs import logs_of
from tests.graphql_api.wire import Served
from workers import schedules
from workers.actions.backups.config import TargetSpec
from workers.node import WorkerNode, WorkerSpec
from workers.retention import (
    RETENTION_SAGA,
    Retention,
    parse,
    retention_saga,
    retention_schedule,
    sweep,
)

from .packs import s3_client


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
        logged = await audit_entries(store, principal="retention")  # the operators' log
        assert sorted((e["action"], e["target_kind"], e["target"]) for e in logged) == \
            sorted(("deleteWork", "work", w) for w in made["old_short"])
        assert {e["details"]["saga"] for e in logged} == {"short"}
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


def _archived(endpoint: str, bucket: str, key: str) -> list[dict[str, Any]]:
    body = s3_client(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()
    return [json.loads(line) for line in gzip.decompress(body).decode().splitlines()]


def _day(at: float) -> str:
    return time.strftime("works-%Y-%m-%d.jsonl.gz", time.gmtime(at))


async def test_works_are_archived_to_an_s3_target_one_object_per_day(
        tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> None:
    now = time.time()
    target = TargetSpec(name="archive", kind="s3", bucket=s3_bucket, prefix="stepsaga/",
                        endpoint_url=s3_endpoint, access_key_id="test",
                        secret_access_key="test")
    retention = Retention(target=target, ages={"short": 7}, default_days=30)
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        made = await _old_and_new(store, now)
        assert await sweep(store, retention, now=now) == {"archived": 3, "deleted": 3,
                                                          "more": False}
        assert (await sweep(store, retention, now=now + 25 * DAY))["deleted"] == 2
        audit = await deletions_of(store)
        assert all(f"archived to target archive (s3://{s3_bucket}/stepsaga/)" in a["reason"]
                   for a in audit), audit
    listed = s3_client(s3_endpoint).list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted(
        f"stepsaga/{_day(t)}" for t in (now - 10 * DAY, now))
    # the second sweep's line added to the first's object: both read as one stream
    old = _archived(s3_endpoint, s3_bucket, f"stepsaga/{_day(now - 10 * DAY)}")
    assert [a["work"]["work_id"] for a in old] == [*made["old_short"], *made["old_long"]]
    assert [e["type"] for e in old[0]["events"]][-1] == "work.completed"
    new = _archived(s3_endpoint, s3_bucket, f"stepsaga/{_day(now)}")
    assert [a["work"]["work_id"] for a in new] == made["new_short"]


@pytest.mark.timeout(120)
async def test_a_worker_with_a_retention_section_sweeps_on_its_schedule(
        tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    now = time.time()
    async with SqlStore.open(url) as store:
        made = await _old_and_new(store, now)
    config = tmp_path / "stepsaga.toml"
    config.write_text(f"""
[store]
url = "{url}"

[backups.targets.archive]
kind = "s3"
bucket = "{s3_bucket}"
prefix = "works/"
endpoint_url = "{s3_endpoint}"
access_key_id = "test"
secret_access_key = "test"

[retention]
target = "archive"
default_days = 1
schedule = "* * * * * *"  # every second

[retention.ages]
short = 7
""")
    check = Served("config", "check", str(config))
    _, err = check.process.communicate(timeout=60)
    assert check.process.returncode == 0, err
    node = Served("worker", "--config", str(config), "--app",
                  "tests.graphql_api.ops_app:sagas", "--worker", "w=2", "--node-id", "n")
    try:
        node.ready()
        gone = [*made["old_short"], *made["old_long"]]
        async with SqlStore.open(url, create=False) as store:
            for _ in range(600):  # a minute at most
                if all([await store.work(w) is None for w in gone]):
                    break
                await anyio.sleep(0.1)
            assert [await store.work(w) for w in gone] == [None] * 4
            for kept in (*made["new_short"], *made["old_paused"]):
                assert await store.work(kept) is not None
            assert (await schedules.get(store, RETENTION_SAGA))["cron"] == "* * * * * *"
            audit = await deletions_of(store)
        assert sorted(a["work_id"] for a in audit) == sorted(gone)
        assert {a["deleted_by"] for a in audit} == {"retention"}
    finally:
        code, _, err = node.stop()
    assert code == 0, err
    archived = _archived(s3_endpoint, s3_bucket, f"works/{_day(now - 10 * DAY)}")
    assert sorted(a["work"]["work_id"] for a in archived) == sorted(gone)


def test_a_retention_section_is_checked_naming_the_key() -> None:
    targets = {"archive": TargetSpec(name="archive", kind="directory", path="/tmp/a")}
    assert parse(None) is None and parse({}) is None
    found = parse({"target": "archive", "ages": {"signup": 30}, "schedule": "0 4 * * *",
                   "batch": 50}, targets)
    assert found is not None and found.retention.target == targets["archive"]
    assert (found.schedule, found.batch, found.retention.default_days) == ("0 4 * * *", 50,
                                                                           None)
    cases = {
        "retention.ages.signup must be a number of days > 0, got 'soon'":
            {"directory": "/tmp/a", "ages": {"signup": "soon"}},
        "retention.target: 'offsite' is not a target of [backups.targets] (have archive)":
            {"target": "offsite"},
        "retention: give directory": {"directory": "/tmp/a", "target": "archive"},
        "retention.keep is not a setting": {"directory": "/tmp/a", "keep": 3},
        "retention.batch: expected a whole number": {"directory": "/tmp/a", "batch": 0},
        "retention.schedule: invalid cron expression 'nightly'": {"directory": "/tmp/a",
                                                                  "schedule": "nightly"},
        "retention.timezone: unknown time zone 'Mars/Base'": {"directory": "/tmp/a",
                                                              "timezone": "Mars/Base"},
        "retention.default_days (0: kept for ever) must be a number of days > 0":
            {"directory": "/tmp/a", "default_days": -2},
    }
    for message, section in cases.items():
        with pytest.raises(ValueError) as caught:
            parse(section, targets)
        assert message in str(caught.value), (message, caught.value)
