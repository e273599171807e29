"""The orders pack's GraphQL fields on a real ``stepsaga serve`` (its [orders] section
from the config file, the provider on loopback): a customer fills a cart, places the
order and gets its keys, sees only its own carts and orders, refunds part of it; bad
input is a typed error naming the field, and nothing is charged or stored for it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.graphql_api.test_extensions import cli, post
from tests.graphql_api.wire import Served

from .conftest import SECRETS_TOML
from .provider import KEY, Provider

CART = "id amount currency orderId lines { sku name quantity price }"
ORDER = "id status workStatus error amount refunded currency email keys { sku code } " \
        "refunds { amount status reason }"
RESULT = f"""__typename ... on Order {{ {ORDER} }} ... on InvalidInput {{ message field }}
             ... on NotFound {{ message field }} ... on WrongState {{ message state: status }}"""
CART_RESULT = f"""__typename ... on Cart {{ {CART} }} ... on InvalidInput {{ message field }}
                  ... on NotFound {{ message field }}"""


@pytest.fixture
def served(tmp_path: Path, provider: Provider) -> Iterator[dict[str, Any]]:
    store = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    config = tmp_path / "stepsaga.toml"
    config.write_text(SECRETS_TOML + f'[orders.provider]\nurl = "{provider.url}"\nkey = "{KEY}"\n'
                      '[orders.products.tee]\nname = "T-shirt"\nprice = 1500\nstock = 3\n'
                      '[orders.products.game]\nname = "Game"\nprice = 2000\n'
                      'kind = "digital"\n')
    server = Served("serve", "--store", store, "--port", "0", "--config", str(config),
                    "--app", "workers.actions.orders:app")
    try:
        ready = server.ready()
        ready["store"] = store
        yield ready
    finally:
        code, _, err = server.stop()
        assert code == 0, err


def _customer(store: str, name: str) -> str:
    made = cli("token", "--store", store, "create", name, "--group", "customers")
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def test_a_customer_orders_through_the_api(served: dict[str, Any], tmp_path: Path,
                                           provider: Provider) -> None:
    url, admin, store = served["url"], served["token"], served["store"]
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps([{"subject": "group:customers",
                                   "actions": ["read", "write"]}]))
    assert cli("policy", "--store", store, "set", str(policy)).returncode == 0
    alice, bob = _customer(store, "alice"), _customer(store, "bob")
    added = post(url, 'mutation { addOrderKeys(sku: "game", codes: ["G-1", "G-2"]) }', admin)
    assert added["data"] == {"addOrderKeys": 2}
    refused = post(url, 'mutation { addOrderStock(sku: "tee", quantity: 5) }', alice)
    assert refused["errors"][0]["extensions"]["code"] == "forbidden"
    products = post(url, "{ products { sku available price } }", alice)["data"]["products"]
    assert {p["sku"]: p["available"] for p in products} == {"tee": 3, "game": 2}

    cart = post(url, f"mutation {{ createCart {{ {CART} }} }}", alice)["data"]["createCart"]
    line = f"""mutation($c: ID!, $s: String!, $q: Int!) {{
        setCartLine(cart: $c, sku: $s, quantity: $q) {{ {CART_RESULT} }} }}"""
    post(url, line, alice, c=cart["id"], s="tee", q=2)
    filled = post(url, line, alice, c=cart["id"], s="game", q=1)["data"]["setCartLine"]
    assert filled["amount"] == 5000 and [x["sku"] for x in filled["lines"]] == ["game", "tee"]
    # bad lines: typed errors naming the field, the cart unchanged
    negative = post(url, line, alice, c=cart["id"], s="tee", q=-1)["data"]["setCartLine"]
    assert negative["__typename"] == "InvalidInput" and negative["field"] == "quantity"
    unknown = post(url, line, alice, c=cart["id"], s="hat", q=1)["data"]["setCartLine"]
    assert unknown["__typename"] == "InvalidInput" and "unknown product 'hat'" in \
        unknown["message"]
    assert post(url, line, bob, c=cart["id"], s="tee", q=1)["data"]["setCartLine"][
        "__typename"] == "NotFound"  # not bob's cart
    assert post(url, f'{{ cart(id: "{cart["id"]}") {{ amount }} }}', bob)["data"] == {
        "cart": None}

    place = f"""mutation($c: ID!, $e: String!, $p: String!) {{
        placeOrder(cart: $c, email: $e, paymentMethod: $p) {{ {RESULT} }} }}"""
    bad = post(url, place, alice, c=cart["id"], e="alice", p="pm_card_visa")
    assert "errors" not in bad, bad
    assert bad["data"]["placeOrder"]["field"] == "email" and provider.intents == {}
    placed = post(url, place, alice, c=cart["id"], e="alice@example.com",
                  p="pm_card_visa")["data"]["placeOrder"]
    assert placed["__typename"] == "Order", placed
    assert placed["status"] == "completed" and placed["workStatus"] == "completed"
    assert placed["amount"] == 5000 and placed["keys"] == [{"sku": "game", "code": "G-1"}]
    again = post(url, place, alice, c=cart["id"], e="alice@example.com",
                 p="pm_card_visa")["data"]["placeOrder"]
    assert again["__typename"] == "WrongState" and len(provider.intents) == 1

    mine = post(url, f"{{ orders {{ {ORDER} }} }}", alice)["data"]["orders"]
    assert [o["id"] for o in mine] == [placed["id"]]
    assert post(url, f"{{ orders {{ {ORDER} }} }}", bob)["data"]["orders"] == []
    seen = post(url, f"{{ orders {{ {ORDER} }} }}", admin)["data"]["orders"]  # an operator
    assert [o["id"] for o in seen] == [placed["id"]]
    assert post(url, f'{{ order(id: "{placed["id"]}") {{ id }} }}', bob)["data"] == {
        "order": None}

    refund = f"""mutation($o: ID!, $a: Int) {{
        refundOrder(order: $o, amount: $a, reason: "late") {{ {RESULT} }} }}"""
    assert post(url, refund, bob, o=placed["id"], a=100)["errors"][0]["extensions"][
        "code"] == "forbidden"  # another's order: an operator's (steer)
    too_much = post(url, refund, alice, o=placed["id"], a=5001)["data"]["refundOrder"]
    assert too_much["__typename"] == "InvalidInput" and too_much["field"] == "amount"
    part = post(url, refund, alice, o=placed["id"], a=1500)["data"]["refundOrder"]
    assert part["status"] == "partially_refunded" and part["refunded"] == 1500
    assert part["refunds"] == [{"amount": 1500, "status": "succeeded", "reason": "late"}]
    rest = post(url, refund, admin, o=placed["id"], a=None)["data"]["refundOrder"]
    assert rest["status"] == "refunded" and rest["refunded"] == 5000 and rest["keys"] == []
    assert sorted(r["amount"] for r in provider.refunds.values()) == [1500, 3500]
    after = post(url, "{ products { sku available } }", admin)["data"]["products"]
    assert {p["sku"]: p["available"] for p in after} == {"tee": 1, "game": 1}
