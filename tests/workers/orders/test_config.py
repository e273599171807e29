"""Bad settings are refused with an error naming the key, before anything is charged;
the [orders] section of a config file reaches the app ``--app
workers.actions.orders:app`` loads, with its catalog file and hooks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from graphql_api.cli import load_app
from graphql_api.config import ConfigError, load
from graphql_api.extensions import parts_of
from workers.actions.orders import OrderConfigError, parse


def _section() -> dict[str, Any]:
    return {"provider": {"url": "http://127.0.0.1:9", "key": "sk"},
            "products": {"tee": {"name": "T-shirt", "price": 1500, "stock": 2}}}


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s["products"]["tee"].update(price=-1),
     "orders.products.tee.price: expected a whole number from 0"),
    (lambda s: s["products"]["tee"].update(price=True),
     "orders.products.tee.price: expected a whole number from 0"),
    (lambda s: s["products"]["tee"].update(kind="service"),
     "orders.products.tee.kind: expected one of physical, digital, got 'service'"),
    (lambda s: s["products"]["tee"].update(currency="US$"),
     "orders.products.tee.currency: expected a three-letter ISO currency code"),
    (lambda s: s["products"]["tee"].update(colour="red"),
     "orders.products.tee.colour is not a setting; orders.products.tee has name, price"),
    (lambda s: s["products"].update({"bad sku": {"price": 1}}),
     "orders.products.bad sku: the sku 'bad sku' must be 1 to 64 letters"),
    (lambda s: s["products"].update(key={"price": 1, "kind": "digital", "stock": 3}),
     "orders.products.key.stock: a digital product's stock is its pool of keys"),
    (lambda s: s["provider"].update(url="ftp://x"),
     "orders.provider.url: expected http(s)://host[:port], got 'ftp://x'"),
    (lambda s: s["provider"].update(timeout=0),
     "orders.provider.timeout: expected a number of seconds > 0, got 0"),
    (lambda s: s["provider"].update(key_file="/nonexistent/key"),
     "orders.provider: give key or key_file, not both"),
    (lambda s: s.update(ship="not a hook"),
     "orders.ship: expected module:function, got 'not a hook'"),
    (lambda s: s.update(confirm="a:b", confirm_saga="messaging.send"),
     "orders: give confirm or confirm_saga, not both"),
    (lambda s: s.update(confirm_saga="messaging.send", confirm_channel=""),
     "orders.confirm_channel: expected a name, got an empty string"),
    (lambda s: s.update(max_quantity=0),
     "orders.max_quantity: expected a whole number from 1 to 1000000, got 0"),
    (lambda s: s.update(currency="euro"),
     "orders.currency: expected a three-letter ISO currency code"),
    (lambda s: s.update(shipping="x"),
     "orders.shipping is not a setting; orders has currency, catalog"),
])
def test_bad_settings_are_refused_naming_the_key(change: Any, message: str) -> None:
    section = _section()
    change(section)
    with pytest.raises(OrderConfigError) as refused:
        parse(section)
    assert message in str(refused.value)


def test_a_key_file_a_catalog_and_a_hook_are_read(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("sk_from_file\n")
    (tmp_path / "catalog.toml").write_text(
        '[products.game]\nname = "Game"\nprice = 2000\nkind = "digital"\n')
    found = parse({"provider": {"url": "http://127.0.0.1:9/", "key_file":
                                str(tmp_path / "key")},
                   "catalog": str(tmp_path / "catalog.toml"),
                   "products": {"tee": {"price": 1500}}, "ship": "json:dumps"})
    assert found.provider.key == "sk_from_file" and found.provider.url == "http://127.0.0.1:9"
    assert sorted(found.products) == ["game", "tee"]
    assert found.products["game"].kind == "digital" and found.products["tee"].name == "tee"
    (tmp_path / "twice.toml").write_text('[products.tee]\nprice = 1\n')
    with pytest.raises(OrderConfigError, match=r"orders.products.tee: the product is in "
                                               "the catalog file and in"):
        parse({"catalog": str(tmp_path / "twice.toml"), "products": {"tee": {"price": 1}}})
    with pytest.raises(OrderConfigError, match=r"orders.catalog: .* holds 'other'"):
        (tmp_path / "odd.toml").write_text('[other]\nx = 1\n')
        parse({"catalog": str(tmp_path / "odd.toml")})


def test_a_hook_that_cannot_be_imported_is_named() -> None:
    from workers.actions.orders import orders_app

    with pytest.raises(OrderConfigError, match=r"orders.ship: 'nowhere_at_all:f' cannot be "
                                               "imported"):
        orders_app(config=parse({**_section(), "ship": "nowhere_at_all:f"}))


def test_the_section_of_a_config_file_reaches_the_app(tmp_path: Path) -> None:
    path = tmp_path / "stepsaga.toml"
    path.write_text('[orders]\ncurrency = "eur"\n[orders.provider]\nurl = '
                    '"http://127.0.0.1:9"\nkey = "sk"\n[orders.products.tee]\nprice = 1500\n')
    app = load_app("workers.actions.orders:app", load(path, {}))
    assert sorted(s.name for s in app.sagas) == ["orders.place", "orders.refund"]
    assert [p.name for p in parts_of(app)] == ["orders"]
    path.write_text('[orders.products.tee]\nprice = "cheap"\n')
    with pytest.raises(ConfigError, match=r"orders.products.tee.price: expected a whole"):
        load(path, {})

