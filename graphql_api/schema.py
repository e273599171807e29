"""The GraphQL schema (strawberry): works, their events and stage runs, the sagas, and
the mutations and subscriptions that steer and follow them.

Names follow the README's glossary: a saga is a definition, a stage a node of one, a
work a run. Lists are Relay connections with cursors (keyset pages, never offsets);
every work is a ``Node`` with a global id. A mutation answers with a typed payload
or a typed error (``NotFound``, ``WrongState``, ``InvalidInput``, ``Conflict``), never
a bare exception, and nothing stored changes on an error.
"""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry import relay
from strawberry.extensions import ParserCache, ValidationCache
from strawberry.scalars import JSON
from strawberry.types import Info

from . import feed, sagas, work_mutations, workers_types, works
from .context import Context, service_of
from .ops import Locks, ScheduleInfo, ServiceHealth, schedule_change
from .ops import locks as list_locks
from .ops import schedules as list_schedules
from .ops import services as list_services
from .results import Conflict, InvalidInput, NotFound

__all__ = ["Context", "schema"]


# ------------------------------------------------------------------ types


# ------------------------------------------------------------------ payloads


@strawberry.type
class ScheduleChanged:
    """A schedule as it is after the change (null once deleted); ``workId``: the work a
    trigger created."""

    schedule: ScheduleInfo | None
    work_id: str | None


ScheduleResult = Annotated[ScheduleChanged | NotFound | InvalidInput | Conflict,
                           strawberry.union("ScheduleResult")]


# ------------------------------------------------------------------ root types


@strawberry.type
class Query:
    node: relay.Node = relay.node()

    all_sagas = sagas.all_sagas
    saga = sagas.saga
    all_stages = sagas.all_stages
    stage = sagas.stage
    aggregate = works.aggregate
    deletions = works.deletions

    @strawberry.field
    async def schedules(self, info: Info) -> list[ScheduleInfo]:
        return await list_schedules(service_of(info).store)

    @strawberry.field
    async def locks(self, info: Info, name: str | None = None) -> Locks:
        return await list_locks(service_of(info).store, name)

    @strawberry.field
    async def services(self, info: Info, history: int = 100) -> list[ServiceHealth]:
        """The services stages need, with their latest health checks (the graph's
        history, newest first, ``history`` rows at most across services)."""
        return await list_services(service_of(info).store, history)

    all_workers = workers_types.all_workers
    worker = workers_types.worker
    work = works.work
    all_works = works.all_works


@strawberry.type
class Mutation:
    create_work = work_mutations.create_work
    create_saga = sagas.create_saga
    enable_saga = sagas.enable_saga
    disable_saga = sagas.disable_saga
    delete_saga = sagas.delete_saga
    update_work = work_mutations.update_work
    delete_work = work_mutations.delete_work
    update_or_create_work = work_mutations.update_or_create_work

    @strawberry.mutation
    async def create_schedule(self, info: Info, name: str, saga: str, cron: str,
                              input: JSON | None = None, timezone: str = "UTC",
                              overlap: str = "skip", catch_up: str = "last",
                              paused: bool = False) -> ScheduleResult:
        return await schedule_change(info, "create", name, saga=saga, cron=cron,
                                     input=input, timezone=timezone, overlap=overlap,
                                     catch_up=catch_up, paused=paused)

    @strawberry.mutation
    async def update_schedule(self, info: Info, name: str, saga: str | None = None,
                              cron: str | None = None, input: JSON | None = None,
                              timezone: str | None = None, overlap: str | None = None,
                              catch_up: str | None = None) -> ScheduleResult:
        return await schedule_change(info, "update", name, saga=saga, cron=cron,
                                     input=input, timezone=timezone, overlap=overlap,
                                     catch_up=catch_up)

    @strawberry.mutation
    async def pause_schedule(self, info: Info, name: str) -> ScheduleResult:
        return await schedule_change(info, "pause", name)

    @strawberry.mutation
    async def resume_schedule(self, info: Info, name: str) -> ScheduleResult:
        return await schedule_change(info, "resume", name)

    @strawberry.mutation
    async def trigger_schedule(self, info: Info, name: str) -> ScheduleResult:
        """Fire the schedule now: a new work of its saga, queued for the workers."""
        return await schedule_change(info, "trigger", name)

    @strawberry.mutation
    async def delete_schedule(self, info: Info, name: str) -> ScheduleResult:
        return await schedule_change(info, "delete", name)

    add_workers = workers_types.add_workers
    update_workers = workers_types.update_workers
    remove_workers = workers_types.remove_workers
    rewind_work = work_mutations.rewind_work
    pause_work = work_mutations.pause_work
    resume_work = work_mutations.resume_work
    step_work = work_mutations.step_work
    multi_step_work = work_mutations.multi_step_work
    signal_work = work_mutations.signal_work
    cancel_work = work_mutations.cancel_work
    edit_work_state = work_mutations.edit_work_state
    set_breakpoint = work_mutations.set_breakpoint
    clear_breakpoint = work_mutations.clear_breakpoint
    retry_compensation = work_mutations.retry_compensation
    resolve_work = work_mutations.resolve_work


@strawberry.type
class Subscription:
    workers = workers_types.workers
    works = feed.works
    stages = feed.stages
    work_events = feed.work_events


schema = strawberry.Schema(query=Query, mutation=Mutation, subscription=Subscription,
                           types=[works.Work, workers_types.Worker, sagas.Saga, sagas.StageInfo],
                           # a document is parsed and validated once, not per request
                           # (factories: each request gets its own, the caches are
                           # shared at module level by strawberry)
                           extensions=[lambda: ParserCache(maxsize=512),
                                       lambda: ValidationCache(maxsize=512)])
