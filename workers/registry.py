"""Workers as records: every change of a worker is an event in ``worker_events``, and
the ``workers`` table is their projection (one row per worker, in the same commit).

Event types: ``worker.registered``, ``worker.updated`` (concurrency changed),
``worker.draining``, ``worker.removed`` and ``worker.heartbeat`` (with how many works
it runs); and ``node.command``, the outcome of a command sent to a node (add, resize,
drain or remove a worker; see :func:`engine.store.inbox.send_to_node`), under the
node's id.
"""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from engine.store import SqlStore
from engine.store.schema import worker_events, workers

__all__ = ["WORKER_EVENTS", "command_outcome", "list_workers", "record",
           "record_node_command", "worker_events_of"]

WORKER_EVENTS = ("worker.registered", "worker.updated", "worker.draining", "worker.removed",
                 "worker.heartbeat")
_STATUS = {"worker.registered": "active", "worker.draining": "draining",
           "worker.removed": "removed"}


async def record(store: SqlStore, worker_id: str, kind: str, payload: dict[str, Any],
                 row: dict[str, Any]) -> None:
    """Append a worker event and fold it into the worker's row. ``row`` holds the
    worker's current fields (node, name, concurrency, sagas, host, pid, running)."""
    if kind not in WORKER_EVENTS:
        raise ValueError(f"unknown worker event type {kind!r}")
    now = time.time()
    values = {**row, "worker_id": worker_id, "updated_at": now, "heartbeat_at": now}
    if kind in _STATUS:
        values["status"] = _STATUS[kind]
    insert: Any = (postgresql.insert(workers) if store.dialect == "postgresql"
                   else sqlite.insert(workers))
    update = {k: v for k, v in values.items() if k != "worker_id"}
    statement = insert.values(**{"status": "active", "registered_at": now, **values})
    statement = statement.on_conflict_do_update(index_elements=["worker_id"], set_=update)
    async with store.engine.begin() as conn:
        await conn.execute(worker_events.insert().values(
            worker_id=worker_id, type=kind, payload=json.dumps(payload), time=now))
        await conn.execute(statement)


async def list_workers(store: SqlStore) -> list[dict[str, Any]]:
    async with store.reader.connect() as conn:
        rows = (await conn.execute(sa.select(workers).order_by(workers.c.worker_id))).mappings()
        return [dict(r) for r in rows]


async def worker_events_of(store: SqlStore, worker_id: str) -> list[dict[str, Any]]:
    query = (sa.select(worker_events).where(worker_events.c.worker_id == worker_id)
             .order_by(worker_events.c.position))
    async with store.reader.connect() as conn:
        return [{**r, "payload": json.loads(r["payload"])}
                for r in (await conn.execute(query)).mappings()]


async def record_node_command(store: SqlStore, node_id: str, payload: dict[str, Any]) -> None:
    """Record what node ``node_id`` did with a command sent to it (its number, kind,
    outcome and, when rejected, the error)."""
    async with store.engine.begin() as conn:
        await conn.execute(worker_events.insert().values(
            worker_id=node_id, type="node.command", payload=json.dumps(payload),
            time=time.time()))


async def command_outcome(store: SqlStore, node_id: str, number: int) -> dict[str, Any] | None:
    """The outcome node ``node_id`` recorded for its command ``number``, or None yet."""
    query = (sa.select(worker_events.c.payload).where(
        worker_events.c.worker_id == node_id, worker_events.c.type == "node.command")
        .order_by(worker_events.c.position.desc()).limit(50))
    async with store.reader.connect() as conn:
        for (text,) in await conn.execute(query):
            payload: dict[str, Any] = json.loads(text)
            if payload.get("number") == number:
                return payload
    return None
