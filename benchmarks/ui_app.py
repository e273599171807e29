"""The sagas ``benchmarks/ui.py`` serves (``--app benchmarks.ui_app:sagas``).

- ``ticks``: forty stages of ``input["period"]`` seconds each, so that a work's events
  come one after the other at a pace a person could follow (the commit-to-pixels
  latency is that of one event, not of a burst);
- ``poll``: one stage that fails until its attempt ``input["attempts"]`` and is retried
  at once: a work with thousands of events (three an attempt) whose state stays small,
  the shape of a stage polling something until it is ready.
"""

from __future__ import annotations

from typing import Any

import anyio
import tenacity

from engine import RetryPolicy, Saga, Stage, StageFailure

TICKS = 40
POLL_ATTEMPTS = 4000  # the most a work of ``poll`` may try


async def tick(ctx: Any, value: dict[str, Any]) -> dict[str, Any]:
    await anyio.sleep(float(value["period"]))
    return value


async def poll(ctx: Any, value: dict[str, Any]) -> dict[str, Any]:
    if ctx.attempt < int(value["attempts"]):
        raise StageFailure(f"not ready at attempt {ctx.attempt}")
    return value


def sagas() -> list[Saga]:
    return [
        Saga(name="ticks", stages=[Stage(name=f"t{i}", transaction=tick) for i in range(TICKS)]),
        Saga(name="poll", stages=[Stage(
            name="poll", transaction=poll,
            retry=RetryPolicy(attempts=POLL_ATTEMPTS, wait=tenacity.wait_none()))]),
    ]
