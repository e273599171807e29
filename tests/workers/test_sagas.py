"""Worker nodes and the sagas of the store (workers.sagas), on a SQLite file and on
PostgreSQL: a saga put while a node runs is registered, claimed, run and published; a
changed one replaces it, a deleted one is no longer claimed; one naming a function the
node's app lacks is not loaded there (logged once); a disabled saga starts no new work
and its works go on. Then a real ``stepsaga worker`` process picks up a saga put after
it started and runs a work of it to completion."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import Functions, Runtime, SagaDisabledError, saga_from_data
from engine.catalog import describe
from engine.store import SqlStore
from engine.store.catalog import published
from engine.store.sagas import delete_saga, disable_saga, enable_saga, put_saga
from workers import schedules
from workers.node import WorkerApp, WorkerNode, WorkerSpec
from workers.sagas import SagaFollower
from workers.schedules import Schedule, Scheduler

from .sagas_app import CODE, functions

ROOT = Path(__file__).resolve().parents[2]

COUNTED = {"description": "adds one per item, twice, then up to three",
           "stages": [
               {"kind": "Map", "name": "each", "items": "pairs",
                "stage": {"kind": "SagaRef", "name": "one", "saga": "code"}},
               {"kind": "Stage", "name": "sum", "transaction": "total"}]}
WAITS = {"stages": [{"kind": "Wait", "name": "go", "signal": "go"},
                    {"kind": "Stage", "name": "a", "transaction": "add", "compensation": "undo"}]}


async def total(ctx: Any, values: list[int]) -> int:
    return sum(values)


FUNCTIONS = Functions({**functions, "total": total})


def node(store: SqlStore, node_id: str, *, app_functions: Any = FUNCTIONS,
         schedules: bool = True) -> WorkerNode:
    app = WorkerApp(sagas=CODE, functions=app_functions)
    return app.node(store, [WorkerSpec(name="w", concurrency=4)], node_id=node_id,
                    poll_interval=0.05, lease_ttl=3.0, schedules=schedules)


async def _until(check: Any, seconds: float = 20) -> None:
    for _ in range(int(seconds / 0.02)):
        if await check():
            return
        await anyio.sleep(0.02)
    raise AssertionError(f"{check.__name__} did not hold within {seconds} s")


async def status(store: SqlStore, work_id: str) -> str | None:
    row = await store.work(work_id)
    return None if row is None else str(row["status"])


async def start(store: SqlStore, name: str, data: dict[str, Any], value: Any) -> str:
    """A work of the saga ``data`` queued for the nodes, by a process of its own."""
    saga = saga_from_data({"name": name, **data}, FUNCTIONS)
    async with Runtime([*CODE, saga], store=store) as client:
        return await client.start(name, value, run=False)


async def test_a_node_runs_a_saga_put_while_it_runs(store_url: str) -> None:
    async with SqlStore.open(store_url) as store:
        worker = node(store, "n1")
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            assert [p.saga for p in await published(store)] == ["code"]
            await put_saga(store, "counted", COUNTED, functions=FUNCTIONS, by="ann",
                           code_sagas=CODE)
            work_id = await start(store, "counted", COUNTED, 1)

            async def completed() -> bool:
                return await status(store, work_id) == "completed"

            await _until(completed)
            assert (await store.work(work_id))["output"] == "4"  # type: ignore[index]
            found = {p.saga: p for p in await published(store)}
            assert sorted(found) == ["code", "counted"] and found["counted"].nodes == ("n1",)
            code_built = saga_from_data({"name": "counted", **COUNTED}, FUNCTIONS)
            assert found["counted"].description == Runtime(
                [*CODE, code_built]).describe("counted")
            first = found["counted"].definition

            # replaced: the node runs the new definition and publishes it
            changed = {**COUNTED, "stages": [*COUNTED["stages"],  # type: ignore[misc]
                                             {"kind": "Sleep", "name": "rest", "seconds": 0}]}
            await put_saga(store, "counted", changed, functions=FUNCTIONS, by="bob",
                           code_sagas=CODE)

            async def republished() -> bool:
                now = {p.saga: p for p in await published(store)}
                return now["counted"].definition != first

            await _until(republished)
            again = await start(store, "counted", changed, 2)

            async def again_completed() -> bool:
                return await status(store, again) == "completed"

            await _until(again_completed)

            # deleted: no longer published, its new works no longer claimed
            stale = saga_from_data({"name": "counted", **changed}, FUNCTIONS)
            await delete_saga(store, "counted", by="ann")

            async def withdrawn() -> bool:
                return [p.saga for p in await published(store)] == ["code"]

            await _until(withdrawn)
            async with Runtime([*CODE, stale], store=store) as client:  # not told yet
                left = await client.start("counted", 3, run=False)
            async with Runtime(CODE, store=store) as client:
                code_work = await client.start("code", 0, run=False)

            async def code_done() -> bool:
                return await status(store, code_work) == "completed"

            await _until(code_done)  # the node claims on: not the deleted saga's work
            await anyio.sleep(0.3)
            assert await status(store, left) == "pending"
            await worker.drain()
        assert worker.sagas == CODE


async def test_a_saga_naming_a_function_the_app_lacks_is_not_loaded_there(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="stepsaga.sagas")
    lacking = Functions({k: v for k, v in FUNCTIONS.items() if k != "total"})
    async with SqlStore.open(store_url) as store:
        await put_saga(store, "counted", COUNTED, functions=FUNCTIONS, by="ann",
                       code_sagas=CODE)
        # and one that uses it by name: it does not compile there either
        await put_saga(store, "outer", {"stages": [
            {"kind": "SagaRef", "name": "inner", "saga": "counted"}]}, functions=FUNCTIONS,
            by="ann", code_sagas=CODE)
        work_id = await start(store, "counted", COUNTED, 1)
        short, full = node(store, "short", app_functions=lacking), node(store, "full")
        async with anyio.create_task_group() as tg:
            await tg.start(short.run)
            assert [s.name for s in short.sagas] == ["code"]
            assert [p.saga for p in await published(store)] == ["code"]
            await put_saga(store, "other", {"stages": [
                {"kind": "Stage", "name": "a", "transaction": "add"}]}, functions=FUNCTIONS,
                by="ann")  # a change: the node reads the sagas again

            async def other_loaded() -> bool:
                return "other" in {s.name for s in short.sagas}

            await _until(other_loaded)
            await anyio.sleep(0.3)  # more polls
            assert await status(store, work_id) == "pending"  # not claimed there
            logged = [r.getMessage() for r in caplog.records
                      if "does not load saga" in r.getMessage()]
            assert logged == [
                "node short does not load saga counted (version 1 of its row) and does not "
                "claim its works: stage 'sum': transaction 'total' is not registered "
                "(registered: add, enough, pairs, undo)",
                "node short does not load saga outer (version 1 of its row) and does not "
                "claim its works: stage 'inner' refers to saga 'counted', which is not "
                "registered (registered: ['code', 'outer'])"]
            # a node with the function runs it
            await tg.start(full.run)

            async def completed() -> bool:
                return await status(store, work_id) == "completed"

            await _until(completed)
            nodes = {p.saga: p.nodes for p in await published(store)}
            assert nodes == {"code": ("full", "short"), "counted": ("full",),
                             "other": ("full", "short"), "outer": ("full",)}
            await short.drain()
            await full.drain()


async def test_a_disabled_saga_starts_no_work_and_its_works_go_on(store_url: str) -> None:
    async with SqlStore.open(store_url) as store:
        await put_saga(store, "waits", WAITS, functions=FUNCTIONS, by="ann")
        waiting = await start(store, "waits", WAITS, 1)
        worker = node(store, "n1", schedules=False)  # the ticks below are this test's
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)

            async def is_waiting() -> bool:  # for its signal, on the node
                row = await store.work(waiting)
                return row is not None and row["current_stage"] == "go" and \
                    row["node"] == "n1"

            await _until(is_waiting)
            # an API process follows the store as the nodes do
            follower = SagaFollower(store, code_sagas=CODE, functions=FUNCTIONS, owner="api")
            await follower.refresh()
            async with Runtime(follower.sagas, store=store) as api:
                follower.attach(api)
                await disable_saga(store, "waits", by="ann", reason="a bad release",
                                   code_sagas=CODE)
                await disable_saga(store, "code", by="bob", code_sagas=CODE)
                assert await follower.refresh()
                for name, by in (("waits", "ann"), ("code", "bob")):
                    with pytest.raises(SagaDisabledError, match=f"saga '{name}' is disabled "
                                                                f"\\(by {by} at "):
                        await api.start(name, 1, run=False)
                # its work goes on: a signal lets it end
                await api.signal(waiting, "go", 5)

                async def completed() -> bool:
                    return await status(store, waiting) == "completed"

                await _until(completed)
                assert (await store.work(waiting))["output"] == "6"  # type: ignore[index]
                # a scheduler skips the ticks of a disabled saga
                await schedules.create(store, Schedule(name="every", saga="code", input=0,
                                                       cron="* * * * * *", overlap="allow"))
                ticks = Scheduler(api)
                await ticks.run_due(time.time() + 1.5)
                assert ticks.fired == 0 and (await schedules.get(store, "every"))["fired"] == 0
                await enable_saga(store, "code", by="bob")
                assert await follower.refresh()
                await ticks.run_due(time.time() + 3)
                assert ticks.fired == 1
                work_id = (await schedules.get(store, "every"))["last_work_id"]

                async def ticked() -> bool:
                    return await status(store, work_id) == "completed"

                await _until(ticked)  # the node enabled it too
                with pytest.raises(SagaDisabledError):
                    await api.start("waits", 1)
                assert not await follower.refresh()  # nothing changed since
            await worker.drain()


# ---------------------------------------------------------------- a real process


def calls(ledger: Path) -> list[str]:
    with sqlite3.connect(ledger, timeout=30) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS calls (path TEXT)")
        return [path for (path,) in conn.execute("SELECT path FROM calls ORDER BY path")]


def spawn(store_url: str, ledger: Path, node_id: str) -> subprocess.Popen[str]:
    env = {**os.environ, "STEPSAGA_TEST_LEDGER": str(ledger)}
    return subprocess.Popen(
        [sys.executable, "-m", "graphql_api.cli", "worker", "--store", store_url,
         "--app", "tests.workers.sagas_app:app", "--worker", "main=4", "--lease-ttl", "1.5",
         "--drain-deadline", "5", "--node-id", node_id],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.timeout(120)
async def test_a_worker_process_runs_a_saga_put_after_it_started(store_url: str,
                                                                 tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite"
    async with SqlStore.open(store_url):
        pass  # migrated before the process starts
    process = spawn(store_url, ledger, "p1")
    try:
        assert process.stdout is not None
        line = await anyio.to_thread.run_sync(process.stdout.readline)
        assert line, process.communicate()[1]
        assert json.loads(line)["ready"] == "p1"
        data = {"stages": [
            {"kind": "Loop", "name": "up", "until": "enough", "max_iterations": 5,
             "body": {"kind": "Stage", "name": "inc", "transaction": "add",
                      "compensation": "undo", "retry": {"attempts": 2}}},
            {"kind": "Map", "name": "both", "items": "pairs",
             "stage": {"kind": "SagaRef", "name": "one", "saga": "code"}}]}
        async with SqlStore.open(store_url) as store:
            await put_saga(store, "counting", data, functions=functions, by="test",
                           code_sagas=CODE)
            saga = saga_from_data({"name": "counting", **data}, functions)
            async with Runtime([*CODE, saga], store=store) as client:
                work_id = await client.start("counting", 0, run=False)

            async def completed() -> bool:
                return await status(store, work_id) == "completed"

            await _until(completed, 60)
            row = await store.work(work_id)
            assert row is not None and json.loads(row["output"]) == [4, 4]
            assert {p.saga: p.nodes for p in await published(store)} == {
                "code": ("p1",), "counting": ("p1",)}
            assert published_description(await published(store, saga="counting")) == \
                describe(client.plan("counting"))
        assert calls(ledger) == ["both[0]/one/a", "both[1]/one/a", "up[0]/inc", "up[1]/inc",
                                 "up[2]/inc"]
    finally:
        if process.poll() is None:
            process.terminate()
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["stopped"] == "p1"


def published_description(found: list[Any]) -> dict[str, Any]:
    assert len(found) == 1, found
    return dict(found[0].description)
