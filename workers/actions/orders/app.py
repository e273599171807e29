"""The orders pack as a :class:`workers.node.WorkerApp`.

Load it with ``stepsaga serve --app workers.actions.orders:app --config stepsaga.toml``
(or ``stepsaga worker``); its ``[orders]`` section is documented in
:mod:`workers.actions.orders.config`. Its carts, stock, key pool and orders are rows
of the store the node runs on (migration 0016). From Python::

    app = orders_app(config=parse({...}))
    key = Secrets(bytes.fromhex(KEY_HEX))       # the payment method is a secret
    async with SqlStore.open(url) as store, Runtime(app.sagas, store=store,
                                                    secrets=key) as rt:
        cart = await create_cart(store, "alice")
        await set_line(store, config, cart, "tee", 2)
        result = await rt.run("orders.place", {"cart": cart, "owner": "alice",
                                               "email": "a@example.com",
                                               "payment_method": "pm_card_visa"})
        await rt.run("orders.refund", {"order": result.work_id, "amount": 500})

Through the API (see :mod:`graphql_api.packs.orders`): ``createCart``,
``setCartLine``, ``placeOrder``, ``refundOrder``, ``cart``, ``order``, ``orders``,
``products``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workers.node import ApiRef, WorkerApp

from .config import OrdersConfig, parse
from .provider import PaymentProvider
from .sagas import Hook, order_sagas

__all__ = ["app", "orders_app"]


def orders_app(settings: Mapping[str, Any] | None = None, *,
               config: OrdersConfig | None = None, provider: PaymentProvider | None = None,
               ship: Hook | None = None, confirm: Hook | None = None) -> WorkerApp:
    """The pack's sagas and API part, from ``config`` or the ``orders`` section of
    ``settings`` (what :func:`graphql_api.config.load` returns); ``ship`` and
    ``confirm`` in place of the config's hooks (each called with the order, a dict)."""
    if config is None:
        config = parse((settings or {}).get("orders"))
    return WorkerApp(sagas=order_sagas(config, provider=provider, ship=ship,
                                       confirm=confirm),
                     api=[ApiRef("graphql_api.packs.orders:orders_part", (config,))])


def app(settings: Mapping[str, Any] | None = None) -> WorkerApp:
    """What ``--app workers.actions.orders:app`` loads (with the config's settings)."""
    return orders_app(settings)
