"""The sagas the API tests serve: stages of about 20 ms, so a step boundary is near,
and a wait for a signal."""

from __future__ import annotations

from typing import Any

import anyio

from engine import Saga, Stage, Wait


async def tick(ctx: Any, n: int) -> int:
    await anyio.sleep(0.02)
    return n + 1


def sagas() -> list[Saga]:
    return [Saga(name="slow", stages=[Stage(name=f"s{i}", transaction=tick)
                                      for i in range(30)]),
            Saga(name="gate", stages=[Stage(name="a", transaction=tick),
                                      Wait(name="w", signal="go"),
                                      Stage(name="b", transaction=tick)])]
