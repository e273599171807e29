"""The messaging pack's fixtures: a real SMTP server and a real HTTP server for the SMS
and bot providers on loopback, and worker nodes of the pack on a store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from engine.store import SqlStore
from workers.node import WorkerApp, WorkerNode, WorkerSpec

from .servers import MailServer, ProviderServer


@pytest.fixture
def mail_server() -> Iterator[MailServer]:
    server = MailServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def providers() -> Iterator[ProviderServer]:
    server = ProviderServer().start()
    try:
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def nodes(app: WorkerApp, store: SqlStore, count: int = 1, concurrency: int = 10,
                name: str = "node") -> AsyncIterator[list[WorkerNode]]:
    """``count`` worker nodes of ``app`` on ``store``, running until the block ends."""
    made = [app.node(store, [WorkerSpec(name="main", concurrency=concurrency)],
                     node_id=f"{name}{i}", poll_interval=0.05, lease_ttl=5.0, park_after=0.5)
            for i in range(count)]
    async with anyio.create_task_group() as tg:
        for node in made:
            await tg.start(node.run)
        try:
            yield made
        finally:
            for node in made:
                await node.drain(2.0)


async def ended(store: SqlStore, work_ids: list[str], seconds: float = 30.0
                ) -> dict[str, dict[str, Any]]:
    """The works' rows once every one has ended (a bounded wait)."""
    rows: dict[str, dict[str, Any]] = {}
    for _ in range(int(seconds / 0.05)):
        rows = {w: await store.work(w) or {} for w in work_ids}
        if all(r.get("status") in ("completed", "failed", "cancelled") for r in rows.values()):
            return rows
        await anyio.sleep(0.05)
    raise AssertionError(f"not ended after {seconds} s: "
                         f"{ {w: r.get('status') for w, r in rows.items()} }")


HELD = "hold/held[0]/resume"  # a held message's Wait for the channel's resumption


async def held(store: SqlStore, work_ids: list[str], seconds: float = 20.0) -> None:
    """Wait (bounded) until every work waits in its hold for the channel to resume."""
    rows: list[dict[str, Any]] = []
    for _ in range(int(seconds / 0.05)):
        rows = [await store.work(w) or {} for w in work_ids]
        if all(r.get("current_stage") == HELD for r in rows):
            return
        await anyio.sleep(0.05)
    raise AssertionError(f"not all held after {seconds} s: "
                         f"{[(r.get('status'), r.get('current_stage')) for r in rows]}")
