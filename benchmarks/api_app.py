"""The sagas ``benchmarks/api.py`` serves and runs (``--app benchmarks.api_app:sagas``).

- ``ms``: a hundred stages of about 1 ms, so a running work is always near a step boundary
  (the command latency measures how soon a pause takes effect, not a stage's length);
- ``paced``: stages that end on a grid of ``input["period"]`` seconds, so that a known
  number of busy works commits events at a chosen rate (the fan-out);
- ``blip``: one short stage, for a trickle of works starting and ending (status
  changes for the subscribers that follow every work's status);
- ``order``, ``signup``, ``backup``, ``refund``: a mix of sagas with compensations, a
  wait for a signal, a map and failures chosen by the input, from which the list
  queries' 100,000 works are made.
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from engine import Map, RetryPolicy, Saga, Stage, StageFailure, Wait

MS_STAGES = 100
PACED_STAGES = 5000


async def one_ms(ctx: Any, n: int) -> int:
    await anyio.sleep(0.001)
    return n + 1


async def paced(ctx: Any, value: dict[str, Any]) -> dict[str, Any]:
    """Ends at the next tick of a grid of ``period`` seconds shifted by ``phase``: a
    stage every period, whatever a step costs."""
    period, phase = float(value["period"]), float(value["phase"])
    await anyio.sleep(period - (time.time() - phase) % period)
    return value


async def blip(ctx: Any, value: Any) -> Any:
    return value


def _step(name: str) -> Any:
    async def transaction(ctx: Any, value: Any) -> dict[str, Any]:
        if isinstance(value, list):  # after a map: its items' outputs
            value = value[0] if value else {}
        if value.get("fail") == name:
            raise StageFailure(f"{name} refused", retryable=False)
        return {**value, name: True}

    return transaction


async def _undo(ctx: Any, value: Any, output: Any, reason: Any) -> None:
    if isinstance(value, dict) and value.get("fail_compensation"):
        raise RuntimeError("the undo needs a person")


def _stage(name: str, compensated: bool = True) -> Stage:
    return Stage(name=name, transaction=_step(name),
                 compensation=_undo if compensated else None,
                 compensation_retry=RetryPolicy(attempts=1))


async def _files(ctx: Any, value: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**value, "file": n} for n in range(int(value.get("files", 3)))]


def sagas() -> list[Saga]:
    return [
        Saga(name="ms", stages=[Stage(name=f"s{i}", transaction=one_ms)
                                for i in range(MS_STAGES)]),
        Saga(name="paced", stages=[Stage(name=f"p{i}", transaction=paced)
                                   for i in range(PACED_STAGES)]),
        Saga(name="blip", stages=[Stage(name="only", transaction=blip)]),
        Saga(name="order", stages=[_stage("reserve"), _stage("charge"),
                                   _stage("ship", compensated=False)]),
        Saga(name="signup", stages=[_stage("account"), Wait(name="verify", signal="verified"),
                                    _stage("welcome", compensated=False)]),
        Saga(name="backup", stages=[_stage("snapshot"),
                                    Map(name="copy", stage=_stage("put"), items=_files,
                                        max_concurrency=2),
                                    _stage("prune", compensated=False)]),
        Saga(name="refund", stages=[_stage("check", compensated=False), _stage("credit"),
                                    _stage("notify", compensated=False)]),
    ]
