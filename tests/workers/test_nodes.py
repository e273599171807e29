"""Worker nodes sharing one store: real ``stepsaga worker`` processes, one of them
killed with SIGKILL while it runs works; every work must still end, exactly once in
the ledger, and no work may be run by two workers at once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import Runtime, replay
from engine.store import SqlStore
from workers import registry

from .app import STAGES, prepare, sagas

ROOT = Path(__file__).resolve().parents[2]
WORKS = 500
LEASE_TTL = 1.5


class Node:
    def __init__(self, url: str, ledger: Path, name: str, concurrency: int = 20) -> None:
        env = {**os.environ, "STEPSAGA_TEST_LEDGER": str(ledger)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "graphql_api.cli", "worker", "--store", url,
             "--app", "tests.workers.app:sagas", "--worker", f"main={concurrency}",
             "--lease-ttl", str(LEASE_TTL), "--drain-deadline", "5", "--node-id", name],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.name = name

    def ready(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # the node prints one line once registered
        if not line:
            raise AssertionError(f"node {self.name} died: {self.process.communicate()[1]}")
        return dict(json.loads(line))

    def finish(self, sig: int = signal.SIGTERM) -> tuple[str, str]:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        out, err = self.process.communicate(timeout=30)
        return out, err


async def submit(url: str, count: int) -> list[str]:
    async with SqlStore.open(url) as store, Runtime(sagas(), store=store) as rt:
        # each creation's commit wakes the idle nodes (NOTIFY on PostgreSQL)
        return [await rt.start("ledger", 0, run=False) for _ in range(count)]


def ledger_rows(ledger: Path) -> int:
    with sqlite3.connect(ledger, timeout=30) as conn:
        return int(conn.execute("SELECT count(*) FROM ledger").fetchone()[0])


async def stored(url: str) -> tuple[list[dict[str, Any]], dict[str, list[Any]]]:
    async with SqlStore.open(url) as store:
        works = await store.works(limit=10 * WORKS)
        streams = {w["work_id"]: await store.read(w["work_id"]) for w in works}
    return works, streams


async def wait_all_ended(url: str, count: int, seconds: float) -> list[dict[str, Any]]:
    """The works once ``count`` have completed, or as they are after ``seconds``."""
    works: list[dict[str, Any]] = []
    async with SqlStore.open(url) as store:
        for _ in range(int(seconds / 0.2)):
            works = await store.works(limit=10 * count)
            if sum(w["status"] == "completed" for w in works) == count:
                break
            await anyio.sleep(0.2)
    return works


@pytest.mark.timeout(180)
async def test_three_nodes_share_works_and_survive_one_killed(store_url: str,
                                                             tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite"
    prepare(ledger)
    ids = await submit(store_url, WORKS)
    nodes = [Node(store_url, ledger, f"node{i}") for i in range(3)]
    try:
        for node in nodes:
            assert node.ready()["ready"] == node.name
        # kill the first node while works are running everywhere
        for _ in range(3000):  # at most a minute
            if ledger_rows(ledger) >= WORKS:
                break
            await anyio.sleep(0.02)
        victim = nodes[0]
        victim.process.send_signal(signal.SIGKILL)
        victim.process.communicate(timeout=30)
        killed_at = time.monotonic()
        assert ledger_rows(ledger) < len(STAGES) * WORKS, "the kill came after the end"
        works = await wait_all_ended(store_url, WORKS, 90)
        took = time.monotonic() - killed_at
    finally:
        outputs = [node.finish() for node in nodes[1:]]
    statuses = Counter(w["status"] for w in works)
    assert statuses == {"completed": WORKS}, (statuses, outputs)
    assert all(json.loads(out.splitlines()[-1])["stopped"] for out, _ in outputs)

    # every stage's effect is in the ledger once, under the attempt-1 key
    with sqlite3.connect(ledger) as conn:
        rows = conn.execute("SELECT work_id, path, key FROM ledger").fetchall()
        runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    assert Counter((w, p) for w, p, _ in rows) == {(w, s): 1 for w in ids for s in STAGES}
    assert all(key.endswith("/1") for _, _, key in rows)
    assert runs >= len(rows)  # re-runs after the kill hit the ledger's key, not a new row

    _, streams = await stored(store_url)
    taken_over = 0
    for work_id, stream in streams.items():
        assert [e.seq for e in stream] == list(range(1, len(stream) + 1))
        assert replay(stream).status == "completed"
        owners = [e.worker for e in stream if e.worker is not None]
        runs_of = [owner for i, owner in enumerate(owners) if i == 0 or owners[i - 1] != owner]
        # one owner after the other, never back: nobody ran it alongside another
        assert len(runs_of) == len(set(runs_of)), (work_id, runs_of)
        if len(runs_of) > 1:
            # only the killed node's works changed hands, to a live node
            assert runs_of[0] == f"{victim.name}/main" and len(runs_of) == 2, runs_of
            taken_over += 1
    assert taken_over > 0  # the victim held works when it died, and others finished them
    assert took < 60

    async with SqlStore.open(store_url) as store:
        kinds = [e["type"] for e in await registry.worker_events_of(store, "node1/main")]
        listed = {w["worker_id"]: w["status"] for w in await registry.list_workers(store)}
    # a draining worker still beats (it runs works until they end); none after removal
    changes = [k for k in kinds if k != "worker.heartbeat"]
    assert changes[0] == "worker.registered" and changes[-2:] == ["worker.draining",
                                                                  "worker.removed"]
    assert kinds[-1] == "worker.removed"
    assert "worker.heartbeat" in kinds
    # the killed node never said goodbye: its worker is still listed as active
    assert listed == {"node0/main": "active", "node1/main": "removed",
                      "node2/main": "removed"}
