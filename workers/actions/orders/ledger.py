"""The orders pack's rows in the store (the ``order_*`` tables and ``orders`` of
:mod:`engine.store.schema`): carts, stock, the key pool, orders, reservations and
refunds. Each change is one transaction (:meth:`engine.store.SqlStore.transaction`,
the same SQL on SQLite and PostgreSQL) and each is safe to repeat: a stage that runs
again after a crash finds what it did and does nothing twice.

Stock and keys are taken in the transaction that checks them: physical stock by a
conditional decrement (``on_hand >= quantity``), keys by marking free rows with the
order (skipping rows another transaction holds, on PostgreSQL), so two orders never
get the same key and stock never goes below zero.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, overload

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from engine.store import SqlStore
from engine.store.schema import (
    order_cart_lines,
    order_carts,
    order_keys,
    order_refunds,
    order_reservations,
    order_stock,
    orders,
)

from .config import OrdersConfig, Product
from .errors import OrderInputError, OrderStateError, OutOfStockError

__all__ = ["HELD", "REFUNDABLE", "add_keys", "add_stock", "cart", "cart_lines", "check_cart",
           "check_refund", "claim_refund", "create_cart", "drop_refund",
           "held_by_refunds", "issue_keys", "order", "order_row", "orders_of", "place",
           "priced_line", "refunds_of", "release", "reserve", "revoke_keys", "seed_stock",
           "set_line", "set_status", "settle_refund", "stock", "totals", "unplace"]

# an order's statuses: placed (reserved, not paid), paid, completed, refunding (a failure
# after the charge: its refund is under way), failed, refunded, partially_refunded
REFUNDABLE = ("completed", "partially_refunded")
HELD = ("pending", "succeeded")  # the refunds that hold an amount of the charge


def _now() -> float:
    return time.time()


# ------------------------------------------------------------------ stock and keys


def seed_stock(conn: sa.Connection, products: Iterable[Product]) -> None:
    """A stock row for each physical product the store has none for (its ``stock``);
    ``ON CONFLICT DO NOTHING`` (both databases): two nodes seeding at once add it once."""
    have = {r[0] for r in conn.execute(sa.select(order_stock.c.sku))}
    rows = [{"sku": p.sku, "on_hand": p.stock} for p in products
            if p.kind == "physical" and p.sku not in have]
    if rows:
        insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)
        conn.execute(insert(order_stock).on_conflict_do_nothing(index_elements=["sku"]),
                     rows)


async def add_stock(store: SqlStore, config: OrdersConfig, sku: str, quantity: int) -> int:
    """Add ``quantity`` (negative: take away, never below zero) to a physical product's
    stock; the stock on hand after."""
    product = config.product(sku)
    if product.kind != "physical":
        raise OrderInputError(f"sku: {sku!r} is a digital product; its stock is its keys "
                              "(add_keys)")
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise OrderInputError(f"quantity: expected a whole number, got {quantity!r:.40}")

    def run(conn: sa.Connection) -> int:
        seed_stock(conn, [product])
        now = conn.execute(sa.select(order_stock.c.on_hand).where(
            order_stock.c.sku == sku)).scalar_one()
        if now + quantity < 0:
            raise OrderInputError(f"quantity: {sku!r} has {now} on hand; cannot take "
                                  f"{-quantity} away")
        conn.execute(sa.update(order_stock).where(order_stock.c.sku == sku).values(
            on_hand=order_stock.c.on_hand + quantity))
        return int(now + quantity)

    return await store.transaction(run)


async def add_keys(store: SqlStore, config: OrdersConfig, sku: str,
                   codes: Sequence[str]) -> int:
    """Add keys to a digital product's pool (a code already there is refused, and then
    none is added); how many are free after."""
    product = config.product(sku)
    if product.kind != "digital":
        raise OrderInputError(f"sku: {sku!r} is a physical product; it has stock, not keys")
    if isinstance(codes, str) or not all(isinstance(c, str) and c.strip() for c in codes):
        raise OrderInputError("codes: expected a list of non-empty strings")
    if len(set(codes)) != len(codes):
        raise OrderInputError("codes: a code is given twice")

    def run(conn: sa.Connection) -> int:
        taken = {r[0] for r in conn.execute(sa.select(order_keys.c.code).where(
            order_keys.c.sku == sku, order_keys.c.code.in_(list(codes))))}
        if taken:
            raise OrderInputError(f"codes: {sorted(taken)[0]!r} is in the pool of {sku!r} "
                                  "already")
        added = _now()
        if codes:
            conn.execute(sa.insert(order_keys), [{"sku": sku, "code": c, "added_at": added}
                                                 for c in codes])
        return _free(conn, sku)

    return await store.transaction(run)


def _free(conn: sa.Connection, sku: str) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(order_keys).where(
        order_keys.c.sku == sku, order_keys.c.order_id.is_(None))).scalar_one())


async def stock(store: SqlStore, config: OrdersConfig) -> dict[str, int]:
    """What can be ordered of each product: stock on hand, or free keys."""
    async with store.reader.connect() as conn:
        on_hand: dict[str, int] = dict((await conn.execute(sa.select(order_stock.c.sku,
                                                     order_stock.c.on_hand))).all())
        free: dict[str, int] = dict((await conn.execute(
            sa.select(order_keys.c.sku, sa.func.count()).where(
                order_keys.c.order_id.is_(None)).group_by(order_keys.c.sku))).all())
    return {sku: int(on_hand.get(sku, p.stock) if p.kind == "physical" else free.get(sku, 0))
            for sku, p in config.products.items()}


def reserve(conn: sa.Connection, order_id: str, lines: Sequence[Mapping[str, Any]],
            config: OrdersConfig) -> list[dict[str, Any]]:
    """Take the stock and keys of an order's lines (once: a repeat finds its
    reservations); :class:`OutOfStockError` takes nothing."""
    seed_stock(conn, config.products.values())
    held = {r.sku for r in conn.execute(sa.select(order_reservations.c.sku).where(
        order_reservations.c.order_id == order_id))}
    for line in lines:
        sku, quantity = line["sku"], int(line["quantity"])
        if sku in held:
            continue
        if config.product(sku).kind == "physical":
            took = conn.execute(sa.update(order_stock).where(
                order_stock.c.sku == sku, order_stock.c.on_hand >= quantity).values(
                on_hand=order_stock.c.on_hand - quantity)).rowcount
            if took != 1:
                left = conn.execute(sa.select(order_stock.c.on_hand).where(
                    order_stock.c.sku == sku)).scalar()
                raise OutOfStockError(f"{sku!r}: {quantity} ordered, {left or 0} on hand")
        else:
            free = [r[0] for r in conn.execute(
                sa.select(order_keys.c.key_id).where(
                    order_keys.c.sku == sku, order_keys.c.order_id.is_(None))
                .order_by(order_keys.c.key_id).limit(quantity)
                .with_for_update(skip_locked=True))]
            took = conn.execute(sa.update(order_keys).where(
                order_keys.c.key_id.in_(free), order_keys.c.order_id.is_(None)).values(
                order_id=order_id)).rowcount if free else 0
            if took != quantity:
                raise OutOfStockError(f"{sku!r}: {quantity} keys ordered, {len(free)} free")
        conn.execute(sa.insert(order_reservations).values(order_id=order_id, sku=sku,
                                                          quantity=quantity))
    return [_plain(r) for r in conn.execute(sa.select(
        order_reservations.c.sku, order_reservations.c.quantity).where(
        order_reservations.c.order_id == order_id).order_by(order_reservations.c.sku))]


def release(conn: sa.Connection, order_id: str, config: OrdersConfig) -> None:
    """Give back what an order reserved and has not been given (once)."""
    for sku, quantity in conn.execute(sa.select(
            order_reservations.c.sku, order_reservations.c.quantity).where(
            order_reservations.c.order_id == order_id)).all():
        product = config.products.get(sku)
        if product is not None and product.kind == "physical":
            conn.execute(sa.update(order_stock).where(order_stock.c.sku == sku).values(
                on_hand=order_stock.c.on_hand + quantity))
        else:
            conn.execute(sa.update(order_keys).where(
                order_keys.c.order_id == order_id, order_keys.c.sku == sku,
                order_keys.c.issued_at.is_(None)).values(order_id=None))
    conn.execute(sa.delete(order_reservations).where(
        order_reservations.c.order_id == order_id))


def issue_keys(conn: sa.Connection, order_id: str) -> dict[str, list[str]]:
    """The keys an order reserved, marked given (once: a repeat gives the same keys),
    by sku."""
    conn.execute(sa.update(order_keys).where(order_keys.c.order_id == order_id,
                                             order_keys.c.issued_at.is_(None)).values(
        issued_at=_now()))
    found: dict[str, list[str]] = {}
    for sku, code in conn.execute(sa.select(order_keys.c.sku, order_keys.c.code).where(
            order_keys.c.order_id == order_id, order_keys.c.revoked_at.is_(None))
            .order_by(order_keys.c.key_id)):
        found.setdefault(sku, []).append(code)
    return found


def revoke_keys(conn: sa.Connection, order_id: str) -> int:
    """The keys given to an order taken back: they stay the order's, never given again."""
    return int(conn.execute(sa.update(order_keys).where(
        order_keys.c.order_id == order_id, order_keys.c.issued_at.is_not(None),
        order_keys.c.revoked_at.is_(None)).values(revoked_at=_now())).rowcount)


# ------------------------------------------------------------------ carts


def _quantity(quantity: object, config: OrdersConfig, low: int = 0) -> int:
    if isinstance(quantity, bool) or not isinstance(quantity, int) or \
            not low <= quantity <= config.max_quantity:
        raise OrderInputError(f"quantity: expected a whole number from {low} to "
                              f"{config.max_quantity} (orders.max_quantity), got "
                              f"{quantity!r:.40}")
    return quantity


async def create_cart(store: SqlStore, owner: str) -> str:
    """A new empty cart of ``owner`` (a principal's name); its id."""
    cart_id = "cart_" + uuid.uuid4().hex
    now = _now()
    await store.transaction(lambda conn: conn.execute(sa.insert(order_carts).values(
        cart_id=cart_id, owner=owner, created_at=now, updated_at=now)))
    return cart_id


def _open_cart(conn: sa.Connection, cart_id: object, owner: str | None) -> Any:
    row = conn.execute(sa.select(order_carts).where(
        order_carts.c.cart_id == str(cart_id))).first() if isinstance(cart_id, str) else None
    if row is None or (owner is not None and row.owner != owner):
        raise OrderInputError(f"cart: no cart {cart_id!r:.60}"
                              + ("" if owner is None else f" of {owner!r}"))
    return row


async def set_line(store: SqlStore, config: OrdersConfig, cart_id: str, sku: str,
                   quantity: int, *, owner: str | None = None) -> dict[str, Any]:
    """Set how many of ``sku`` the cart holds (0: none); the cart after. A cart that
    became an order is not changed."""
    config.product(sku)
    _quantity(quantity, config)

    def run(conn: sa.Connection) -> None:
        row = _open_cart(conn, cart_id, owner)
        if row.order_id is not None:
            raise OrderInputError(f"cart: {cart_id!r} became order {row.order_id!r}; it "
                                  "cannot change (make a new cart)")
        conn.execute(sa.delete(order_cart_lines).where(order_cart_lines.c.cart_id == cart_id,
                                                       order_cart_lines.c.sku == sku))
        if quantity:
            conn.execute(sa.insert(order_cart_lines).values(cart_id=cart_id, sku=sku,
                                                            quantity=quantity))
        conn.execute(sa.update(order_carts).where(order_carts.c.cart_id == cart_id).values(
            updated_at=_now()))

    await store.transaction(run)
    found = await cart(store, config, cart_id)
    assert found is not None
    return found


async def cart(store: SqlStore, config: OrdersConfig, cart_id: str, *,
               owner: str | None = None) -> dict[str, Any] | None:
    """A cart with its priced lines and total, or None (or not ``owner``'s)."""
    async with store.reader.connect() as conn:
        row = (await conn.execute(sa.select(order_carts).where(
            order_carts.c.cart_id == cart_id))).first()
        if row is None or (owner is not None and row.owner != owner):
            return None
        lines = (await conn.execute(sa.select(order_cart_lines).where(
            order_cart_lines.c.cart_id == cart_id).order_by(order_cart_lines.c.sku))).all()
    priced = [priced_line(config, line.sku, line.quantity) for line in lines]
    return {"cart_id": row.cart_id, "owner": row.owner, "order_id": row.order_id,
            "lines": priced, "amount": sum(p["price"] * p["quantity"] for p in priced),
            "currency": priced[0]["currency"] if priced else config.currency,
            "created_at": row.created_at, "updated_at": row.updated_at}


def priced_line(config: OrdersConfig, sku: str, quantity: int) -> dict[str, Any]:
    product = config.products.get(sku)
    if product is None:  # gone from the config since it was put in the cart
        return {"sku": sku, "name": sku, "quantity": quantity, "price": 0,
                "currency": config.currency, "kind": "gone"}
    return {"sku": sku, "name": product.name, "quantity": quantity, "price": product.price,
            "currency": product.currency, "kind": product.kind}


def cart_lines(conn: sa.Connection, config: OrdersConfig, cart_id: object,
               owner: str | None) -> list[dict[str, Any]]:
    """A cart's lines priced, checked as :func:`check_cart` does."""
    row = _open_cart(conn, cart_id, owner)
    lines = [priced_line(config, line.sku, line.quantity) for line in conn.execute(
        sa.select(order_cart_lines).where(order_cart_lines.c.cart_id == row.cart_id)
        .order_by(order_cart_lines.c.sku))]
    check_cart({"cart_id": row.cart_id, "order_id": row.order_id, "lines": lines})
    return lines


def check_cart(found: Mapping[str, Any]) -> tuple[int, str]:
    """A cart (as :func:`cart` gives it) that can be ordered: its amount and currency.
    :class:`OrderStateError` when it became an order already."""
    if found["order_id"] is not None:
        raise OrderStateError(f"cart: {found['cart_id']!r} became order "
                              f"{found['order_id']!r}; it cannot be ordered again")
    return totals(found["lines"], "cart")


def totals(lines: Sequence[Mapping[str, Any]], where: str) -> tuple[int, str]:
    """The amount and currency of priced lines; :class:`OrderInputError` naming
    ``where`` for none, a product no longer sold or lines in several currencies."""
    if not lines:
        raise OrderInputError(f"{where}: the order holds nothing")
    gone = [line["sku"] for line in lines if line["kind"] == "gone"]
    if gone:
        raise OrderInputError(f"{where}: {gone[0]!r} is no longer sold (not in the "
                              "catalog); take it out")
    currencies = sorted({line["currency"] for line in lines})
    if len(currencies) > 1:
        raise OrderInputError(f"{where}: an order is paid in one currency; these lines are "
                              f"in {', '.join(currencies)}")
    return sum(line["price"] * line["quantity"] for line in lines), currencies[0]


# ------------------------------------------------------------------ orders


def place(conn: sa.Connection, *, order_id: str, work_id: str, cart_id: str | None,
          owner: str, email: str, lines: list[dict[str, Any]], amount: int,
          currency: str) -> dict[str, Any]:
    """The order's row made (once) and its cart marked as ordered."""
    existing = conn.execute(sa.select(orders).where(orders.c.order_id == order_id)).first()
    if existing is None:
        now = _now()
        if cart_id is not None:
            took = conn.execute(sa.update(order_carts).where(
                order_carts.c.cart_id == cart_id, order_carts.c.order_id.is_(None)).values(
                order_id=order_id, updated_at=now)).rowcount
            if took != 1:
                raise OrderStateError(f"cart: {cart_id!r} was ordered already")
        conn.execute(sa.insert(orders).values(
            order_id=order_id, work_id=work_id, cart_id=cart_id, owner=owner, email=email,
            status="placed", lines=json.dumps(lines), amount=amount, currency=currency,
            refunded=0, created_at=now, updated_at=now))
    return order_row(conn, order_id)


def unplace(conn: sa.Connection, order_id: str, config: OrdersConfig) -> None:
    """A failed order: what it reserved given back, its status ``failed``, its cart
    open again (to try once more)."""
    release(conn, order_id, config)
    set_status(conn, order_id, "failed")
    conn.execute(sa.update(order_carts).where(order_carts.c.order_id == order_id).values(
        order_id=None, updated_at=_now()))


def set_status(conn: sa.Connection, order_id: str, status: str, **values: Any) -> None:
    conn.execute(sa.update(orders).where(orders.c.order_id == order_id).values(
        status=status, updated_at=_now(), **values))


@overload
def order_row(conn: sa.Connection, order_id: str) -> dict[str, Any]: ...
@overload
def order_row(conn: sa.Connection, order_id: str, *, missing_ok: bool
              ) -> dict[str, Any] | None: ...
def order_row(conn: sa.Connection, order_id: str, *, missing_ok: bool = False
              ) -> dict[str, Any] | None:
    """An order's row in a transaction (None if there is none and ``missing_ok``)."""
    row = conn.execute(sa.select(orders).where(orders.c.order_id == order_id)).first()
    if row is None:
        if missing_ok:
            return None
        raise OrderInputError(f"order: no order {order_id!r:.60}")
    return _shown(row)


def _plain(row: Any) -> dict[str, Any]:
    """A row as a plain dict (SQLAlchemy's column names are a subclass of str, which the
    engine's JSON check refuses as keys)."""
    return {str(k): v for k, v in row._mapping.items()}


def _shown(row: Any) -> dict[str, Any]:
    found = _plain(row)
    return {**found, "lines": json.loads(found["lines"])}


async def order(store: SqlStore, order_id: str, *, owner: str | None = None
                ) -> dict[str, Any] | None:
    """An order's row with its keys and refunds, or None (or not ``owner``'s)."""
    async with store.reader.connect() as conn:
        row = (await conn.execute(sa.select(orders).where(
            orders.c.order_id == order_id))).first()
        if row is None or (owner is not None and row.owner != owner):
            return None
        keys = (await conn.execute(sa.select(order_keys.c.sku, order_keys.c.code).where(
            order_keys.c.order_id == order_id, order_keys.c.issued_at.is_not(None),
            order_keys.c.revoked_at.is_(None)).order_by(order_keys.c.key_id))).all()
    found = _shown(row)
    found["keys"] = [{"sku": k.sku, "code": k.code} for k in keys]
    found["refunds"] = await refunds_of(store, order_id)
    return found


async def orders_of(store: SqlStore, owner: str | None, *, first: int = 50
                    ) -> list[dict[str, Any]]:
    """The newest orders (of ``owner`` when given)."""
    query = sa.select(orders).order_by(orders.c.created_at.desc()).limit(first)
    if owner is not None:
        query = query.where(orders.c.owner == owner)
    async with store.reader.connect() as conn:
        return [_shown(r) for r in (await conn.execute(query)).all()]


# ------------------------------------------------------------------ refunds


def claim_refund(conn: sa.Connection, *, refund_id: str, order_id: object,
                 amount: object, reason: str) -> dict[str, Any]:
    """Hold ``amount`` (None: all that is left) of an order's charge for a refund (once):
    the refunds pending or done never exceed the charge."""
    if not isinstance(order_id, str):
        raise OrderInputError(f"order: expected an order id, got {order_id!r:.60}")
    existing = conn.execute(sa.select(order_refunds).where(
        order_refunds.c.refund_id == refund_id)).first()
    if existing is not None:
        return _plain(existing)
    row = conn.execute(sa.select(orders).where(orders.c.order_id == order_id)
                       .with_for_update()).first()
    if row is None:
        raise OrderInputError(f"order: no order {order_id!r:.60}")
    held = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(order_refunds.c.amount), 0))
                        .where(order_refunds.c.order_id == order_id,
                               order_refunds.c.status.in_(HELD))).scalar_one()
    amount = check_refund(_plain(row), int(held), amount)
    now = _now()
    values = {"refund_id": refund_id, "order_id": order_id, "amount": amount,
              "status": "pending", "provider_id": None, "reason": reason,
              "created_at": now, "updated_at": now}
    conn.execute(sa.insert(order_refunds).values(**values))
    return values


def check_refund(found: Mapping[str, Any], held: int, amount: object) -> int:
    """The amount a refund of order ``found`` (a row) may take, ``held`` being what its
    refunds pending or done hold: all that is left when ``amount`` is None.
    :class:`OrderStateError` unless the order is completed, :class:`OrderInputError`
    naming ``amount`` for one that is not a whole number > 0 or exceeds what is left."""
    if found["status"] not in REFUNDABLE:
        raise OrderStateError(f"order: {found['order_id']!r} is {found['status']}; only a "
                              "completed order is refunded on request")
    left = int(found["amount"]) - held
    if amount is None:
        amount = left
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise OrderInputError(f"amount: expected a whole number > 0 of the smallest unit of "
                              f"{found['currency']}, got {amount!r:.40}")
    if amount > left:
        raise OrderInputError(f"amount: {amount} is more than is left to refund of order "
                              f"{found['order_id']!r} ({left} of {found['amount']} "
                              f"{found['currency']})")
    return amount


def held_by_refunds(found: Mapping[str, Any]) -> int:
    """What the refunds of an order (as :func:`order` gives it) hold of its charge."""
    return sum(int(r["amount"]) for r in found["refunds"] if r["status"] in HELD)


def settle_refund(conn: sa.Connection, refund_id: str, provider_id: str) -> dict[str, Any]:
    """A refund the provider made: recorded on its order (once; the order's row locked
    first on PostgreSQL, so two refunds settling at once both count)."""
    order_id = conn.execute(sa.select(order_refunds.c.order_id).where(
        order_refunds.c.refund_id == refund_id)).scalar_one()
    row = conn.execute(sa.select(orders).where(orders.c.order_id == order_id)
                       .with_for_update()).one()
    refund = conn.execute(sa.select(order_refunds).where(
        order_refunds.c.refund_id == refund_id)).one()
    if refund.status == "pending":
        conn.execute(sa.update(order_refunds).where(
            order_refunds.c.refund_id == refund_id).values(
            status="succeeded", provider_id=provider_id, updated_at=_now()))
        refunded = int(row.refunded) + int(refund.amount)
        set_status(conn, refund.order_id,
                   "refunded" if refunded >= row.amount else "partially_refunded",
                   refunded=refunded)
        if refunded >= row.amount:
            revoke_keys(conn, refund.order_id)
    return order_row(conn, refund.order_id)


def drop_refund(conn: sa.Connection, refund_id: str) -> None:
    """A refund that did not happen: its amount no longer held."""
    conn.execute(sa.update(order_refunds).where(
        order_refunds.c.refund_id == refund_id, order_refunds.c.status == "pending").values(
        status="failed", updated_at=_now()))


async def refunds_of(store: SqlStore, order_id: str) -> list[dict[str, Any]]:
    async with store.reader.connect() as conn:
        return [_plain(r) for r in (await conn.execute(
            sa.select(order_refunds).where(order_refunds.c.order_id == order_id)
            .order_by(order_refunds.c.created_at))).all()]
