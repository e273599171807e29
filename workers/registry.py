"""Workers as records: every change of a worker is an event in ``worker_events``, and
the ``workers`` table is their projection (one row per worker, in the same commit).

Event types: ``worker.registered``, ``worker.updated`` (concurrency changed),
``worker.draining``, ``worker.removed`` and ``worker.heartbeat`` (with how many works
it runs); and ``node.command``, the outcome of a command sent to a node (add, resize,
drain or remove a worker; see :func:`engine.store.inbox.send_to_node`), under the
node's id.

Positions follow commit order on both databases (on PostgreSQL every append takes
:data:`WORKER_EVENTS_LOCK` first, as event appends take theirs), so a reader of
:func:`changes_after` a cursor never skips a row that commits later with an earlier
position: the ``workers`` subscription resumes from one.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from engine.store import SqlStore
from engine.store.schema import worker_events, workers

__all__ = ["WORKER_EVENTS", "WORKER_EVENTS_LOCK", "changes_after", "command_outcome",
           "follow", "last_position", "list_workers", "load_of", "record",
           "record_node_command", "worker_events_of"]

WORKER_EVENTS_LOCK = 0x5A6A_0002  # PostgreSQL advisory lock: worker_events in commit order
_ORDERED = sa.text(f"SELECT pg_advisory_xact_lock({WORKER_EVENTS_LOCK})")

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
        if store.dialect == "postgresql":
            await conn.execute(_ORDERED)
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


_LOADS = ("worker.registered", "worker.updated", "worker.heartbeat")
_SIZES = ("worker.registered", "worker.updated")


async def load_of(store: SqlStore, worker_id: str, *, since: float | None = None,
                  first: int = 1000) -> list[dict[str, Any]]:
    """A worker's load over time from its events: ``{time, running, concurrency}`` at
    each registration, resize and heartbeat at or after ``since`` (None: from the
    start), oldest first, ``first`` points at most (the next page starts after the last
    point's time). A heartbeat says how many works ran, a registration or resize how
    many could: each point carries the other figure from the latest event before it,
    found in the same statement when it came before ``since``.

    >>> await load_of(store, "n1/main", since=time.time() - 600)  # doctest: +SKIP
    [{'time': 1733220000.5, 'running': 2, 'concurrency': 10}, ...]
    """
    if first < 1:
        return []
    e = worker_events.c
    query = sa.select(e.type, e.payload, e.time).where(e.worker_id == worker_id,
                                                       e.type.in_(_LOADS))
    if since is not None:
        before = worker_events.alias("before")

        def latest(types: tuple[str, ...]) -> Any:  # the figure in force at ``since``
            return (sa.select(sa.func.max(before.c.position))
                    .where(before.c.worker_id == worker_id, before.c.type.in_(types),
                           before.c.time < since).scalar_subquery())

        query = query.where(sa.or_(e.time >= since, e.position == latest(_SIZES),
                                   e.position == latest(("worker.heartbeat",))))
    query = query.order_by(e.position).limit(first + 2)  # the two before ``since``
    async with store.reader.connect() as conn:
        rows = (await conn.execute(query)).all()
    points: list[dict[str, Any]] = []
    running, concurrency = 0, None
    for kind, text, at in rows:
        payload = json.loads(text)
        if kind == "worker.heartbeat":
            running = int(payload.get("running", running))
        else:
            concurrency = payload.get("concurrency", concurrency)
            if kind == "worker.registered":
                running = 0  # a worker starts (or starts again) with nothing running
        if concurrency is None or (since is not None and at < since):
            continue
        points.append({"time": at, "running": running, "concurrency": int(concurrency)})
        if len(points) == first:
            break
    return points


async def last_position(store: SqlStore) -> int:
    """The position of the newest worker event (0: none yet)."""
    async with store.reader.connect() as conn:
        found = (await conn.execute(sa.select(sa.func.max(worker_events.c.position)))).scalar()
    return int(found or 0)


async def changes_after(store: SqlStore, position: int, *, limit: int = 500
                        ) -> list[dict[str, Any]]:
    """Up to ``limit`` worker events (not node commands) after ``position``, in order,
    each with its payload decoded."""
    query = (sa.select(worker_events).where(worker_events.c.position > position,
                                            worker_events.c.type.in_(WORKER_EVENTS))
             .order_by(worker_events.c.position).limit(limit))
    async with store.reader.connect() as conn:
        return [{**r, "payload": json.loads(r["payload"])}
                for r in (await conn.execute(query)).mappings()]


async def follow(store: SqlStore, *, after: int | None, interval: float,
                 shown: Callable[[dict[str, Any]], dict[str, Any]],
                 ) -> AsyncIterator[tuple[int, str, dict[str, Any]]]:
    """The workers as they change: ``(cursor, type, worker row)``, the row as
    ``shown`` makes it (where a worker turns ``lost``). Without ``after``, first every
    worker as it is now (type ``worker.current``); then, from ``after`` or from there,
    each worker whose events came (its latest in a batch: type and position of that
    event; a heartbeat only when the number of works it runs changed) and each that
    turns lost (``worker.lost``, at the cursor reached). Resuming from a yielded cursor
    misses no change. Reads every ``interval`` seconds."""
    seen: dict[str, tuple[str, int]] = {}  # worker id -> (status, running) last yielded
    if after is None:
        cursor = await last_position(store)
        for row in await list_workers(store):
            row = shown(row)
            seen[row["worker_id"]] = (row["status"], row["running"])
            yield cursor, "worker.current", row
    else:
        cursor = after
    while True:
        found = await changes_after(store, cursor)
        rows = {r["worker_id"]: shown(r) for r in await list_workers(store)}
        latest: dict[str, tuple[int, str]] = {}  # worker id -> (position, type) to yield
        for change in found:
            cursor = change["position"]
            now = rows.get(change["worker_id"])
            if now is None:
                continue
            kind = change["type"]
            if kind == "worker.heartbeat":
                if seen.get(now["worker_id"]) == (now["status"], now["running"]):
                    continue  # a beat alone: nothing people see changed
                # a beat after a change in the same batch: the change says what happened
                kind = latest.get(now["worker_id"], (0, kind))[1]
            latest[now["worker_id"]] = (change["position"], kind)
        for worker_id, (position, kind) in sorted(latest.items(), key=lambda i: i[1][0]):
            row = rows[worker_id]
            seen[worker_id] = (row["status"], row["running"])
            yield position, kind, row
        for worker_id, row in rows.items():  # beats that stopped: no event says so
            if row["status"] == "lost" and seen.get(worker_id, ("",))[0] != "lost":
                seen[worker_id] = (row["status"], row["running"])
                yield cursor, "worker.lost", row
        if len(found) < 500:
            await anyio.sleep(interval)


async def record_node_command(store: SqlStore, node_id: str, payload: dict[str, Any]) -> None:
    """Record what node ``node_id`` did with a command sent to it (its number, kind,
    outcome and, when rejected, the error)."""
    async with store.engine.begin() as conn:
        if store.dialect == "postgresql":
            await conn.execute(_ORDERED)
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
