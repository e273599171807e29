"""Schedules: cron ticks with time zones, overlap and catch-up policies, and two real
worker nodes firing each tick exactly once."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import Runtime, Saga, Stage
from engine.store import SqlStore
from workers import schedules
from workers.schedules import Schedule, Scheduler, next_tick, tick_work_id

from .app import prepare

ROOT = Path(__file__).resolve().parents[2]


async def _inc(ctx: Any, value: int) -> int:
    return value + 1


ONE = Saga(name="one", stages=[Stage(name="a", transaction=_inc)])


def test_bad_schedules_are_refused_naming_the_problem() -> None:
    with pytest.raises(ValueError, match="invalid cron expression '61 \\* \\* \\* \\*'"):
        Schedule(name="s", saga="one", cron="61 * * * *")
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        Schedule(name="s", saga="one", cron="* * * * *", timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="overlap 'maybe' is not one of skip, queue, allow"):
        Schedule(name="s", saga="one", cron="* * * * *", overlap="maybe")
    with pytest.raises(ValueError, match="catch_up 'all' is not one of last, none"):
        Schedule(name="s", saga="one", cron="* * * * *", catch_up="all")
    with pytest.raises(ValueError, match="schedule name must be 1 to 64 characters"):
        Schedule(name="", saga="one", cron="* * * * *")


def test_a_cron_expression_has_five_or_six_fields() -> None:
    """croniter reads a seventh field (a year) and '@daily': the docs promise five or six."""
    assert next_tick("0 9 * * *", "UTC", 0) == 9 * 3600
    assert next_tick("0 9 * * * 30", "UTC", 0) == 9 * 3600 + 30  # the sixth: seconds
    with pytest.raises(ValueError, match=r"invalid cron expression '0 9 \* \* \* 0 2030': "
                                         "7 fields, expected five fields: minute hour"):
        next_tick("0 9 * * * 0 2030", "UTC", 0)
    with pytest.raises(ValueError, match="schedule 's': invalid cron expression '@daily': "
                                         "1 field, expected five"):
        Schedule(name="s", saga="one", cron="@daily")


def test_ticks_follow_the_time_zone_across_a_daylight_saving_change() -> None:
    # 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer (DST began 29 March)
    before = time.mktime((2026, 3, 27, 12, 0, 0, 0, 0, 0)) - time.timezone
    first = next_tick("0 9 * * *", "Europe/Paris", before)
    after_change = next_tick("0 9 * * *", "Europe/Paris", first)
    assert time.gmtime(first)[:5] == (2026, 3, 28, 8, 0)
    assert time.gmtime(after_change)[:5] == (2026, 3, 29, 7, 0)
    assert after_change - first == 23 * 3600  # the day the clocks went forward


async def test_catch_up_fires_the_last_missed_tick_or_none(tmp_path: Path) -> None:
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store, \
            Runtime([ONE], store=store) as rt:
        t0 = float(int(time.time()) // 10 * 10 + 20)  # a tick of "every ten seconds"
        every_10s = "* * * * * */10"
        # every node was down for the minute before t0, and comes back 3 s after it
        for policy in ("last", "none"):
            await schedules.create(store, Schedule(name=policy, saga="one", cron=every_10s,
                                                   input=0, catch_up=policy, overlap="allow"),
                                   after=t0 - 60)
        scheduler = Scheduler(rt)
        await scheduler.run_due(t0 + 3)
        last, none = await schedules.get(store, "last"), await schedules.get(store, "none")
        assert (last["fired"], last["last_tick"]) == (1, t0)  # only the latest missed tick
        assert last["last_work_id"] == tick_work_id("last", t0)
        assert (await store.work(last["last_work_id"]))["status"] == "pending"  # type: ignore
        assert none["fired"] == 0 and none["last_work_id"] is None  # none of the missed
        assert last["next_at"] == none["next_at"] == t0 + 10
        # back on time: the next tick fires under both policies
        await scheduler.run_due(t0 + 10.2)
        assert [(await schedules.get(store, p))["fired"] for p in ("last", "none")] == [2, 1]
        assert scheduler.fired == 3


async def test_overlap_skip_queue_and_allow(tmp_path: Path) -> None:
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store, \
            Runtime([ONE], store=store) as rt:
        t0 = time.time()
        for policy in ("skip", "queue", "allow"):
            await schedules.create(store, Schedule(name=policy, saga="one", input=0,
                                                   cron="* * * * * *", overlap=policy),
                                   after=t0 - 1)
        scheduler = Scheduler(rt)
        first = int(t0)
        await scheduler.run_due(first + 0.5)  # the first tick: every policy fires
        await scheduler.run_due(first + 1.5)  # the first works have not ended (none ran)
        skip, queue, allow = [await schedules.get(store, p) for p in ("skip", "queue", "allow")]
        assert (skip["fired"], queue["fired"], allow["fired"]) == (1, 1, 2)
        assert queue["queued"] == [first + 1]
        # the queued tick goes once the work before it has ended
        assert await rt.adopt(queue["last_work_id"])
        assert (await rt.wait(queue["last_work_id"])).status == "completed"
        await scheduler.run_due(first + 1.6)
        queue = await schedules.get(store, "queue")
        assert queue["queued"] == [] and queue["fired"] == 2
        assert queue["last_work_id"] == tick_work_id("queue", first + 1)


async def test_pause_resume_and_trigger(tmp_path: Path) -> None:
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store, \
            Runtime([ONE], store=store) as rt:
        await schedules.create(store, Schedule(name="s", saga="one", cron="* * * * * *",
                                               input=41), after=time.time() - 3)
        await schedules.pause(store, "s")
        scheduler = Scheduler(rt)
        await scheduler.run_due()
        assert (await schedules.get(store, "s"))["fired"] == 0  # paused: nothing fires
        work = await schedules.trigger(rt, "s")  # by hand, paused or not
        assert await rt.adopt(work)
        assert (await rt.wait(work)).output == 42
        await schedules.resume(store, "s")
        row = await schedules.get(store, "s")
        assert row["paused"] is False and row["next_at"] > time.time() - 0.01
        assert row["fired"] == 1
        with pytest.raises(ValueError, match="a schedule named 's' exists already"):
            await schedules.create(store, Schedule(name="s", saga="one", cron="* * * * *"))
        await schedules.delete(store, "s")
        with pytest.raises(KeyError, match="no schedule named 's'"):
            await schedules.get(store, "s")


def spawn_node(url: str, ledger: Path, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "graphql_api.cli", "worker", "--store", url,
         "--app", "tests.workers.app:sagas", "--lease-ttl", "2", "--node-id", name],
        env={**os.environ, "STEPSAGA_TEST_LEDGER": str(ledger)}, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.timeout(120)
async def test_two_nodes_fire_each_tick_once(store_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite"
    prepare(ledger)
    async with SqlStore.open(store_url) as store:
        await schedules.create(store, Schedule(name="tick", saga="ledger",
                                               cron="* * * * * *", input=0, overlap="allow"))
    nodes = [spawn_node(store_url, ledger, f"n{i}") for i in range(2)]
    try:
        for node in nodes:
            assert node.stdout is not None and node.stdout.readline(), node.communicate()
        async with SqlStore.open(store_url) as store:
            for _ in range(200):  # at most 20 s
                if (await schedules.get(store, "tick"))["fired"] >= 5:
                    break
                await anyio.sleep(0.1)
    finally:
        for node in nodes:
            node.send_signal(signal.SIGTERM)
        outputs = [node.communicate(timeout=30) for node in nodes]
    async with SqlStore.open(store_url) as store:
        row = await schedules.get(store, "tick")
        ticks = []
        for work in await store.works(saga="ledger", limit=1000):
            created = (await store.read(work["work_id"], until=1))[0]
            ticks.append(int(work["work_id"][:12], 16) / 1000)
            assert created.worker in ("n0", "n1"), created.worker  # fired by a node
    ticks.sort()
    assert row["fired"] >= 5, outputs
    # one work per tick (a tick's work id is fixed, and each was counted once), on
    # whole seconds; a tick is left out only if no node looked for a whole second
    assert len(ticks) == row["fired"]
    assert all(t == int(t) for t in ticks)
    assert all(b - a >= 1 for a, b in itertools.pairwise(ticks))
    assert ticks[-1] - ticks[0] <= len(ticks) + 1
