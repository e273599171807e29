"""The sagas of the operations tests: one that completes, one that retries once and
completes, one whose second stage fails so the first is compensated (the compensation
failing once, then retried); and one whose stage waits while the file named by
$STEPSAGA_TEST_HOLD exists (a node killed there holds its works)."""

from __future__ import annotations

import os
from typing import Any

import anyio
import tenacity

from engine import RetryPolicy, Saga, Stage, StageFailure


async def tick(ctx: Any, n: int) -> int:
    return n + 1


async def flaky(ctx: Any, n: int) -> int:
    if ctx.attempt == 1:
        raise RuntimeError("the first try fails")
    return n + 1


async def refuse(ctx: Any, n: int) -> int:
    raise StageFailure("refused", retryable=False)


async def undo(ctx: Any, value: Any, output: Any, reason: Any) -> None:
    if ctx.attempt == 1:
        raise RuntimeError("the first undo fails")


async def hold(ctx: Any, n: int) -> int:
    marker = os.environ.get("STEPSAGA_TEST_HOLD")
    for _ in range(6000):  # two minutes at most
        if marker is None or not await anyio.Path(marker).exists():
            break
        await anyio.sleep(0.02)
    return n + 1


QUICK = RetryPolicy(attempts=3, wait=tenacity.wait_fixed(0.01))


def sagas() -> list[Saga]:
    return [Saga(name="quick", stages=[Stage(name="a", transaction=tick),
                                       Stage(name="b", transaction=tick)]),
            Saga(name="flaky", stages=[Stage(name="a", transaction=flaky, retry=QUICK)]),
            Saga(name="doomed", stages=[
                Stage(name="a", transaction=tick, compensation=undo,
                      compensation_retry=QUICK),
                Stage(name="b", transaction=refuse)]),
            Saga(name="held", stages=[Stage(name="a", transaction=hold),
                                      Stage(name="b", transaction=tick)])]
