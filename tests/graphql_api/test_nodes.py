"""Many nodes on a real PostgreSQL: two API-only `stepsaga serve --no-workers` processes
and two `stepsaga worker` processes; the same on one SQLite file with `stepsaga serve`
(its own node running some sagas) and the worker processes. Every debugger operation
sent to either API node reaches the work wherever it runs; a worker killed while its
work is paused hands it on still paused, each command taken once; a subscriber resumed
from its cursor misses nothing and gets nothing twice."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
import sqlalchemy as sa
from gql import GraphQLRequest, gql

from .wire import APP, CREATE, EVENTS, WORK, Served, ask, http, steer, until, ws


async def query(url: str, sql: str, *args: Any) -> list[Any]:
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(sa.make_url(url).database or "") as conn:
            conn.row_factory = sqlite3.Row
            return list(conn.execute(re.sub(r"\$\d+", "?", sql), args).fetchall())
    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


@pytest.fixture(params=["postgres", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """PostgreSQL with two API-only nodes, or one SQLite file with `stepsaga serve`
    (whose own node runs the gate and fragile sagas) as both API nodes."""
    if request.param == "sqlite":
        return "sqlite", f"sqlite+aiosqlite:///{tmp_path}/store.sqlite"
    return "postgres", str(request.getfixturevalue("postgres_url"))


async def test_api_nodes_steer_works_run_by_worker_nodes(
        backend: tuple[str, str], tmp_path: Path, monkeypatch: Any) -> None:
    kind, postgres_url = backend
    fix = tmp_path / "fixed"
    monkeypatch.setenv("STEPSAGA_TEST_FIX", str(fix))
    own = ["--no-workers"] if kind == "postgres" else ["--worker", "main=8:gate,fragile"]
    api_a = Served("serve", *own, "--store", postgres_url, "--port", "0", "--app", APP)
    processes = [api_a]
    try:
        url_a = api_a.ready()["url"]  # the first one migrates the new database
        if kind == "postgres":
            api_b = Served("serve", "--no-workers", "--store", postgres_url, "--port", "0",
                           "--app", APP)
            processes.append(api_b)
        workers = {name: Served("worker", "--store", postgres_url, "--app", APP,
                                "--worker", "main=8", "--lease-ttl", "2",
                                "--park-after", "60", "--node-id", name)
                   for name in ("w1", "w2")}
        processes += workers.values()
        url_b = api_b.ready()["url"] if kind == "postgres" else url_a
        for worker in workers.values():
            worker.ready()
        async with http(url_a) as a, http(url_b) as b:
            wid = (await ask(a, CREATE, {"saga": "slow", "input": 0}))[
                "createWork"]["work"]["workId"]
            seen: list[dict[str, Any]] = []

            async def follow(after: str, stop: str) -> None:
                async with ws(url_b) as sub:
                    async for item in sub.subscribe(GraphQLRequest(
                            EVENTS, variable_values={"id": wid, "after": after})):
                        seen.append(item["workEvents"])
                        if item["workEvents"]["type"] == stop:
                            return

            async with anyio.create_task_group() as tg:
                tg.start_soon(follow, "0", "work.paused")
                await until(lambda: any(e["type"] == "stage.transaction.completed"
                                        for e in seen), 30)
                paused = (await ask(a, steer("pauseWork"), {"id": wid}))["pauseWork"]
                assert paused["outcome"] == "applied", paused
                await until(lambda: any(e["type"] == "work.paused" for e in seen), 10)
            # the subscriber went away after the pause; it comes back from its cursor
            cursor = seen[-1]["cursor"]
            stepped = (await ask(a, steer("stepWork"), {"id": wid}))["stepWork"]
            assert stepped["report"]["steps"] == 1, stepped
            ran = (await ask(b, steer("multiStepWork", ", maxSteps: 3"), {"id": wid}))
            assert ran["multiStepWork"]["report"]["steps"] == 3, ran
            # the worker that holds the paused work dies; the other takes it over
            (holder,) = await query(postgres_url,
                                    "SELECT owner FROM leases WHERE work_id = $1", wid)
            before = (await ask(a, WORK, {"id": wid}))["work"]
            workers[holder["owner"]].process.send_signal(signal.SIGKILL)
            workers[holder["owner"]].process.wait(timeout=10)
            runs = (await ask(b, WORK, {"id": wid}))["work"]["stageRuns"]
            last = max(int(r["path"][1:]) for r in runs)
            edited = f"s{last + 2}"
            edit = await ask(b, steer("editWorkState", f', path: "{edited}", by: "ann", '
                                      'reason: "fix", input: 1000'), {"id": wid})
            assert edit["editWorkState"]["outcome"] == "applied", edit
            after_takeover = (await ask(a, WORK, {"id": wid}))["work"]
            assert after_takeover["paused"] and after_takeover["status"] == "paused"
            # the same event: nothing ran while it changed hands (the edit's two events)
            assert after_takeover["lastSeq"] == before["lastSeq"] + 2
            (now,) = await query(postgres_url, "SELECT owner FROM leases WHERE work_id = $1",
                                 wid)
            assert now["owner"] != holder["owner"]
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow, cursor, "work.completed")
                resumed = (await ask(a, steer("resumeWork"), {"id": wid}))["resumeWork"]
                assert resumed["outcome"] == "applied", resumed
            done = (await ask(b, WORK, {"id": wid}))["work"]
            assert done["status"] == "completed"
            assert done["output"] == 1000 + 30 - (last + 2)
            # each command once, in order; the subscriber got every event once
            commands = [json.loads(r["payload"]) for r in await query(
                postgres_url, "SELECT payload FROM events WHERE work_id = $1 AND "
                "type = 'work.command' ORDER BY seq", wid)]
            assert [(c["number"], c["kind"]) for c in commands] == [
                (1, "pause"), (2, "step"), (3, "mstep"), (4, "edit"), (5, "resume")]
            assert [e["seq"] for e in seen] == list(range(1, done["lastSeq"] + 1))

            # a signal reaches a parked work
            gate = (await ask(a, CREATE, {"saga": "gate", "input": 1}))[
                "createWork"]["work"]["workId"]

            async def parked() -> bool:
                rows = await query(postgres_url, "SELECT owner, token FROM leases WHERE "
                                   "work_id = $1", gate)
                return bool(rows) and rows[0]["owner"] is None and rows[0]["token"] > 0

            for _ in range(500):
                if await parked():
                    break
                await anyio.sleep(0.02)
            assert await parked()
            sent = await ask(b, steer("signalWork", ', name: "go", payload: 5'), {"id": gate})
            assert sent["signalWork"]["outcome"] == "applied", sent
            await until_status(a, gate, "completed")

            # a fork made by rewindWork is run by a worker
            fork = await ask(a, REWIND, {"id": wid, "seq": 10})
            fork_id = fork["rewindWork"]["work"]["workId"]
            assert fork["rewindWork"]["work"]["status"] == "paused"
            assert (await ask(b, steer("resumeWork"), {"id": fork_id}))[
                "resumeWork"]["outcome"] == "applied"
            await until_status(a, fork_id, "completed")
            compared = await ask(b, COMPARE, {"id": fork_id, "other": wid})
            assert compared["work"]["compare"]["seq"] > 10

            # retryCompensation from an API node is run by a worker
            fragile = (await ask(a, CREATE, {"saga": "fragile", "input": 1}))[
                "createWork"]["work"]["workId"]
            await until_status(a, fragile, "compensation_failed")
            fix.write_text("done")
            retried = await ask(b, steer("retryCompensation", ', by: "ann"'),
                                {"id": fragile})
            assert retried["retryCompensation"]["outcome"] == "applied", retried
            await until_status(a, fragile, "failed")
    finally:
        for process in processes:
            alive = process.process.poll() is None
            code, _, err = process.stop()  # a killed one's pipes are closed too
            assert code == 0 or not alive, err


REWIND = gql("""mutation($id: String!, $seq: Int!) {
  rewindWork(workId: $id, toSeq: $seq) {
    __typename ... on WorkCreated { work { workId status } }
  }
}""")
COMPARE = gql("""query($id: String!, $other: String!) {
  work(workId: $id) { compare(otherWorkId: $other) { seq mine { type } theirs { type } } }
}""")


async def until_status(client: Any, work_id: str, status: str, seconds: float = 30) -> None:
    for _ in range(int(seconds / 0.05)):
        found = (await ask(client, WORK, {"id": work_id}))["work"]
        if found["status"] == status:
            return
        await anyio.sleep(0.05)
    raise AssertionError(f"work {work_id} is {found['status']}, not {status}")
