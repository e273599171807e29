"""The runtime on a durable store: recovery after the process stops, time travel,
rewind and compare from the store. (The store's own contract is in tests/engine/store.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import RetryPolicy, Runtime, Saga, Stage, UnknownWorkError, WorkStateError, replay
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


async def test_a_second_runtime_does_not_take_over_a_work_another_one_drives(
        tmp_path: Path) -> None:
    # the works a runtime drives are leased to it: another runtime's recover() leaves
    # them alone until the first one hands them back (when it closes)
    ledger = Ledger()
    saga = Saga(name="s", stages=[Stage(name="a", transaction=ledger.tx()),
                                  Stage(name="b", transaction=ledger.tx())])
    url = url_of(tmp_path)
    async with SqlStore.open(url) as store_a, SqlStore.open(url) as store_b:
        async with Runtime([saga], store=store_b) as second:
            async with Runtime([saga], store=store_a) as first:
                wid = await first.start("s", 1, paused=True)
                assert await second.recover() == []
                assert await first.step(wid) is not None
                with pytest.raises(WorkStateError, match="this process does not drive it"):
                    await second.step(wid)
            stream = await store_a.read(wid)
            assert [e.type for e in stream] == ["work.created", "work.started"]
            assert await second.recover() == [wid]  # handed back when the first closed
            await second.resume(wid)
            with anyio.fail_after(5):
                result = await second.wait(wid)
            assert result.status == "completed" and result.output == 3


async def test_a_timer_fires_after_a_restart(tmp_path: Path) -> None:
    from engine import ManualClock, Sleep

    clock = ManualClock()
    ledger = Ledger()
    saga = Saga(name="s", stages=[Sleep(name="nap", seconds=600),
                                  Stage(name="a", transaction=ledger.tx())])
    async with SqlStore.open(url_of(tmp_path)) as store:
        async with Runtime([saga], store=store, clock=clock) as rt:
            wid = await rt.start("s", 1)
            with anyio.fail_after(5):
                while "stage.sleep.started" not in [e.type for e in await store.read(wid)]:
                    await anyio.lowlevel.checkpoint()
            row = await store.work(wid)
            assert row is not None and row["wake_at"] == clock.now() + 600
    clock.advance(601)  # the process was down when the timer was due
    async with SqlStore.open(url_of(tmp_path)) as store:
        async with Runtime([saga], store=store, clock=clock) as rt:
            await rt.recover()
            assert (await rt.wait(wid)).output == 2


async def test_a_signal_sent_before_the_wait_survives_a_restart(tmp_path: Path) -> None:
    from engine import Wait

    saga = Saga(name="s", stages=[Stage(name="a", transaction=Ledger().tx()),
                                  Wait(name="approve", signal="ok")])
    async with SqlStore.open(url_of(tmp_path)) as store:
        async with Runtime([saga], store=store) as rt:
            wid = await rt.start("s", 1, paused=True)
            await rt.signal(wid, "ok", {"by": "ana"})
    async with SqlStore.open(url_of(tmp_path)) as store:
        async with Runtime([saga], store=store) as rt:
            await rt.recover()
            await rt.resume(wid)
            assert (await rt.wait(wid)).output == {"by": "ana"}


async def test_recovery_starts_from_a_snapshot(tmp_path: Path) -> None:
    from engine.store import StoreConfig

    url = url_of(tmp_path)
    config = StoreConfig(url=url, snapshot_every=4)
    ledger = Ledger()
    saga = Saga(name="s", stages=[Stage(name=f"s{i}", transaction=ledger.tx()) for i in range(6)])
    async with SqlStore.open(config=config) as store:
        async with Runtime([saga], store=store) as rt:
            wid = await rt.start("s", 0, paused=True)
            for _ in range(9):
                await rt.step(wid)
    async with SqlStore.open(config=config) as store:
        snapshot, rest = await store.load(wid)
        # created + 9 steps = 10 events; the last snapshot was taken at seq 8
        assert snapshot is not None and snapshot.seq == 8
        assert [e.seq for e in rest] == [9, 10]
        assert replay(rest, snapshot) == replay(await store.read(wid))
        async with Runtime([saga], store=store) as rt:
            await rt.recover()
            await rt.resume(wid)
            result = await rt.wait(wid)
            assert result.output == 6
            assert replay(await store.read(wid)) == rt.state(wid)


async def test_bad_input_gets_clear_errors_and_changes_nothing(tmp_path: Path) -> None:
    from engine import UnknownSagaError, WorkStateError

    saga = Saga(name="s", input_schema={"type": "object", "required": ["sku"]},
                stages=[Stage(name="a", transaction=Ledger().tx())])
    async with SqlStore.open(url_of(tmp_path)) as store, Runtime([saga], store=store) as rt:
        done = await rt.run("s", {"sku": "tea"})
        before = await store.read_all()
        with pytest.raises(UnknownSagaError, match="no saga is registered as 'nope'"):
            await rt.start("nope", {})
        with pytest.raises(ValueError, match="input of saga 's' does not match its schema: "
                                             "\\(root\\): 'sku' is a required property"):
            await rt.start("s", {"qty": 1})
        with pytest.raises(ValueError, match="not JSON-serialisable"):
            await rt.start("s", {"sku": object()})
        with pytest.raises(WorkStateError, match="completed; cannot signal 'go'"):
            await rt.signal(done.work_id, "go")
        with pytest.raises(WorkStateError, match="exists already"):
            await rt.start("s", {"sku": "x"}, work_id=done.work_id)
        assert await store.read_all() == before


def test_old_event_versions_are_upcast_step_by_step() -> None:
    from engine.store.codec import CorruptEventError, decode_event

    row = {"work_id": "w", "seq": 3, "type": "signal.received", "version": 1, "path": "",
           "attempt": 0, "payload": '{"signal": "go", "data": 5}', "time": 1.0}

    def v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
        return {"name": payload["signal"], "data": payload["data"]}

    def v2_to_v3(payload: dict[str, Any]) -> dict[str, Any]:
        return {"name": payload["name"], "payload": payload["data"]}

    upcasters = {("signal.received", 1): v1_to_v2, ("signal.received", 2): v2_to_v3}
    event = decode_event(row, versions={"signal.received": 3}, upcasters=upcasters)
    assert event.event.version == 3
    assert event.event.payload == {"name": "go", "payload": 5}
    with pytest.raises(CorruptEventError, match=r"no upcaster for signal\.received version 2"):
        decode_event(row, versions={"signal.received": 3}, upcasters={
            ("signal.received", 1): v1_to_v2})


async def test_a_work_whose_creation_fails_to_commit_does_not_exist(tmp_path: Path) -> None:
    from engine import EngineError

    saga = Saga(name="s", stages=[Stage(name="a", transaction=Ledger().tx())])
    async with SqlStore.open(url_of(tmp_path)) as store:
        pass  # closed from here on: every append fails
    async with Runtime([saga], store=store) as rt:
        with pytest.raises(EngineError, match="the store is closed"):
            await rt.start("s", 1)
        assert rt.works() == []  # nothing half-created is left behind
        with pytest.raises(ValueError, match="1 to 64 characters"):
            await rt.start("s", 1, work_id="x" * 65)


async def test_finished_works_leave_memory_and_are_loaded_back_from_the_store(
        tmp_path: Path) -> None:
    broken = {"on": True}

    async def refund(ctx: Any, value: Any, output: Any, reason: Any) -> None:
        if broken["on"]:
            raise ConnectionError("refund service down")

    ledger = Ledger()
    saga = Saga(name="s", stages=[
        Stage(name="a", transaction=ledger.tx(), compensation=refund,
              compensation_retry=RetryPolicy(attempts=1)),
        Stage(name="b", transaction=ledger.fatal())])
    ok = Saga(name="ok", stages=[Stage(name="a", transaction=ledger.tx())])
    async with SqlStore.open(url_of(tmp_path)) as store, \
            Runtime([saga, ok], store=store, keep_finished=1) as rt:
        stuck = await rt.run("s", 1)
        assert stuck.status == "compensation_failed"
        first = await rt.run("ok", 1)
        assert rt.works() == [first.work_id]  # only the most recent finished one is kept
        with pytest.raises(UnknownWorkError, match="history"):
            rt.events(stuck.work_id)
        # still there for everything that can read the store
        assert (await rt.wait(stuck.work_id)).status == "compensation_failed"
        assert (await rt.history(stuck.work_id))[-1].type == "work.compensation_failed"
        broken["on"] = False
        await rt.retry_compensation(stuck.work_id, by="ops")
        again = await rt.wait(stuck.work_id)
        assert (again.status, again.compensated) == ("failed", ("a",))
        assert replay(await store.read(stuck.work_id)).status == "failed"
        with pytest.raises(UnknownWorkError, match="no work has id 'nope'"):
            await rt.wait("nope")
    with pytest.raises(ValueError, match="keep_finished must be an integer >= 0, got -1"):
        Runtime([saga], keep_finished=-1)
