"""Golden event logs recorded by earlier versions keep replaying, and ``decide`` still
picks, at every point of them, the event that was recorded next."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine import Call, Emit, ScheduleRetry, compile_saga, decide, replay
from engine.store.codec import decode_event

from .sagas import HERE, sagas, summary

LOGS = sorted(HERE.glob("*.json"))
PLANS = {s.name: compile_saga(s, {x.name: x for x in sagas()}) for s in sagas()}
EXTERNAL = {"work.created", "signal.received", "work.paused", "work.resumed"}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_there_are_golden_logs() -> None:
    assert len(LOGS) >= 7


@pytest.mark.parametrize("path", LOGS, ids=[p.stem for p in LOGS])
def test_golden_log_replays_to_the_recorded_outcome(path: Path) -> None:
    log = load(path)
    stream = [decode_event(row) for row in log["events"]]
    assert [e.seq for e in stream] == list(range(1, len(stream) + 1))
    assert summary(replay(stream)) == log["expect"]


@pytest.mark.parametrize("path", LOGS, ids=[p.stem for p in LOGS])
def test_decide_still_chooses_what_was_recorded(path: Path) -> None:
    log = load(path)
    plan = PLANS[log["saga"]]
    stream = [decode_event(row) for row in log["events"]]
    for k in range(1, len(stream)):
        nxt = stream[k].event
        if nxt.type in EXTERNAL:
            continue
        actions = decide(plan, replay(stream[:k]))
        assert actions, f"{path.stem}: nothing to do after seq {k}, but {nxt.type} followed"
        first = actions[0]
        if isinstance(first, Emit):
            got = first.event
            assert (got.type, got.path, got.attempt, dict(got.payload)) == (
                nxt.type, nxt.path, nxt.attempt, dict(nxt.payload)), f"{path.stem} seq {k + 1}"
        elif isinstance(first, Call):
            assert (first.path, first.attempt) == (nxt.path, nxt.attempt)
            assert nxt.type.startswith(f"stage.{first.kind}."), f"{path.stem} seq {k + 1}"
        else:
            assert isinstance(first, ScheduleRetry)
            assert (nxt.type, nxt.path) == ("stage.retry.scheduled", first.path)
    assert decide(plan, replay(stream)) == []
