"""Deleting a finished work: its events, projections, snapshot, commands, lease and log
records (``work_logs``) go in one transaction, and the deletion is recorded (who, when,
the saga, the final status, how many events, why) in ``deletions``, which outlives the
work. A work that has not
ended cannot be deleted: cancel it first."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import UnknownWorkError, WorkStateError
from ..ids import check_work_id
from ..state import TERMINAL
from .schema import (
    commands,
    deletions,
    events,
    leases,
    snapshots,
    stage_runs,
    work_logs,
    works,
)
from .sql import APPEND_LOCK, SqlStore

__all__ = ["delete_work", "deletions_of"]


async def delete_work(store: SqlStore, work_id: str, *, by: str, reason: str = ""
                      ) -> dict[str, Any]:
    """Delete finished work ``work_id``; the audit row recorded. Refuses a work that has
    not ended (:class:`~engine.errors.WorkStateError`, naming its status) or does not
    exist (:class:`~engine.errors.UnknownWorkError`); nothing is deleted then."""
    check_work_id(work_id)
    if not isinstance(by, str) or not by:
        raise ValueError("a deletion needs who makes it (by=)")
    postgres = store.dialect == "postgresql"

    def run(conn: Connection) -> dict[str, Any]:
        if postgres:  # no append of this work slips in between the check and the delete
            conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({APPEND_LOCK})"))
        row = conn.execute(sa.select(works.c.saga, works.c.status, works.c.last_seq)
                           .where(works.c.work_id == work_id)).first()
        if row is None:
            raise UnknownWorkError(f"no work has id {work_id!r}")
        if row.status not in TERMINAL:
            raise WorkStateError(f"work {work_id} is {row.status}; only a finished work can "
                                 "be deleted (cancel it first)")
        held = conn.execute(sa.select(leases.c.owner).where(
            leases.c.work_id == work_id, leases.c.owner.is_not(None))).first()
        if held is not None:  # a node is recording a command's outcome: not now
            raise WorkStateError(f"work {work_id} is held by {held.owner} for a moment; "
                                 "try again")
        audit = {"work_id": work_id, "saga": row.saga, "status": row.status,
                 "events": int(row.last_seq), "deleted_by": by, "reason": reason,
                 "deleted_at": time.time()}
        for table in (events, stage_runs, snapshots, commands, leases, work_logs, works):
            conn.execute(sa.delete(table).where(table.c.work_id == work_id))
        conn.execute(sa.insert(deletions).values(**audit))
        return audit

    return await store.transaction(run)


async def deletions_of(store: SqlStore, work_id: str | None = None,
                       limit: int = 100, *, before: int | None = None) -> list[dict[str, Any]]:
    """The latest deletions (of one work, or all), newest first; with ``before``, those
    older than the one at that position (the next page)."""
    query = sa.select(deletions).order_by(deletions.c.position.desc()).limit(limit)
    if work_id is not None:
        query = query.where(deletions.c.work_id == work_id)
    if before is not None:
        query = query.where(deletions.c.position < before)
    async with store.reader.connect() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]
