"""A work's log records (what its stage code logged through ``ctx.logger``, kept by
:mod:`engine.worklogs`) over GraphQL, beside its events."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from engine.worklogs import logs_of

from .context import service_of

__all__ = ["LogRecord", "work_logs"]

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@strawberry.type
class LogRecord:
    """One record of a work's stage code: ``cursor`` resumes after it."""

    cursor: str
    time: float
    level: str
    logger: str
    path: str
    attempt: int
    message: str
    node: str | None


@strawberry.field
async def work_logs(info: Info, work_id: str, after: str | None = None, first: int = 100,
                    levels: list[str] | None = None) -> list[LogRecord]:
    """The log records of work ``workId``, oldest first, ``first`` (at most 10,000)
    after cursor ``after``, of these ``levels`` (DEBUG, INFO, WARNING, ERROR, CRITICAL;
    none: all). DEBUG records are kept only for works that failed."""
    if after is not None and not after.isdigit():
        raise ValueError(f"after must be a cursor of a log record, got {after!r:.40}")
    wrong = [lv for lv in levels or () if lv.upper() not in _LEVELS]
    if wrong:
        raise ValueError(f"levels: {wrong[0]!r:.40} is not a level; use one of "
                         f"{', '.join(_LEVELS)}")
    rows = await logs_of(service_of(info).store, work_id, after=int(after or 0), first=first,
                         levels=levels)
    return [LogRecord(cursor=str(r["position"]), time=r["time"], level=r["level"],
                      logger=r["logger"], path=r["path"], attempt=r["attempt"],
                      message=r["message"], node=r["node"]) for r in rows]
