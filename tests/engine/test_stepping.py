"""Stepping, breakpoints, pause and resume, edits, time travel and dry runs."""

from __future__ import annotations

import re
from typing import Any

import anyio
import pytest

from engine import (
    Breakpoint,
    ExpressionError,
    Runtime,
    Saga,
    Stage,
    WorkStateError,
    replay,
)

from .helpers import Ledger, types


def saga_of(ledger: Ledger, *, fail_c: bool = False) -> Saga:
    return Saga(name="s", stages=[
        Stage(name="a", transaction=ledger.tx(), compensation=ledger.comp(), example=10),
        Stage(name="b", transaction=ledger.tx(), compensation=ledger.comp(), example=20),
        Stage(name="c", transaction=ledger.fatal() if fail_c else ledger.tx(), example=30),
    ])


async def wait_for(rt: Runtime, wid: str, event_type: str) -> None:
    with anyio.fail_after(5):
        while event_type not in types(rt, wid):
            await anyio.lowlevel.checkpoint()


async def test_step_records_exactly_one_event_per_call() -> None:
    ledger = Ledger()
    async with Runtime([saga_of(ledger)]) as rt:
        wid = await rt.start("s", 1, paused=True)
        assert types(rt, wid) == ["work.created"]
        seen = []
        while (recorded := await rt.step(wid)) is not None:
            seen.append(recorded.type)
            assert types(rt, wid)[-1] == recorded.type
        assert seen == ["work.started",
                        "stage.transaction.started", "stage.transaction.completed",
                        "stage.transaction.started", "stage.transaction.completed",
                        "stage.transaction.started", "stage.transaction.completed",
                        "work.completed"]
        # stepping a transaction's start does not run it; the next step does
        assert rt.state(wid).output == 4


async def test_mstep_stops_before_a_stage_runs_and_resumes_past_it() -> None:
    ledger = Ledger()
    async with Runtime([saga_of(ledger)]) as rt:
        wid = await rt.start("s", 1, paused=True)
        bp = Breakpoint(event="stage.transaction.started", path="b", when="before")
        report = await rt.mstep(wid, until=[bp])
        assert report.reason == "breakpoint" and report.breakpoint == bp
        assert report.pending is not None and report.pending.path == "b"
        assert ledger.calls == [("tx", "a")]
        assert "b" not in rt.state(wid).stages
        # the next mstep steps past the event it stopped in front of
        report = await rt.mstep(wid, until=[bp])
        assert report.reason == "finished"
        assert report.events[0].type == "stage.transaction.started"
        assert report.events[0].path == "b"
        assert rt.state(wid).status == "completed"


async def test_after_breakpoint_with_a_condition_over_state_and_event() -> None:
    ledger = Ledger()
    async with Runtime([saga_of(ledger)]) as rt:
        wid = await rt.start("s", 1, paused=True)
        bp = Breakpoint(event="stage.transaction.completed",
                        condition='event.payload.output >= 3 && state.stages["a"].output == 2')
        report = await rt.mstep(wid, until=[bp])
        assert report.reason == "breakpoint" and report.when == "after"
        assert report.events[-1].path == "b" and report.events[-1].event.payload["output"] == 3


async def test_compensation_events_are_breakpoint_targets() -> None:
    ledger = Ledger()
    async with Runtime([saga_of(ledger, fail_c=True)]) as rt:
        wid = await rt.start("s", 1, paused=True)
        bp = Breakpoint(event="stage.compensation.started", path="a", when="before")
        report = await rt.mstep(wid, until=[bp])
        assert report.reason == "breakpoint"
        assert ledger.compensated() == ["b"]
        report = await rt.mstep(wid)
        assert report.reason == "finished" and ledger.compensated() == ["b", "a"]


async def test_stored_breakpoint_pauses_a_running_work_and_resume_continues() -> None:
    ledger = Ledger()
    async with Runtime([saga_of(ledger)]) as rt:
        bp = Breakpoint(event="stage.transaction.started", path="b", when="before")
        wid = await rt.start("s", 1, breakpoints=[bp])
        await wait_for(rt, wid, "work.paused")
        state = rt.state(wid)
        assert state.display_status == "paused"
        assert state.stopped_at is not None and state.stopped_at["breakpoint"] == bp.id
        assert ledger.calls == [("tx", "a")]
        await rt.resume(wid, by="dev")
        result = await rt.wait(wid)
        assert result.status == "completed"
        kinds = types(rt, wid)
        assert kinds.count("work.paused") == 1  # resuming stepped past the breakpoint
        assert kinds[kinds.index("work.paused") + 1] == "work.resumed"


async def test_breakpoint_added_at_run_time_and_removed() -> None:
    ledger = Ledger()
    async with Runtime([saga_of(ledger)]) as rt:
        wid = await rt.start("s", 1, paused=True)
        bp_id = await rt.add_breakpoint(wid, Breakpoint(event="stage.transaction.completed",
                                                        path="a"))
        assert bp_id in rt.state(wid).breakpoints
        report = await rt.mstep(wid)
        assert report.reason == "breakpoint" and report.events[-1].path == "a"
        await rt.remove_breakpoint(wid, bp_id)
        assert (await rt.mstep(wid)).reason == "finished"
        with pytest.raises(KeyError, match="no breakpoint"):
            await rt.remove_breakpoint(wid, "nope")


async def test_pause_between_events_and_resume() -> None:
    gate = anyio.Event()
    reached = anyio.Event()

    async def slow(ctx: Any, value: int) -> int:
        reached.set()
        await gate.wait()
        return value + 1

    ledger = Ledger()
    saga = Saga(name="s", stages=[Stage(name="a", transaction=slow),
                                  Stage(name="b", transaction=ledger.tx())])
    async with Runtime([saga]) as rt:
        wid = await rt.start("s", 1)
        await reached.wait()
        await rt.pause(wid, by="dev", reason="look")
        gate.set()
        await wait_for(rt, wid, "stage.transaction.completed")
        for _ in range(50):
            await anyio.lowlevel.checkpoint()
        # the call in flight finished and was recorded; nothing new started
        assert ledger.calls == []
        assert rt.state(wid).display_status == "paused"
        await rt.resume(wid, by="dev")
        with pytest.raises(WorkStateError, match="not paused"):
            await rt.resume(wid, by="dev")
        assert (await rt.wait(wid)).output == 3


async def test_stepping_a_running_work_is_refused() -> None:
    gate = anyio.Event()

    async def slow(ctx: Any, value: int) -> int:
        await gate.wait()
        return value

    async with Runtime([Saga(name="s", stages=[Stage(name="a", transaction=slow)])]) as rt:
        wid = await rt.start("s", 1)
        with pytest.raises(WorkStateError, match="pause it before stepping"):
            await rt.step(wid)
        gate.set()
        await rt.wait(wid)
        with pytest.raises(WorkStateError, match="completed; cannot resume"):
            await rt.resume(wid)


async def test_edit_a_recorded_output_and_the_next_input_while_paused() -> None:
    ledger = Ledger()
    async with Runtime([saga_of(ledger)]) as rt:
        wid = await rt.start("s", 1, paused=True)
        await rt.mstep(wid, until=[Breakpoint(event="stage.transaction.completed", path="a")])
        await rt.edit(wid, path="a", output=100, by="ana", reason="fix rounding")
        report = await rt.mstep(wid, until=[Breakpoint(event="stage.transaction.completed",
                                                       path="b")])
        assert report.events[-1].event.payload["output"] == 101
        await rt.edit(wid, path="c", input=0, by="ana", reason="try zero")
        await rt.mstep(wid)
        state = rt.state(wid)
        assert state.output == 1
        assert [(e["by"], e["target"], e["path"]) for e in state.edits] == [
            ("ana", "output", "a"), ("ana", "input", "c")]
        assert state.edits[0]["previous"] == 2
        assert replay(rt.events(wid)) == state  # the edits are events: replay stays exact


async def test_bad_edits_are_refused_and_change_nothing() -> None:
    ledger = Ledger()
    async with Runtime([saga_of(ledger)]) as rt:
        wid = await rt.start("s", 1, paused=True)
        await rt.mstep(wid, until=[Breakpoint(event="stage.transaction.completed", path="a")])
        before = rt.events(wid)
        with pytest.raises(WorkStateError, match="has started"):
            await rt.edit(wid, path="a", input=5, by="x", reason="y")
        with pytest.raises(WorkStateError, match="no recorded output"):
            await rt.edit(wid, path="c", output=5, by="x", reason="y")
        with pytest.raises(ValueError, match="no stage at path 'zzz'"):
            await rt.edit(wid, path="zzz", output=5, by="x", reason="y")
        with pytest.raises(ValueError, match="who made it"):
            await rt.edit(wid, path="a", output=5, by="", reason="")
        assert rt.events(wid) == before
        await rt.resume(wid)
        await rt.wait(wid)
        with pytest.raises(WorkStateError):
            await rt.edit(wid, path="a", output=5, by="x", reason="y")


async def test_time_travel_gives_the_state_at_any_seq() -> None:
    ledger = Ledger()
    async with Runtime([saga_of(ledger)]) as rt:
        result = await rt.run("s", 1)
        events = rt.events(result.work_id)
        for seq in range(len(events) + 1):
            assert rt.state_at(result.work_id, seq) == replay(events[:seq])
        at = rt.state_at(result.work_id, 4)
        assert at.stages["a"].output == 2 and "b" not in at.stages
        with pytest.raises(ValueError, match="no seq 99"):
            rt.state_at(result.work_id, 99)


async def test_dry_run_uses_examples_and_can_force_failures() -> None:
    ledger = Ledger()
    async with Runtime([saga_of(ledger)]) as rt:
        result = await rt.dry_run("s", 1)
        assert (result.status, result.output) == ("completed", 30)
        rehearsal = await rt.dry_run("s", 1, fail=["c"])
        assert rehearsal.status == "failed" and rehearsal.compensated == ("b", "a")
        assert ledger.calls == []  # no transaction or compensation really ran


async def test_a_dry_run_names_its_forced_failures_as_the_catalog_shows_stages() -> None:
    from engine import Map

    ledger = Ledger()
    saga = Saga(name="m", stages=[
        Stage(name="a", transaction=ledger.tx(), compensation=ledger.comp(), example=1),
        Map(name="pack", items=lambda ctx, n: [1, 2, 3],
            stage=Stage(name="box", transaction=ledger.tx(), example=2))])
    async with Runtime([saga]) as rt:
        every = await rt.dry_run("m", 0, fail=["pack[*]/box"])  # as the catalog shows it
        assert (every.status, every.compensated) == ("failed", ("a",))
        failed = {e.path for e in rt.events(every.work_id)
                  if e.type == "stage.transaction.failed"}
        assert failed == {"pack[0]/box", "pack[1]/box", "pack[2]/box"}
        one = await rt.dry_run("m", 0, fail=["pack[1]/box"])  # one item only
        assert [e.path for e in rt.events(one.work_id)
                if e.type == "stage.transaction.failed"] == ["pack[1]/box"]
        for typo in ("pack", "b*", "pack/box"):
            with pytest.raises(ValueError, match=re.escape(
                    f"fail pattern '{typo}' names no stage of saga 'm' with a transaction; "
                    "expected one of a, pack[*]/box")):
                await rt.dry_run("m", 0, fail=[typo])
        assert ledger.calls == []


def test_malformed_breakpoint_expression_is_rejected_when_defined() -> None:
    with pytest.raises(ExpressionError, match="column"):
        Breakpoint(condition="state.status == (")
    with pytest.raises(ExpressionError, match="'before' or 'after'"):
        Breakpoint(when="during")
