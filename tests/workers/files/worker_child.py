"""A worker node of the files pack in a process of its own, with short leases and lock
times so a test that kills it sees another take over in seconds (the CLI's defaults:
10 s and 30 s). Arguments: the store URL and the config file."""

from __future__ import annotations

import json
import sys

import anyio

from engine.store import SqlStore
from graphql_api.config import load
from workers.actions.files import files_app
from workers.node import WorkerSpec


async def main(url: str, config: str) -> None:
    app = files_app(load(config, {}), api=False)
    async with SqlStore.open(url) as store:
        node = app.node(store, [WorkerSpec(name="main")], lease_ttl=2.0, lock_ttl=3.0)
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)
            print(json.dumps({"ready": node.node_id}), flush=True)
            await node.stopped()
            tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
