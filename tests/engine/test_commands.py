"""The steering rules as one pure function: the events of each command, its
rejections, and that it changes nothing it is given."""

from __future__ import annotations

from typing import Any

import pytest

from engine import (
    Breakpoint,
    Command,
    Runtime,
    Saga,
    Stage,
    Wait,
    WorkStateError,
    command_events,
)
from engine.events import Event, RecordedEvent
from engine.state import WorkState, evolve

from .helpers import Ledger


def state_of(*events: tuple[str, dict[str, Any]]) -> WorkState:
    state = WorkState()
    for seq, (kind, payload) in enumerate(events, 1):
        evolve(state, RecordedEvent(work_id="w", seq=seq, time=float(seq),
                                    event=Event(type=kind, payload=payload)))
    return state


RUNNING = (("work.created", {"saga": "s", "input": 1}), ("work.started", {}))
PAUSED = (*RUNNING, ("work.paused", {"reason": "requested"}))
ENDED = (*RUNNING, ("work.completed", {"output": 2}))


def kinds(state: WorkState, command: Command) -> list[str]:
    before = state.copy()
    found = command_events(None, state, command)
    assert state == before  # pure: the state it was given is as it was
    return [e.type for e in found]


def test_each_command_gives_its_events() -> None:
    running, paused = state_of(*RUNNING), state_of(*PAUSED)
    assert kinds(running, Command(kind="pause", by="ann")) == ["work.paused"]
    assert kinds(paused, Command(kind="pause")) == []  # paused already
    assert kinds(paused, Command(kind="resume")) == ["work.resumed"]
    assert kinds(running, Command(kind="signal", args={"name": "go", "payload": 1})) == [
        "signal.received"]
    bp = Breakpoint(event="stage.completed")
    assert kinds(running, Command(kind="set_breakpoint", args={"breakpoint": bp})) == [
        "work.breakpoint.set"]
    assert kinds(paused, Command(kind="cancel", by="ann")) == [
        "work.resumed", "work.compensating"]
    assert kinds(running, Command(kind="cancel", args={"compensate": False})) == [
        "work.cancelled"]
    assert kinds(paused, Command(kind="edit", by="ann", reason="fix",
                                 args={"path": "b", "input": 5})) == ["work.edited"]


@pytest.mark.parametrize(("events", "command", "error", "match"), [
    (RUNNING, Command(kind="resume"), WorkStateError, "is not paused"),
    (ENDED, Command(kind="pause"), WorkStateError, "is completed; cannot pause"),
    (ENDED, Command(kind="signal", args={"name": "go"}), WorkStateError, "is completed"),
    (RUNNING, Command(kind="signal", args={"name": ""}), ValueError, "must not be empty"),
    (RUNNING, Command(kind="signal", args={"name": "go", "payload": {1, 2}}), ValueError,
     "payload of signal 'go' is not JSON"),
    (RUNNING, Command(kind="pause", by=3), TypeError, "by must be a string"),  # type: ignore[arg-type]
    (RUNNING, Command(kind="edit", by="a", reason="r", args={"path": "b", "input": 1}),
     WorkStateError, "must be paused"),
    (PAUSED, Command(kind="edit", args={"path": "b", "input": 1}), ValueError,
     "needs who made it"),
    (PAUSED, Command(kind="edit", by="a", reason="r", args={"path": "b"}), ValueError,
     "exactly one of"),
    (RUNNING, Command(kind="clear_breakpoint", args={"id": "nope"}), KeyError, "nope"),
    (RUNNING, Command(kind="resolve", by="a"), WorkStateError, "not compensation_failed"),
    (RUNNING, Command(kind="retry_compensation"), WorkStateError, "not compensation_failed"),
    (RUNNING, Command(kind="explode"), ValueError, "unknown command 'explode'"),
])
def test_a_command_that_does_not_fit_is_rejected_naming_why(
        events: tuple[tuple[str, dict[str, Any]], ...], command: Command,
        error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        command_events(None, state_of(*events), command)


async def test_the_runtime_steers_through_the_same_rules() -> None:
    saga = Saga(name="s", stages=[Stage(name="a", transaction=Ledger().tx()),
                                  Wait(name="w", signal="go")])
    async with Runtime([saga]) as rt:
        wid = await rt.start("s", 1, paused=True)
        with pytest.raises(ValueError, match="no stage at path 'zz'") as direct:
            command_events(rt.plan("s"), rt.state(wid), Command(
                kind="edit", by="ann", reason="fix", args={"path": "zz", "input": 1}))
        with pytest.raises(ValueError) as through_runtime:
            await rt.edit(wid, path="zz", by="ann", reason="fix", input=1)
        assert str(through_runtime.value) == str(direct.value)
        await rt.edit(wid, path="w", by="ann", reason="fix", input=7)
        assert [e.type for e in rt.events(wid)][-1] == "work.edited"
