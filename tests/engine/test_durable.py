"""The runtime on a durable store: recovery after the process stops, time travel,
rewind and compare from the store. (The store's own contract is in tests/engine/store.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import Runtime, Saga, Stage, replay
from engine.store import SqlStore

from .helpers import Ledger, types


def url_of(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/works.sqlite"


async def test_a_work_runs_durably_and_its_projections_follow(tmp_path: Path) -> None:
    ledger = Ledger()
    saga = Saga(name="s", stages=[Stage(name="a", transaction=ledger.tx()),
                                  Stage(name="b", transaction=ledger.tx())])
    async with SqlStore.open(url_of(tmp_path)) as store, Runtime([saga], store=store) as rt:
        result = await rt.run("s", 1)
        stored = await store.read(result.work_id)
        assert stored == rt.events(result.work_id)
        row = await store.work(result.work_id)
        assert row is not None
        assert (row["status"], row["output"], row["stages_done"], row["stages_total"]) == (
            "completed", "3", 2, 2)
        runs = await store.stage_runs(result.work_id)
        assert [(r["path"], r["status"], r["attempts"]) for r in runs] == [
            ("a", "completed", 1), ("b", "completed", 1)]


async def test_recovery_reruns_an_interrupted_call_with_the_same_idempotency_key(
        tmp_path: Path) -> None:
    keys: list[str] = []
    first_run = {"block": True}
    started = anyio.Event()

    async def charge(ctx: Any, value: int) -> int:
        keys.append(ctx.idempotency_key)
        started.set()
        if first_run["block"]:
            await anyio.sleep_forever()  # the process 'dies' while this runs
        return value + 1

    saga = Saga(name="s", stages=[Stage(name="charge", transaction=charge)])
    async with SqlStore.open(url_of(tmp_path)) as store:
        async with Runtime([saga], store=store) as rt:
            wid = await rt.start("s", 1)
            await started.wait()
        # the runtime is gone; the store holds a started call and no result
        assert [e.type for e in await store.read(wid)][-1] == "stage.transaction.started"
    first_run["block"] = False
    async with SqlStore.open(url_of(tmp_path)) as store:
        async with Runtime([saga], store=store) as rt:
            assert await rt.recover() == [wid]
            result = await rt.wait(wid)
            assert (result.status, result.output) == ("completed", 2)
            kinds = [e.type for e in await store.read(wid)]
            assert kinds == ["work.created", "work.started", "stage.transaction.started",
                             "stage.transaction.completed", "work.completed"]
    assert keys == [f"{wid}/charge/1", f"{wid}/charge/1"]


async def test_a_paused_work_stays_paused_across_a_restart(tmp_path: Path) -> None:
    ledger = Ledger()
    saga = Saga(name="s", stages=[Stage(name="a", transaction=ledger.tx())])
    async with SqlStore.open(url_of(tmp_path)) as store:
        async with Runtime([saga], store=store) as rt:
            wid = await rt.start("s", 1, paused=True)
            await rt.step(wid)
    async with SqlStore.open(url_of(tmp_path)) as store:
        async with Runtime([saga], store=store) as rt:
            assert await rt.recover() == [wid]
            for _ in range(50):
                await anyio.lowlevel.checkpoint()
            assert rt.state(wid).display_status == "paused" and ledger.calls == []
            row = await store.work(wid)
            assert row is not None and row["status"] == "paused"
            await rt.resume(wid)
            assert (await rt.wait(wid)).output == 2


async def test_time_travel_rewind_and_compare_from_the_store(tmp_path: Path) -> None:
    ledger = Ledger()
    ledger.fail("b", times=1)
    saga = Saga(name="s", stages=[Stage(name="a", transaction=ledger.tx()),
                                  Stage(name="b", transaction=ledger.tx())])
    async with SqlStore.open(url_of(tmp_path)) as store, Runtime([saga], store=store) as rt:
        first = await rt.run("s", 1)
        assert first.status == "failed"
        stream = await store.read(first.work_id)
        at = await rt.travel(first.work_id, 4)
        assert at == replay(stream[:4]) and at.stages["a"].output == 2
        # the cause is fixed (b does not fail any more): rewind to before b ran
        forked = await rt.rewind(first.work_id, 4)
        state = rt.state(forked)
        assert state.paused and state.parent_work_id == first.work_id
        assert state.forked_at_seq == 4
        await rt.resume(forked)
        second = await rt.wait(forked)
        assert (second.status, second.output) == ("completed", 3)
        diverge = await rt.compare(first.work_id, forked)
        assert diverge is not None
        seq, left, right = diverge
        assert seq == 5  # the fork was created paused: it parts where a person resumed it
        assert left is not None and left.type == "stage.transaction.started"
        assert right is not None and right.type == "work.resumed"
        assert types(rt, forked)[:4] == [e.type for e in stream[:4]]
        with pytest.raises(ValueError, match="cannot rewind to seq 99"):
            await rt.rewind(first.work_id, 99)


async def test_two_runners_on_one_work_one_wins_the_other_conflicts(tmp_path: Path) -> None:
    from engine.store import ConflictError

    ledger = Ledger()
    saga = Saga(name="s", stages=[Stage(name="a", transaction=ledger.tx()),
                                  Stage(name="b", transaction=ledger.tx())])
    url = url_of(tmp_path)
    async with SqlStore.open(url) as store_a, SqlStore.open(url) as store_b:
        async with Runtime([saga], store=store_a) as first:
            wid = await first.start("s", 1, paused=True)
            async with Runtime([saga], store=store_b) as second:
                assert await second.recover() == [wid]  # both now hold the work
                assert await first.step(wid) is not None
                with pytest.raises(ConflictError, match=f"work {wid}: seq 2 is taken"):
                    await second.step(wid)
                stream = await store_a.read(wid)
                assert [e.type for e in stream] == ["work.created", "work.started"]
                assert replay(stream).status == "running"
