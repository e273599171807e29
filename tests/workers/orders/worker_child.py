"""A worker node of the orders pack in a process of its own, with a short lease so a
test that kills it sees another take over in seconds (the CLI's default: 10 s).
Arguments: the store URL and the config file."""

from __future__ import annotations

import json
import sys

import anyio

from engine.secrets import Secrets
from engine.store import SqlStore
from graphql_api.config import load
from workers.actions.orders import orders_app
from workers.node import WorkerSpec


async def main(url: str, config: str) -> None:
    settings = load(config, {})
    app = orders_app(settings)
    async with SqlStore.open(url) as store:
        node = app.node(store, [WorkerSpec(name="main")], lease_ttl=2.0,
                        secrets=Secrets.from_config(settings.get("secrets", {})))
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)
            print(json.dumps({"ready": node.node_id}), flush=True)
            await node.stopped()
            tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
