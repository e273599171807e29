"""The sagas of the operations tests: one that completes, one that retries once and
completes, one whose second stage fails so the first is compensated (the compensation
failing once, then retried)."""

from __future__ import annotations

from typing import Any

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


QUICK = RetryPolicy(attempts=3, wait=tenacity.wait_fixed(0.01))


def sagas() -> list[Saga]:
    return [Saga(name="quick", stages=[Stage(name="a", transaction=tick),
                                       Stage(name="b", transaction=tick)]),
            Saga(name="flaky", stages=[Stage(name="a", transaction=flaky, retry=QUICK)]),
            Saga(name="doomed", stages=[
                Stage(name="a", transaction=tick, compensation=undo,
                      compensation_retry=QUICK),
                Stage(name="b", transaction=refuse)])]
