"""The sagas the API tests serve: stages of about 20 ms, so a step boundary is near; a
wait for a signal; a compensation that fails until a person fixes its cause (a file
named by STEPSAGA_TEST_FIX appears)."""

from __future__ import annotations

import os
from typing import Any

import anyio

from engine import RetryPolicy, Saga, Stage, StageFailure, Wait


async def tick(ctx: Any, n: int) -> int:
    await anyio.sleep(0.02)
    return n + 1


async def refuse(ctx: Any, n: int) -> int:
    raise StageFailure("refused", retryable=False)


async def undo(ctx: Any, value: Any, output: Any, reason: Any) -> None:
    fix = os.environ.get("STEPSAGA_TEST_FIX")
    if not fix or not await anyio.Path(fix).exists():
        raise RuntimeError("the undo needs a person first")


def sagas() -> list[Saga]:
    return [Saga(name="slow", stages=[Stage(name=f"s{i}", transaction=tick)
                                      for i in range(30)]),
            Saga(name="gate", stages=[Stage(name="a", transaction=tick),
                                      Wait(name="w", signal="go"),
                                      Stage(name="b", transaction=tick)]),
            Saga(name="fragile", stages=[
                Stage(name="a", transaction=tick, compensation=undo,
                      compensation_retry=RetryPolicy(attempts=1)),
                Stage(name="b", transaction=refuse)])]
