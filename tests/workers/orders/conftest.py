"""The orders pack's fixtures: a payment provider on loopback (provider.py), a catalog,
and a runtime of the pack's sagas on a store (a SQLite file, or the PostgreSQL of
tests/pg.py where it matters)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from engine import Runtime
from engine.secrets import Secrets
from engine.store import SqlStore
from workers.actions.orders import OrdersConfig, orders_app, parse

from .provider import KEY, Provider, serving

# the deployment's [secrets] key: orders.place's payment method is sealed with it
SECRETS_HEX = "5e" * 32
SECRETS = Secrets(bytes.fromhex(SECRETS_HEX))
SECRETS_TOML = f'[secrets]\nkey = "{SECRETS_HEX}"\n'


@pytest.fixture
def provider() -> Iterator[Provider]:
    with serving() as found:
        yield found


def settings(provider: Provider, **extra: Any) -> dict[str, Any]:
    """An [orders] section: a T-shirt (5 on hand), a mug (2), a game (keys)."""
    return {"provider": {"url": provider.url, "key": KEY, "timeout": 5.0},
            "products": {"tee": {"name": "T-shirt", "price": 1500, "stock": 5},
                         "mug": {"name": "Mug", "price": 800, "stock": 2},
                         "game": {"name": "Game", "price": 2000, "kind": "digital"},
                         "book": {"name": "Book", "price": 900, "currency": "eur",
                                  "stock": 3}},
            **extra}


@asynccontextmanager
async def running(url: str, config: OrdersConfig, **hooks: Any
                  ) -> AsyncIterator[tuple[Runtime, SqlStore]]:
    async with SqlStore.open(url) as store, Runtime(
            orders_app(config=config, **hooks).sagas, store=store,
            secrets=SECRETS) as runtime:
        yield runtime, store


def config_of(provider: Provider, **extra: Any) -> OrdersConfig:
    return parse(settings(provider, **extra))


def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/store.sqlite"
