"""The command inbox: any process steers a work another one holds, each command taken
exactly once by the holder, parked works woken by it (both databases)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from engine import Breakpoint, Command, Runtime, Saga, Stage, Wait
from engine.errors import ConflictError, UnknownWorkError, WorkStateError
from engine.lease import UNTIL_WOKEN
from engine.store import SqlStore
from engine.store.schema import commands, leases
from tests.engine.helpers import Ledger
from workers.node import WorkerNode, WorkerSpec


async def until(check: Any, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.02)):  # bounded: a condition never met fails the test
        if await check():
            return
        await anyio.sleep(0.02)
    raise AssertionError(f"not so after {seconds} s: {check}")


async def rows(store: SqlStore, table: sa.Table, work_id: str) -> list[dict[str, Any]]:
    async with store.engine.connect() as conn:
        found = await conn.execute(sa.select(table).where(table.c.work_id == work_id))
        return [dict(r) for r in found.mappings()]


def slow_saga(name: str = "slow", stages: int = 40) -> Saga:
    async def tick(ctx: Any, n: int) -> int:
        await anyio.sleep(0.01)
        return n + 1

    return Saga(name=name, stages=[Stage(name=f"s{i}", transaction=tick)
                                   for i in range(stages)])


def commands_taken(events: list[Any]) -> list[dict[str, Any]]:
    return [dict(e.event.payload) for e in events if e.type == "work.command"]


async def test_commands_are_numbered_per_work_and_a_request_id_is_idempotent(
        store_url: str) -> None:
    saga = Saga(name="s", stages=[Stage(name="a", transaction=Ledger().tx())])
    async with SqlStore.open(store_url) as store, Runtime([saga], store=store) as rt:
        one, two = await rt.start("s", 1, run=False), await rt.start("s", 2, run=False)
        pause = Command(kind="pause", by="ann", reason="look")
        first = await store.send_command(one, pause, request_id="r-1")
        again = await store.send_command(one, pause, request_id="r-1")
        other = await store.send_command(two, Command(kind="pause", by="bob"))
        third = await store.send_command(one, Command(kind="resume", by="ann"))
        assert (first.number, again.number, other.number, third.number) == (1, 1, 1, 2)
        assert again.position == first.position and again.request_id == "r-1"
        # the same request id with anything else is a conflict; nothing is stored
        with pytest.raises(ConflictError, match="request id 'r-1' was used before"):
            await store.send_command(one, Command(kind="resume", by="ann"), request_id="r-1")
        with pytest.raises(ConflictError):
            await store.send_command(two, pause, request_id="r-1")
        with pytest.raises(UnknownWorkError, match="no work has id 'nope'"):
            await store.send_command("nope", pause)
        with pytest.raises(ValueError, match="unknown command 'explode'"):
            await store.send_command(one, Command(kind="explode"))
        with pytest.raises(ValueError, match="not JSON-serialisable"):
            await store.send_command(one, Command(kind="signal",
                                                  args={"name": "go", "payload": {1, 2}}))
        stored = await rows(store, commands, one)
        assert [(c["number"], c["kind"], c["sender"]) for c in stored] == \
            [(1, "pause", "ann"), (2, "resume", "ann")]
        assert [c.number for c in await store.pending_commands(one, after=1)] == [2]
        (lease,) = await rows(store, leases, one)
        assert lease["mail"] == 2  # the last number sent, noted on the lease row

        # senders racing for one work: each command its own number, none skipped
        async def signal(n: int) -> None:
            await store.send_command(two, Command(kind="signal", by=f"s{n}",
                                                  args={"name": "go", "payload": n}))

        async with anyio.create_task_group() as tg:
            for n in range(12):
                tg.start_soon(signal, n)
        raced = await rows(store, commands, two)
        assert sorted(c["number"] for c in raced) == list(range(1, 14))
        assert sorted(c["sender"] for c in raced[1:]) == sorted(f"s{n}" for n in range(12))
        (lease,) = await rows(store, leases, two)
        assert lease["mail"] == 13


async def test_a_node_takes_each_command_once_at_a_step_boundary(store_url: str) -> None:
    """pause, a breakpoint, step, mstep to the breakpoint, an edit, resume: sent through
    the store by a process that does not hold the work."""
    saga = slow_saga(stages=40)
    async with SqlStore.open(store_url) as store:
        node = WorkerNode(store, [saga], [WorkerSpec(name="w", concurrency=2)],
                          node_id="n", lease_ttl=5, poll_interval=0.05, park_after=None)
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)
            async with Runtime([saga], store=store) as steer:
                wid = await steer.start("slow", 0, run=False)
                await until(lambda: _seq_at_least(store, wid, 8))
                await store.send_command(wid, Command(kind="pause", by="ann"))
                await until(lambda: _status(store, wid, "paused"))
                stream = await store.read(wid)
                done = sum(e.type == "stage.transaction.completed" for e in stream)
                assert done < 36, "the pause came too late to test anything"
                stop, edited = f"s{done + 2}", f"s{done + 3}"
                bp = Breakpoint(event="stage.transaction.completed", path=stop)
                for command in (Command(kind="set_breakpoint", args={"breakpoint": bp}),
                                Command(kind="step", by="ann"),
                                Command(kind="mstep", by="ann"),
                                Command(kind="edit", by="ann", reason="fix",
                                        args={"path": edited, "input": 100}),
                                Command(kind="pause", by="bob")):  # paused: nothing to do
                    await store.send_command(wid, command)
                await until(lambda: _taken(store, wid, 6))
                state = await steer.travel(wid, len(await store.read(wid)))
                assert state.paused and state.stages[stop].status == "completed"
                assert edited not in state.stages
                await store.send_command(wid, Command(kind="resume", by="ann"))
                result = await _ended(store, wid)
            node.stop()
        taken = commands_taken(await store.read(wid))
        assert [(t["number"], t["kind"], t["outcome"]) for t in taken] == [
            (1, "pause", "applied"), (2, "set_breakpoint", "applied"), (3, "step", "applied"),
            (4, "mstep", "applied"), (5, "edit", "applied"), (6, "pause", "applied"),
            (7, "resume", "applied")]
        assert taken[2]["report"]["steps"] == 1
        assert taken[3]["report"]["reason"] == "breakpoint"
        assert taken[3]["report"]["breakpoint"] == bp.id
        # the step: exactly one event between the command before and its own record
        stream = await store.read(wid)
        marks = [e.seq for e in stream if e.type == "work.command"]
        assert marks[2] - marks[1] == 2
        # the edited stage ran on the edited input, the ones after it on from there
        assert result["output"] == str(100 + 40 - (done + 3))


async def test_a_rejected_command_is_recorded_with_why(store_url: str) -> None:
    saga = slow_saga(stages=30)
    async with SqlStore.open(store_url) as store:
        node = WorkerNode(store, [saga], [WorkerSpec(name="w")], node_id="n", lease_ttl=5,
                          poll_interval=0.05)
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)
            async with Runtime([saga], store=store) as steer:
                wid = await steer.start("slow", 0, run=False)
                await until(lambda: _seq_at_least(store, wid, 4))
                await store.send_command(wid, Command(kind="step", by="ann"))
                await until(lambda: _taken(store, wid, 1))
                await _ended(store, wid)
                # a command to a finished work: a node takes it and says why not
                await store.send_command(wid, Command(kind="pause", by="ann"))
                await until(lambda: _taken(store, wid, 2))
            node.stop()
        first, second = commands_taken(await store.read(wid))
        assert first["outcome"] == "rejected" and "pause it before" in \
            first["error"]["message"]
        assert second["outcome"] == "rejected" and "is completed" in \
            second["error"]["message"]
        assert not await rows(store, leases, wid)  # the lease row went with the outcome


async def test_a_paused_work_and_a_work_waiting_for_a_signal_park(store_url: str) -> None:
    """Both hand their slot back until a command comes; a signal sent through the store
    wakes the waiting one, a resume the paused one."""
    ledger = Ledger()
    wait = Saga(name="wait", stages=[Stage(name="a", transaction=ledger.tx()),
                                      Wait(name="w", signal="go"),
                                      Stage(name="b", transaction=ledger.tx())])
    async with SqlStore.open(store_url) as store:
        node = WorkerNode(store, [wait], [WorkerSpec(name="w", concurrency=1)], node_id="n",
                          lease_ttl=5, poll_interval=0.05, park_after=0.2)
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)
            async with Runtime([wait], store=store) as steer:
                waiting = await steer.start("wait", 1, run=False)
                paused = await steer.start("wait", 10, run=False, paused=True)
                # one slot: both get it in turn, since neither keeps it
                for wid in (waiting, paused):
                    await until(lambda wid=wid: _parked(store, wid))
                (row,) = await rows(store, leases, paused)
                assert row["expires_at"] == UNTIL_WOKEN
                await steer.signal(waiting, "go", {"ok": True})  # through the inbox
                await steer.resume(paused, by="ann")
                await steer.signal(paused, "go", {"ok": 2})  # kept until its Wait takes it
                assert (await _ended(store, waiting))["status"] == "completed"
                assert (await _ended(store, paused))["status"] == "completed"
                with pytest.raises(WorkStateError, match="is completed"):
                    await steer.pause(waiting)  # checked against the stored state
            node.stop()


async def _seq_at_least(store: SqlStore, work_id: str, seq: int) -> bool:
    row = await store.work(work_id)
    return row is not None and row["last_seq"] >= seq


async def _status(store: SqlStore, work_id: str, status: str) -> bool:
    row = await store.work(work_id)
    return row is not None and (row["status"] == status or (
        status == "paused" and bool(row["paused"])))


async def _taken(store: SqlStore, work_id: str, count: int) -> bool:
    return len(commands_taken(await store.read(work_id))) >= count


async def _parked(store: SqlStore, work_id: str) -> bool:
    found = await rows(store, leases, work_id)
    return bool(found) and found[0]["owner"] is None and found[0]["token"] >= 1


async def _ended(store: SqlStore, work_id: str) -> dict[str, Any]:
    await until(lambda: _status_in(store, work_id), 20)
    row = await store.work(work_id)
    assert row is not None
    return row


async def _status_in(store: SqlStore, work_id: str) -> bool:
    row = await store.work(work_id)
    return row is not None and row["status"] in ("completed", "failed", "cancelled")


async def test_a_notification_carries_the_command_when_it_fits(postgres_url: str) -> None:
    """On PostgreSQL the holder learns of a command from its NOTIFY: the command itself
    when it fits (taken without reading the inbox back), else the work's id."""
    from engine.store import inbox

    saga = Saga(name="s", stages=[Stage(name="a", transaction=Ledger().tx())])
    heard: list[str] = []
    async with SqlStore.open(postgres_url) as store, Runtime([saga], store=store) as rt:
        wid = await rt.start("s", 1, run=False)
        def hear(*args: Any) -> None:
            heard.append(args[-1])

        async with store.postgres_connection() as conn:
            await conn.add_listener(inbox.CHANNEL, hear)
            small = await store.send_command(wid, Command(kind="pause", by="ann",
                                                          reason="a look"), request_id="q")
            big = await store.send_command(wid, Command(
                kind="signal", by="bob", args={"name": "go", "payload": "x" * 9000}))
            await until(lambda: _true(len(heard) == 2))
            await conn.remove_listener(inbox.CHANNEL, hear)
        stored = await store.pending_commands(wid)
    assert [c.number for c in (small, big)] == [1, 2]
    assert inbox.notified(heard[0]) == stored[0] == small
    assert inbox.notified(heard[1]) == wid  # too big for a notification: read it back
    assert stored[1].command.args["payload"] == "x" * 9000


async def _true(value: bool) -> bool:
    return value
