"""A worker node's error-report hook (WorkerApp(on_error=...)): told once when a work
it runs ends for good on an error, with the exception its stage raised there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from engine import Runtime, Saga, Stage
from engine.store import SqlStore
from engine.worklogs import ErrorReport
from workers.node import WorkerApp, WorkerSpec


class CardDeclined(Exception):
    pass


async def charge(ctx: Any, n: int) -> int:
    if n < 0:
        raise CardDeclined(f"card declined for {n}")
    return n


SAGA = Saga(name="pay", stages=[Stage(name="charge", transaction=charge)])


async def test_a_node_reports_a_work_that_failed_for_good(tmp_path: Path) -> None:
    reports: list[ErrorReport] = []
    app = WorkerApp(sagas=[SAGA], on_error=reports.append)
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        async with Runtime([SAGA], store=store) as client:
            bad = await client.start("pay", -5, run=False)
            good = await client.start("pay", 5, run=False)
        node = app.node(store, [WorkerSpec(name="w", concurrency=2)], node_id="n")
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)
            for _ in range(500):
                rows = [await store.work(w) for w in (bad, good)]
                if all(r is not None and r["status"] in ("failed", "completed")
                       for r in rows):
                    break
                await anyio.sleep(0.02)
            await node.drain()
    assert [(r.work_id, r.status, r.path) for r in reports] == [(bad, "failed", "charge")]
    assert isinstance(reports[0].exception, CardDeclined)
    assert reports[0].error["message"] == "card declined for -5"
