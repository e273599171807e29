"""The demo saga ``stepsaga run demo`` shows: an order, with compensation on failure.

Its stages pause briefly (``delay`` seconds) so the progress bar has something
to show; ``fail`` names a stage path that fails for good, to watch the
completed stages being compensated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio

from engine import Map, Parallel, RetryPolicy, Saga, Stage, StageContext, StageFailure

__all__ = ["DEMO_ORDER", "demo_saga"]


DEMO_ORDER: dict[str, Any] = {"items": [
    {"sku": "tea", "price": 4}, {"sku": "cups", "price": 12},
    {"sku": "kettle", "price": 30}, {"sku": "tray", "price": 9}]}


# What the start form of the stage catalog is built from. No type at the root: a work
# with no input (null) is still taken, and fails at reserve with nothing to release, so
# its compensation fails (people and tests use it to see that path); an input that is
# an object must be an order. An item without a price is taken too: the charge fails
# on it for good, and the work compensates (the UI's debugging test rehearses that).
_ORDER_SCHEMA: dict[str, Any] = {
    "title": "An order", "required": ["items"], "additionalProperties": False,
    "properties": {"items": {
        "type": "array", "title": "Items", "minItems": 1,
        "items": {"type": "object", "title": "Item", "required": ["sku"],
                  "additionalProperties": False,
                  "properties": {"sku": {"type": "string", "title": "SKU", "minLength": 1},
                                 "price": {"type": "number", "title": "Price",
                                           "minimum": 0}}}}},
    "examples": [DEMO_ORDER]}


def demo_saga(*, delay: float = 0.05, fail: Sequence[str] = ()) -> Saga:
    """An order: reserve, charge and book shipping side by side, pack each item, ship."""

    async def work(ctx: StageContext) -> None:
        await anyio.sleep(delay)
        if ctx.path in fail:
            raise StageFailure(f"{ctx.path} failed (asked with --fail)", retryable=False)

    async def reserve(ctx: StageContext, order: dict[str, Any]) -> dict[str, Any]:
        await work(ctx)
        return {**order, "reservation": f"r-{ctx.work_id[:8]}"}

    async def release(ctx: StageContext, order: Any, output: Any, reason: Any) -> None:
        await anyio.sleep(delay)
        ctx.logger.info("released %s because %s", output["reservation"], reason.message)

    async def charge(ctx: StageContext, order: dict[str, Any]) -> dict[str, Any]:
        await work(ctx)
        return {"charged": sum(item["price"] for item in order["items"]),
                "key": ctx.idempotency_key, "items": order["items"]}

    async def refund(ctx: StageContext, order: Any, output: Any, reason: Any) -> None:
        await anyio.sleep(delay)

    async def book(ctx: StageContext, order: dict[str, Any]) -> str:
        await work(ctx)
        return "slot-42"

    async def unbook(ctx: StageContext, order: Any, output: Any, reason: Any) -> None:
        await anyio.sleep(delay)

    async def pack(ctx: StageContext, item: dict[str, Any]) -> str:
        await work(ctx)
        return f"box:{item['sku']}"

    async def ship(ctx: StageContext, boxes: list[str]) -> dict[str, Any]:
        await work(ctx)
        return {"shipped": boxes}

    def items_of(ctx: StageContext, paid: dict[str, Any]) -> list[dict[str, Any]]:
        return list(paid["charge"]["items"])

    example_order: dict[str, Any] = {"items": [{"sku": "a", "price": 3}]}
    # version 2 added the input schema; the stages are those of version 1, whose works
    # go on under it
    return Saga(name="demo", description="an order with compensation", version=2,
                continues=(1,), input_schema=_ORDER_SCHEMA, stages=[
        Stage(name="reserve", transaction=reserve, compensation=release,
              example={**example_order, "reservation": "r-1"}),
        Parallel(name="pay", branches=[
            Stage(name="charge", transaction=charge, compensation=refund,
                  retry=RetryPolicy(attempts=3),
                  example={"charged": 3, "key": "k", "items": example_order["items"]}),
            Stage(name="book", transaction=book, compensation=unbook, example="slot-1"),
        ]),
        Map(name="pack", items=items_of, max_concurrency=3,
            stage=Stage(name="box", transaction=pack, example="box:a")),
        Stage(name="ship", transaction=ship, example={"shipped": ["box:a"]}),
    ])
