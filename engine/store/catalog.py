"""The catalog in the store: which definition of each saga every live worker node runs.

A worker node publishes its catalog when it starts (:func:`publish`: one row per saga,
with the description of its definition from :func:`engine.catalog.describe`, its hash
and version), renews it with its heartbeat (:func:`beat`) and withdraws it when it
stops (:func:`withdraw`); a node that dies stops renewing, and its rows count as gone
once their time is up. An API node reads what the workers actually run with
:func:`published`, which also tells a rolling deployment apart: two definitions of
one saga, each with the nodes that run it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from .codec import dumps
from .schema import catalog
from .sql import SqlStore

__all__ = ["PRUNE_AFTER", "Published", "beat", "publish", "published", "withdraw"]

PRUNE_AFTER = 24 * 3600.0  # rows of nodes gone this long are deleted by the next publish


@dataclass(frozen=True, slots=True, kw_only=True)
class Published:
    """One definition of a saga that live worker nodes run, and which nodes."""

    saga: str
    definition: str  # the hash (engine.catalog.definition_hash)
    version: int
    description: dict[str, Any]  # engine.catalog.describe
    nodes: tuple[str, ...]  # the node ids, sorted
    published_at: float  # when the first of those nodes published it


def _check_node(node: object) -> str:
    if not isinstance(node, str) or not node or len(node) > 200:
        raise ValueError(f"a node id must be a non-empty string of at most 200 characters, "
                         f"got {node!r}")
    return node


def _check_ttl(ttl: object) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
        raise ValueError(f"a catalog's ttl must be a positive number of seconds, got {ttl!r}")
    return float(ttl)


async def publish(store: SqlStore, *, node: str, descriptions: Sequence[Mapping[str, Any]],
                  ttl: float) -> None:
    """Publish the catalog of worker node ``node``: one row per description (made by
    :func:`engine.catalog.describe`), replacing what the node published before; it
    counts as live for ``ttl`` seconds unless :func:`beat` renews it."""
    node = _check_node(node)
    ttl = _check_ttl(ttl)
    rows: list[dict[str, Any]] = []
    now = time.time()
    for found in descriptions:
        saga, definition, version = (found.get(k) for k in ("saga", "definition", "version"))
        if not isinstance(saga, str) or not isinstance(definition, str) or \
                isinstance(version, bool) or not isinstance(version, int):
            raise ValueError("a catalog entry must be a description made by "
                             "engine.catalog.describe (with saga, definition and version), "
                             f"got one with saga={saga!r}, definition={definition!r}, "
                             f"version={version!r}")
        rows.append({"node": node, "saga": saga, "definition": definition, "version": version,
                     "description": dumps(found), "published_at": now, "seen_at": now,
                     "expires_at": now + ttl})
    names: list[str] = [row["saga"] for row in rows]
    if len(set(names)) != len(names):
        raise ValueError(f"node {node}'s catalog names a saga twice: {sorted(names)}")

    def run(conn: Connection) -> None:
        conn.execute(sa.delete(catalog).where(sa.or_(
            catalog.c.node == node, catalog.c.expires_at < now - PRUNE_AFTER)))
        if rows:
            insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)
            conn.execute(insert(catalog), rows)

    await store.transaction(run)


async def beat(store: SqlStore, *, node: str, ttl: float) -> int:
    """Node ``node`` is still live: its catalog counts for another ``ttl`` seconds. How
    many rows it renewed (0: it published nothing, or its catalog was withdrawn)."""
    node = _check_node(node)
    ttl = _check_ttl(ttl)
    now = time.time()

    def run(conn: Connection) -> int:
        return int(conn.execute(sa.update(catalog).where(catalog.c.node == node).values(
            seen_at=now, expires_at=now + ttl)).rowcount)

    return await store.transaction(run)


async def withdraw(store: SqlStore, *, node: str) -> int:
    """Node ``node`` stops: its catalog goes. How many rows were deleted."""
    node = _check_node(node)

    def run(conn: Connection) -> int:
        return int(conn.execute(sa.delete(catalog).where(catalog.c.node == node)).rowcount)

    return await store.transaction(run)


async def published(store: SqlStore, *, saga: str | None = None,
                    now: float | None = None) -> list[Published]:
    """The definitions the live worker nodes run (of ``saga``, or of every saga): one
    entry per saga and definition, with the nodes that run it, by saga, then newest
    version first. Two entries for one saga mean the nodes disagree (a deployment
    under way): works started on one are not continued by nodes of the other unless
    its ``continues`` says so."""
    at = time.time() if now is None else now
    query = sa.select(catalog).where(catalog.c.expires_at >= at)
    if saga is not None:
        query = query.where(catalog.c.saga == saga)
    async with store.reader.connect() as conn:
        rows = (await conn.execute(query.order_by(catalog.c.saga, catalog.c.node))).mappings()
        grouped: dict[tuple[str, str], list[Any]] = {}
        for row in rows:
            grouped.setdefault((row["saga"], row["definition"]), []).append(row)
    found = [Published(saga=name, definition=definition, version=int(group[0]["version"]),
                       description=json.loads(group[0]["description"]),
                       nodes=tuple(sorted(r["node"] for r in group)),
                       published_at=min(float(r["published_at"]) for r in group))
             for (name, definition), group in grouped.items()]
    return sorted(found, key=lambda p: (p.saga, -p.version, p.published_at, p.definition))
