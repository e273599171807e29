"""``stepsaga serve`` over the wire: a real uvicorn process, a real gql client over
HTTP and over WebSocket (graphql-transport-ws), works run by the server's own node and
by a second ``stepsaga worker`` process on the same SQLite file."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from gql import GraphQLRequest

from tests.auth import bearer

from .wire import APP, CREATE, EVENTS, ROOT, WORK, Served, ask, http, steer, until, ws


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[dict[str, Any], Path]]:
    store = tmp_path / "store.sqlite"
    server = Served("serve", "--store", f"sqlite+aiosqlite:///{store}", "--port", "0",
                    "--app", APP, "--park-after", "0.5", "--worker", "main=4:slow")
    try:
        yield server.ready(), store
    finally:
        code, out, err = server.stop()
        assert code == 0, err
        assert '"stopped": true' in out


def commands_stored(store: Path) -> int:
    with sqlite3.connect(store) as conn:
        return int(conn.execute("SELECT count(*) FROM commands").fetchone()[0])


async def test_a_work_is_debugged_over_the_wire(
        served: tuple[dict[str, Any], Path]) -> None:
    ready, store = served
    url = ready["url"]
    async with http(url) as client:
        made = await ask(client, CREATE, {"saga": "slow", "input": 0})
        work = made["createWork"]["work"]
        wid = work["workId"]
        seen: list[dict[str, Any]] = []

        async def follow() -> None:
            async with ws(url) as sub:
                async for item in sub.subscribe(GraphQLRequest(EVENTS, variable_values={"id": wid,
                                                                         "after": "0"})):
                    seen.append(item["workEvents"])
                    if item["workEvents"]["type"] == "work.completed":
                        return

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await until(lambda: any(e["type"] == "stage.transaction.completed"
                                    for e in seen), 30)
            paused = (await ask(client, steer("pauseWork"), {"id": wid}))["pauseWork"]
            assert paused["__typename"] == "CommandTaken" and paused["outcome"] == "applied"
            assert paused["work"]["paused"] is True
            # the subscription saw the pause (a live event, in seq order)
            await until(lambda: any(e["type"] == "work.paused" for e in seen), 10)
            stepped = (await ask(client, steer("stepWork"), {"id": wid}))["stepWork"]
            assert stepped["report"]["steps"] == 1
            before = stepped["work"]["lastSeq"]
            ran = (await ask(client, steer("multiStepWork", ", maxSteps: 4"),
                             {"id": wid}))["multiStepWork"]
            assert ran["report"] == {"reason": "max_steps", "steps": 4}
            assert ran["work"]["lastSeq"] == before + 5  # four steps and the command's record
            # wrong state, unknown work, reused request id: typed errors, nothing stored
            count = commands_stored(store)
            wrong = (await ask(client, steer("pauseWork"), {
                "id": "nope"}))["pauseWork"]
            assert wrong["__typename"] == "NotFound" and "nope" in wrong["message"]
            first = await ask(client, steer("signalWork", ', name: "x"'),
                              {"id": wid, "rid": "req-1"})
            assert first["signalWork"]["outcome"] == "applied"
            again = await ask(client, steer("signalWork", ', name: "x"'),
                              {"id": wid, "rid": "req-1"})
            assert again["signalWork"]["number"] == first["signalWork"]["number"]
            other = await ask(client, steer("signalWork", ', name: "y"'),
                              {"id": wid, "rid": "req-1"})
            assert other["signalWork"]["__typename"] == "Conflict"
            bad = await ask(client, steer("setBreakpoint",
                                             ', breakpoint: {condition: "state ==="}'), {"id": wid})
            assert bad["setBreakpoint"]["__typename"] == "InvalidInput"
            assert commands_stored(store) == count + 1  # only the first signal
            resumed = (await ask(client, steer("resumeWork"), {"id": wid}))["resumeWork"]
            assert resumed["outcome"] == "applied"
            refused = (await ask(client, steer("resumeWork"), {"id": wid}))["resumeWork"]
            assert refused["__typename"] == "WrongState" and "not paused" in refused["message"]
        got = (await ask(client, WORK, {"id": wid}))["work"]
    assert got["status"] == "completed" and got["output"] == 30 and got["progress"] == 1.0
    assert len(got["stageRuns"]) == 30 and [e["seq"] for e in got["events"]] == [1, 2, 3]
    # every event once, in order, from the first
    assert [e["seq"] for e in seen] == list(range(1, got["lastSeq"] + 1))


async def test_a_signal_reaches_a_work_parked_in_another_process(
        served: tuple[dict[str, Any], Path]) -> None:
    ready, store = served
    worker = Served("worker", "--store", f"sqlite+aiosqlite:///{store}", "--app", APP,
                    "--worker", "gate=2:gate", "--park-after", "0.2", "--lease-ttl", "3")
    try:
        worker.ready()
        async with http(ready["url"]) as client:
            ids = [(await ask(client, CREATE, {"saga": "gate",
                                                                  "input": i}))
                   ["createWork"]["work"]["workId"] for i in range(4)]
            with anyio.fail_after(30):
                while True:  # each one waits for its signal, parked
                    with sqlite3.connect(store) as conn:
                        parked = conn.execute(
                            "SELECT count(*) FROM leases WHERE owner IS NULL AND token > 0"
                        ).fetchone()[0]
                    if parked == 4:
                        break
                    await anyio.sleep(0.05)
            for wid in ids:
                sent = await ask(client, steer("signalWork", ', name: "go", payload: 5'),
                                 {"id": wid})
                assert sent["signalWork"]["outcome"] == "applied"
            with anyio.fail_after(30):
                while True:
                    states = [(await ask(client, WORK, {"id": w}))["work"]
                              for w in ids]
                    if all(s["status"] == "completed" for s in states):
                        break
                    await anyio.sleep(0.05)
        with sqlite3.connect(store) as conn:
            runners = {r[0] for r in conn.execute(
                "SELECT DISTINCT worker FROM events WHERE type = 'work.command'")}
            outputs = {r[0] for r in conn.execute(
                "SELECT output FROM works WHERE saga = 'gate'")}
        # the other process's gate worker took the signals: the server's node runs slow only
        assert runners and all(r.endswith("/gate") for r in runners)
        assert outputs == {"6"}  # the signal's payload 5, plus one
    finally:
        code, _, err = worker.stop()
        assert code == 0, err


def test_bad_serve_arguments_are_refused(tmp_path: Path) -> None:
    for args, message in ((["--port", "70000"], "--port must be 0 to 65535"),
                          (["--store", "mysql://x/y"], "--store"),
                          (["--app", "nope"], "use module:attribute")):
        done = subprocess.run([sys.executable, "-m", "graphql_api.cli", "serve", *args],
                              cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 2 and message in done.stderr, done.stderr


async def test_sigterm_closes_subscriptions_with_a_restart_code(tmp_path: Path) -> None:
    import json

    import websockets

    server = Served("serve", "--store", f"sqlite+aiosqlite:///{tmp_path}/s.sqlite",
                    "--port", "0", "--app", APP)
    ready = server.ready()
    url = ready["url"].replace("http://", "ws://")
    try:
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"],
                                      additional_headers=bearer(ready["token"])) as sock:
            await sock.send(json.dumps({"type": "connection_init"}))
            assert json.loads(await sock.recv())["type"] == "connection_ack"
            await sock.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
                "query": "subscription { workEvents { seq type } }"}}))
            await anyio.sleep(0.2)
            server.process.send_signal(signal.SIGTERM)
            with anyio.fail_after(20), pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await sock.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        server.process.wait(timeout=30)  # it ends by itself, after the node handed on
    finally:
        code, out, err = server.stop()
    assert code == 0 and '"stopped": true' in out, err
