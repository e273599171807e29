"""The store's contract, run against a SQLite file and a real PostgreSQL (``store_url``).

The events and states stored here are real: sagas run on the in-memory
:class:`Runtime` with a :class:`ManualClock` (so times and durations are exact),
and the tests copy their events into the store the way the runtime's sink does,
one append per event with the state after it, or in bigger appends.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import create_async_engine

from engine import (
    ManualClock,
    Map,
    Parallel,
    RecordedEvent,
    Runtime,
    Saga,
    Stage,
    StageFailure,
    WorkState,
    replay,
)
from engine.store import ConflictError, CorruptEventError, SqlStore, StoreConfig
from engine.store.codec import encode_event
from engine.store.schema import events, snapshots, stage_runs, works
from engine.store.sql import APPEND_LOCK

from ..helpers import retry

Stream = list[RecordedEvent]

# ------------------------------------------------------------------ real events


def _sagas(clock: ManualClock) -> list[Saga]:
    def tx(seconds: float, *, fail_first: bool = False, refuse: bool = False) -> Any:
        async def transaction(ctx: Any, value: Any) -> Any:
            clock.advance(seconds)
            if refuse:
                raise StageFailure(f"{ctx.path} refused", retryable=False)
            if fail_first and ctx.attempt == 1:
                raise RuntimeError(f"{ctx.path} failed once")
            return value + 1

        return transaction

    async def undo(ctx: Any, value: Any, output: Any, reason: Any) -> None:
        pass

    def stage(name: str, seconds: float, **kw: Any) -> Stage:
        return Stage(name=name, transaction=tx(seconds, **kw), compensation=undo,
                     retry=retry(2))

    return [
        # b fails its first attempt and is retried
        Saga(name="happy", stages=[stage("a", 1), stage("b", 2, fail_first=True),
                                   stage("c", 3)]),
        Saga(name="refused", stages=[stage("a", 1), stage("b", 2), stage("c", 3, refuse=True)]),
        Saga(name="nested", stages=[
            stage("a", 1),
            Parallel(name="p", branches=[stage("x", 1), stage("y", 2)]),
            Map(name="m", stage=stage("item", 1), items=lambda ctx, value: [1, 2, 3]),
            stage("z", 1),
        ]),
    ]


async def recorded(saga: str, work_id: str, input: Any = 1) -> tuple[Stream, WorkState]:
    """Run ``saga`` to its end in memory; its events and final state."""
    clock = ManualClock()
    async with Runtime(_sagas(clock), clock=clock) as rt:
        await rt.start(saga, input, work_id=work_id)
        await rt.wait(work_id)
        return rt.events(work_id), rt.state(work_id)


def renamed(stream: Sequence[RecordedEvent], work_id: str) -> Stream:
    return [dataclasses.replace(r, work_id=work_id) for r in stream]


async def append_each(store: SqlStore, stream: Sequence[RecordedEvent]) -> None:
    """Like the runtime: one append per event, with the state right after it."""
    for k in range(1, len(stream) + 1):
        await store.append(stream[0].work_id, [stream[k - 1]], replay(stream[:k]))


async def dump(store: SqlStore) -> dict[str, list[dict[str, Any]]]:
    """Every stored row, table by table, in key order."""
    keyed = {events: [events.c.position], works: [works.c.work_id],
             stage_runs: [stage_runs.c.work_id, stage_runs.c.path],
             snapshots: [snapshots.c.work_id]}
    out = {}
    async with store.engine.connect() as conn:
        for table, key in keyed.items():
            rows = (await conn.execute(sa.select(table).order_by(*key))).mappings().all()
            out[table.name] = [dict(r) for r in rows]
    return out


@contextmanager
def counting_commits() -> Iterator[Callable[[], int]]:
    """Counts the commits of every SQLAlchemy engine (the store may use more than one)."""
    commits = 0

    def on_commit(conn: Any) -> None:
        nonlocal commits
        commits += 1

    sa_event.listen(sa.Engine, "commit", on_commit)
    try:
        yield lambda: commits
    finally:
        sa_event.remove(sa.Engine, "commit", on_commit)


async def wait_until(predicate: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``predicate`` (something only the database knows) until it holds."""
    with anyio.fail_after(10):
        while not await predicate():  # noqa: ASYNC110 - no event to wait on: it is polling
            await anyio.sleep(0.01)


def without_work_id(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "work_id"} for row in rows]


# ------------------------------------------------------------------ append and read


async def test_appended_events_read_back_equal_in_seq_order(store_url: str) -> None:
    one, _ = await recorded("happy", "one")
    two, _ = await recorded("refused", "two")
    async with SqlStore.open(store_url) as store:
        # interleaved appends of two works
        await store.append("one", one[:3])
        await store.append("two", two[:4])
        await store.append("one", one[3:])
        await store.append("two", two[4:])

        assert await store.read("one") == one
        assert await store.read("two") == two
        assert [r.seq for r in await store.read("two")] == list(range(1, len(two) + 1))
        assert await store.read("one", after=2, until=5) == one[2:5]
        assert await store.read("one", after=len(one)) == []
        assert await store.read("nobody") == []
        assert await store.work_ids() == ["one", "two"]

        everything = await store.read_all()
        assert everything == [*one[:3], *two[:4], *one[3:], *two[4:]]  # append order
        positions = [r.position for r in everything]
        assert all(p is not None for p in positions)
        assert positions == sorted(set(positions))  # strictly increasing
        assert await store.read_all(after_position=positions[5]) == everything[6:]
        assert await store.read_all(after_position=positions[-1]) == []


async def test_event_by_event_appends_give_the_projections_of_one_append(
        store_url: str) -> None:
    async with SqlStore.open(store_url) as store:
        for saga in ("happy", "refused", "nested"):
            stream, state = await recorded(saga, f"{saga}-each")
            await append_each(store, stream)
            await store.append(f"{saga}-once", renamed(stream, f"{saga}-once"),
                               replay(renamed(stream, f"{saga}-once")))
            each, once = await store.work(f"{saga}-each"), await store.work(f"{saga}-once")
            assert each is not None and once is not None
            assert each["last_seq"] == state.seq == len(stream)
            assert without_work_id([each]) == without_work_id([once])
            each_runs = await store.stage_runs(f"{saga}-each")
            assert len(each_runs) == len([p for p in state.stages if p])
            assert without_work_id(each_runs) == without_work_id(
                await store.stage_runs(f"{saga}-once"))


# ------------------------------------------------------------------ conflicts


async def test_an_append_of_a_taken_seq_fails_and_writes_nothing(store_url: str) -> None:
    happy, _ = await recorded("happy", "w")
    refused, _ = await recorded("refused", "w")
    async with SqlStore.open(store_url) as store:
        await store.append("w", happy[:3], replay(happy[:3]))
        before = await dump(store)
        # seq 3 is taken, seq 4 is free: nothing of this append may land
        with pytest.raises(ConflictError, match=r"work w: seq 3 is taken"):
            await store.append("w", refused[2:5], replay(refused[:5]))
        assert await dump(store) == before
        assert await store.read("w") == happy[:3]
        # the winner goes on from where it was
        await store.append("w", happy[3:], replay(happy))
        assert await store.read("w") == happy


async def _race(first: SqlStore, second: SqlStore, work_ids: list[str]) -> dict[str, str]:
    """For each work, ``first`` appends a happy stream and ``second`` a refused one at
    the same time; which saga won each work."""
    happy, _ = await recorded("happy", "template")
    refused, _ = await recorded("refused", "template")
    outcomes: dict[tuple[str, str], BaseException | None] = {}

    async def append(store: SqlStore, work_id: str, stream: Stream) -> None:
        try:
            await store.append(work_id, stream, replay(stream))
        except ConflictError as exc:
            outcomes[(work_id, stream[0].event.payload["saga"])] = exc
        else:
            outcomes[(work_id, stream[0].event.payload["saga"])] = None

    async with anyio.create_task_group() as tg:
        for work_id in work_ids:  # both batches in the same order: see the deadlock test
            tg.start_soon(append, first, work_id, renamed(happy, work_id))
            tg.start_soon(append, second, work_id, renamed(refused, work_id))

    winners = {}
    for work_id in work_ids:
        lost = {saga for saga in ("happy", "refused") if outcomes[(work_id, saga)] is not None}
        assert len(lost) == 1, (work_id, outcomes)
        winner = ({"happy", "refused"} - lost).pop()
        winners[work_id] = winner
        stream = renamed(happy if winner == "happy" else refused, work_id)
        assert await first.read(work_id) == stream
        assert await second.read(work_id) == stream
        row = await second.work(work_id)
        assert row is not None
        assert (row["saga"], row["last_seq"]) == (winner, len(stream))
    return winners


async def test_racing_appends_in_one_store_one_wins(store_url: str) -> None:
    async with SqlStore.open(store_url) as store:
        winners = await _race(store, store, ["r0", "r1", "r2"])
    # one writer task, in queue order: the first append of each work wins
    assert winners == {"r0": "happy", "r1": "happy", "r2": "happy"}


async def test_racing_appends_of_two_stores_on_one_database_one_wins(store_url: str) -> None:
    async with SqlStore.open(store_url) as first, SqlStore.open(store_url) as second:
        for round in range(3):
            await _race(first, second, [f"r{round}-{i}" for i in range(6)])
        assert len(await first.work_ids()) == 18


async def test_a_writer_taking_seqs_in_another_order_fails_only_the_conflicting_appends(
        store_url: str, request: pytest.FixtureRequest) -> None:
    """Another writer holds (w1, 1) uncommitted; our batch [innocent, w0, w1] takes w0 and
    waits for w1; then the other writer takes (w0, 1) too: on PostgreSQL a deadlock, and
    the database aborts our transaction (it waited first). The appends to w0 and w1 must
    fail with ConflictError, and the append to ``innocent``, which conflicts with
    nobody, must commit."""
    w0, _ = await recorded("happy", "w0")
    w1 = renamed(w0, "w1")
    innocent = renamed(w0, "innocent")
    outcomes: dict[str, str] = {}

    async def append(store: SqlStore, stream: Stream) -> None:
        try:
            await store.append(stream[0].work_id, stream[:2], replay(stream[:2]))
        except ConflictError:
            outcomes[stream[0].work_id] = "conflict"
        except Exception as exc:
            outcomes[stream[0].work_id] = f"{type(exc).__name__}: {exc}"[:80]
        else:
            outcomes[stream[0].work_id] = "ok"

    async with SqlStore.open(store_url) as store:
        other = create_async_engine(store_url)
        try:
            async with other.connect() as conn, anyio.create_task_group() as tg:
                await conn.begin()
                await conn.execute(events.insert(), [encode_event(w1[0])])
                for stream in (innocent, w0, w1):
                    tg.start_soon(append, store, stream)
                if store_url.startswith("postgresql"):
                    async def blocked() -> bool:  # our batch waits for the other's (w1, 1)
                        async with other.connect() as probe:
                            waiting = await probe.scalar(sa.text(
                                "SELECT count(*) FROM pg_locks WHERE NOT granted"))
                        return bool(waiting)

                    await wait_until(blocked)
                await conn.execute(events.insert(), [encode_event(w0[0])])
                await conn.commit()
        finally:
            await other.dispose()
        stored = {work_id: await store.read(work_id) for work_id in ("innocent", "w0", "w1")}
    # asserted outside the store's task group, which would wrap the AssertionError
    assert outcomes == {"innocent": "ok", "w0": "conflict", "w1": "conflict"}
    assert stored == {"innocent": innocent[:2], "w0": w0[:1], "w1": w1[:1]}


async def test_a_reader_tailing_read_all_sees_every_committed_event(
        store_url: str, request: pytest.FixtureRequest) -> None:
    """A reader that asks for the events after the last position it saw must see every
    event in the end, even when another writer's transaction took an earlier position
    and commits later. Every writer takes the append lock first (on PostgreSQL an
    advisory lock, on SQLite the write lock), so our append waits for the other's
    commit and positions follow commit order."""
    postgres = store_url.startswith("postgresql")
    x, _ = await recorded("happy", "x")
    y = renamed(x, "y")
    seen: Stream = []

    async with SqlStore.open(store_url) as store:
        async def tail() -> None:
            after = (seen[-1].position or 0) if seen else 0
            seen.extend(await store.read_all(after_position=after))

        async def y_committed() -> bool:
            return bool(await store.read("y"))

        other = create_async_engine(store_url)
        try:
            async with other.connect() as conn, anyio.create_task_group() as tg:
                await conn.begin()
                if postgres:  # what every store's append transaction does first
                    await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({APPEND_LOCK})"))
                await conn.execute(events.insert(), [encode_event(x[0])])  # takes a position
                tg.start_soon(store.append, "y", y[:1])
                await tail()
                assert not await y_committed()  # it waits for the other writer's commit
                await conn.commit()
        finally:
            await other.dispose()
        await tail()
    assert sorted((r.work_id, r.seq) for r in seen) == [("x", 1), ("y", 1)]


# ------------------------------------------------------------------ group commit


async def test_two_hundred_concurrent_works_are_group_committed_and_durable(
        store_url: str) -> None:
    template, _ = await recorded("happy", "template")
    streams = {f"g{i:03}": renamed(template, f"g{i:03}") for i in range(200)}

    async def write(store: SqlStore, stream: Stream) -> None:
        for part in (stream[:3], stream[3:6], stream[6:]):
            await store.append(part[0].work_id, part, replay(stream[: part[-1].seq]))

    async with SqlStore.open(store_url) as store:
        with counting_commits() as commits:
            async with anyio.create_task_group() as tg:
                for stream in streams.values():
                    tg.start_soon(write, store, stream)
        # 600 appends: one commit each would be 600
        assert commits() <= 60, commits()

    async with SqlStore.open(store_url) as store:  # everything survived the close
        assert await store.work_ids() == sorted(streams)
        for work_id, stream in streams.items():
            assert await store.read(work_id) == stream
        done = await store.works(status=["completed"])
        assert [row["work_id"] for row in done] == sorted(streams)
        assert {row["last_seq"] for row in done} == {len(template)}


async def test_a_conflict_in_a_big_batch_fails_alone(store_url: str) -> None:
    happy, _ = await recorded("happy", "template")
    refused, _ = await recorded("refused", "victim")
    others = {f"o{i:03}": renamed(happy, f"o{i:03}") for i in range(100)}
    errors: dict[str, BaseException] = {}

    async def append(store: SqlStore, stream: Stream) -> None:
        # a stream's tail (the victim's seqs 5..7) has no state of its own to show
        state = replay(stream) if stream[0].seq == 1 else None
        try:
            await store.append(stream[0].work_id, stream, state)
        except ConflictError as exc:
            errors[stream[0].work_id] = exc

    async with SqlStore.open(store_url) as store:
        await store.append("victim", refused[:5], replay(refused[:5]))
        async with anyio.create_task_group() as tg:
            for i, stream in enumerate(others.values()):
                if i == 50:  # in the middle of the batch: seq 5 is taken, 6 is not
                    tg.start_soon(append, store, renamed(happy[4:7], "victim"))
                tg.start_soon(append, store, stream)
        assert list(errors) == ["victim"]
        assert "work victim: seq 5 is taken" in str(errors["victim"])
        assert await store.read("victim") == refused[:5]
        victim = await store.work("victim")
        assert victim is not None
        assert (victim["saga"], victim["last_seq"]) == ("refused", 5)
        for work_id, stream in others.items():
            assert await store.read(work_id) == stream
        assert len(await store.works(saga="happy")) == 100


# ------------------------------------------------------------------ projections


async def test_projections_of_a_completed_work(store_url: str) -> None:
    stream, state = await recorded("happy", "ok", input=1)
    assert state.status == "completed"
    async with SqlStore.open(store_url) as store:
        await append_each(store, stream)
        row = await store.work("ok")
        assert row is not None
        assert (row["saga"], row["status"], row["phase"], row["paused"]) == (
            "happy", "completed", "forward", False)
        assert (json.loads(row["input"]), json.loads(row["output"])) == (1, 4)
        assert (row["error"], row["failure"], row["current_stage"]) == (None, None, None)
        assert (row["stages_done"], row["stages_total"]) == (3, 3)
        assert row["last_seq"] == len(stream)
        assert (row["created_at"], row["updated_at"]) == (stream[0].time, stream[-1].time)
        assert json.loads(row["breakpoints"]) == []
        runs = await store.stage_runs("ok")
        assert [(r["path"], r["status"], r["attempts"], r["duration"]) for r in runs] == [
            ("a", "completed", 1, 1.0), ("b", "completed", 2, 4.0), ("c", "completed", 1, 3.0)]
        for run in runs:
            assert run["duration"] == run["finished_at"] - run["started_at"]

        assert [r["work_id"] for r in await store.works(status=["completed"])] == ["ok"]
        assert await store.works(status=["failed", "running"]) == []
        assert [r["work_id"] for r in await store.works(saga="happy")] == ["ok"]
        assert await store.works(saga="refused") == []


async def test_projections_of_a_failed_and_compensated_work(store_url: str) -> None:
    stream, state = await recorded("refused", "ko")
    assert state.status == "failed"
    async with SqlStore.open(store_url) as store:
        await append_each(store, stream)
        row = await store.work("ko")
        assert row is not None
        assert (row["status"], row["phase"], row["output"]) == ("failed", "compensating", None)
        assert json.loads(row["error"])["message"] == "c refused"
        failure = json.loads(row["failure"])
        assert (failure["path"], failure["error"]["retryable"]) == ("c", False)
        assert (row["stages_done"], row["stages_total"], row["last_seq"]) == (2, 3, len(stream))
        runs = {r["path"]: r for r in await store.stage_runs("ko")}
        assert {p: (r["status"], r["attempts"]) for p, r in runs.items()} == {
            "a": ("compensated", 1), "b": ("compensated", 1), "c": ("failed", 1)}
        assert (runs["a"]["error"], runs["b"]["error"]) == (None, None)
        assert json.loads(runs["c"]["error"])["message"] == "c refused"
        assert runs["c"]["duration"] == 3.0
        assert [r["work_id"] for r in await store.works(status=["failed"])] == ["ko"]


async def test_rebuilt_projections_equal_the_live_ones(store_url: str) -> None:
    streams = [renamed((await recorded(saga, "x"))[0], f"{saga}-{i}")
               for i in range(2) for saga in ("happy", "refused", "nested")]
    async with SqlStore.open(store_url) as store:
        async with anyio.create_task_group() as tg:  # live: interleaved, one event at a time
            for stream in streams:
                tg.start_soon(append_each, store, stream)
        live_works = await store.works()
        live_runs = {s[0].work_id: await store.stage_runs(s[0].work_id) for s in streams}
        assert len(live_works) == 6
        assert sum(len(runs) for runs in live_runs.values()) == 2 * (3 + 3 + 9)

        assert await store.rebuild_projections() == 6
        assert await store.works() == live_works
        for work_id, runs in live_runs.items():
            assert await store.stage_runs(work_id) == runs


# ------------------------------------------------------------------ snapshots


async def test_load_gives_the_latest_snapshot_and_the_events_after_it(store_url: str) -> None:
    stream, final = await recorded("nested", "each")
    n = len(stream)
    chunked = renamed(stream, "chunks")
    config = StoreConfig(url=store_url, snapshot_every=3)
    async with SqlStore.open(store_url, config=config) as store:
        await append_each(store, stream)
        snapshot, rest = await store.load("each")
        assert snapshot is not None
        assert snapshot.seq == n - n % 3
        assert snapshot == replay(stream[: snapshot.seq])
        assert rest == stream[snapshot.seq:]
        assert replay(rest, snapshot) == replay(stream) == final

        # appends of several events: a snapshot when an append crosses a multiple of 3
        for part in (chunked[:2], chunked[2:7], chunked[7:8]):
            await store.append("chunks", part, replay(chunked[: part[-1].seq]))
        snapshot, rest = await store.load("chunks")
        assert snapshot is not None and snapshot.seq == 7
        assert rest == chunked[7:8]
        assert replay(rest, snapshot) == replay(chunked[:8])

        await store.append("short", renamed(stream[:2], "short"), replay(stream[:2]))
        assert await store.load("short") == (None, renamed(stream[:2], "short"))


# ------------------------------------------------------------------ corrupt rows


@pytest.mark.parametrize(("column", "value", "complaint"), [
    ("payload", "{not json", "not JSON"),
    ("type", "no.such.event", "unknown type 'no.such.event'"),
    ("version", 99, "version 99, newer than this engine's 1"),
])
async def test_a_corrupt_event_row_is_a_clear_error(store_url: str, column: str, value: Any,
                                                    complaint: str) -> None:
    stream, _ = await recorded("happy", "bad")
    other, _ = await recorded("refused", "fine")
    async with SqlStore.open(store_url) as store:
        await store.append("bad", stream, replay(stream))
        await store.append("fine", other, replay(other))
        before = await dump(store)
        async with store.engine.begin() as conn:
            await conn.execute(sa.text(f"UPDATE events SET {column} = :value "
                                       "WHERE work_id = 'bad' AND seq = 4"), {"value": value})
        after = await dump(store)
        changed = [(a, b) for a, b in zip(before["events"], after["events"], strict=True)
                   if a != b]
        assert len(changed) == 1
        assert {k for k in changed[0][0] if changed[0][0][k] != changed[0][1][k]} == {column}
        assert {t: rows for t, rows in after.items() if t != "events"} == {
            t: rows for t, rows in before.items() if t != "events"}

        for read in (store.read("bad"), store.read_all(), store.load("bad")):
            with pytest.raises(CorruptEventError) as caught:
                await read
            assert "event seq 4 of work 'bad'" in str(caught.value)
            assert complaint in str(caught.value)
            assert isinstance(caught.value, ValueError)
        assert await store.read("bad", until=3) == stream[:3]
        assert await store.read("bad", after=4) == stream[4:]
        assert await store.read("fine") == other


# ------------------------------------------------------------------ opening and closing


@pytest.mark.parametrize("url", [
    "sqlite+aiosqlite:///:memory:",
    "sqlite+aiosqlite://",
    pytest.param("sqlite+aiosqlite:///file:m?mode=memory&cache=shared&uri=true", marks=[
        # SQLAlchemy only warns about its pool choice for mode=memory; the store must refuse
        pytest.mark.filterwarnings("ignore:Selection of the StaticPool")]),
])
async def test_an_in_memory_sqlite_database_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="needs a file"):
        async with SqlStore.open(url):
            pass


async def test_everything_survives_closing_and_reopening(store_url: str) -> None:
    happy, _ = await recorded("happy", "ok")
    refused, _ = await recorded("refused", "ko")
    config = StoreConfig(url=store_url, snapshot_every=4)
    async with SqlStore.open(store_url, config=config) as store:
        await append_each(store, happy)
        await store.append("ko", refused, replay(refused))
        before = await dump(store)
        loaded = await store.load("ok")
        assert loaded[0] is not None
    with pytest.raises(Exception, match="the store is closed"):
        await store.append("ok", happy[:1])

    async with SqlStore.open(store_url, config=config) as store:
        assert await dump(store) == before
        assert await store.read("ok") == happy
        assert await store.read("ko") == refused
        assert await store.read_all() == [*happy, *refused]
        assert await store.load("ok") == loaded
        # the stream's seqs are still taken after the reopen
        with pytest.raises(ConflictError):
            await store.append("ok", happy[-1:])
        assert await store.read("ok") == happy
