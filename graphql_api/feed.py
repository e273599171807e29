"""The subscriptions that follow the event feed: works as their status or progress
changes (``works``), stage runs as they go (``stages``), and the events themselves
(``workEvents``), each from an event's ``cursor`` or from now on."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import strawberry
from strawberry.types import Info

from .access import may_read, reads_all, reads_by_condition
from .context import service_of
from .works import Event, StageRun, Work

__all__ = ["StageChange", "WorkChange", "stages", "work_events", "works"]


def _cursor(after: str | None) -> int | None:
    if after is None:
        return None
    if not after.isdigit():
        raise ValueError(f"after must be an event's cursor, got {after!r:.40}")
    return int(after)


# the events after which a work's status or progress shows something new
_WORK_CHANGES = ("work.created", "work.started", "work.paused", "work.resumed",
                 "work.completed", "work.compensating", "work.failed",
                 "work.compensation_failed", "work.compensation_retried", "work.resolved",
                 "work.cancelled", "work.edited", "stage.completed", "stage.failed",
                 "stage.waiting")
_STAGE_CHANGES = ("stage.started", "stage.completed", "stage.failed", "stage.waiting",
                  "stage.transaction.started", "stage.transaction.completed",
                  "stage.transaction.failed", "stage.retry.scheduled",
                  "stage.compensation.started", "stage.compensation.completed",
                  "stage.compensation.failed")


@strawberry.type
class WorkChange:
    """A work after one of its events changed what lists show; ``cursor`` resumes."""

    cursor: str
    type: str
    work: Work


@strawberry.type
class StageChange:
    """A stage run after one of its events; ``template`` is the stage of the saga
    (``pack[*]/box``); ``cursor`` resumes."""

    cursor: str
    type: str
    work_id: str
    saga: str
    path: str
    template: str
    attempt: int
    run: StageRun | None


@strawberry.subscription
async def works(info: Info, saga: list[str] | None = None,
                status: list[str] | None = None, after: str | None = None
                ) -> AsyncGenerator[WorkChange, None]:
    """Works of these sagas (or all) each time their status or progress changes,
    when they are then in one of these statuses (or any); from cursor ``after`` (or
    from now on)."""
    service = service_of(info)
    async with service.feed.subscribe(after=_cursor(after), types=_WORK_CHANGES) as feed:
        async for recorded in feed:
            row = await service.store.work(recorded.work_id)
            if row is None or (saga and row["saga"] not in saga) \
                    or not await may_read(info.context, row):
                continue
            work = Work.of(row)
            if status and work.status not in status:
                continue
            yield WorkChange(cursor=str(recorded.position), type=recorded.type, work=work)


@strawberry.subscription
async def stages(info: Info, saga: list[str] | None = None,
                 template: list[str] | None = None, work_id: str | None = None,
                 after: str | None = None) -> AsyncGenerator[StageChange, None]:
    """Stage runs as they start, complete, fail, retry and compensate: of these
    sagas, these stages of them (templates like ``pack[*]/box``), one work, or all."""
    from engine.store.projection import stage_template

    service = service_of(info)
    sagas_of: dict[str, str] = {}  # work id -> saga, as events come
    async with service.feed.subscribe(after=_cursor(after), work_id=work_id,
                                      types=_STAGE_CHANGES) as feed:
        async for recorded in feed:
            name = sagas_of.get(recorded.work_id)
            if name is None:
                row = await service.store.work(recorded.work_id)
                name = sagas_of[recorded.work_id] = row["saga"] if row else ""
                if len(sagas_of) > 10_000:
                    sagas_of.clear()
            shape = stage_template(recorded.path)
            if (saga and name not in saga) or (template and shape not in template):
                continue
            if not await reads_all(info.context) and not await may_read(
                    info.context, await _readable(service, recorded.work_id)):
                continue
            runs = await service.store.stage_runs(recorded.work_id)
            run = next((r for r in runs if r["path"] == recorded.path), None)
            yield StageChange(
                cursor=str(recorded.position), type=recorded.type,
                work_id=recorded.work_id, saga=name, path=recorded.path, template=shape,
                attempt=recorded.event.attempt, run=None if run is None else StageRun.of(run))


@strawberry.subscription
async def work_events(info: Info, work_id: str | None = None,
                      after: str | None = None,
                      types: list[str] | None = None) -> AsyncGenerator[Event, None]:
    """The events of one work (or all), after cursor ``after`` (an event's
    ``cursor``; none: from now on), of some types: every later event once."""
    service = service_of(info)
    seen: dict[str, dict[str, Any]] = {}  # work id -> its row, while only sagas matter
    async with service.feed.subscribe(after=_cursor(after), work_id=work_id,
                                      types=types) as events:
        async for recorded in events:
            # the policies as they are at each event: a tightened one holds at once
            if await reads_all(info.context):
                yield Event.of(recorded)
                continue
            row = seen.get(recorded.work_id)
            if row is None or await reads_by_condition(info.context):
                row = await _readable(service, recorded.work_id)
                if len(seen) > 10_000:
                    seen.clear()
                seen[recorded.work_id] = row  # a work's saga never changes
            if await may_read(info.context, row):
                yield Event.of(recorded)


async def _readable(service: Any, work_id: str) -> dict[str, Any]:
    """What a policy reads of a work (its row; a work deleted meanwhile: its id only)."""
    return await service.store.work(work_id) or {"work_id": work_id, "saga": ""}
