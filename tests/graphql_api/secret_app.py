"""A saga with a secret in its input and one in a stage's output, for the secrets tests:
its stage checks it is given the card in the clear and answers a token marked secret."""

from __future__ import annotations

from typing import Any

from engine import Saga, Stage, StageFailure

CARD = "4242424242424242"
TOKEN = "tok_sensitive_9f3"


async def charge(ctx: Any, value: Any) -> dict[str, Any]:
    if value["card"] != CARD:  # the engine opened the envelope for it
        raise StageFailure(f"the stage was given {value['card']!r}, not the card",
                           retryable=False)
    return {"token": TOKEN, "last4": value["card"][-4:]}


async def confirm(ctx: Any, value: Any) -> str:
    if value["token"] != TOKEN:  # an earlier stage's secret output, opened again
        raise StageFailure("the stage was not given the token in the clear",
                           retryable=False)
    return "charged " + value["last4"]


SCHEMA = {"type": "object", "required": ["card", "amount"], "properties": {
    "card": {"type": "string", "secret": True}, "amount": {"type": "integer"}}}
OUTPUT = {"type": "object", "properties": {"token": {"type": "string", "secret": True},
                                            "last4": {"type": "string"}}}


def sagas() -> list[Saga]:
    return [Saga(name="pay", input_schema=SCHEMA, stages=[
        Stage(name="charge", transaction=charge, output_schema=OUTPUT),
        Stage(name="confirm", transaction=confirm)])]
