"""The event feed: one reader per process, every committed event once to each
subscriber, in commit order, resumable from a cursor, whatever process committed
(both databases)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import Runtime, Saga, Stage
from engine.store import SqlStore
from engine.store.feed import Feed

ROOT = Path(__file__).resolve().parents[3]


async def one(ctx: Any, n: int) -> int:
    return n + 1


SAGA = Saga(name="s", stages=[Stage(name=f"a{i}", transaction=one) for i in range(3)])
# a process that commits works of its own: the feed of this one must see them
CHILD = """
import anyio, sys
from engine import Runtime, Saga, Stage
from engine.store import SqlStore
async def one(ctx, n): return n + 1
SAGA = Saga(name="s", stages=[Stage(name=f"a{i}", transaction=one) for i in range(3)])
async def main():
    async with SqlStore.open(sys.argv[1]) as store, Runtime([SAGA], store=store) as rt:
        for i in range(int(sys.argv[2])):
            await rt.run("s", i)
anyio.run(main)
"""


async def count_events(store: SqlStore) -> int:
    return sum([len(await store.read(w)) for w in await store.work_ids()])


async def collect(subscription: Any, count: int, seconds: float = 20) -> list[Any]:
    got: list[Any] = []
    with anyio.fail_after(seconds):
        async for recorded in subscription:
            got.append(recorded)
            if len(got) >= count:
                return got
    return got


async def test_subscribers_get_every_event_once_in_commit_order(store_url: str) -> None:
    async with SqlStore.open(store_url) as store, Feed.running(store) as feed, \
            Runtime([SAGA], store=store) as rt:
        async with feed.subscribe(after=0) as everything, \
                feed.subscribe(types=["work.completed"]) as ends:
            ids = [(await rt.run("s", i)).work_id for i in range(5)]
            # another process commits too: its events reach this feed as well
            child = await anyio.run_process(
                [sys.executable, "-c", CHILD, store_url, "3"], cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
            assert child.returncode == 0, child.stderr.decode()
            total = await count_events(store)
            got = await collect(everything, total)
            done = await collect(ends, 8)
        positions = [r.position for r in got]
        assert positions == sorted(set(positions)) and len(got) == total
        assert {r.work_id for r in got} == set(await store.work_ids())
        assert len({r.work_id for r in done}) == 8 and set(ids) <= {r.work_id for r in done}
        # one work's events: resumed from a cursor in its middle, nothing missed or twice
        stream = await store.read(ids[2])
        middle = [r for r in got if r.work_id == ids[2]][3].position
        async with feed.subscribe(after=middle, work_id=ids[2]) as rest:
            more = await rt.run("s", 9)  # another work's events are not this one's
            later = await collect(rest, len(stream) - 4)
        assert [r.seq for r in later] == [r.seq for r in stream[4:]]
        assert more.status == "completed"


async def test_a_subscriber_that_falls_behind_catches_up_from_the_store(
        tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    async with SqlStore.open(url) as store, Feed.running(store, buffer=5) as feed, \
            Runtime([SAGA], store=store) as rt:
        async with feed.subscribe() as slow:
            for i in range(20):  # far more than its buffer while it reads nothing
                await rt.run("s", i)
            total = await count_events(store)
            got = await collect(slow, total)
        assert [r.position for r in got] == sorted({r.position for r in got})
        assert len(got) == total


async def test_a_bad_cursor_is_refused(tmp_path: Path) -> None:
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store, \
            Feed.running(store) as feed:
        for bad in (-1, "3", True):
            with pytest.raises(ValueError, match="a cursor is a position >= 0"):
                async with feed.subscribe(after=bad):  # type: ignore[arg-type]
                    pass
        with pytest.raises(ValueError, match="poll_interval"):
            Feed(store, poll_interval=0)


async def test_own_commits_are_handed_over_unread_with_their_stored_positions(
        tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    # a second store on the file stands for another process: its commits do not reach
    # this feed's listener, so the positions they take leave a gap the reader must fill
    async with SqlStore.open(url) as store, Feed.running(store, poll_interval=0.5) as feed, \
            SqlStore.open(url, create=False) as other, \
            Runtime([SAGA], store=store) as rt, Runtime([SAGA], store=other) as elsewhere:
        async with feed.subscribe() as everything:
            for i in range(6):
                await (rt if i % 3 else elsewhere).run("s", i)
            total = await count_events(store)
            got = await collect(everything, total)
        assert feed.handed > 0  # some came without a read
        stored = {(r.work_id, r.seq): r for w in await store.work_ids()
                  for r in await store.read(w)}
        assert [r.position for r in got] == sorted(r.position for r in stored.values())
        for recorded in got:  # as the store holds them: position, time, event
            twin = stored[(recorded.work_id, recorded.seq)]
            assert (recorded.position, recorded.time, recorded.event, recorded.worker) == \
                (twin.position, twin.time, twin.event, twin.worker)


async def test_an_append_without_a_lease_to_check_takes_the_append_lock_too(
        postgres_url: str) -> None:
    """Positions follow commit order only if every append takes the append lock: one
    that skipped it (a queued work's creation, whose group commit checks no lease) could
    commit an earlier position after a feed had read past it, and that event would
    never reach a subscriber. Held by another transaction, the lock keeps it waiting."""
    import asyncpg

    from engine.store.batch import APPEND_LOCK

    holder = await asyncpg.connect(postgres_url.replace("+asyncpg", ""))
    try:
        async with SqlStore.open(postgres_url) as store, Runtime([SAGA], store=store) as rt:
            made: list[str] = []

            async def create() -> None:
                made.append(await rt.start("s", 1, run=False))  # queued: no lease

            for i in range(10):  # queued works: free lease rows, the plan's statistics
                await rt.start("s", i, run=False)
            await holder.execute("ANALYZE leases")
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute(f"SELECT pg_advisory_xact_lock({APPEND_LOCK})")
            async with anyio.create_task_group() as tg:
                tg.start_soon(create)
                await anyio.sleep(0.5)  # long enough for a commit that does not wait
                assert made == [], "the append committed without the append lock"
                assert await holder.fetchval("SELECT count(*) FROM events") == 10
                await transaction.rollback()  # the lock goes: the append commits
            assert len(made) == 1 and await store.work(made[0]) is not None
    finally:
        await holder.close()
