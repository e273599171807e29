"""Orders end to end against the provider on loopback: one that succeeds, one whose
shipping fails after the charge and is refunded, one whose refund fails and is
resolved by a person, refunds on request (partial and whole), keys given once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from engine.store.schema import events, works
from workers.actions.orders import add_keys, cart, create_cart, order, set_line, stock

from .conftest import SECRETS, config_of, running, sqlite_url
from .provider import Provider

ORDER = {"owner": "alice", "email": "alice@example.com", "payment_method": "pm_card_visa"}


async def test_an_order_is_reserved_charged_issued_and_confirmed(
        store_url: str, provider: Provider) -> None:
    told: list[dict[str, Any]] = []
    shipped: list[dict[str, Any]] = []

    async def ship(order: dict[str, Any]) -> dict[str, Any]:
        shipped.append(order)
        return {"tracking": "TRK1"}

    config = config_of(provider)
    async with running(store_url, config, ship=ship, confirm=told.append) as (rt, store):
        assert await add_keys(store, config, "game", ["K-1", "K-2", "K-3"]) == 3
        cart_id = await create_cart(store, "alice")
        await set_line(store, config, cart_id, "tee", 2)
        await set_line(store, config, cart_id, "game", 2)
        result = await rt.run("orders.place", {**ORDER, "cart": cart_id})
        assert result.status == "completed", result.error
        placed = await order(store, result.work_id)
        left = await stock(store, config)
        ordered = await cart(store, config, cart_id)
        async with store.reader.connect() as conn:
            stored = "\n".join(str(r[0]) for r in (await conn.execute(
                sa.select(events.c.payload).union_all(sa.select(works.c.input)))).all())
    # the payment method reached the provider, and is nowhere in the store in the clear
    assert "pm_card_visa" not in stored and f"v1.{SECRETS.key_id}." in stored
    assert placed is not None and placed["status"] == "completed"
    assert placed["amount"] == 2 * 1500 + 2 * 2000 and placed["currency"] == "usd"
    assert [k["code"] for k in placed["keys"]] == ["K-1", "K-2"]
    assert left["tee"] == 3 and left["game"] == 1 and left["mug"] == 2
    assert ordered is not None and ordered["order_id"] == result.work_id
    (intent,) = provider.intents.values()
    assert intent["amount"] == 7000 and intent["status"] == "succeeded"
    assert intent["payment_method"] == "pm_card_visa"
    assert placed["payment_intent"] == intent["id"]
    assert intent["metadata"]["order_id"] == result.work_id
    keys = provider.keys_of("/v1/payment_intents")
    assert keys == [f"stepsaga:{result.work_id}:charge"]
    assert [line["sku"] for line in shipped[0]["lines"]] == ["tee"]
    assert told[0]["keys"] == {"game": ["K-1", "K-2"]} and told[0]["shipment"] == {
        "tracking": "TRK1"} and told[0]["email"] == "alice@example.com"
    assert provider.refunds == {}


async def test_shipping_that_fails_after_the_charge_refunds_it(
        store_url: str, provider: Provider) -> None:
    def ship(order: dict[str, Any]) -> None:
        raise RuntimeError("the warehouse is closed")

    config = config_of(provider)
    async with running(store_url, config, ship=ship) as (rt, store):
        await add_keys(store, config, "game", ["K-1"])
        cart_id = await create_cart(store, "alice")
        await set_line(store, config, cart_id, "tee", 1)
        await set_line(store, config, cart_id, "game", 1)
        result = await rt.run("orders.place", {**ORDER, "cart": cart_id})
        placed = await order(store, result.work_id)
        left = await stock(store, config)
        reopened = await cart(store, config, cart_id)
    assert result.status == "failed"
    assert "the warehouse is closed" in (result.error or {}).get("message", "")
    assert list(result.compensated) == ["charge", "reserve", "place"]
    (intent,) = provider.intents.values()
    (refund,) = provider.refunds.values()
    assert refund["payment_intent"] == intent["id"] and refund["amount"] == 3500
    assert provider.keys_of("/v1/refunds") == [f"stepsaga:{result.work_id}:charge:refund"]
    assert placed is not None and placed["status"] == "failed" and placed["keys"] == []
    assert left["tee"] == 5 and left["game"] == 1  # back in stock, the key free again
    assert reopened is not None and reopened["order_id"] is None


async def test_a_refund_that_fails_waits_for_a_person_who_resolves_it(
        tmp_path: Path, provider: Provider) -> None:
    def ship(order: dict[str, Any]) -> None:
        raise RuntimeError("out of boxes")

    config = config_of(provider)
    provider.fail_always("/v1/refunds", 503)
    async with running(sqlite_url(tmp_path), config, ship=ship) as (rt, store):
        result = await rt.run("orders.place", {**ORDER, "lines": [
            {"sku": "mug", "quantity": 1}]})
        assert result.status == "compensation_failed"
        stuck = await order(store, result.work_id)
        assert stuck is not None and stuck["status"] == "refunding"
        assert (await stock(store, config))["mug"] == 1  # still held: nothing undone yet
        tries = provider.keys_of("/v1/refunds")
        assert len(tries) == 3 and set(tries) == {f"stepsaga:{result.work_id}:charge:refund"}
        # a person refunds by hand at the provider, and marks the work resolved
        provider.fail_always("/v1/refunds", None)
        (intent,) = provider.intents
        status, _, _ = provider.handle("/v1/refunds", "by-hand", "Bearer sk_test_orders",
                                       {"payment_intent": intent})
        assert status == 200
        await rt.resolve(result.work_id, by="ops", reason="refunded by hand")
        resolved = await rt.wait(result.work_id)
    assert resolved.status == "failed"
    assert provider.refunded(intent) == 800


async def test_a_failed_refund_is_retried_by_a_person_once_the_provider_is_back(
        tmp_path: Path, provider: Provider) -> None:
    def ship(order: dict[str, Any]) -> None:
        raise RuntimeError("out of boxes")

    config = config_of(provider)
    provider.fail_always("/v1/refunds", 500)
    async with running(sqlite_url(tmp_path), config, ship=ship) as (rt, store):
        result = await rt.run("orders.place", {**ORDER, "lines": [
            {"sku": "tee", "quantity": 2}]})
        assert result.status == "compensation_failed"
        provider.fail_always("/v1/refunds", None)
        await rt.retry_compensation(result.work_id, by="ops")
        again = await rt.wait(result.work_id)
        placed = await order(store, result.work_id)
        left = await stock(store, config)
    assert again.status == "failed"
    (refund,) = provider.refunds.values()
    assert refund["amount"] == 3000
    assert placed is not None and placed["status"] == "failed" and left["tee"] == 5


async def test_refunds_on_request_partial_then_the_rest(
        store_url: str, provider: Provider) -> None:
    config = config_of(provider)
    async with running(store_url, config) as (rt, store):
        await add_keys(store, config, "game", ["K-1"])
        placed = await rt.run("orders.place", {**ORDER, "lines": [
            {"sku": "tee", "quantity": 1}, {"sku": "game", "quantity": 1}]})
        assert placed.status == "completed", placed.error
        part = await rt.run("orders.refund", {"order": placed.work_id, "amount": 1000,
                                              "reason": "scratched"})
        assert part.status == "completed", part.error
        after_part = await order(store, placed.work_id)
        too_much = await rt.run("orders.refund", {"order": placed.work_id,
                                                  "amount": 2501})
        rest = await rt.run("orders.refund", {"order": placed.work_id})
        assert rest.status == "completed", rest.error
        after = await order(store, placed.work_id)
        none_left = await rt.run("orders.refund", {"order": placed.work_id, "amount": 1})
    assert after_part is not None and after_part["status"] == "partially_refunded"
    assert after_part["refunded"] == 1000 and after_part["keys"] != []
    assert too_much.status == "failed"
    assert "amount: 2501 is more than is left to refund" in too_much.error["message"]
    assert after is not None and after["status"] == "refunded" and after["refunded"] == 3500
    assert after["keys"] == []  # a whole refund takes the keys back
    assert [r["status"] for r in after["refunds"]] == ["succeeded", "succeeded"]
    assert none_left.status == "failed" and "is refunded" in none_left.error["message"]
    assert sorted(r["amount"] for r in provider.refunds.values()) == [1000, 2500]


async def test_a_refund_the_provider_refuses_holds_nothing_back(
        tmp_path: Path, provider: Provider) -> None:
    config = config_of(provider)
    async with running(sqlite_url(tmp_path), config) as (rt, store):
        placed = await rt.run("orders.place", {**ORDER, "lines": [
            {"sku": "tee", "quantity": 1}]})
        provider.fail("/v1/refunds", 400)
        refused = await rt.run("orders.refund", {"order": placed.work_id, "amount": 500})
        later = await rt.run("orders.refund", {"order": placed.work_id})
        after = await order(store, placed.work_id)
    assert refused.status == "failed" and list(refused.compensated) == ["claim"]
    assert later.status == "completed"
    assert after is not None and after["refunded"] == 1500
    assert [r["status"] for r in after["refunds"]] == ["failed", "succeeded"]


async def test_a_declined_card_fails_the_order_and_gives_the_stock_back(
        tmp_path: Path, provider: Provider) -> None:
    config = config_of(provider)
    async with running(sqlite_url(tmp_path), config) as (rt, store):
        result = await rt.run("orders.place", {**ORDER, "payment_method":
                                               "pm_card_chargeDeclined",
                                               "lines": [{"sku": "mug", "quantity": 2}]})
        left = await stock(store, config)
        placed = await order(store, result.work_id)
    assert result.status == "failed" and "declined" in result.error["message"]
    assert left["mug"] == 2 and placed is not None and placed["status"] == "failed"
    assert len(provider.keys_of("/v1/payment_intents")) == 1  # a decline is not retried
    assert provider.refunds == {}


async def test_a_busy_provider_is_asked_again_with_the_same_key(
        tmp_path: Path, provider: Provider) -> None:
    config = config_of(provider)
    provider.fail("/v1/payment_intents", 429)
    provider.fail("/v1/payment_intents", 502)
    async with running(sqlite_url(tmp_path), config) as (rt, _):
        result = await rt.run("orders.place", {**ORDER, "lines": [
            {"sku": "tee", "quantity": 1}]})
    assert result.status == "completed"
    keys = provider.keys_of("/v1/payment_intents")
    assert len(keys) == 3 and len(set(keys)) == 1 and len(provider.intents) == 1


async def test_keys_are_given_once_however_many_orders_race_for_them(
        store_url: str, provider: Provider) -> None:
    config = config_of(provider)
    async with running(store_url, config) as (rt, store):
        await add_keys(store, config, "game", [f"K-{i}" for i in range(5)])
        results: list[Any] = []

        async def buy() -> None:
            results.append(await rt.run("orders.place", {**ORDER, "lines": [
                {"sku": "game", "quantity": 2}]}))

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(buy)
        placed = [await order(store, r.work_id) for r in results]
        free = (await stock(store, config))["game"]
    done = [p for p in placed if p is not None and p["status"] == "completed"]
    assert len(done) == 2 and free == 1
    given = [k["code"] for p in done for k in p["keys"]]
    assert len(given) == len(set(given)) == 4
    failed = [r for r in results if r.status == "failed"]
    assert len(failed) == 2 and all("keys ordered" in r.error["message"] for r in failed)
    assert len(provider.intents) == 2  # the orders without keys were never charged


@pytest.mark.parametrize(("lines", "message"), [
    ([{"sku": "hat", "quantity": 1}], "lines[0].sku: unknown product 'hat'"),
    ([{"sku": "tee", "quantity": 101}], "lines[0].quantity: expected a whole number from 1"),
    ([{"sku": "tee", "quantity": 1}, {"sku": "book", "quantity": 1}],
     "lines: an order is paid in one currency"),
    ([{"sku": "tee", "quantity": 6}], "'tee': 6 ordered, 5 on hand"),
])
async def test_bad_orders_fail_naming_the_field_and_change_nothing(
        tmp_path: Path, provider: Provider, lines: list[dict[str, Any]], message: str
) -> None:
    config = config_of(provider)
    async with running(sqlite_url(tmp_path), config) as (rt, store):
        result = await rt.run("orders.place", {**ORDER, "lines": lines})
        left = await stock(store, config)
    assert result.status == "failed"
    assert message in (result.error or {}).get("message", ""), result.error
    assert left["tee"] == 5 and left["book"] == 3
    assert provider.intents == {}


async def test_bad_cart_lines_and_addresses_are_refused(tmp_path: Path,
                                                        provider: Provider) -> None:
    from workers.actions.orders import OrderInputError, check_order

    config = config_of(provider)
    async with running(sqlite_url(tmp_path), config) as (_, store):
        cart_id = await create_cart(store, "alice")
        with pytest.raises(OrderInputError, match="quantity: expected a whole number"):
            await set_line(store, config, cart_id, "tee", -2)
        with pytest.raises(OrderInputError, match="sku: unknown product 'hat'"):
            await set_line(store, config, cart_id, "hat", 1)
        assert (await cart(store, config, cart_id) or {})["lines"] == []
    with pytest.raises(OrderInputError, match="email: expected an address"):
        check_order(config, {**ORDER, "email": "alice", "cart": "c"})
    with pytest.raises(ValueError, match="lines/0/quantity: -1 is less than the minimum"):
        async with running(sqlite_url(tmp_path), config) as (rt, _):
            await rt.run("orders.place", {**ORDER, "lines": [{"sku": "tee", "quantity": -1}]})
    with pytest.raises(OrderInputError, match="payment_method"):
        check_order(config, {**ORDER, "payment_method": "", "cart": "c"})


async def test_the_confirmation_can_be_a_saga_run_as_the_last_stage(
        tmp_path: Path, provider: Provider) -> None:
    from engine import Runtime, Saga, Stage
    from engine.store import SqlStore
    from workers.actions.orders import orders_app

    told: list[dict[str, Any]] = []

    async def send(ctx: Any, message: dict[str, Any]) -> dict[str, Any]:
        told.append(message)
        if message["context"]["amount"] > 5000:
            raise ValueError("no such mailbox")
        return {"sent_to": message["to"]}

    # a saga taking what the messaging pack's messaging.send takes
    mail = Saga(name="mail.send", stages=[Stage(name="send", transaction=send)])
    config = config_of(provider, confirm_saga="mail.send", confirm_template="thanks")
    async with SqlStore.open(sqlite_url(tmp_path)) as store, Runtime(
            [*orders_app(config=config).sagas, mail], store=store, secrets=SECRETS) as rt:
        done = await rt.run("orders.place", {**ORDER, "lines": [
            {"sku": "tee", "quantity": 1}]})
        big = await rt.run("orders.place", {**ORDER, "lines": [
            {"sku": "tee", "quantity": 4}]})
        placed = await order(store, done.work_id)
        undone = await order(store, big.work_id)
    assert done.status == "completed" and done.output == {"sent_to": "alice@example.com"}
    assert {k: told[0][k] for k in ("channel", "template", "to")} == {
        "channel": "email", "template": "thanks", "to": "alice@example.com"}
    assert told[0]["context"]["order_id"] == done.work_id
    assert told[0]["context"]["amount"] == 1500 and told[0]["context"]["keys"] == {}
    assert placed is not None and placed["status"] == "completed"
    # a confirmation that fails for good undoes the order: refunded, back in stock
    assert big.status == "failed" and undone is not None and undone["status"] == "failed"
    assert [r["amount"] for r in provider.refunds.values()] == [6000]


async def test_a_stage_run_again_after_a_crash_takes_and_gives_nothing_twice(
        store_url: str, provider: Provider) -> None:
    """What a reserve or issue that ran again after a crash (its result not recorded)
    does: it finds its reservation and its keys, and takes or gives nothing more."""
    from workers.actions.orders import ledger

    config = config_of(provider)
    async with running(store_url, config) as (rt, store):
        await add_keys(store, config, "game", ["K-1", "K-2", "K-3"])
        result = await rt.run("orders.place", {**ORDER, "lines": [
            {"sku": "game", "quantity": 2}, {"sku": "tee", "quantity": 1}]})
        placed = await order(store, result.work_id)
        assert placed is not None
        again = await store.transaction(lambda conn: ledger.reserve(
            conn, result.work_id, placed["lines"], config))
        keys = await store.transaction(lambda conn: ledger.issue_keys(conn, result.work_id))
        left = await stock(store, config)
    assert sorted((r["sku"], r["quantity"]) for r in again) == [("game", 2), ("tee", 1)]
    assert keys == {"game": ["K-1", "K-2"]}
    assert [k["code"] for k in placed["keys"]] == ["K-1", "K-2"]
    assert left["game"] == 1 and left["tee"] == 4


async def test_refunds_racing_never_refund_more_than_the_charge(
        store_url: str, provider: Provider) -> None:
    config = config_of(provider)
    async with running(store_url, config) as (rt, store):
        placed = await rt.run("orders.place", {**ORDER, "lines": [
            {"sku": "tee", "quantity": 2}]})
        results: list[Any] = []

        async def refund() -> None:
            results.append(await rt.run("orders.refund", {"order": placed.work_id,
                                                          "amount": 1200}))

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(refund)
        after = await order(store, placed.work_id)
    assert sorted(r.status for r in results) == ["completed", "completed", "failed"]
    (refused,) = [r for r in results if r.status == "failed"]
    assert "amount: 1200 is more than is left to refund" in refused.error["message"]
    assert after is not None and after["refunded"] == 2400
    assert after["status"] == "partially_refunded"
    assert sum(r["amount"] for r in provider.refunds.values()) == 2400
