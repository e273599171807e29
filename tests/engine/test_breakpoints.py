"""Breakpoints' CEL conditions: checked when made, not matching when they fail on the data,
stored with their language, and conditions recorded before CEL carried over or refused."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import Breakpoint, Event, ExpressionError, RecordedEvent, Runtime, Saga, Stage, replay
from engine.commands import command_events, command_from_data
from engine.state import WorkState
from engine.store import SqlStore

from .helpers import Ledger, types


def three(ledger: Ledger) -> Saga:
    return Saga(name="s", stages=[Stage(name=name, transaction=ledger.tx())
                                  for name in ("a", "b", "c")])


COMPLETED = Event(type="stage.transaction.completed", path="b", attempt=1,
                  payload={"output": 3})


def state_after_a() -> WorkState:
    return WorkState(work_id="w1", saga="s", status="running")


# -- made ------------------------------------------------------------------------------------


def test_a_condition_is_checked_when_the_breakpoint_is_made() -> None:
    bp = Breakpoint(id="bp1", condition='event.attempt >= 2 && state.status == "running"')
    assert bp.condition == 'event.attempt >= 2 && state.status == "running"'
    with pytest.raises(ExpressionError) as caught:
        Breakpoint(id="bp1", condition="state.status == (")
    assert str(caught.value) == (
        "breakpoint bp1: condition 'state.status == (' is not valid CEL at column 18: "
        "unexpected end of expression; expected a value")


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("event.attempt > 1 and state.seq > 2",
         "breakpoint bp1: condition 'event.attempt > 1 and state.seq > 2' is not valid CEL at "
         "column 19: unexpected 'and'; expected an operator or the end of the expression "
         "(write 'and' as '&&')"),
        ("evnt.attempt > 1",
         "breakpoint bp1: condition 'evnt.attempt > 1' reads 'evnt' (at column 1), which is "
         "not defined here: it may read 'event' and 'state'"),
        ("event.attempt == None",
         "breakpoint bp1: condition 'event.attempt == None' reads 'None' (at column 18), "
         "which is not defined here: it may read 'event' and 'state'; write null"),
        ("lower(event.path) == 'a'",
         "breakpoint bp1: condition \"lower(event.path) == 'a'\" calls lower() (at column 1), "
         "which is not one of CEL's standard functions: bytes, contains, "),
    ],
)
def test_errors_name_the_breakpoint_the_condition_and_where(condition: str, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        Breakpoint(id="bp1", condition=condition)
    assert str(caught.value).startswith(message)


# -- matched ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "matches"),
    [
        ("event.payload.output == 3", True),
        ("event.payload.output == 4", False),
        ("state.status == 'running' && event.path == 'b'", True),
        ("has(event.payload.output) && event.payload.output > 2", True),
        # fails on the data, so does not match: a missing key, wrong types, an index
        ("event.payload.nope == 1", False),
        ("!(event.payload.nope == 1)", False),
        ('state.stages["b"].status == "completed"', False),
        ("event.payload.output + 0.5 > 1.0", False),
        ("event.path[0] == 'b'", False),
        # gives something other than true
        ("event.payload.output", False),
        ("event.path", False),
        ("null", False),
        # && and || absorb a failure the other side decides
        ("event.payload.nope == 1 || event.path == 'b'", True),
        ("'b' in state.stages && state.stages.b.status == 'completed'", False),
    ],
)
def test_a_condition_that_fails_on_the_data_does_not_match(condition: str,
                                                         matches: bool) -> None:
    bp = Breakpoint(event="stage.transaction.*", condition=condition)
    assert bp.matches("after", COMPLETED, state_after_a()) is matches


async def test_a_condition_failing_on_every_event_lets_the_work_run_to_its_end() -> None:
    ledger = Ledger()
    async with Runtime([three(ledger)]) as rt:
        wid = await rt.start("s", 1, paused=True)
        never = [Breakpoint(condition="state.stages.zzz.output == 1"),  # no stage zzz
                 Breakpoint(condition="event.payload.output + 0.5 > 0.0"),  # int + double
                 Breakpoint(condition="state.input")]  # not a boolean
        report = await rt.mstep(wid, until=never)
        assert report.reason == "finished"
        assert rt.state(wid).status == "completed" and rt.state(wid).output == 4


# -- stored ----------------------------------------------------------------------------------


def test_a_breakpoint_is_stored_with_its_language_and_read_back_as_it_was() -> None:
    bp = Breakpoint(id="bp1", event="stage.*", path="b", when="before",
                    condition="event.attempt > 1 && !(state.phase == 'compensating')")
    data = bp.to_dict()
    assert data == {"id": "bp1", "event": "stage.*", "path": "b", "when": "before",
                    "condition": "event.attempt > 1 && !(state.phase == 'compensating')",
                    "language": "cel"}
    assert Breakpoint.from_dict(data) == bp
    # in CEL "and" is a name, not an operator: what says "cel" is never translated
    with pytest.raises(ExpressionError, match="is not valid CEL at column 3"):
        Breakpoint.from_dict({"id": "bp2", "condition": "a and b", "language": "cel"})
    with pytest.raises(ExpressionError, match=re.escape(
            "breakpoint bp3: condition 'x' is in language 'python'; expected 'cel'")):
        Breakpoint.from_dict({"id": "bp3", "condition": "x", "language": "python"})


@pytest.mark.parametrize(
    ("old", "carried"),
    [
        ("event.attempt >= 2", "event.attempt >= 2"),
        ('state.stages["a"].output == 2 && event.attempt >= 1',
         'state.stages["a"].output == 2 && event.attempt >= 1'),
        ("event.attempt >= 2 and not state.phase == 'compensating'",
         "event.attempt >= 2 && !(state.phase == 'compensating')"),
        ("startswith(event.type, 'stage.') or event.path not in ['a', 'b']",
         "event.type.startsWith('stage.') || !(event.path in ['a', 'b'])"),
        ("state.output == None", "state.output == null"),
    ],
)
def test_an_old_condition_is_kept_or_translated_when_read_back(old: str, carried: str) -> None:
    stored = {"id": "old1", "event": "*", "path": "*", "when": "after", "condition": old}
    bp = Breakpoint.from_dict(stored)
    assert bp.condition == carried
    assert bp.to_dict()["language"] == "cel"


@pytest.mark.parametrize(
    ("old", "why"),
    [
        ("event.attempt / 2 >= 1",
         "'/' divided exactly in the old language, and CEL divides integers to a whole "
         "number (at column 15)"),
        ("lower(event.path) == 'b'",
         "lower() has no counterpart among CEL's standard functions (at column 1)"),
        ("missing == None",  # a name other than event and state, always null before
         "'missing == null' reads 'missing' (at column 1), which is not defined here: it "
         "may read 'event' and 'state'"),
    ],
)
def test_an_old_condition_without_a_cel_counterpart_is_refused_naming_the_breakpoint(
        old: str, why: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        Breakpoint.from_dict({"id": "old1", "condition": old})
    assert str(caught.value) == (
        f"breakpoint old1: condition {old!r} was written before conditions were CEL and "
        f"cannot be carried over: {why}; set the breakpoint again with a CEL condition")


# -- recorded by an earlier version ----------------------------------------------------------


def old_work(work_id: str, breakpoints: list[dict[str, Any]]) -> list[RecordedEvent]:
    """The creation of a work as the version before CEL recorded it."""
    payload = {"saga": "s", "input": 1, "paused": False, "stages": 3,
               "breakpoints": breakpoints}
    return [RecordedEvent(work_id=work_id, seq=1, time=1_800_000_000.0,
                          event=Event(type="work.created", payload=payload))]


async def paused(rt: Runtime, work_id: str) -> dict[str, Any]:
    # polled with short sleeps, not bare checkpoints: a loop that only yields keeps the
    # GIL from the store's writer thread, and a loaded machine then misses the deadline
    for _ in range(2000):
        if rt.state(work_id).paused:
            break
        await anyio.sleep(0.005)
    else:
        raise AssertionError(f"work {work_id} did not pause within 10 s: "
                             f"{[e.type for e in rt.events(work_id)][-6:]}")
    stopped = rt.state(work_id).stopped_at
    assert stopped is not None
    return stopped


async def test_a_work_recorded_with_old_conditions_stops_where_they_say(
        tmp_path: Path) -> None:
    ledger = Ledger()
    created = old_work("old-work", [
        {"id": "later", "event": "stage.transaction.completed", "path": "*", "when": "after",
         "condition": "event.path == 'b' and not event.payload.output < 3"},
        {"id": "never", "event": "*", "path": "*", "when": "before",
         "condition": "state.stages.zzz.status == None"}])  # a missing key: no match now
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/works.sqlite") as store:
        await store.append("old-work", created, replay(created))
        async with Runtime([three(ledger)], store=store) as rt:
            assert await rt.recover() == ["old-work"]
            stopped = await paused(rt, "old-work")
            assert stopped["breakpoint"] == "later" and "problem" not in stopped
            assert ledger.calls == [("tx", "a"), ("tx", "b")]
            await rt.resume("old-work")
            assert (await rt.wait("old-work")).output == 4


async def test_an_old_condition_without_a_cel_counterpart_stops_the_work_saying_why(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ledger = Ledger()
    created = old_work("old-work", [
        {"id": "lowered", "event": "stage.transaction.completed", "path": "*",
         "when": "after", "condition": "lower(event.path) == 'c'"}])
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/works.sqlite") as store:
        await store.append("old-work", created, replay(created))
        async with Runtime([three(ledger)], store=store) as rt:
            with caplog.at_level(logging.WARNING, logger="stepsaga.runner"):
                assert await rt.recover() == ["old-work"]
                # rather than run past it, the breakpoint stops wherever its globs match
                stopped = await paused(rt, "old-work")
            problem = ("breakpoint lowered: condition \"lower(event.path) == 'c'\" was "
                       "written before conditions were CEL and cannot be carried over: "
                       "lower() has no counterpart among CEL's standard functions (at "
                       "column 1); set the breakpoint again with a CEL condition")
            assert stopped["breakpoint"] == "lowered" and stopped["problem"] == problem
            assert problem in caplog.text
            assert ledger.calls == [("tx", "a")]
            # set again under its id, in CEL, it replaces the old one
            await rt.add_breakpoint("old-work", Breakpoint(
                id="lowered", event="stage.transaction.completed",
                condition="event.path == 'c'"))
            await rt.resume("old-work")
            stopped = await paused(rt, "old-work")
            assert stopped["breakpoint"] == "lowered" and "problem" not in stopped
            assert ledger.calls == [("tx", "a"), ("tx", "b"), ("tx", "c")]
            await rt.remove_breakpoint("old-work", "lowered")
            await rt.resume("old-work")
            assert (await rt.wait("old-work")).output == 4
            assert types(rt, "old-work").count("work.paused") == 2


def test_an_old_breakpoint_in_the_inbox_is_rejected_with_why_it_cannot_be_read() -> None:
    state = WorkState(work_id="w1", status="running")
    kept = command_from_data({"kind": "set_breakpoint", "args": {"breakpoint": {
        "id": "ok", "event": "*", "path": "*", "when": "after",
        "condition": "event.attempt > 1 and event.path == 'a'"}}})
    assert isinstance(kept.args["breakpoint"], Breakpoint)
    [event] = command_events(None, state, kept)
    assert event.payload["condition"] == "event.attempt > 1 && event.path == 'a'"
    stored = {"id": "bad", "event": "*", "path": "*", "when": "after",
              "condition": "abs(event.attempt) > 1"}
    for command in (
            command_from_data({"kind": "set_breakpoint", "args": {"breakpoint": stored}}),
            command_from_data({"kind": "mstep", "args": {"until": [stored]}})):
        with pytest.raises(ExpressionError, match=re.escape(
                "breakpoint bad: condition 'abs(event.attempt) > 1' was written before "
                "conditions were CEL and cannot be carried over: abs() has no counterpart")):
            command_events(None, state, command)
