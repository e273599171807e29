"""The orders pack's sagas, built from a checked :class:`OrdersConfig`.

- ``orders.place`` ``{"cart": ID, "owner": NAME, "email": ADDRESS, "payment_method":
  TOKEN}`` (or ``"lines": [{"sku", "quantity"}]`` in place of a cart). The payment
  method is a secret (engine.secrets): sealed in the store wherever it is carried,
  redacted in the API and UI; a deployment of this saga needs a ``[secrets] key``.
  Stages:

  ``place``      the order's row (its id is the work's), priced from the catalog, its
                 cart marked ordered; compensation: the order ``failed``, its cart open
                 again.
  ``reserve``    the stock of its physical goods, keys from the pool for its digital
                 ones; compensation: what was not given goes back.
  ``charge``     a payment intent at the provider for the order's amount, its
                 ``Idempotency-Key`` derived from the work and the stage (the same for
                 every attempt, after a crash too: the provider charges once);
                 compensation: the whole charge refunded (its own key). When the refund
                 fails for good the work stops in ``compensation_failed``, the order in
                 ``refunding``: a person refunds it by hand and resolves the work, or
                 retries the compensation once the provider is back.
  ``issue``      the ``ship`` hook for physical goods, then the reserved keys given
                 (each key to one order, once); compensation: the keys taken back
                 (revoked, never given again).
  ``complete``   the order ``completed``; compensation: ``refunding`` again.
  ``confirm``    the ``confirm`` hook, called with the order (id, owner, email, lines,
                 amount, currency, payment intent, keys, shipment); or, with
                 ``confirm_saga``, a stage ``message`` making ``{channel, template, to,
                 context: the order}`` and that saga run here as the stage ``confirm``
                 (the messaging pack's ``messaging.send``). When it fails for good, the
                 order is undone and refunded.

- ``orders.refund`` ``{"order": ID, "amount": optional, "reason": ""}``: a refund on
  request of a completed order, of ``amount`` (the smallest unit of its currency) or
  all that is left. ``claim`` holds the amount against the charge (never more than is
  left; compensation: no longer held), ``refund`` asks the provider (its key derived
  from the work), ``record`` adds it to the order (``partially_refunded`` or
  ``refunded``; a whole refund revokes the order's keys).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from engine import RetryPolicy, Saga, SagaRef, Stage, StageContext
from engine.context import jsonable
from engine.store import SqlStore

from . import ledger
from .config import OrdersConfig, hook
from .errors import OrderConfigError, OrderInputError
from .provider import PaymentProvider

__all__ = ["check_order", "order_sagas"]

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_TOKEN = re.compile(r"^[A-Za-z0-9_\-]{1,200}$")
# the provider is asked again while it is busy or down: every attempt carries the same
# idempotency key, so a repeat has no second effect
_PROVIDER_RETRY = RetryPolicy(attempts=4)
_STORE_RETRY = RetryPolicy(attempts=3)
_INPUT_KEYS = {"cart", "lines", "owner", "email", "payment_method"}

Hook = Callable[[dict[str, Any]], Any]


def _store(ctx: StageContext) -> SqlStore:
    store = ctx.store
    if not isinstance(store, SqlStore):
        raise OrderConfigError("the orders pack keeps its carts, stock and orders in the "
                               "store: run its sagas on a runtime or node with a SqlStore")
    return store


def check_order(config: OrdersConfig, data: Any) -> dict[str, Any]:
    """An ``orders.place`` input checked (each error names the field); its lines, when
    given in place of a cart, priced. The API checks a request with it before it starts
    the work, and the ``place`` stage again."""
    if not isinstance(data, dict):
        raise OrderInputError(f"an order's input is {{\"cart\" or \"lines\", \"email\", "
                              f"\"payment_method\"}}, got {data!r:.60}")
    extra = set(data) - _INPUT_KEYS
    if extra:
        raise OrderInputError(f"{sorted(extra)[0]}: not a field of an order; the fields "
                              f"are {', '.join(sorted(_INPUT_KEYS))}")
    email = data.get("email")
    if not isinstance(email, str) or not _EMAIL.match(email) or len(email) > 320:
        raise OrderInputError(f"email: expected an address like name@example.com, "
                              f"got {email!r:.60}")
    method = data.get("payment_method")
    if not isinstance(method, str) or not _TOKEN.match(method):
        raise OrderInputError(f"payment_method: expected the provider's payment method "
                              f"token (letters, digits, '_', '-'), got {method!r:.40}")
    owner = data.get("owner", "")
    if not isinstance(owner, str) or len(owner) > 200:
        raise OrderInputError(f"owner: expected a principal's name, got {owner!r:.60}")
    if ("cart" in data) == ("lines" in data):
        raise OrderInputError("cart: give a cart's id or lines, one of them")
    checked: dict[str, Any] = {"email": email, "payment_method": method, "owner": owner}
    if "cart" in data:
        if not isinstance(data["cart"], str):
            raise OrderInputError(f"cart: expected a cart id, got {data['cart']!r:.60}")
        checked["cart"] = data["cart"]
        return checked
    lines = data["lines"]
    if not isinstance(lines, list):
        raise OrderInputError(f"lines: expected a list of {{sku, quantity}}, got "
                              f"{lines!r:.60}")
    merged: dict[str, int] = {}
    for i, line in enumerate(lines):
        if not isinstance(line, dict) or set(line) != {"sku", "quantity"}:
            raise OrderInputError(f"lines[{i}]: expected {{sku, quantity}}, got {line!r:.60}")
        config.product(line["sku"], f"lines[{i}].sku")
        quantity = line["quantity"]
        if isinstance(quantity, bool) or not isinstance(quantity, int) or \
                not 1 <= quantity <= config.max_quantity:
            raise OrderInputError(f"lines[{i}].quantity: expected a whole number from 1 to "
                                  f"{config.max_quantity}, got {quantity!r:.40}")
        merged[line["sku"]] = merged.get(line["sku"], 0) + quantity
    checked["lines"] = [ledger.priced_line(config, sku, n) for sku, n in sorted(merged.items())]
    return checked


async def _call(fn: Hook, value: dict[str, Any], where: str) -> Any:
    result = fn(value)
    if inspect.isawaitable(result):
        result = await result
    if not jsonable(result):
        raise OrderConfigError(f"{where}: the hook returned {result!r:.60}, which the "
                               "order's events cannot keep (JSON only)")
    return result


def _summary(order: dict[str, Any]) -> dict[str, Any]:
    return {k: order[k] for k in ("order_id", "owner", "email", "lines", "amount",
                                  "currency") if k in order}


class _Pack:
    def __init__(self, config: OrdersConfig, provider: PaymentProvider,
                 ship: Hook | None, confirm: Hook | None) -> None:
        self.config = config
        self.provider = provider
        self.ship_hook = ship
        self.confirm_hook = confirm

    # ------------------------------------------------------------ orders.place

    async def place(self, ctx: StageContext, data: Any) -> dict[str, Any]:
        checked = check_order(self.config, data)
        store = _store(ctx)

        def run(conn: Any) -> dict[str, Any]:
            placed = ledger.order_row(conn, ctx.work_id, missing_ok=True)
            if placed is not None:  # this stage ran before a crash
                return placed
            cart_id = checked.get("cart")
            lines = checked["lines"] if cart_id is None else ledger.cart_lines(
                conn, self.config, cart_id, checked["owner"] or None)
            amount, currency = ledger.totals(lines, "lines" if cart_id is None else "cart")
            return ledger.place(conn, order_id=ctx.work_id, work_id=ctx.work_id,
                                cart_id=cart_id, owner=checked["owner"],
                                email=checked["email"], lines=lines, amount=amount,
                                currency=currency)

        order = await store.transaction(run)
        return {**_summary(order), "payment_method": checked["payment_method"]}

    # A compensation is also called when its own stage fails for good, to clean up, with
    # no output: each of these stages changes the store in one transaction, which a
    # failure rolled back, so there is nothing to clean up then.

    async def unplace(self, ctx: StageContext, data: Any, output: Any, reason: Any) -> None:
        if output is None:
            return
        store = _store(ctx)
        await store.transaction(lambda conn: ledger.unplace(conn, output["order_id"],
                                                            self.config))

    async def reserve(self, ctx: StageContext, order: dict[str, Any]) -> dict[str, Any]:
        reserved = await _store(ctx).transaction(
            lambda conn: ledger.reserve(conn, order["order_id"], order["lines"], self.config))
        return {**order, "reserved": reserved}

    async def unreserve(self, ctx: StageContext, order: dict[str, Any], output: Any,
                        reason: Any) -> None:
        if output is None:
            return
        await _store(ctx).transaction(
            lambda conn: ledger.release(conn, order["order_id"], self.config))

    async def charge(self, ctx: StageContext, order: dict[str, Any]) -> dict[str, Any]:
        # one key for every attempt of this stage (ctx.idempotency_key changes with the
        # attempt): a charge whose answer was lost is answered again, not made again
        intent = await self.provider.charge(
            amount=order["amount"], currency=order["currency"],
            payment_method=order["payment_method"],
            idempotency_key=f"stepsaga:{ctx.work_id}:{ctx.path}",
            metadata={"order_id": order["order_id"], "work_id": ctx.work_id})
        await _store(ctx).transaction(lambda conn: ledger.set_status(
            conn, order["order_id"], "paid", payment_intent=intent["id"]))
        paid = {k: v for k, v in order.items() if k != "payment_method"}
        return {**paid, "payment_intent": intent["id"]}

    async def refund_charge(self, ctx: StageContext, order: dict[str, Any], output: Any,
                            reason: Any) -> None:
        """charge's compensation: the whole amount back (every try, and a person's
        retry, with the same key: refunded once). A charge that failed for good charged
        nothing it knows of (declined, refused); one the provider never answered had every
        attempt under one key, so it charged once at most: the work's failure names it
        for a person to look up."""
        if output is None:
            return
        store = _store(ctx)
        await store.transaction(lambda conn: ledger.set_status(conn, order["order_id"],
                                                               "refunding"))
        refund = await self.provider.refund(
            payment_intent=output["payment_intent"], amount=output["amount"],
            idempotency_key=f"stepsaga:{ctx.work_id}:{ctx.path}:refund",
            metadata={"order_id": order["order_id"], "work_id": ctx.work_id})
        ctx.logger.info("order %s refunded: %s (%s)", order["order_id"], refund["id"],
                        refund["status"])
        await store.transaction(lambda conn: ledger.set_status(
            conn, order["order_id"], "refunding", refunded=output["amount"]))

    async def issue(self, ctx: StageContext, order: dict[str, Any]) -> dict[str, Any]:
        shipment = None
        physical = [line for line in order["lines"] if line["kind"] == "physical"]
        if physical and self.ship_hook is not None:
            shipment = await _call(self.ship_hook, {
                **_summary(order), "lines": physical,
                "idempotency_key": f"stepsaga:{ctx.work_id}:{ctx.path}"}, "orders.ship")
        keys = await _store(ctx).transaction(
            lambda conn: ledger.issue_keys(conn, order["order_id"]))
        return {**order, "keys": keys, "shipment": shipment}

    async def revoke(self, ctx: StageContext, order: dict[str, Any], output: Any,
                     reason: Any) -> None:
        if output is None:  # the keys are given in the stage's last transaction
            return
        await _store(ctx).transaction(
            lambda conn: ledger.revoke_keys(conn, order["order_id"]))

    async def complete(self, ctx: StageContext, order: dict[str, Any]) -> dict[str, Any]:
        await _store(ctx).transaction(lambda conn: ledger.set_status(
            conn, order["order_id"], "completed"))
        return {**_summary(order), "payment_intent": order["payment_intent"],
                "keys": order["keys"], "shipment": order["shipment"]}

    async def uncomplete(self, ctx: StageContext, order: dict[str, Any], output: Any,
                         reason: Any) -> None:
        if output is None:
            return
        await _store(ctx).transaction(lambda conn: ledger.set_status(
            conn, order["order_id"], "refunding"))

    async def confirm(self, ctx: StageContext, order: dict[str, Any]) -> dict[str, Any]:
        told = None
        if self.confirm_hook is not None:
            told = await _call(self.confirm_hook, {
                **order, "idempotency_key": f"stepsaga:{ctx.work_id}:{ctx.path}"},
                "orders.confirm")
        return {**order, "confirmed": told}

    async def message(self, ctx: StageContext, order: dict[str, Any]) -> dict[str, Any]:
        """The confirmation as the messaging pack's ``messaging.send`` takes it."""
        return {"channel": self.config.confirm_channel,
                "template": self.config.confirm_template, "to": order["email"],
                "context": order}

    # ------------------------------------------------------------ orders.refund

    async def claim(self, ctx: StageContext, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict) or not set(data) <= {"order", "amount", "reason"}:
            raise OrderInputError(f"a refund's input is {{\"order\": ID, \"amount\": "
                                  f"optional, \"reason\": optional}}, got {data!r:.80}")
        reason = data.get("reason", "")
        if not isinstance(reason, str) or len(reason) > 1000:
            raise OrderInputError(f"reason: expected a text of at most 1000 characters, "
                                  f"got {reason!r:.40}")

        def run(conn: Any) -> dict[str, Any]:
            claimed = ledger.claim_refund(conn, refund_id=ctx.work_id,
                                          order_id=data.get("order"),
                                          amount=data.get("amount"), reason=reason)
            order = ledger.order_row(conn, claimed["order_id"])
            return {"refund_id": claimed["refund_id"], "order_id": claimed["order_id"],
                    "amount": claimed["amount"], "currency": order["currency"],
                    "payment_intent": order["payment_intent"]}

        return await _store(ctx).transaction(run)

    async def unclaim(self, ctx: StageContext, data: Any, output: Any, reason: Any) -> None:
        if output is None:
            return
        await _store(ctx).transaction(
            lambda conn: ledger.drop_refund(conn, output["refund_id"]))

    async def refund(self, ctx: StageContext, claimed: dict[str, Any]) -> dict[str, Any]:
        refund = await self.provider.refund(
            payment_intent=claimed["payment_intent"], amount=claimed["amount"],
            idempotency_key=f"stepsaga:{ctx.work_id}:{ctx.path}",
            metadata={"order_id": claimed["order_id"], "refund_id": claimed["refund_id"]})
        return {**claimed, "provider_id": refund["id"], "provider_status": refund["status"]}

    async def record(self, ctx: StageContext, refunded: dict[str, Any]) -> dict[str, Any]:
        order = await _store(ctx).transaction(
            lambda conn: ledger.settle_refund(conn, refunded["refund_id"],
                                              refunded["provider_id"]))
        return {**refunded, "order_status": order["status"], "refunded": order["refunded"]}


_PLACE_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["email", "payment_method"], "properties": {
        "cart": {"type": "string", "title": "Cart id"},
        "lines": {"type": "array", "items": {"type": "object", "properties": {
            "sku": {"type": "string"}, "quantity": {"type": "integer", "minimum": 1}}}},
        "owner": {"type": "string"}, "email": {"type": "string", "format": "email"},
        "payment_method": {"type": "string", "title": "Payment method token",
                           "secret": True}}}
# what place and reserve hand on carries the payment method to the charge: sealed there
# too (the charge's output has it no more)
_CARRIES_METHOD: dict[str, Any] = {"type": "object", "properties": {
    "payment_method": {"type": "string", "secret": True}}}
_REFUND_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["order"], "properties": {
        "order": {"type": "string", "title": "Order id"},
        "amount": {"type": ["integer", "null"], "minimum": 1},
        "reason": {"type": "string"}}}


def order_sagas(config: OrdersConfig, *, provider: PaymentProvider | None = None,
                ship: Hook | None = None, confirm: Hook | None = None) -> list[Saga]:
    """The pack's two sagas (see the module docstring); ``ship`` and ``confirm`` in place
    of the config's hooks."""
    pack = _Pack(config, provider or PaymentProvider(config.provider),
                 ship or hook(config.ship, "orders.ship"),
                 confirm or hook(config.confirm, "orders.confirm"))
    confirming: list[Stage | SagaRef] = [
        Stage(name="message", transaction=pack.message),
        SagaRef(name="confirm", saga=config.confirm_saga)] if config.confirm_saga and \
        confirm is None else [
        Stage(name="confirm", transaction=pack.confirm, retry=_PROVIDER_RETRY)]
    return [
        Saga(name="orders.place", description="place an order: reserve, charge, issue, "
                                              "confirm; refunded if it fails after the charge",
             input_schema=_PLACE_SCHEMA, stages=[
                 Stage(name="place", transaction=pack.place, compensation=pack.unplace,
                       retry=_STORE_RETRY, output_schema=_CARRIES_METHOD),
                 Stage(name="reserve", transaction=pack.reserve,
                       compensation=pack.unreserve, retry=_STORE_RETRY,
                       output_schema=_CARRIES_METHOD),
                 Stage(name="charge", transaction=pack.charge,
                       compensation=pack.refund_charge, retry=_PROVIDER_RETRY),
                 Stage(name="issue", transaction=pack.issue, compensation=pack.revoke,
                       retry=_STORE_RETRY),
                 Stage(name="complete", transaction=pack.complete,
                       compensation=pack.uncomplete, retry=_STORE_RETRY),
                 *confirming,
             ]),
        Saga(name="orders.refund", description="refund a completed order, whole or in part",
             input_schema=_REFUND_SCHEMA, stages=[
                 Stage(name="claim", transaction=pack.claim, compensation=pack.unclaim,
                       retry=_STORE_RETRY),
                 Stage(name="refund", transaction=pack.refund, retry=_PROVIDER_RETRY),
                 Stage(name="record", transaction=pack.record, retry=_STORE_RETRY),
             ]),
    ]
