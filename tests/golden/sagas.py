"""The sagas whose recorded event streams are kept as golden logs.

``python -m tests.golden.sagas`` records them again into ``tests/golden/*.json``;
do that only when adding a log. A checked-in log must keep replaying in every
later version (old event versions are upcast by ``engine.store.codec``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import tenacity

from engine import (
    Loop,
    ManualClock,
    Map,
    Parallel,
    RetryPolicy,
    Runtime,
    Saga,
    Stage,
    StageFailure,
    Wait,
    WorkState,
)
from engine.store.codec import encode_event

HERE = Path(__file__).parent


async def inc(ctx: Any, value: int) -> int:
    return value + 1


async def undo(ctx: Any, value: Any, output: Any, reason: Any) -> None:
    return None


async def refuse(ctx: Any, value: Any) -> Any:
    raise StageFailure("refused", retryable=False)


FLAKY: dict[str, int] = {}


async def flaky(ctx: Any, value: int) -> int:
    FLAKY[ctx.work_id] = FLAKY.get(ctx.work_id, 0) + 1
    if FLAKY[ctx.work_id] < 3:
        raise ConnectionError("try again")
    return value + 1


def sagas() -> list[Saga]:
    fixed = RetryPolicy(attempts=3, wait=tenacity.wait_fixed(1))
    return [
        Saga(name="happy", stages=[Stage(name="a", transaction=inc, compensation=undo),
                                   Stage(name="b", transaction=inc)]),
        Saga(name="compensated", stages=[Stage(name="a", transaction=inc, compensation=undo),
                                         Stage(name="b", transaction=inc, compensation=undo),
                                         Stage(name="c", transaction=refuse)]),
        Saga(name="retried", stages=[Stage(name="a", transaction=flaky, retry=fixed)]),
        Saga(name="parallel", stages=[Parallel(
            name="p", branches=[Stage(name="x", transaction=inc, compensation=undo),
                                Stage(name="y", transaction=inc, compensation=undo),
                                Stage(name="z", transaction=refuse)],
            depends_on={"z": ["x"]})]),
        Saga(name="mapped", stages=[Map(name="m", stage=Stage(name="i", transaction=inc),
                                        max_concurrency=2)]),
        Saga(name="looped", stages=[Loop(name="l", body=Stage(name="i", transaction=inc),
                                         until=lambda ctx, out: out >= 3, max_iterations=5)]),
        Saga(name="waited", stages=[Wait(name="w", signal="go", timeout=60),
                                    Stage(name="a", transaction=inc)]),
    ]


INPUTS: dict[str, Any] = {"mapped": [1, 2, 3], "waited": None}


def summary(state: WorkState) -> dict[str, Any]:
    return {"status": state.status, "output": state.output,
            "compensated": state.compensated,
            "failure_path": (state.failure or {}).get("path"),
            "stages": {p: s.status for p, s in sorted(state.stages.items()) if p}}


async def record() -> None:
    clock = ManualClock(start=1_800_000_000.0, autojump=True)
    async with Runtime(sagas(), clock=clock) as rt:
        for saga in sagas():
            work_id = f"golden-{saga.name}"
            await rt.start(saga.name, INPUTS.get(saga.name, 0), work_id=work_id, paused=True)
            if saga.name == "waited":
                await rt.signal(work_id, "go", 41)
            await rt.mstep(work_id)
            log = {"saga": saga.name,
                   "events": [encode_event(e) for e in rt.events(work_id)],
                   "expect": summary(rt.state(work_id))}
            (HERE / f"{saga.name}.json").write_text(json.dumps(log, indent=1) + "\n")


if __name__ == "__main__":
    anyio.run(record)
