"""The ``[orders]`` section: the payment provider, the products (inline or from a
catalog file) and the hooks, checked as a whole.

Every error names the key at fault (``orders.products.tee.price``) and what was
expected, before anything is stored or charged. The section, as TOML::

    [orders]
    currency = "usd"                  # the products' currency unless they name one
    catalog = ""                      # a TOML file of [products.<sku>] tables, read at
                                      # start, besides those below (a sku in both: refused)
    ship = ""                         # "module:function", called with the order (a dict:
                                      # order_id, owner, email, lines (the physical ones),
                                      # amount, currency, idempotency_key) to ship its
                                      # physical goods (awaited if it is a coroutine); what
                                      # it returns (JSON) is the order's "shipment"; when it
                                      # raises (after its retries) the order fails and is
                                      # refunded
    confirm = ""                      # "module:function", called with the order, its
                                      # keys and shipment once it is paid and issued, to
                                      # tell the customer (the messaging pack's sender,
                                      # say); when it fails for good the order is undone
                                      # and refunded
    confirm_saga = ""                 # or a saga run as the order's last stage (not both):
                                      # the messaging pack's "messaging.send", given
                                      # {channel, template, to: the order's email,
                                      # context: the order as the hook gets it}; it must
                                      # be on the same nodes (--app
                                      # workers.actions.orders:app,workers.actions.
                                      # messaging:app)
    confirm_channel = "email"         # the channel and template of that message
    confirm_template = "order_confirmed"
    max_quantity = 100                # the most of one product a cart line may hold

    [orders.provider]                 # an HTTP API in the shape of Stripe's
                                      # PaymentIntents and Refunds (POST /v1/payment_intents,
                                      # POST /v1/refunds, form-encoded, Bearer key,
                                      # Idempotency-Key header)
    url = "https://api.stripe.com"
    key = ""                          # the secret key, or:
    key_file = ""                     # a file holding it (first line)
    timeout = 20.0                    # seconds a request may take

    [orders.products.tee]             # the sku: letters, digits, '_', '.', '-'
    name = "T-shirt"
    price = 1500                      # a whole number of the currency's smallest unit
    currency = "usd"                  # optional: the section's currency
    kind = "physical"                 # physical: stock on hand; digital: keys from a pool
    stock = 0                         # physical: the stock a store starts with (added
                                      # once, when the store has no stock for the sku)

Keys of digital goods are added to the pool with :func:`workers.actions.orders.add_keys`
(or the API's ``addOrderKeys``), stock with :func:`workers.actions.orders.add_stock`.

>>> cfg = parse({"provider": {"url": "http://127.0.0.1:9", "key": "sk_test"},
...              "products": {"tee": {"name": "T-shirt", "price": 1500}}})
>>> cfg.products["tee"].kind, cfg.products["tee"].currency
('physical', 'usd')
>>> parse({"products": {"tee": {"name": "T", "price": -1}}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
workers.actions.orders.errors.OrderConfigError: orders.products.tee.price: expected a ...
"""

from __future__ import annotations

import importlib
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import OrderConfigError

__all__ = ["OrdersConfig", "Product", "ProviderSpec", "hook", "parse"]

KINDS = ("physical", "digital")
SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CURRENCY = re.compile(r"^[a-z]{3}$")
_HOOK = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_MAX_PRICE = 10**12  # what fits a provider's amount, and then some


@dataclass(frozen=True, slots=True, kw_only=True)
class Product:
    sku: str
    name: str
    price: int
    currency: str
    kind: str = "physical"
    stock: int = 0


_DEFAULT_URL = "https://api.stripe.com"
_DEFAULT_TIMEOUT = 20.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderSpec:
    url: str = _DEFAULT_URL
    key: str = ""
    timeout: float = _DEFAULT_TIMEOUT


@dataclass(frozen=True, slots=True, kw_only=True)
class OrdersConfig:
    """The checked ``[orders]`` section (see the module docstring)."""

    provider: ProviderSpec = field(default_factory=ProviderSpec)
    products: Mapping[str, Product] = field(default_factory=dict)
    currency: str = "usd"
    ship: str = ""
    confirm: str = ""
    confirm_saga: str = ""
    confirm_channel: str = "email"
    confirm_template: str = "order_confirmed"
    max_quantity: int = 100

    def product(self, sku: object, where: str = "sku") -> Product:
        """The product of ``sku``; :class:`OrderInputError` naming ``where`` if unknown."""
        from .errors import OrderInputError

        if not isinstance(sku, str) or sku not in self.products:
            raise OrderInputError(f"{where}: unknown product {sku!r:.80} (the products "
                                  f"are: {', '.join(sorted(self.products)) or 'none'})")
        return self.products[sku]


def hook(spec: str, where: str) -> Callable[..., Any] | None:
    """The function ``module:attribute`` names, imported (None for ``""``)."""
    if not spec:
        return None
    module, _, attribute = spec.partition(":")
    try:
        found = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise OrderConfigError(f"{where}: {spec!r} cannot be imported: {exc}") from None
    if not callable(found):
        raise OrderConfigError(f"{where}: {spec!r} is not callable")
    return found  # type: ignore[no-any-return]


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise OrderConfigError(f"{where}: expected a table, got {value!r:.60}")
    return dict(value)


def _text(data: dict[str, Any], key: str, where: str, default: str = "") -> str:
    value = data.pop(key, default)
    if not isinstance(value, str) or any(ord(c) < 32 for c in value):
        raise OrderConfigError(f"{where}.{key}: expected a string without control "
                               f"characters, got {value!r:.60}")
    return value


def _whole(data: dict[str, Any], key: str, where: str, default: int, low: int = 0,
           high: int = _MAX_PRICE) -> int:
    value = data.pop(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise OrderConfigError(f"{where}.{key}: expected a whole number from {low} to "
                               f"{high}, got {value!r:.60}")
    return value


def _done(data: dict[str, Any], where: str, allowed: str) -> None:
    if data:
        raise OrderConfigError(f"{where}.{sorted(data)[0]} is not a setting; {where} has "
                               f"{allowed}")


def _currency(value: str, where: str) -> str:
    if not _CURRENCY.match(value):
        raise OrderConfigError(f"{where}: expected a three-letter ISO currency code in "
                               f"lower case (usd, eur), got {value!r:.20}")
    return value


def _hook_name(data: dict[str, Any], key: str) -> str:
    value = _text(data, key, "orders")
    if value and not _HOOK.match(value):
        raise OrderConfigError(f"orders.{key}: expected module:function, got {value!r:.80}")
    return value


def _product(sku: Any, value: Any, where: str, currency: str) -> Product:
    if not isinstance(sku, str) or not SKU.match(sku):
        raise OrderConfigError(f"{where}: the sku {sku!r:.60} must be 1 to 64 letters, "
                               "digits, '_', '.' or '-', starting with a letter or digit")
    data = _table(value, where)
    name = _text(data, "name", where) or sku
    price = _whole(data, "price", where, -1, 0)
    kind = data.pop("kind", "physical")
    if kind not in KINDS:
        raise OrderConfigError(f"{where}.kind: expected one of {', '.join(KINDS)}, "
                               f"got {kind!r:.40}")
    own = _currency(_text(data, "currency", where, currency), f"{where}.currency")
    stock = _whole(data, "stock", where, 0, 0, 10**9)
    if kind == "digital" and stock:
        raise OrderConfigError(f"{where}.stock: a digital product's stock is its pool of "
                               "keys (add_keys), not a number")
    _done(data, where, "name, price, currency, kind and stock")
    return Product(sku=sku, name=name, price=price, currency=own, kind=str(kind),
                   stock=stock)


def _provider(value: Any) -> ProviderSpec:
    where = "orders.provider"
    data = _table(value, where)
    url = _text(data, "url", where, _DEFAULT_URL).rstrip("/")
    if not re.match(r"^https?://[^/\s]+", url):
        raise OrderConfigError(f"{where}.url: expected http(s)://host[:port], got {url!r:.80}")
    key = _text(data, "key", where)
    key_file = _text(data, "key_file", where)
    if key and key_file:
        raise OrderConfigError(f"{where}: give key or key_file, not both")
    if key_file:
        try:
            key = Path(key_file).read_text().splitlines()[0].strip()
        except (OSError, IndexError) as exc:
            raise OrderConfigError(f"{where}.key_file: {key_file!r} cannot be read: "
                                   f"{exc or 'it is empty'}") from None
    timeout = data.pop("timeout", _DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or \
            not math.isfinite(timeout) or timeout <= 0:
        raise OrderConfigError(f"{where}.timeout: expected a number of seconds > 0, "
                               f"got {timeout!r:.40}")
    _done(data, where, "url, key, key_file and timeout")
    return ProviderSpec(url=url, key=key, timeout=float(timeout))


def _catalog(path: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise OrderConfigError(f"orders.catalog: {path!r} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise OrderConfigError(f"orders.catalog: {path!r} is not valid TOML: {exc}") from None
    extra = set(data) - {"products"}
    if extra:
        raise OrderConfigError(f"orders.catalog: {path!r} holds {sorted(extra)[0]!r}; a "
                               "catalog holds [products.<sku>] tables only")
    return _table(data.get("products", {}), f"orders.catalog ({path}).products")


def parse(value: Any) -> OrdersConfig:
    """The ``[orders]`` section (a dict, as TOML reads it; None: an empty one) checked;
    :class:`OrderConfigError` names the key at fault."""
    data = _table({} if value is None else value, "orders")
    currency = _currency(_text(data, "currency", "orders", "usd"), "orders.currency")
    provider = _provider(data.pop("provider", {}))
    products: dict[str, Product] = {}
    catalog = _text(data, "catalog", "orders")
    sources: list[tuple[str, dict[str, Any]]] = []
    if catalog:
        sources.append((f"orders.catalog ({catalog}).products", _catalog(catalog)))
    sources.append(("orders.products", _table(data.pop("products", {}), "orders.products")))
    for where, table in sources:
        for sku, spec in table.items():
            if sku in products:
                raise OrderConfigError(f"{where}.{sku}: the product is in the catalog file "
                                       "and in [orders.products]; give it once")
            products[sku] = _product(sku, spec, f"{where}.{sku}", currency)
    ship = _hook_name(data, "ship")
    confirm = _hook_name(data, "confirm")
    confirm_saga = _text(data, "confirm_saga", "orders")
    if confirm and confirm_saga:
        raise OrderConfigError("orders: give confirm or confirm_saga, not both")
    channel = _text(data, "confirm_channel", "orders", "email")
    template = _text(data, "confirm_template", "orders", "order_confirmed")
    for key, value in (("confirm_channel", channel), ("confirm_template", template)):
        if not value:
            raise OrderConfigError(f"orders.{key}: expected a name, got an empty string")
    max_quantity = _whole(data, "max_quantity", "orders", 100, 1, 10**6)
    _done(data, "orders", "currency, catalog, ship, confirm, confirm_saga, confirm_channel, "
                          "confirm_template, max_quantity, provider and products")
    return OrdersConfig(provider=provider, products=products, currency=currency, ship=ship,
                        confirm=confirm, confirm_saga=confirm_saga, confirm_channel=channel,
                        confirm_template=template, max_quantity=max_quantity)
