"""Orders run as sagas: a cart, placing an order, reserving stock (and keys of digital
goods from a pool), charging through a payment provider in the shape of Stripe's
PaymentIntents with an idempotency key per work and stage, issuing what was bought,
confirming by a hook; refunded as the compensation when it fails after the charge, and
refunds on request, whole or in part.

See :mod:`.app` for loading it, :mod:`.config` for its ``[orders]`` section,
:mod:`.sagas` for the sagas and :mod:`.api` for its GraphQL fields.
"""

from __future__ import annotations

from .app import app, orders_app
from .config import OrdersConfig, Product, ProviderSpec, parse
from .errors import (
    OrderConfigError,
    OrderError,
    OrderInputError,
    OrderStateError,
    OutOfStockError,
    PaymentDeclined,
    ProviderError,
)
from .ledger import add_keys, add_stock, cart, create_cart, order, orders_of, set_line, stock
from .provider import PaymentProvider
from .sagas import check_order, order_sagas

__all__ = ["OrderConfigError", "OrderError", "OrderInputError", "OrderStateError",
           "OrdersConfig", "OutOfStockError", "PaymentDeclined", "PaymentProvider", "Product",
           "ProviderError", "ProviderSpec", "add_keys", "add_stock", "app", "cart",
           "check_order", "create_cart", "order", "order_sagas", "orders_app", "orders_of",
           "parse", "set_line", "stock"]
