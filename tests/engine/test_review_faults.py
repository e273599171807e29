"""Regression tests for the faults a review found (fixed together in one commit): lease
renewals that time out, appends retried while the work moves on, a pause the store
refuses in a call's own task, stepping past a breakpoint after edits, clean-up
compensations retried by a person, rewinding a finished work, a retry whose lost try
did commit, and release().

Real SQLite files and a real PostgreSQL; the faults are real where they can be (a
second connection holding SQLite's write lock, a PostgreSQL session holding a lease
row ``FOR UPDATE``). Two small stand-in stores, defined below, delegate every call
to a real SqlStore: ``LostAnswer`` fakes the one fault that cannot be made for real
here (a commit whose answer is lost), ``CountingStore`` fakes nothing and only counts
appends, so a test knows a retry has begun.
"""

from __future__ import annotations

import inspect
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

from engine import (
    Breakpoint,
    Parallel,
    RecordedEvent,
    Runtime,
    Saga,
    Stage,
    StageFailure,
    StoreError,
    replay,
)
from engine.store import SqlStore, StoreConfig

from .helpers import retry

RUNTIME_LOG = "stepsaga.runtime"


async def until(check: Callable[[], Any], *, within: float = 10.0) -> None:
    """Poll ``check`` (sync or async) until it is true, failing after ``within`` s."""
    with anyio.fail_after(within):
        for _ in range(int(within / 0.01) + 1):
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return
            await anyio.sleep(0.01)


def logged(caplog: pytest.LogCaptureFixture, *fragments: str) -> bool:
    """Whether the runtime logged a message holding one of ``fragments``."""
    return any(r.name == RUNTIME_LOG and any(f in r.getMessage() for f in fragments)
               for r in caplog.records)


def types(stream: Sequence[RecordedEvent]) -> list[str]:
    return [r.type for r in stream]


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite'}"


@asynccontextmanager
async def quick_store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    # a short busy timeout: a held write lock refuses an append within 50 ms
    config = StoreConfig(url=sqlite_url(tmp_path), busy_timeout_ms=50)
    async with SqlStore.open(config=config) as store:
        yield store


class WriteLock:
    """SQLite's write lock, held from a second connection as another process in a long
    transaction would; taken and given back on cue."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None

    def take(self) -> None:
        assert self.conn is None
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.conn.execute("BEGIN IMMEDIATE")

    def give_back(self) -> None:
        if self.conn is not None:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self.conn.close()
            self.conn = None


@contextmanager
def write_lock(tmp_path: Path) -> Iterator[WriteLock]:
    lock = WriteLock(tmp_path / "store.sqlite")
    try:
        yield lock
    finally:
        lock.give_back()


def gated(go: anyio.Event) -> Any:
    """A transaction that returns its input once ``go`` is set."""
    async def transaction(ctx: Any, value: Any) -> Any:
        await go.wait()
        return value

    return transaction


async def inc(ctx: Any, value: Any) -> Any:
    return value + 1


# ---------------------------------------------------------------- lease renewals


def dsn(postgres_url: str) -> str:
    return postgres_url.replace("postgresql+asyncpg://", "postgresql://", 1)


@asynccontextmanager
async def session(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    """Another PostgreSQL session on the store's database (another process's)."""
    conn = await asyncpg.connect(dsn(postgres_url))
    try:
        yield conn
    finally:
        await conn.close()


@asynccontextmanager
async def lease_row_locked(conn: asyncpg.Connection, work_id: str) -> AsyncIterator[None]:
    """Hold ``work_id``'s lease row ``FOR UPDATE`` (a node's claim, a long transaction):
    a renewal of it waits until the transaction ends."""
    async with conn.transaction():  # rolled back by the test's end: nothing was written
        locked = await conn.fetchval(
            "SELECT work_id FROM leases WHERE work_id = $1 FOR UPDATE", work_id)
        assert locked == work_id
        yield


async def test_a_first_lease_renewal_that_times_out_crashes_nothing(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    # the first beat that has works to renew meets a locked lease row and gives up after
    # ttl/3: before the fix the heartbeat then read a result it never had (the runtime's
    # task group failed with UnboundLocalError and took every work with it)
    caplog.set_level(logging.WARNING, logger=RUNTIME_LOG)
    go = anyio.Event()
    saga = Saga(name="s", stages=[Stage(name="a", transaction=gated(go))])
    ttl = 2.4  # a beat every 0.8 s, the first one 0.8 s after the runtime starts
    async with SqlStore.open(postgres_url) as store:
        began = anyio.current_time()
        async with Runtime([saga], store=store, lease_ttl=ttl) as rt:
            w1 = await rt.start("s", 1)
            w2 = await rt.start("s", 2)
            async with session(postgres_url) as pg, lease_row_locked(pg, w1):
                # no beat has come yet: the first one, renewing w1 and w2, times out
                assert anyio.current_time() < began + ttl / 3, "the setup outlasted a beat"
                await until(lambda: logged(caplog, "renewing the leases of 2 works took"))
            go.set()
            with anyio.fail_after(10):
                results = [await rt.wait(w) for w in (w1, w2)]
            assert [r.status for r in results] == ["completed", "completed"]
            assert [r.output for r in results] == [1, 2]
        for w in (w1, w2):
            assert (await store.work(w) or {})["status"] == "completed"
            assert types(await store.read(w))[-1] == "work.completed"
    assert not logged(caplog, "taken over")


async def test_a_lease_renewal_that_times_out_stops_no_work_started_since_the_last_beat(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    # before the fix a beat that timed out reused the works held at the beat before:
    # w2, started since and touched by nobody, was declared taken over and stopped
    caplog.set_level(logging.WARNING, logger=RUNTIME_LOG)
    go = anyio.Event()
    saga = Saga(name="s", stages=[Stage(name="a", transaction=gated(go))])
    async with SqlStore.open(postgres_url) as store:
        async with Runtime([saga], store=store, lease_ttl=0.6) as rt:
            w1 = await rt.start("s", 1)
            async with session(postgres_url) as pg:
                query = "SELECT expires_at FROM leases WHERE work_id = $1"
                first = await pg.fetchval(query, w1)

                async def renewed() -> bool:
                    return bool(await pg.fetchval(query, w1) > first)

                await until(renewed)  # a beat renewed w1 fine
                async with lease_row_locked(pg, w1):
                    w2 = await rt.start("s", 2)
                    await until(lambda: logged(
                        caplog, "renewing the leases of 2 works took", "taken over"))
            go.set()
            with anyio.fail_after(10):
                results = [await rt.wait(w) for w in (w1, w2)]
            assert [r.status for r in results] == ["completed", "completed"]
        assert {r["work_id"]: r["status"] for r in await store.works()} == \
            {w1: "completed", w2: "completed"}
    assert not logged(caplog, "taken over")


# ---------------------------------------------------------------- retried appends


class CountingStore:
    """A stand-in store: a real SqlStore (every call delegates to it) that only counts
    the appends asked of it, so a test knows a retry has begun. It fakes no fault."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self.appends = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def append(self, *args: Any, **kw: Any) -> None:
        self.appends += 1
        await self._store.append(*args, **kw)


async def test_a_retried_append_writes_the_projection_of_its_own_records(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # a's result meets a held write lock (a real one) and is retried; meanwhile the work
    # is cancelled in memory. Before the fix a retry begun after that wrote the live
    # (cancelled) state: a cancelled row over a stream without work.cancelled, the lease
    # dropped, and the cancel's own append refused (LeaseLostError)
    caplog.set_level(logging.WARNING, logger=RUNTIME_LOG)
    with write_lock(tmp_path) as lock:
        async def a(ctx: Any, value: Any) -> Any:
            lock.take()  # another process's long write, from now on
            return value

        saga = Saga(name="s", stages=[Stage(name="a", transaction=a),
                                      Stage(name="b", transaction=inc)])
        async with quick_store(tmp_path) as real:
            store = CountingStore(real)
            async with Runtime([saga], store=store) as rt:
                w = await rt.start("s", 1)
                await until(lambda: logged(caplog, "refused an append for now"))
                errors: list[BaseException] = []

                async def cancel() -> None:
                    try:
                        await rt.cancel(w, compensate=False)
                    except Exception as exc:
                        errors.append(exc)

                with anyio.fail_after(10):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(cancel)
                        await until(lambda: rt.state(w).status == "cancelled")
                        # the cancel's append waits behind the retried one: the next
                        # append asked of the store is a retry begun after the cancel
                        asked = store.appends
                        await until(lambda: store.appends > asked)
                        lock.give_back()
                assert errors == []
                with anyio.fail_after(10):
                    result = await rt.wait(w)
                assert result.status == "cancelled"
            stream = await real.read(w)
            assert types(stream)[:6] == ["work.created", "work.started",
                                         "stage.transaction.started",
                                         "stage.transaction.completed",
                                         "stage.transaction.started", "work.cancelled"]
            assert [r.seq for r in stream] == list(range(1, len(stream) + 1))
            assert replay(stream).status == "cancelled"
            assert (await real.work(w) or {})["status"] == "cancelled"
            assert await real.leased([w]) == set()


class LostAnswer:
    """A stand-in store: a real SqlStore (every call delegates to it), except that the
    append holding a work's end commits and then raises a transient StoreError, as a
    PostgreSQL connection dropped right after COMMIT would."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self.lost = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def append(self, work_id: str, records: list[RecordedEvent], state: Any = None,
                     **kw: Any) -> None:
        await self._store.append(work_id, records, state, **kw)
        if not self.lost and "work.completed" in types(records):
            self.lost += 1
            raise StoreError("connection lost (stand-in)", transient=True)


async def test_a_last_append_whose_answer_was_lost_is_known_to_have_landed(
        store_url: str) -> None:
    # the landed try ended the work and dropped its lease: the retry meets the fence
    # first. Before the fix that LeaseLostError reached wait() although the store held
    # the work completed
    saga = Saga(name="s", stages=[Stage(name="a", transaction=inc)])
    async with SqlStore.open(store_url) as real:
        stand_in = LostAnswer(real)
        async with Runtime([saga], store=stand_in) as rt:
            w = await rt.start("s", 1)
            with anyio.fail_after(10):
                result = await rt.wait(w)
            assert (result.status, result.output) == ("completed", 2)
            assert rt.state(w).status == "completed"
        assert stand_in.lost == 1
        stream = await real.read(w)
        assert types(stream).count("work.completed") == 1
        assert types(stream)[-1] == "work.completed"
        assert [r.seq for r in stream] == list(range(1, len(stream) + 1))
        assert (await real.work(w) or {})["status"] == "completed"
        assert await real.leased([w]) == set()


# ---------------------------------------------------------------- breakpoints


async def test_a_pause_the_store_refuses_in_a_calls_own_task_stops_only_its_work(
        tmp_path: Path) -> None:
    # x runs in its own task (beside y); the breakpoint after its result records a
    # pause, which meets a held write lock until the retries give up. Before the fix
    # that error escaped into the runtime's task group: the runtime crashed and the
    # bystander never finished
    go = anyio.Event()
    par = Saga(name="par", stages=[Parallel(name="p", branches=[
        Stage(name="x", transaction=inc), Stage(name="y", transaction=inc)])])
    other = Saga(name="other", stages=[Stage(name="z", transaction=gated(go))])
    with write_lock(tmp_path) as lock:
        def on_event(recorded: RecordedEvent) -> None:
            if (recorded.type, recorded.event.path) == ("stage.transaction.completed",
                                                        "p/x"):
                lock.take()  # x's result is durable; its pause is not

        async with quick_store(tmp_path) as store:
            async with Runtime([par, other], store=store, on_event=on_event,
                               store_retry_for=0.3) as rt:
                bystander = await rt.start("other", 1)
                w = await rt.start("par", 1, breakpoints=[
                    Breakpoint(event="stage.transaction.completed", path="p/x")])
                with anyio.fail_after(10), pytest.raises(StoreError, match="locked"):
                    await rt.wait(w)
                assert lock.conn is not None  # the fault did happen
                lock.give_back()
                go.set()
                with anyio.fail_after(10):
                    result = await rt.wait(bystander)
                assert result.status == "completed"
            assert (await store.work(bystander) or {})["status"] == "completed"
            stream = await store.read(w)
            assert "work.paused" not in types(stream)
            assert ("stage.transaction.completed", "p/x") in [
                (r.type, r.event.path) for r in stream]
            assert replay(stream).status == "running"


@pytest.mark.parametrize("meanwhile", ["edit", "signal"])
async def test_stepping_past_a_before_breakpoint_holds_after_steering_while_paused(
        tmp_path: Path, meanwhile: str) -> None:
    # before the fix an event recorded while paused (an edit, a signal) made mstep stop
    # again at once in front of the same event, recording nothing
    saga = Saga(name="s", stages=[Stage(name="a", transaction=inc),
                                  Stage(name="b", transaction=inc)])
    async with SqlStore.open(sqlite_url(tmp_path)) as store:
        async with Runtime([saga], store=store) as rt:
            w = await rt.start("s", 1, breakpoints=[
                Breakpoint(event="stage.transaction.started", path="b", when="before")])
            await until(lambda: rt.state(w).paused)
            assert (rt.state(w).stopped_at or {})["pending"]["path"] == "b"
            if meanwhile == "edit":
                await rt.edit(w, path="b", by="me", reason="fix input", input=100)
            else:
                await rt.signal(w, "nudge", {"n": 1})
            with anyio.fail_after(10):
                report = await rt.mstep(w)
            assert report.reason == "finished"
            assert types(report.events) == ["stage.transaction.started",
                                            "stage.transaction.completed", "work.completed"]
            assert rt.state(w).status == "completed"
            assert rt.state(w).output == (101 if meanwhile == "edit" else 3)
        assert (await store.work(w) or {})["status"] == "completed"
        assert types(await store.read(w))[-1] == "work.completed"


# ---------------------------------------------------------------- clean-ups retried


async def test_a_retried_clean_up_gets_keys_of_its_own_round(tmp_path: Path) -> None:
    # before the fix a person's retry_compensation ran the clean-up under the key of the
    # first round's first try again (charge/1/cleanup/1)
    keys: list[str] = []
    fixed = anyio.Event()

    async def charge(ctx: Any, value: Any) -> Any:
        raise StageFailure("card declined", retryable=False)

    async def refund(ctx: Any, value: Any, output: Any, reason: Any) -> None:
        keys.append(ctx.idempotency_key.split("/", 1)[1])
        if not fixed.is_set():
            raise RuntimeError("refund service down")

    saga = Saga(name="s", stages=[Stage(name="charge", transaction=charge,
                                        compensation=refund, compensation_retry=retry(2))])
    async with SqlStore.open(sqlite_url(tmp_path)) as store:
        async with Runtime([saga], store=store) as rt:
            w = await rt.start("s", 1)
            with anyio.fail_after(10):
                assert (await rt.wait(w)).status == "compensation_failed"
            fixed.set()
            await rt.retry_compensation(w, by="ops")
            with anyio.fail_after(10):
                result = await rt.wait(w)
            assert result.status == "failed"
        assert keys == ["charge/1/cleanup/1", "charge/1/cleanup/2", "charge/1/cleanup/1.1"]
        assert (await store.work(w) or {})["status"] == "failed"
        stream = await store.read(w)
        assert types(stream).count("work.compensation_retried") == 1
        assert types(stream)[-1] == "work.failed"


async def flaky_bank(ctx: Any, value: Any) -> Any:
    if ctx.attempt == 1:
        raise RuntimeError("a: timeout talking to bank")
    return value


async def out_of_stock(ctx: Any, value: Any) -> Any:
    raise StageFailure("b: out of stock", retryable=False)


async def broken_clean_up(ctx: Any, value: Any, output: Any, reason: Any) -> None:
    raise RuntimeError("b: clean-up fails too")


def failure_of(row: dict[str, Any] | None) -> Any:
    raw = (row or {}).get("failure")
    return json.loads(raw) if isinstance(raw, str) else raw


@pytest.mark.parametrize("then", ["completes", "b_fails", "b_fails_uncleaned"])
async def test_a_retried_clean_up_leaves_no_stale_failure(tmp_path: Path, then: str) -> None:
    # a's first attempt fails and its clean-up fails: the work is compensation_failed
    # with a's failure. A person fixes the clean-up; a's second attempt succeeds. Before
    # the fix the work kept a's old failure: a completed work reported one, and b's
    # later failure was reported (and handed to a's rollback) as a's
    fixed = anyio.Event()
    reasons: list[tuple[str, str]] = []

    async def a_comp(ctx: Any, value: Any, output: Any, reason: Any) -> None:
        if not fixed.is_set():
            raise RuntimeError("a: clean-up service down")
        reasons.append((ctx.idempotency_key.split("/", 1)[1], reason.path))

    stages = [Stage(name="a", transaction=flaky_bank, compensation=a_comp, retry=retry(2),
                    compensation_retry=retry(1))]
    if then == "b_fails":
        stages.append(Stage(name="b", transaction=out_of_stock))
    elif then == "b_fails_uncleaned":
        stages.append(Stage(name="b", transaction=out_of_stock,
                            compensation=broken_clean_up, compensation_retry=retry(1)))
    saga = Saga(name="s", stages=stages)
    async with SqlStore.open(sqlite_url(tmp_path)) as store:
        async with Runtime([saga], store=store) as rt:
            w = await rt.start("s", 1)
            with anyio.fail_after(10):
                first = await rt.wait(w)
            assert first.status == "compensation_failed"
            assert first.failure is not None and first.failure["path"] == "a"
            fixed.set()
            await rt.retry_compensation(w, by="ops")
            with anyio.fail_after(10):
                result = await rt.wait(w)
            if then == "completes":
                assert (result.status, result.failure, result.output) == (
                    "completed", None, 1)
                assert reasons == [("a/1/cleanup/1.1", "a")]
            else:
                assert result.failure is not None
                assert result.failure["path"] == "b"
                assert result.failure["error"]["message"] == "b: out of stock"
            if then == "b_fails":  # a is rolled back for b's failure
                assert result.status == "failed"
                assert reasons == [("a/1/cleanup/1.1", "a"), ("a/rollback/1.1", "b")]
            elif then == "b_fails_uncleaned":  # b's clean-up failed: a stays as it is
                assert result.status == "compensation_failed"
                assert reasons == [("a/1/cleanup/1.1", "a")]
            assert rt.state(w).failure == result.failure
        row = await store.work(w)
        assert (row or {})["status"] == result.status
        assert (failure_of(row) or {}).get("path") == (None if then == "completes" else "b")
        assert replay(await store.read(w)).failure == result.failure


# ---------------------------------------------------------------- rewind, release


async def test_rewinding_a_resolved_work_forks_all_of_it(store_url: str) -> None:
    # work.resolved follows the work's end (compensation_failed dropped the lease).
    # Before the fix rewind copied the events one commit each: the copy of
    # work.resolved met the fence (LeaseLostError) and left a half-copied fork
    async def declined(ctx: Any, value: Any) -> Any:
        raise StageFailure("declined", retryable=False)

    async def refund_down(ctx: Any, value: Any, output: Any, reason: Any) -> None:
        raise RuntimeError("refund down")

    saga = Saga(name="s", stages=[Stage(name="a", transaction=declined,
                                        compensation=refund_down,
                                        compensation_retry=retry(1))])
    async with SqlStore.open(store_url) as store:
        async with Runtime([saga], store=store) as rt:
            w = await rt.start("s", 1)
            with anyio.fail_after(10):
                assert (await rt.wait(w)).status == "compensation_failed"
            await rt.resolve(w, by="ops", reason="refunded by hand")
            source = await rt.history(w)
            assert types(source)[-2:] == ["work.compensation_failed", "work.resolved"]
            fork = await rt.rewind(w, len(source), paused=False)
            with anyio.fail_after(10):
                assert (await rt.wait(fork)).status == "failed"
        copied = await store.read(fork)
        assert types(copied) == types(source)
        assert copied[0].event.payload["forked_from"] == {"work_id": w, "seq": len(source)}
        assert {r["work_id"]: r["status"] for r in await store.works()} == \
            {w: "failed", fork: "failed"}
        assert await store.leased([w, fork]) == set()


SAGA_AB = Saga(name="s", stages=[Stage(name="a", transaction=inc),
                                Stage(name="b", transaction=inc)])


async def test_a_released_work_can_be_adopted_again_by_the_same_runtime(
        store_url: str) -> None:
    # before the fix the lease stayed this runtime's, unrenewed: adopt() called it held
    # by another process
    async with SqlStore.open(store_url) as store:
        async with Runtime([SAGA_AB], store=store, lease_ttl=30) as rt:
            w = await rt.start("s", 1, paused=True)
            with anyio.fail_after(10):
                await rt.release(w)
            assert w not in rt.driven()
            assert await rt.adopt(w) is True
            assert w in rt.driven()
            await rt.resume(w, by="ops")
            with anyio.fail_after(10):
                result = await rt.wait(w)
            assert (result.status, result.output) == ("completed", 3)
        assert (await store.work(w) or {})["status"] == "completed"
        assert types(await store.read(w))[-1] == "work.completed"


async def test_a_released_work_is_handed_back_for_another_runtime_at_once(
        store_url: str) -> None:
    # before the fix the released lease was neither handed back nor renewed: another
    # runtime's recover() found it held until it expired (here 30 s)
    async with SqlStore.open(store_url) as store:
        async with Runtime([SAGA_AB], store=store, lease_ttl=30) as rt, \
                Runtime([SAGA_AB], store=store, lease_ttl=30) as other:
            w = await rt.start("s", 1, paused=True)
            with anyio.fail_after(10):
                await rt.release(w)
            assert w not in rt.driven()
            assert await other.recover() == [w]
            await other.resume(w, by="ops")
            with anyio.fail_after(10):
                result = await other.wait(w)
            assert (result.status, result.output) == ("completed", 3)
        assert (await store.work(w) or {})["status"] == "completed"
        assert types(await store.read(w))[-1] == "work.completed"
