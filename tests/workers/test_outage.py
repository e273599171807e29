"""The database goes away under a running worker node (PostgreSQL restarted: every
connection drops): the node stays up and every work still ends."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from engine import Runtime, Saga, Stage, replay
from engine.store import SqlStore
from tests.pg import PostgresCluster
from workers.node import WorkerNode, WorkerSpec

STEPS = 4


async def _step(ctx: Any, value: int) -> int:
    await anyio.sleep(0.02)
    return value + 1


SAGA = Saga(name="steps", stages=[Stage(name=f"s{i}", transaction=_step) for i in range(STEPS)])


@pytest.mark.timeout(120)
async def test_a_node_survives_a_postgresql_restart() -> None:
    cluster = PostgresCluster()
    cluster.start()
    try:
        url = cluster.create_database("outage")
        async with SqlStore.open(url) as store:
            async with Runtime([SAGA], store=store) as client:
                ids = [await client.start("steps", 0, run=False) for _ in range(200)]
            node = WorkerNode(store, [SAGA], [WorkerSpec(name="w", concurrency=20)],
                              node_id="n", lease_ttl=1.0)
            async with anyio.create_task_group() as tg:
                await tg.start(node.run)

                async def completed() -> int:
                    rows = await store.works(status=["completed"], limit=1000)
                    return len(rows)

                for _ in range(400):
                    if await completed() >= 40:
                        break
                    await anyio.sleep(0.05)
                assert 0 < await completed() < 200, "the restart must come mid-run"
                await anyio.to_thread.run_sync(cluster.restart)
                done = 0
                for _ in range(1200):  # at most a minute
                    try:
                        done = await completed()
                    except Exception:  # the first query on a dropped connection may fail
                        done = 0
                    if done == 200:
                        break
                    await anyio.sleep(0.05)
                assert done == 200
                assert node.workers()["w"]["status"] == "active"  # it never stopped
                await node.drain()
            for work in ids:
                stream = await store.read(work)
                assert [e.seq for e in stream] == list(range(1, len(stream) + 1))
                assert replay(stream).output == STEPS
    finally:
        cluster.stop()
