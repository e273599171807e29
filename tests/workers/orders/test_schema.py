"""The orders pack's fields through the schema (``schema_for`` with its part, in-process
Python: no principal) on both stores: typed errors for a cart in two currencies, a
cart ordered twice and a refund of a failed order; a declined payment answers with the
failed order and the provider's reason."""

from __future__ import annotations

from typing import Any

import anyio

from engine import Runtime
from engine.store import SqlStore
from engine.store.feed import Feed
from graphql_api.extensions import parts_of, schema_for
from graphql_api.schema import Context
from graphql_api.service import Service
from workers.actions.orders import orders_app
from workers.node import WorkerSpec

from .conftest import SECRETS, config_of
from .provider import Provider

RESULT = """__typename ... on Order { id status workStatus error amount currency }
  ... on InvalidInput { message field } ... on WrongState { message state: status }
  ... on NotFound { message field }"""


async def test_orders_through_the_schema(store_url: str, provider: Provider) -> None:
    app = orders_app(config=config_of(provider))
    schema = schema_for(parts_of(app))
    async with SqlStore.open(store_url) as store, Feed.running(store) as feed, \
            Runtime(app.sagas, store=store, secrets=SECRETS) as runtime, \
            anyio.create_task_group() as tg:
        service = Service(store, feed, runtime)
        # runs what the API queues
        node = app.node(store, [WorkerSpec(name="main")], secrets=SECRETS)
        await tg.start(node.run)

        async def ask(query: str, **variables: Any) -> dict[str, Any]:
            result = await schema.execute(query, variable_values=variables,
                                          context_value=Context(service))
            assert result.errors is None, result.errors
            assert result.data is not None
            return dict(result.data)

        async def cart_of(*lines: tuple[str, int]) -> str:
            made = (await ask("mutation { createCart { id } }"))["createCart"]["id"]
            for sku, quantity in lines:
                await ask("""mutation($c: ID!, $s: String!, $q: Int!) {
                    setCartLine(cart: $c, sku: $s, quantity: $q) { __typename } }""",
                          c=made, s=sku, q=quantity)
            return str(made)

        place = f"""mutation($c: ID!, $p: String!) {{ placeOrder(cart: $c,
            email: "ada@example.com", paymentMethod: $p) {{ {RESULT} }} }}"""
        mixed = await cart_of(("tee", 1), ("book", 1))
        refused = (await ask(place, c=mixed, p="pm_card_visa"))["placeOrder"]
        assert refused == {"__typename": "InvalidInput", "field": "cart", "message":
                           "cart: an order is paid in one currency; these lines are in "
                           "eur, usd"}
        empty = (await ask(place, c=await cart_of(), p="pm_card_visa"))["placeOrder"]
        assert empty["field"] == "cart" and "holds nothing" in empty["message"]
        declined_cart = await cart_of(("mug", 2))
        declined = (await ask(place, c=declined_cart,
                              p="pm_card_chargeDeclined"))["placeOrder"]
        assert declined["__typename"] == "Order" and declined["status"] == "failed"
        assert declined["workStatus"] == "failed" and "declined" in declined["error"]
        good = await cart_of(("tee", 1))
        placed = (await ask(place, c=good, p="pm_card_visa"))["placeOrder"]
        assert placed["status"] == "completed" and placed["amount"] == 1500
        twice = (await ask(place, c=good, p="pm_card_visa"))["placeOrder"]
        assert twice["__typename"] == "WrongState" and "became order" in twice["message"]
        refund = f"""mutation($o: ID!) {{ refundOrder(order: $o) {{ {RESULT} }} }}"""
        failed = (await ask(refund, o=declined["id"]))["refundOrder"]
        assert failed["__typename"] == "WrongState" and failed["state"] == "failed"
        missing = (await ask(refund, o="nope"))["refundOrder"]
        assert missing == {"__typename": "NotFound", "message": "no order 'nope'",
                           "field": "order"}
        whole = (await ask(refund, o=placed["id"]))["refundOrder"]
        assert whole["status"] == "refunded"
        left = (await ask("{ products { sku available } }"))["products"]
        await node.drain()
    assert {p["sku"]: p["available"] for p in left} == {"tee": 4, "mug": 2, "game": 0,
                                                        "book": 3}
    assert len(provider.intents) == 2 and len(provider.refunds) == 1
