"""Faults between the engine and the store: refused appends, bad steering values, broken
streams, bad ids, events after a work's end. Real SQLite files (and PostgreSQL where
the stores must agree); the database's write lock is held by a real second connection.
"""

from __future__ import annotations

import inspect
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import (
    CorruptEventError,
    Observer,
    Runtime,
    Saga,
    Stage,
    StoreError,
    Wait,
    replay,
)
from engine.store import SqlStore, StoreConfig

from .helpers import Ledger


def file_of(tmp_path: Path) -> Path:
    return tmp_path / "store.sqlite"


def url_of(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{file_of(tmp_path)}"


@asynccontextmanager
async def quick_store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    # a short busy timeout: a held write lock refuses an append within 50 ms
    config = StoreConfig(url=url_of(tmp_path), busy_timeout_ms=50)
    async with SqlStore.open(config=config) as store:
        yield store


@contextmanager
def write_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Hold the SQLite file's write lock from another connection, as another process
    in a long transaction would."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


def seqs(stream: list[Any]) -> list[int]:
    return [r.seq for r in stream]


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


# ---------------------------------------------------------------- refused appends


async def test_a_store_that_refuses_the_last_commit_is_never_reported_as_completed(
        tmp_path: Path) -> None:
    held: list[sqlite3.Connection] = []

    async def lock_then_return(ctx: Any, value: Any) -> Any:
        # the commit of this result and of the work's end meets a held write lock (the
        # first time: the run after the recovery commits)
        if not held:
            held.append(sqlite3.connect(file_of(tmp_path), isolation_level=None,
                                        check_same_thread=False))
            held[0].execute("BEGIN IMMEDIATE")
        return value

    saga = Saga(name="s", stages=[Stage(name="a", transaction=lock_then_return)])
    async with quick_store(tmp_path) as store:
        async with Runtime([saga], store=store, store_retry_for=0.3, lease_ttl=1.0) as rt:
            wid = await rt.start("s", 1)
            with anyio.fail_after(10), pytest.raises(StoreError, match="locked"):
                await rt.wait(wid)
            held[0].execute("ROLLBACK")
            held[0].close()
            stored = await store.read(wid)
            assert stored[-1].type == "stage.transaction.started"
            assert replay(stored).status == "running"
            assert (await store.work(wid) or {})["status"] == "running"
            # the work was handed back: this runtime (or any) goes on with it at once
            assert await rt.recover() == [wid]
            with anyio.fail_after(10):
                result = await rt.wait(wid)
            assert result.status == "completed"
            stream = await store.read(wid)
            assert seqs(stream) == list(range(1, len(stream) + 1))


async def test_a_write_lock_held_for_a_while_is_waited_out(tmp_path: Path) -> None:
    ledger = Ledger()
    saga = Saga(name="s", stages=[Stage(name="a", transaction=ledger.tx()),
                                  Wait(name="w", signal="go"),
                                  Stage(name="b", transaction=ledger.tx())])
    async with quick_store(tmp_path) as store:
        async with Runtime([saga], store=store, store_retry_for=20) as rt:
            wid = await rt.start("s", 1)
            await until(lambda: rt.state(wid).stages.get("w") is not None)
            with write_lock(file_of(tmp_path)) as conn:
                timer = threading.Timer(0.4, conn.execute, ("ROLLBACK",))
                timer.start()
                try:
                    # refused (locked) for 0.4 s, then taken
                    await rt.signal(wid, "go", {"n": 1})
                finally:
                    timer.join()
            with anyio.fail_after(10):
                result = await rt.wait(wid)
            assert result.status == "completed" and result.output == {"n": 1}
            stream = await store.read(wid)
            assert seqs(stream) == list(range(1, len(stream) + 1))
            assert [e.type for e in stream].count("signal.received") == 1


async def test_a_refused_pause_leaves_memory_as_the_store_holds_it(tmp_path: Path) -> None:
    saga = Saga(name="s", stages=[Wait(name="w", signal="go")])
    async with quick_store(tmp_path) as store:
        async with Runtime([saga], store=store, store_retry_for=0.2, lease_ttl=0.6) as rt:
            wid = await rt.start("s")
            await until(lambda: rt.state(wid).stages.get("w") is not None)
            before = await store.read(wid)
            with write_lock(file_of(tmp_path)):
                with pytest.raises(StoreError, match="locked"):
                    await rt.pause(wid, by="ann", reason="look")
                assert not rt.state(wid).paused if wid in rt.works() else True
            assert seqs(await store.read(wid)) == seqs(before)
            assert (await store.work(wid) or {})["status"] == "waiting"  # on its signal
            # given up here and handed back (or its lease ran out): recover goes on
            async def recovered() -> bool:
                return await rt.recover() == [wid]

            await until(recovered)
            await rt.pause(wid, by="ann", reason="look")
            await rt.signal(wid, "go", 7)
            await rt.resume(wid, by="ann")
            with anyio.fail_after(10):
                result = await rt.wait(wid)
            assert result.status == "completed" and result.output == 7
            stream = await store.read(wid)
            assert seqs(stream) == list(range(1, len(stream) + 1))


# ---------------------------------------------------------------- steering values


async def test_steering_values_are_checked_before_anything_is_recorded(
        tmp_path: Path) -> None:
    saga = Saga(name="s", stages=[Stage(name="a", transaction=Ledger().tx()),
                                  Wait(name="w", signal="go")])
    async with quick_store(tmp_path) as store, Runtime([saga], store=store) as rt:
        wid = await rt.start("s", 1)
        await until(lambda: rt.state(wid).stages.get("w") is not None)
        before = seqs(await store.read(wid))
        with pytest.raises(ValueError, match=r"payload of signal 'go' is not JSON"):
            await rt.signal(wid, "go", {1, 2})
        with pytest.raises(ValueError, match=r"payload of signal 'go' is not JSON.*NaN"):
            await rt.signal(wid, "go", float("nan"))
        with pytest.raises(TypeError, match="by must be a string"):
            await rt.pause(wid, by=object())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="name must not be empty"):
            await rt.signal(wid, "", 1)
        await rt.pause(wid, by="ann")
        with pytest.raises(ValueError, match=r"edited output of stage 'a' is not JSON"):
            await rt.edit(wid, path="a", by="ann", reason="fix", output={1, 2})
        with pytest.raises(TypeError, match="reason must be a string"):
            await rt.cancel(wid, by="ann", reason=3)  # type: ignore[arg-type]
        stream = await store.read(wid)
        assert seqs(stream) == [*before, before[-1] + 1]  # only the valid pause
        assert stream[-1].type == "work.paused" and rt.state(wid).paused
        await rt.signal(wid, "go", {"ok": True})
        await rt.resume(wid, by="ann")
        with anyio.fail_after(10):
            assert (await rt.wait(wid)).output == {"ok": True}
        stream = await store.read(wid)
        assert seqs(stream) == list(range(1, len(stream) + 1))


# ---------------------------------------------------------------- broken streams


async def test_recover_goes_on_past_a_work_it_cannot_load(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    saga = Saga(name="s", stages=[Stage(name="a", transaction=Ledger().tx()),
                                  Wait(name="w", signal="go")])
    async with quick_store(tmp_path) as store:
        async with Runtime([saga], store=store) as rt:
            broken, sound = await rt.start("s", 1), await rt.start("s", 2)
            await until(lambda: all(rt.state(w).stages.get("w") is not None
                                    for w in (broken, sound)))
        seq = next(e.seq for e in await store.read(broken)
                   if e.type == "stage.transaction.completed")
        with sqlite3.connect(file_of(tmp_path)) as conn:  # an empty result, as if lost
            conn.execute("UPDATE events SET payload = '{}' WHERE work_id = ? AND seq = ?",
                         (broken, seq))
        with pytest.raises(CorruptEventError) as caught:
            replay(await store.read(broken))
        assert f"seq {seq}" in str(caught.value) and broken in str(caught.value)
        assert "'output'" in str(caught.value)
        async with Runtime([saga], store=store) as rt:
            with caplog.at_level(logging.ERROR, logger="stepsaga.runtime"):
                assert await rt.recover() == [sound]
            assert any(broken in r.getMessage() and f"seq {seq}" in r.getMessage()
                       for r in caplog.records)
            await rt.signal(sound, "go", 3)
            with anyio.fail_after(10):
                assert (await rt.wait(sound)).status == "completed"


async def test_an_event_naming_a_stage_that_never_started_names_work_and_seq(
        tmp_path: Path) -> None:
    saga = Saga(name="s", stages=[Stage(name="a", transaction=Ledger().tx())])
    async with quick_store(tmp_path) as store:
        async with Runtime([saga], store=store) as rt:
            wid = (await rt.run("s", 1)).work_id
        seq = next(e.seq for e in await store.read(wid)
                   if e.type == "stage.transaction.completed")
        with sqlite3.connect(file_of(tmp_path)) as conn:
            conn.execute("UPDATE events SET path = 'ghost' WHERE work_id = ? AND seq = ?",
                         (wid, seq))
        with pytest.raises(CorruptEventError, match=rf"seq {seq} .*{wid}.*'ghost' has not "
                                                    "started"):
            replay(await store.read(wid))


# ---------------------------------------------------------------- ids


@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800b", "tab\tin", ""],
                         ids=["nul", "surrogate", "control", "empty"])
async def test_work_ids_are_checked_alike_on_both_stores(store_url: str, bad: str) -> None:
    saga = Saga(name="s", stages=[Stage(name="a", transaction=Ledger().tx())])
    async with SqlStore.open(store_url) as store, Runtime([saga], store=store) as rt:
        with pytest.raises(ValueError, match="a work id must be a string of 1 to 64"):
            await rt.start("s", 1, work_id=bad)
        for read in (store.read, store.load, store.work):
            with pytest.raises(ValueError, match="a work id must be a string of 1 to 64"):
                await read(bad)
        assert await store.works() == []
        good = await rt.start("s", 1, work_id="ünïcode-ok")
        with anyio.fail_after(10):
            assert (await rt.wait(good)).status == "completed"


# ---------------------------------------------------------------- after the end


async def test_observer_events_may_follow_the_end_and_change_nothing(tmp_path: Path) -> None:
    def note(ctx: Any, recorded: Any) -> Any:
        return {"saw": recorded.type}

    saga = Saga(name="s", hooks=(Observer(name="audit", notify=note,
                                          events=("work.completed",)),),
                stages=[Stage(name="a", transaction=Ledger().tx())])
    async with quick_store(tmp_path) as store:
        async with Runtime([saga], store=store) as rt:
            wid = (await rt.run("s", 1)).work_id
        stream = await store.read(wid)
        kinds = [e.type for e in stream]
        assert kinds[-2:] == ["work.completed", "stage.observer.produced"]
        assert stream[-1].event.payload["value"] == {"saw": "work.completed"}
        state = replay(stream)
        assert state.status == "completed" and state.observations[":audit"] == {
            "saw": "work.completed"}
        assert (await store.work(wid) or {})["status"] == "completed"
        async with Runtime([saga], store=store) as rt:
            assert await rt.recover() == []  # an ended work stays ended


async def test_a_runtime_whose_lease_is_taken_over_stops_the_work(tmp_path: Path) -> None:
    from engine.store.leases import claim

    saga = Saga(name="s", stages=[Wait(name="w", signal="go")])
    async with quick_store(tmp_path) as store:
        async with Runtime([saga], store=store, lease_ttl=0.3) as rt:
            wid = await rt.start("s")
            await until(lambda: rt.state(wid).stages.get("w") is not None)
            # the lease expires (as if this process stalled past it) and a node claims it
            assert rt.lease is not None
            await store.expire_leases(owner=rt.lease.owner, work_ids=[wid])
            taken = await claim(store, owner="node-b", worker="main", limit=5, ttl=30)
            assert [c.work_id for c in taken] == [wid]
            with anyio.fail_after(5), pytest.raises(StoreError, match="taken over"):
                await rt.wait(wid)
            await until(lambda: wid not in rt.driven())
            await rt.signal(wid, "go", 1)  # not driven here: it goes to the work's inbox
            assert [c.command.kind for c in await store.pending_commands(wid)] == ["signal"]
        stream = await store.read(wid)
        assert stream[-1].type == "stage.wait.started"  # nothing recorded past the takeover


async def test_a_missing_event_is_named_when_the_work_is_read(tmp_path: Path) -> None:
    saga = Saga(name="s", stages=[Stage(name="a", transaction=Ledger().tx()),
                                  Stage(name="b", transaction=Ledger().tx())])
    async with quick_store(tmp_path) as store:
        async with Runtime([saga], store=store) as rt:
            wid = (await rt.run("s", 1)).work_id
        with sqlite3.connect(file_of(tmp_path)) as conn:  # a lost row in the middle
            conn.execute("DELETE FROM events WHERE work_id = ? AND seq = 5", (wid,))
        with pytest.raises(CorruptEventError, match=rf"seq 6 .*{wid}.* follows seq 4: "
                                                    "events are missing"):
            replay(await store.read(wid))
        async with Runtime([saga], store=store) as rt:
            with pytest.raises(CorruptEventError, match="events are missing"):
                await rt.travel(wid, 6)


async def test_an_output_with_a_key_that_is_not_a_string_fails_its_stage(
        tmp_path: Path) -> None:
    async def int_keys(ctx: Any, value: Any) -> Any:
        return {"ok": {1: "a"}}  # read back from JSON it would be {"ok": {"1": "a"}}

    saga = Saga(name="s", stages=[Stage(name="a", transaction=int_keys)])
    async with quick_store(tmp_path) as store, Runtime([saga], store=store) as rt:
        result = await rt.run("s", 1)
        assert result.status == "failed" and result.failure is not None
        error = result.failure["error"]
        assert error["type"] == "OutputError" and "key 1 is not a string" in error["message"]
        assert replay(await store.read(result.work_id)).status == "failed"
