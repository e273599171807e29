"""The audit log: every operator action (pausing, stepping, editing, cancelling,
rewinding, resolving a work, retrying its compensation, changes to sagas, workers,
schedules, principals, tokens and policies), with who did it, on what and why, in one
append-only table that outlives what it names. The API records each such mutation that
succeeded (graphql_api.audit, the one place it decides what is audited); the commands
that change the same things from a shell (``stepsaga policy``, ``stepsaga token``)
record theirs here too. A work's own events carry the same who and why (its command's
``by`` and ``reason``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from .schema import audit
from .sql import SqlStore

__all__ = ["entries", "record", "record_in"]

_MAX_DETAILS = 4000  # characters of a request's arguments kept


def _row(principal: str, action: str, target_kind: str, target: str, reason: str,
         details: Mapping[str, Any] | None) -> dict[str, Any]:
    text = json.dumps(dict(details or {}), sort_keys=True, default=str)
    if len(text) > _MAX_DETAILS:
        text = json.dumps({"truncated": text[:_MAX_DETAILS]})
    return {"time": time.time(), "principal": principal[:200], "action": action[:100],
            "target_kind": target_kind[:40], "target": target[:400], "reason": reason,
            "details": text}


def record_in(conn: Any, *, principal: str, action: str, target_kind: str, target: str,
              reason: str = "", details: Mapping[str, Any] | None = None) -> None:
    """An entry written in the caller's transaction (it stands or falls with it)."""
    conn.execute(sa.insert(audit).values(**_row(principal, action, target_kind, target,
                                                reason, details)))


async def record(store: SqlStore, *, principal: str, action: str, target_kind: str,
                 target: str, reason: str = "", details: Mapping[str, Any] | None = None
                 ) -> None:
    """An entry, in a transaction of its own."""
    row = _row(principal, action, target_kind, target, reason, details)
    await store.transaction(lambda conn: conn.execute(sa.insert(audit).values(**row)))


async def entries(store: SqlStore, *, after: int | None = None, first: int = 100,
                  principal: str | None = None, action: str | None = None,
                  target_kind: str | None = None, target: str | None = None
                  ) -> list[dict[str, Any]]:
    """Entries newest first (before position ``after`` when given), filtered."""
    if not 1 <= first <= 1000:
        raise ValueError(f"first must be 1..1000, got {first!r}")
    query = sa.select(audit).order_by(audit.c.position.desc()).limit(first)
    if after is not None:
        query = query.where(audit.c.position < after)
    for column, value in (("principal", principal), ("action", action),
                          ("target_kind", target_kind), ("target", target)):
        if value is not None:
            query = query.where(audit.c[column] == value)
    async with store.reader.connect() as conn:
        rows = [dict(r) for r in (await conn.execute(query)).mappings()]
    for row in rows:
        row["details"] = json.loads(row["details"])
    return rows
