"""Two worker processes on one PostgreSQL store share a pool of keys: orders racing for
the last keys get each key once, and those left without one are never charged."""

from __future__ import annotations

from pathlib import Path

import anyio

from engine import Runtime
from engine.store import SqlStore
from workers.actions.orders import add_keys, order, orders_app, stock

from .conftest import SECRETS, SECRETS_TOML, config_of
from .provider import KEY, Provider
from .test_crash import Child


async def test_two_nodes_give_each_key_once(postgres_url: str, provider: Provider,
                                            tmp_path: Path) -> None:
    config_file = tmp_path / "stepsaga.toml"
    config_file.write_text(SECRETS_TOML +
                           f'[orders.provider]\nurl = "{provider.url}"\nkey = "{KEY}"\n'
                           '[orders.products.game]\nname = "Game"\nprice = 2000\n'
                           'kind = "digital"\n')
    config = config_of(provider)
    async with SqlStore.open(postgres_url) as store, Runtime(
            orders_app(config=config).sagas, store=store, secrets=SECRETS) as rt:
        await add_keys(store, config, "game", [f"G-{i}" for i in range(5)])
        nodes = [Child(postgres_url, str(config_file)) for _ in range(2)]
        try:
            for node in nodes:
                node.ready()
            work_ids = [await rt.start("orders.place", {
                "owner": f"c{i}", "email": f"c{i}@example.com",
                "payment_method": "pm_card_visa",
                "lines": [{"sku": "game", "quantity": 1 + i % 2}]}, run=False)
                for i in range(6)]
            for _ in range(600):
                rows = [await store.work(w) or {} for w in work_ids]
                if all(r.get("status") in ("completed", "failed") for r in rows):
                    break
                await anyio.sleep(0.05)
        finally:
            errors = [node.stop() for node in nodes]
        assert all(r["status"] in ("completed", "failed") for r in rows), (rows, errors)
        placed = [await order(store, w) for w in work_ids]
        free = (await stock(store, config))["game"]
    done = [p for p in placed if p is not None and p["status"] == "completed"]
    given = [k["code"] for p in done for k in p["keys"]]
    assert len(given) == len(set(given)) == 5 - free
    assert sum(line["quantity"] for p in done for line in p["lines"]) == len(given)
    assert len(provider.intents) == len(done)  # the orders without keys were not charged
    assert sorted(i["amount"] for i in provider.intents.values()) == sorted(
        p["amount"] for p in done)
