"""The orders pack's part of the GraphQL API (an :class:`graphql_api.extensions.ApiPart`).

Queries (action ``read``): ``products`` (with what is left of each), ``cart(id)``,
``order(id)``, ``orders(first)``. Mutations: ``createCart``, ``setCartLine(cart, sku,
quantity)`` (0 takes it out), ``placeOrder(cart, email, paymentMethod)`` (runs
``orders.place`` and answers with the order once it ended), ``refundOrder(order,
amount, reason)`` (runs ``orders.refund``), all ``write``; ``addOrderStock`` and
``addOrderKeys`` need ``admin``. A signed-in principal sees its own carts and orders
only, and orders from its own carts; one that may steer works of
``orders.place`` (an operator) sees them all; refunding another's order needs ``steer``
on ``orders.refund``. Bad input is a typed error naming the field (``InvalidInput``,
``NotFound``, ``WrongState``), checked before any work starts.
"""

from __future__ import annotations

from typing import Annotated, Any

import strawberry
from strawberry.types import Info

from graphql_api.access import require
from graphql_api.context import context_of, service_of
from graphql_api.extensions import ApiPart, run_saga
from graphql_api.results import InvalidInput, NotFound, WrongState
from graphql_api.service import ApiError
from workers.actions.orders import ledger
from workers.actions.orders.config import OrdersConfig
from workers.actions.orders.errors import OrderInputError, OrderStateError
from workers.actions.orders.sagas import check_order

__all__ = ["orders_part"]


@strawberry.type
class OrderLine:
    sku: str
    name: str
    quantity: int
    price: int
    currency: str


@strawberry.type
class Product:
    sku: str
    name: str
    price: int
    currency: str
    kind: str
    available: int


@strawberry.type
class Cart:
    id: strawberry.ID
    lines: list[OrderLine]
    amount: int
    currency: str
    order_id: str | None


@strawberry.type
class IssuedKey:
    sku: str
    code: str


@strawberry.type
class Refund:
    id: strawberry.ID
    amount: int
    status: str
    reason: str


@strawberry.type
class Order:
    id: strawberry.ID
    status: str
    work_status: str | None
    error: str | None
    lines: list[OrderLine]
    amount: int
    refunded: int
    currency: str
    email: str
    keys: list[IssuedKey]
    refunds: list[Refund]


CartResult = Annotated[Cart | NotFound | InvalidInput, strawberry.union("CartResult")]
OrderResult = Annotated[Order | NotFound | InvalidInput | WrongState,
                        strawberry.union("OrderResult")]


def _lines(lines: list[dict[str, Any]]) -> list[OrderLine]:
    return [OrderLine(sku=line["sku"], name=line["name"], quantity=line["quantity"],
                      price=line["price"], currency=line["currency"]) for line in lines]


def _cart(found: dict[str, Any]) -> Cart:
    return Cart(id=strawberry.ID(found["cart_id"]), lines=_lines(found["lines"]),
                amount=found["amount"], currency=found["currency"],
                order_id=found["order_id"])


def _order(found: dict[str, Any], work: dict[str, Any] | None = None) -> Order:
    error = (work or {}).get("error")
    return Order(id=strawberry.ID(found["order_id"]), status=found["status"],
                 work_status=None if work is None else work.get("status"),
                 error=error.get("message") if isinstance(error, dict) else error,
                 lines=_lines(found["lines"]), amount=found["amount"],
                 refunded=found["refunded"], currency=found["currency"],
                 email=found["email"],
                 keys=[IssuedKey(sku=k["sku"], code=k["code"]) for k in found.get("keys", [])],
                 refunds=[Refund(id=strawberry.ID(r["refund_id"]), amount=r["amount"],
                                 status=r["status"], reason=r["reason"])
                          for r in found.get("refunds", [])])


async def _owner(info: Info) -> str | None:
    """Whose carts and orders the request sees: its principal's own, or all (None) for
    Python in this process and an operator (who may steer works of ``orders.place``)."""
    who = context_of(info).principal
    if who is None:
        return None
    if (await service_of(info).policies()).allows(who, "steer", {"saga": "orders.place"}):
        return None
    return str(who.name)


def _name(info: Info) -> str:
    """The name of the request's principal ("" for Python in this process)."""
    who = context_of(info).principal
    return "" if who is None else str(who.name)


def orders_part(config: OrdersConfig) -> ApiPart:
    """The pack's API part over ``config``'s catalog."""

    @strawberry.type
    class OrdersQuery:
        @strawberry.field
        async def products(self, info: Info) -> list[Product]:
            left = await ledger.stock(service_of(info).store, config)
            return [Product(sku=p.sku, name=p.name, price=p.price, currency=p.currency,
                            kind=p.kind, available=left[p.sku])
                    for p in config.products.values()]

        @strawberry.field
        async def cart(self, info: Info, id: strawberry.ID) -> Cart | None:
            found = await ledger.cart(service_of(info).store, config, str(id),
                                      owner=await _owner(info))
            return None if found is None else _cart(found)

        @strawberry.field
        async def order(self, info: Info, id: strawberry.ID) -> Order | None:
            store = service_of(info).store
            found = await ledger.order(store, str(id), owner=await _owner(info))
            if found is None:
                return None
            return _order(found, await _work(info, found["work_id"]))

        @strawberry.field
        async def orders(self, info: Info, first: int = 50) -> list[Order]:
            first = max(1, min(first, 500))
            rows = await ledger.orders_of(service_of(info).store, await _owner(info),
                                       first=first)
            return [_order(r) for r in rows]

    @strawberry.type
    class OrdersMutation:
        @strawberry.mutation
        async def create_cart(self, info: Info) -> Cart:
            store = service_of(info).store
            cart_id = await ledger.create_cart(store, _name(info))
            found = await ledger.cart(store, config, cart_id)
            assert found is not None
            return _cart(found)

        @strawberry.mutation
        async def set_cart_line(self, info: Info, cart: strawberry.ID, sku: str,
                                quantity: int) -> CartResult:
            store = service_of(info).store
            if await ledger.cart(store, config, str(cart), owner=await _owner(info)) is None:
                return NotFound(message=f"no cart {str(cart)!r}", field="cart")
            try:
                found = await ledger.set_line(store, config, str(cart), sku, quantity)
            except OrderInputError as exc:
                return InvalidInput(message=str(exc), field=str(exc).split(":")[0])
            return _cart(found)

        @strawberry.mutation
        async def place_order(self, info: Info, cart: strawberry.ID, email: str,
                              payment_method: str) -> OrderResult:
            store = service_of(info).store
            owner = _name(info)  # a principal orders from its own carts only
            data = {"cart": str(cart), "owner": owner, "email": email,
                    "payment_method": payment_method}
            try:
                check_order(config, data)
            except OrderInputError as exc:
                return InvalidInput(message=str(exc), field=_field(exc))
            found = await ledger.cart(store, config, str(cart),
                                      owner=owner if context_of(info).principal else None)
            if found is None:
                return NotFound(message=f"no cart {str(cart)!r}", field="cart")
            try:
                ledger.check_cart(found)
            except OrderStateError as exc:
                return WrongState(message=str(exc), status="ordered")
            except OrderInputError as exc:
                return InvalidInput(message=str(exc), field="cart")
            try:
                row = await run_saga(info, "orders.place", data, wait=60)
            except ApiError as exc:
                return WrongState(message=exc.message, status=exc.status)
            placed = await ledger.order(store, row["work_id"])
            if placed is None:  # it failed before its row was made
                error = row.get("error") or {}
                return InvalidInput(message=str(error.get("message", error)), field="cart")
            return _order(placed, row)

        @strawberry.mutation
        async def refund_order(self, info: Info, order: strawberry.ID,
                               amount: int | None = None, reason: str = "") -> OrderResult:
            store = service_of(info).store
            found = await ledger.order(store, str(order))
            if found is None:
                return NotFound(message=f"no order {str(order)!r}", field="order")
            if context_of(info).principal is not None and found["owner"] != _name(info):
                await require(info, "steer", {"saga": "orders.refund"})
            try:
                ledger.check_refund(found, ledger.held_by_refunds(found), amount)
            except OrderStateError as exc:
                return WrongState(message=str(exc), status=found["status"])
            except OrderInputError as exc:
                return InvalidInput(message=str(exc), field="amount")
            data: dict[str, Any] = {"order": str(order), "reason": reason}
            if amount is not None:
                data["amount"] = amount
            try:
                row = await run_saga(info, "orders.refund", data, wait=60)
            except ApiError as exc:
                return WrongState(message=exc.message, status=exc.status)
            after = await ledger.order(store, str(order))
            assert after is not None
            return _order(after, row)

        @strawberry.mutation
        async def add_order_stock(self, info: Info, sku: str, quantity: int) -> int:
            """Stock on hand of a physical product after adding ``quantity``."""
            try:
                return await ledger.add_stock(service_of(info).store, config, sku, quantity)
            except OrderInputError as exc:
                raise ValueError(str(exc)) from None

        @strawberry.mutation
        async def add_order_keys(self, info: Info, sku: str, codes: list[str]) -> int:
            """Free keys of a digital product after adding ``codes`` to its pool."""
            try:
                return await ledger.add_keys(service_of(info).store, config, sku, codes)
            except OrderInputError as exc:
                raise ValueError(str(exc)) from None

    return ApiPart(name="orders", query=OrdersQuery, mutation=OrdersMutation,
                   actions={"products": "read", "cart": "read", "order": "read",
                            "orders": "read", "createCart": "write",
                            "setCartLine": "write", "placeOrder": "write",
                            "refundOrder": "write"})


def _field(exc: Exception) -> str:
    return str(exc).split(":", 1)[0].split("[", 1)[0].split(".", 1)[0]


async def _work(info: Info, work_id: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = await context_of(info).works.load(work_id)
    if found is None:
        return None
    from engine.store.aggregates import plain_row

    return plain_row(found)
