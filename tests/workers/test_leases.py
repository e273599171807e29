"""Leases on a SQLite file and on a real PostgreSQL: claims, renewal, takeover, fencing."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from engine import Runtime, Saga, Stage, replay
from engine.lease import Lease
from engine.store import SqlStore
from engine.store.sql import LeaseLostError
from workers import leases
from workers.node import WorkerNode, WorkerSpec


async def _inc(ctx: Any, value: int) -> int:
    return value + 1


ONE = Saga(name="one", stages=[Stage(name="a", transaction=_inc)])
OTHER = Saga(name="other", stages=[Stage(name="a", transaction=_inc)])


async def test_claims_take_the_oldest_free_works_once(store_url: str) -> None:
    async with SqlStore.open(store_url) as store, Runtime([ONE, OTHER], store=store) as rt:
        ids = [await rt.start("one", i, run=False) for i in range(5)]
        other = await rt.start("other", 0, run=False)
        first = await leases.claim(store, owner="n1", worker="n1/w", limit=3, ttl=30,
                                   sagas=["one"])
        assert sorted(c.work_id for c in first) == ids[:3]
        assert all(c.token == 1 for c in first)
        # a live lease is never taken; the filter keeps to the worker's sagas
        second = await leases.claim(store, owner="n2", worker="n2/w", limit=10, ttl=30,
                                    sagas=["one"])
        assert sorted(c.work_id for c in second) == ids[3:]
        rest = await leases.claim(store, owner="n2", worker="n2/w", limit=10, ttl=30)
        assert [c.work_id for c in rest] == [other]
        # a work run by a plain runtime of its own is never offered to worker nodes
        mine = await rt.start("one", 1)
        assert (await rt.wait(mine)).status == "completed"
        private = await rt.start("one", 1, paused=True)
        assert await leases.claim(store, owner="n3", worker="n3/w", limit=10, ttl=30) == []
        await rt.resume(private)
        assert await leases.claim(store, owner="n3", worker="n3/w", limit=10, ttl=30) == []
        # renewal answers what is still held; release frees works at once
        assert await leases.renew(store, owner="n1", ttl=30, work_ids=ids) == set(ids[:3])
        assert await leases.release(store, owner="n1", work_ids=ids[:1]) == 1
        again = await leases.claim(store, owner="n3", worker="n3/w", limit=10, ttl=30)
        assert [(c.work_id, c.token) for c in again] == [(ids[0], 2)]  # its second claim


async def test_higher_priorities_first_and_delayed_works_wait_for_their_time(
        store_url: str) -> None:
    async with SqlStore.open(store_url) as store, Runtime([ONE], store=store) as rt:
        low = await rt.start("one", 0, run=False)
        high = await rt.start("one", 0, run=False, priority=5)
        later = await rt.start("one", 0, run=False, start_at=time.time() + 0.3, priority=9)
        assert rt.works() == []  # nothing of them runs here
        (first,) = await leases.claim(store, owner="n", worker="n/w", limit=1, ttl=30)
        assert first.work_id == high
        rest = await leases.claim(store, owner="n", worker="n/w", limit=5, ttl=30)
        assert [c.work_id for c in rest] == [low]  # the delayed one is not due yet
        await anyio.sleep(0.35)
        due = await leases.claim(store, owner="n", worker="n/w", limit=5, ttl=30)
        assert [c.work_id for c in due] == [later]
        assert await leases.next_due(store) is None  # no free work waits for its time
        with pytest.raises(ValueError, match=r"priority must be a whole number .*, got 'x'"):
            await rt.start("one", 0, run=False, priority="x")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="from -1000000 to 1000000, got 10000000000"):
            await rt.start("one", 0, run=False, priority=10**10)
        with pytest.raises(ValueError, match="start_at delays a work for worker nodes"):
            await rt.start("one", 0, start_at=time.time())
        with pytest.raises(ValueError, match="start_at must be a Unix time"):
            await rt.start("one", 0, run=False, start_at="soon")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="start_at must be a Unix time in seconds, got inf"):
            await rt.start("one", 0, run=False, start_at=float("inf"))


async def test_an_expired_lease_is_taken_over_with_a_higher_token(store_url: str) -> None:
    async with SqlStore.open(store_url) as store, Runtime([ONE], store=store) as rt:
        work = await rt.start("one", 0, run=False)
        (mine,) = await leases.claim(store, owner="n1", worker="n1/w", limit=1, ttl=0.05)
        await anyio.sleep(0.1)
        (theirs,) = await leases.claim(store, owner="n2", worker="n2/w", limit=1, ttl=30)
        assert (mine.work_id, theirs.work_id, theirs.token) == (work, work, 2)
        # not ours any more
        assert await leases.renew(store, owner="n1", ttl=30, work_ids=[work]) == set()


async def test_a_worker_that_lost_its_lease_cannot_append(store_url: str) -> None:
    """Fencing: a worker paused past its lease (here: a stage that hangs) finds on its
    next append that another worker took the work over; nothing of it is written and
    the new owner finishes the work."""
    go = anyio.Event()

    async def slow(ctx: Any, value: int) -> int:
        if ctx.attempt == 1 and not go.is_set():
            await go.wait()
        return value + 1

    saga = Saga(name="slow", stages=[Stage(name="a", transaction=slow),
                                     Stage(name="b", transaction=_inc)])
    first = Lease(owner="n1", worker="n1/w", ttl=0.05)
    second = Lease(owner="n2", worker="n2/w", ttl=30)
    async with SqlStore.open(store_url) as store:
        async with Runtime([saga], store=store, lease=first, worker="n1/w") as old:
            work = await old.start("slow", 1)
            await anyio.sleep(0.1)  # n1's lease expires while stage a runs
            (claimed,) = await leases.claim(store, owner="n2", worker="n2/w", limit=1, ttl=30)
            assert claimed.work_id == work
            before = await store.read(work)
            go.set()
            with pytest.raises(LeaseLostError, match=f"work {work}"):
                await old.wait(work)
            assert await store.read(work) == before  # n1 wrote nothing more
        async with Runtime([saga], store=store, lease=second, worker="n2/w") as new:
            assert await new.adopt(work)
            result = await new.wait(work)
        assert (result.status, result.output) == ("completed", 3)
        stream = await store.read(work)
        assert replay(stream).status == "completed"
        assert {e.worker for e in stream[len(before):]} == {"n2/w"}
        # the work ended: its lease went with its last commit
        assert await leases.renew(store, owner="n2", ttl=30, work_ids=[work]) == set()


async def test_bad_worker_settings_are_refused_with_the_reason(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="concurrency must be a whole number >= 1, got -2"):
        WorkerSpec(name="w", concurrency=-2)
    with pytest.raises(ValueError, match="concurrency 'x' is not a whole number"):
        WorkerSpec.parse("w=x")
    with pytest.raises(ValueError, match="worker name ''"):
        WorkerSpec(name="")
    with pytest.raises(ValueError, match="ttl must be a positive number of seconds, got 0"):
        Lease(owner="n", worker="n/w", ttl=0)
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        with pytest.raises(ValueError, match="ttl must be a positive number of seconds, got 0"):
            await leases.claim(store, owner="n", worker="n/w", limit=1, ttl=0)
        with pytest.raises(ValueError, match="lease_ttl must be a positive number"):
            WorkerNode(store, [ONE], [WorkerSpec(name="w")], lease_ttl=0)
        with pytest.raises(ValueError, match="serves sagas that are not registered: nope"):
            WorkerNode(store, [ONE], [WorkerSpec(name="w", sagas=("nope",))])
        with pytest.raises(ValueError, match="two workers have the same name"):
            WorkerNode(store, [ONE], [WorkerSpec(name="w"), WorkerSpec(name="w")])
        with pytest.raises(ValueError, match="run=False creates a work for worker nodes"):
            async with Runtime([ONE]) as rt:
                await rt.start("one", 1, run=False)


async def test_an_idle_node_starts_a_delayed_work_on_time(store_url: str) -> None:
    # with a 10 s lease an idle node on PostgreSQL polls every 5 s and nothing notifies
    # it when a delayed work becomes due: it sleeps until the next start time instead
    async with SqlStore.open(store_url) as store:
        node = WorkerNode(store, [ONE, OTHER], [WorkerSpec(name="w", concurrency=4)],
                          node_id="n", lease_ttl=10)
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)
            await anyio.sleep(0.2)  # idle: its first claim found nothing
            async with Runtime([ONE, OTHER], store=store) as client:
                start_at = time.time() + 1.0
                later = await client.start("one", 1, run=False, start_at=start_at + 5)
                soon = await client.start("one", 1, run=False, start_at=start_at)
                elsewhere = await client.start("other", 1, run=False, start_at=start_at - 0.5)
            assert await leases.next_due(store, ["one"]) == pytest.approx(start_at)
            assert await leases.next_due(store) == pytest.approx(start_at - 0.5)
            for _ in range(60):
                if (await store.work(soon) or {}).get("status") == "completed":
                    break
                await anyio.sleep(0.05)
            begun = min(e.time for e in await store.read(soon) if e.worker)
            assert start_at <= begun < start_at + 0.5
            assert (await store.work(later) or {})["status"] == "pending"
            assert (await store.work(elsewhere) or {})["status"] == "completed"
            await node.drain()


async def test_an_older_claim_of_the_same_worker_is_fenced_off(store_url: str) -> None:
    """The fence holds the claim's token: a driver that stalled past its lease while
    the same worker claimed the work again cannot append any more."""
    from engine.events import Event, RecordedEvent

    async with SqlStore.open(store_url) as store, Runtime([ONE], store=store) as rt:
        wid = await rt.start("one", 0, run=False)
        (first,) = await leases.claim(store, owner="n1", worker="n1/w", limit=1, ttl=30)
        await store.expire_leases(owner="n1", work_ids=[wid])
        (second,) = await leases.claim(store, owner="n1", worker="n1/w", limit=1, ttl=30)
        assert (first.token, second.token) == (1, 2)
        lease = Lease(owner="n1", worker="n1/w", ttl=30)
        state = replay(await store.read(wid))

        def started(seq: int) -> list[RecordedEvent]:
            return [RecordedEvent(work_id=wid, seq=seq, time=time.time(),
                                  event=Event(type="work.started"))]

        with pytest.raises(LeaseLostError, match=f"lease on work {wid}"):
            await store.append(wid, started(2), state, lease=lease, token=first.token)
        assert len(await store.read(wid)) == 1  # nothing of the stale claim was written
        await store.append(wid, started(2), replay(await store.read(wid)), lease=lease,
                           token=second.token)
        assert [e.type for e in await store.read(wid)] == ["work.created", "work.started"]
