"""A node's workers changed at run time, and draining that hands works on at a step
boundary, in process on a SQLite file (the multi-process runs are in test_nodes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
import tenacity

from engine import RetryPolicy, Runtime, Saga, Sleep, Stage, Wait
from engine.store import SqlStore
from engine.store.schema import leases as lease_rows
from workers import registry
from workers.node import WorkerNode, WorkerSpec

calls: list[str] = []


async def _step(ctx: Any, value: int) -> int:
    calls.append(ctx.idempotency_key)
    await anyio.sleep(0.1)
    return value + 1


SLOW = Saga(name="slow", stages=[Stage(name=f"s{i}", transaction=_step) for i in range(4)])


async def _statuses(store: SqlStore, ids: list[str]) -> list[str]:
    return [(await store.work(w) or {}).get("status", "?") for w in ids]


async def _until(check: Any, seconds: float = 20) -> None:
    for _ in range(int(seconds / 0.05)):
        if await check():
            return
        await anyio.sleep(0.05)


async def test_draining_hands_works_on_at_a_step_boundary(tmp_path: Path) -> None:
    calls.clear()
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        async with Runtime([SLOW], store=store) as client:
            ids = [await client.start("slow", 0, run=False) for _ in range(6)]
        first = WorkerNode(store, [SLOW], [WorkerSpec(name="w", concurrency=10)],
                           node_id="first", drain_deadline=10)
        second = WorkerNode(store, [SLOW], [WorkerSpec(name="w", concurrency=10)],
                            node_id="second", drain_deadline=10)
        async with anyio.create_task_group() as tg:
            await tg.start(first.run)

            async def started() -> bool:
                return len(calls) >= 6

            await _until(started)
            await tg.start(second.run)
            await first.drain()  # finish the step in flight, record it, hand the work on

            async def ended() -> bool:
                return await _statuses(store, ids) == ["completed"] * 6

            await _until(ended)
            await second.drain()
        assert await _statuses(store, ids) == ["completed"] * 6
        # no step ran twice: the handover came between steps, not in the middle of one
        assert len(calls) == len(set(calls)) == 6 * 4
        for work in ids:
            owners = [e.worker for e in await store.read(work) if e.worker]
            assert owners[0] == "first/w" and owners[-1] == "second/w"
        kinds = [e["type"] for e in await registry.worker_events_of(store, "first/w")]
        assert kinds[-2:] == ["worker.draining", "worker.removed"]


async def test_workers_are_added_changed_and_removed_at_run_time(tmp_path: Path) -> None:
    calls.clear()
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        node = WorkerNode(store, [SLOW], [WorkerSpec(name="a", concurrency=1)], node_id="n")
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)
            async with Runtime([SLOW], store=store) as client:
                ids = [await client.start("slow", 0, run=False) for _ in range(4)]

            async def one_running() -> bool:
                return node.workers()["a"]["running"] == 1

            await _until(one_running)
            assert node.workers()["a"]["running"] == 1  # its concurrency is 1
            await node.set_concurrency("a", 3)
            await node.add_worker(WorkerSpec(name="b", concurrency=2))

            async def all_running() -> bool:
                info = node.workers()
                return info["a"]["running"] + info["b"]["running"] == 4

            await _until(all_running)
            await node.remove_worker("b")  # hard: its works go back to the queue

            async def ended() -> bool:
                return await _statuses(store, ids) == ["completed"] * 4

            await _until(ended)
            await node.drain()
        assert await _statuses(store, ids) == ["completed"] * 4
        listed = {w["worker_id"]: (w["status"], w["concurrency"])
                  for w in await registry.list_workers(store)}
        assert listed == {"n/a": ("removed", 3), "n/b": ("removed", 2)}
        kinds = [e["type"] for e in await registry.worker_events_of(store, "n/a")]
        assert kinds[0] == "worker.registered" and "worker.updated" in kinds
        updates = [e["payload"] for e in await registry.worker_events_of(store, "n/a")
                   if e["type"] == "worker.updated"]
        assert updates == [{"concurrency": 3}]


async def test_a_saga_concurrency_limit_holds_across_nodes(store_url: str) -> None:
    now = {"report": 0, "quick": 0}
    most = {"report": 0, "quick": 0}

    def counted(kind: str) -> Any:
        async def run(ctx: Any, value: int) -> int:
            now[kind] += 1
            most[kind] = max(most[kind], now[kind])
            await anyio.sleep(0.15)
            now[kind] -= 1
            return value

        return run

    report = Saga(name="report", stages=[Stage(name="a", transaction=counted("report"))])
    quick = Saga(name="quick", stages=[Stage(name="a", transaction=counted("quick"))])
    async with SqlStore.open(store_url) as store:
        async with Runtime([report, quick], store=store) as client:
            ids = [await client.start(s, 0, run=False) for s in ["report", "quick"] * 6]
        nodes = [WorkerNode(store, [report, quick], [WorkerSpec(name="w", concurrency=10)],
                            node_id=f"n{i}", saga_limits={"report": 2}, poll_interval=0.02)
                 for i in range(2)]
        async with anyio.create_task_group() as tg:
            for node in nodes:
                await tg.start(node.run)

            held_back: dict[str, str] = {}  # report works seen waiting for the limit
            listed: set[str] = set()

            async def ended() -> bool:
                for row in await store.works(status=["waiting"]):
                    listed.add(row["work_id"])
                    held_back[row["work_id"]] = json.loads(row["waiting"])[""]
                return await _statuses(store, ids) == ["completed"] * 12

            await _until(ended)
            for node in nodes:
                await node.drain()
        assert await _statuses(store, ids) == ["completed"] * 12
        assert await store.works(status=["waiting"]) == []
    # the report works beyond the limit showed status waiting, with the reason
    assert len(held_back) >= 2 and set(held_back) <= set(ids[0::2]) and listed
    assert set(held_back.values()) == {"saga report is at its concurrency limit (2 at once)"}
    assert most["report"] == 2  # never more than its limit, across both nodes
    assert most["quick"] > 2  # the other saga is not held back
    with pytest.raises(ValueError, match="concurrency limit of saga 'report' must be"):
        WorkerNode(store, [report], [WorkerSpec(name="w")], saga_limits={"report": 0})


async def test_nodes_leave_works_of_unknown_sagas_and_plain_runtimes_leave_queued_works(
        tmp_path: Path) -> None:
    """A node never claims a work of a saga it does not know (another app sharing the
    store); a plain runtime's recover() does not run works queued for worker nodes."""
    async def same(ctx: Any, value: int) -> int:
        return value

    a = Saga(name="a", stages=[Stage(name="s", transaction=same)])
    b = Saga(name="b", stages=[Stage(name="s", transaction=same)])
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        async with Runtime([a, b], store=store) as client:
            mine = await client.start("a", 1, run=False)
            other = await client.start("b", 1, run=False)
        async with Runtime([a, b], store=store) as plain:
            assert await plain.recover() == []  # both are queued for nodes
        node = WorkerNode(store, [a], [WorkerSpec(name="w", concurrency=4)], node_id="n")
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)

            async def done() -> bool:
                return await _statuses(store, [mine]) == ["completed"]

            await _until(done)
            await anyio.sleep(0.3)  # a few more claim rounds
            await node.drain()
        assert await _statuses(store, [mine, other]) == ["completed", "pending"]


async def test_a_sleeping_work_is_parked_and_takes_no_slot(store_url: str) -> None:
    """One slot, three works that each sleep 1.5 s between two stages: each sleeper is
    handed back to the store until it is due, so the slot runs the others meanwhile.
    A work waiting for a signal is parked too (a signal reaches it through the store's
    inbox, which wakes it)."""
    order: list[str] = []

    def stage(name: str) -> Any:
        async def run(ctx: Any, value: int) -> int:
            order.append(f"{name}{value}")
            return value

        return run

    nap = Saga(name="nap", stages=[Stage(name="a", transaction=stage("a")),
                                   Sleep(name="rest", seconds=1.5),
                                   Stage(name="b", transaction=stage("b"))])
    hold = Saga(name="hold", stages=[Wait(name="w", signal="go", timeout=1.0,
                                          timeout_output=0),
                                     Stage(name="c", transaction=stage("c"))])
    async with SqlStore.open(store_url) as store:
        async with Runtime([nap, hold], store=store) as client:
            ids = [await client.start("nap", i, run=False) for i in range(3)]
        node = WorkerNode(store, [nap, hold], [WorkerSpec(name="w", concurrency=1)],
                          node_id="n", park_after=0.5, poll_interval=0.1)
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)

            async def all_slept() -> bool:
                return len(order) >= 3

            await _until(all_slept)
            assert order[:3] == ["a0", "a1", "a2"]  # nobody waited for a sleeper's slot
            async with store.engine.connect() as conn:
                parked = (await conn.execute(sa.select(
                    lease_rows.c.owner, lease_rows.c.expires_at).where(
                    lease_rows.c.work_id == ids[0]))).one()
            wake_at = (await store.work(ids[0]) or {})["wake_at"]
            assert parked.owner is None and parked.expires_at == pytest.approx(wake_at)

            async def ended() -> bool:
                return await _statuses(store, ids) == ["completed"] * 3

            await _until(ended)
            assert sorted(order[3:]) == ["b0", "b1", "b2"]
            # the wait for a signal hands its slot back: the next work starts at once
            async with Runtime([nap, hold], store=store) as client:
                waiting = [await client.start("hold", i, run=False) for i in range(2)]

            async def both_done() -> bool:
                return await _statuses(store, waiting) == ["completed"] * 2

            await _until(both_done)
            await node.drain()
        firsts = [min(e.time for e in await store.read(w) if e.worker) for w in waiting]
    assert abs(firsts[1] - firsts[0]) < 0.9
    with pytest.raises(ValueError, match="park_after must be >= 0 seconds or None"):
        WorkerNode(store, [nap], [WorkerSpec(name="w")], park_after=-1)


async def test_a_work_waiting_out_a_retry_backoff_is_parked(tmp_path: Path) -> None:
    """A retry's backoff is a timer like a sleep: one slot, two works whose first
    attempt fails and is retried after 1.5 s; both first attempts run before either
    retry, because the backing-off work is handed back meanwhile."""
    attempts: list[str] = []

    async def flaky(ctx: Any, value: int) -> int:
        attempts.append(f"{value}:{ctx.attempt}")
        if ctx.attempt == 1:
            raise RuntimeError("not yet")
        return value

    saga = Saga(name="flaky", stages=[Stage(
        name="a", transaction=flaky,
        retry=RetryPolicy(attempts=2, wait=tenacity.wait_fixed(1.5)))])
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/r.sqlite") as store:
        async with Runtime([saga], store=store) as client:
            ids = [await client.start("flaky", i, run=False) for i in range(2)]
        node = WorkerNode(store, [saga], [WorkerSpec(name="w", concurrency=1)],
                          node_id="n", park_after=0.5)
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)

            async def ended() -> bool:
                return await _statuses(store, ids) == ["completed"] * 2

            await _until(ended)
            await node.drain()
    assert attempts[:2] == ["0:1", "1:1"] and sorted(attempts[2:]) == ["0:2", "1:2"]


async def test_a_work_that_cannot_be_loaded_does_not_hold_back_the_others(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import sqlite3

    quick = Saga(name="quick", stages=[Stage(name="a", transaction=_step)])
    path = tmp_path / "s.sqlite"
    async with SqlStore.open(f"sqlite+aiosqlite:///{path}") as store:
        async with Runtime([quick], store=store) as client:
            ids = [await client.start("quick", 0, run=False) for _ in range(5)]
        with sqlite3.connect(path) as conn:  # one queued work loses the payload of its start
            conn.execute("UPDATE events SET payload = '{}' WHERE work_id = ? AND seq = 1",
                         (ids[2],))
        node = WorkerNode(store, [quick], [WorkerSpec(name="w", concurrency=10)],
                          node_id="n", lease_ttl=30)
        with caplog.at_level(logging.ERROR, logger="stepsaga.runtime"):
            async with anyio.create_task_group() as tg:
                await tg.start(node.run)

                async def others_done() -> bool:
                    return [s for i, s in enumerate(await _statuses(store, ids))
                            if i != 2] == ["completed"] * 4

                await _until(others_done)
                node.stop()
        assert await _statuses(store, ids[:2] + ids[3:]) == ["completed"] * 4
        assert any(ids[2] in r.getMessage() and "seq 1" in r.getMessage()
                   for r in caplog.records)
        async with store.engine.connect() as conn:  # its row stays: it is not lost
            kept = (await conn.execute(sa.select(lease_rows.c.work_id))).scalars().all()
        assert kept == [ids[2]]
