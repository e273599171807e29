"""Worker nodes and the definitions they run: each publishes its catalog in the store
(engine.store.catalog), claims only the works its definitions continue, and leaves the
others waiting, with the reason, for a node that runs theirs; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from engine import Runtime, Saga, Stage, compile_saga
from engine.catalog import definition_hash, describe
from engine.store import SqlStore
from engine.store.catalog import published
from engine.store.schema import leases as lease_rows
from workers.node import WorkerNode, WorkerSpec

ran: list[tuple[int, str]] = []  # (version, stage path) of every call


def order(version: int, *, continues: tuple[int, ...] = (), stages: int = 2) -> Saga:
    def call(name: str) -> Any:
        async def transaction(ctx: Any, value: Any) -> Any:
            ran.append((version, ctx.path))
            return value

        transaction.__qualname__ = f"order.{name}"
        return transaction

    return Saga(name="order", version=version, continues=continues,
                stages=[Stage(name=f"s{i}", transaction=call(f"s{i}")) for i in range(stages)])


def node(store: SqlStore, saga: Saga, node_id: str) -> WorkerNode:
    return WorkerNode(store, [saga], [WorkerSpec(name="w", concurrency=4)], node_id=node_id,
                      poll_interval=0.02, lease_ttl=3.0)


async def _until(check: Any, seconds: float = 20) -> None:
    for _ in range(int(seconds / 0.02)):
        if await check():
            return
        await anyio.sleep(0.02)
    raise AssertionError(f"{check.__name__} did not hold within {seconds} s")


async def _status(store: SqlStore, work_id: str) -> str:
    row = await store.work(work_id)
    assert row is not None
    return str(row["status"])


async def test_a_node_publishes_its_catalog_and_withdraws_it_when_it_stops(
        store_url: str) -> None:
    v1, v2 = order(1), order(2, continues=(1,), stages=3)
    async with SqlStore.open(store_url) as store:
        first, second = node(store, v1, "n1"), node(store, v2, "n2")
        async with anyio.create_task_group() as tg:
            await tg.start(first.run)
            assert [(p.saga, p.version, p.nodes) for p in await published(store)] == [
                ("order", 1, ("n1",))]
            await tg.start(second.run)
            found = await published(store, saga="order")
            # a deployment under way: two definitions of one saga, newest first
            assert [(p.version, p.nodes) for p in found] == [(2, ("n2",)), (1, ("n1",))]
            newest = found[0]
            assert newest.definition == definition_hash(compile_saga(v2))
            assert newest.description == describe(compile_saga(v2))
            assert newest.description["continues"] == [1]
            assert [s["path"] for s in newest.description["stages"]] == ["", "s0", "s1", "s2"]
            assert await published(store, saga="other") == []
            await first.drain()
            assert [p.nodes for p in await published(store)] == [("n2",)]
            second.stop()  # as a crash: its catalog stays until its time is up
        assert [p.nodes for p in await published(store)] == [("n2",)]
        assert await published(store, now=found[0].published_at + 60) == []


async def test_a_node_leaves_works_of_another_definition_waiting_with_the_reason(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A work created on version 1 is not claimed by a node of version 2: it waits,
    shown so with why; a node of version 1 runs it. A node of version 2 that declares
    version 1 compatible runs such works too; a rewind puts one on version 2."""
    caplog.set_level(logging.WARNING, logger="stepsaga.worker")
    ran.clear()
    v1, v2 = order(1), order(2, stages=3)
    async with SqlStore.open(store_url) as store:
        async with Runtime([v1], store=store) as client:
            old = [await client.start("order", i, run=False) for i in range(2)]
        async with Runtime([v2], store=store) as client:
            new = await client.start("order", 9, run=False)
        newer = node(store, v2, "n2")
        async with anyio.create_task_group() as tg:
            await tg.start(newer.run)

            async def held_back() -> bool:
                rows = await store.works(status=["waiting"])
                return sorted(r["work_id"] for r in rows) == sorted(old)

            await _until(held_back)

            async def new_done() -> bool:
                return await _status(store, new) == "completed"

            await _until(new_done)
            row = await store.work(old[0])
            assert row is not None and row["status"] == "waiting"
            reason = json.loads(row["waiting"])[""]
            assert reason == (
                f"started on definition {definition_hash(compile_saga(v1))} (version 1) of "
                f"saga order; node n2 runs {definition_hash(compile_saga(v2))} (version 2, "
                "continuing versions: none), which does not continue it: it waits for a "
                "node that runs its definition, or a rewind onto one that is run")
            await anyio.sleep(0.3)  # more claim rounds: still left, logged once
            assert all(v == 2 for v, _ in ran)
            left = [r for r in caplog.records if "leaves work" in r.getMessage()]
            assert len(left) == 1 and "started on definition" in left[0].getMessage()

            # a person rewinds one onto version 2, queued for the nodes
            async with Runtime([v2], store=store) as steer:
                fork = await steer.rewind(old[1], 1, paused=False, run=False)

            async def fork_done() -> bool:
                return await _status(store, fork) == "completed"

            await _until(fork_done)
            assert await _status(store, old[1]) == "waiting"  # the original stays as it was
            # a node of version 1 takes the old works over
            older = node(store, v1, "n1")
            await tg.start(older.run)

            async def old_done() -> bool:
                return [await _status(store, w) for w in old] == ["completed"] * 2

            await _until(old_done)
            await older.drain()
            await newer.drain()
        assert sorted(p for v, p in ran if v == 1) == ["s0", "s0", "s1", "s1"]
        assert await store.works(status=["waiting"]) == []


async def test_a_node_that_continues_the_old_version_runs_its_works(store_url: str) -> None:
    ran.clear()
    v1, v2 = order(1), order(2, continues=(1,), stages=3)
    async with SqlStore.open(store_url) as store:
        async with Runtime([v1], store=store) as client:
            old = await client.start("order", 1, run=False)
        newer = node(store, v2, "n2")
        async with anyio.create_task_group() as tg:
            await tg.start(newer.run)

            async def done() -> bool:
                return await _status(store, old) == "completed"

            await _until(done)
            await newer.drain()
        assert ran == [(2, "s0"), (2, "s1"), (2, "s2")]


async def test_a_lease_row_that_does_not_name_its_definition_learns_it_when_refused(
        store_url: str) -> None:
    """A row written before lease rows named definitions: the node claims the work,
    refuses to adopt it, and hands it back marked, naming the definition from now on."""
    v1, v2 = order(1), order(2, stages=3)
    async with SqlStore.open(store_url) as store:
        async with Runtime([v1], store=store) as client:
            old = await client.start("order", 1, run=False)
        async with store.engine.begin() as conn:
            await conn.execute(sa.update(lease_rows).where(lease_rows.c.work_id == old)
                               .values(definition=None, definition_version=None))
        newer = node(store, v2, "n2")
        async with anyio.create_task_group() as tg:
            await tg.start(newer.run)

            async def left() -> bool:
                return await _status(store, old) == "waiting"

            await _until(left)
            await newer.drain()
        async with store.engine.connect() as conn:
            row = (await conn.execute(sa.select(lease_rows).where(
                lease_rows.c.work_id == old))).mappings().one()
        assert (row["definition"], row["definition_version"], row["owner"]) == (
            definition_hash(compile_saga(v1)), 1, None)
        assert "node n2 runs" in row["waiting"]
        assert newer.claimed == 1  # claimed once, then passed by
