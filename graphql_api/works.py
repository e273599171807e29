"""Works over GraphQL: ``Work`` (a ``Node``) with its stage runs, events, state and
pending commands, and the queries that list them (``work``, ``allWorks``, ``aggregate``,
the ``deletions`` audit). The mutations on works are in :mod:`graphql_api.work_mutations`,
the subscriptions that follow them in :mod:`graphql_api.feed`."""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from typing import Any

import strawberry
from strawberry import relay
from strawberry.scalars import JSON
from strawberry.types import Info

from engine.events import RecordedEvent
from engine.store import queries

from .context import context_of, service_of

__all__ = ["AggregateRow", "DeletionConnection", "DeletionEdge", "Divergence", "Event",
           "PendingCommand", "StageRun", "Work",
           "WorkConnection", "WorkDeleted", "WorkEdge", "WorkOrder", "aggregate", "all_works",
           "deletions", "reducers", "work", "work_of"]


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


_ENDED = frozenset({"completed", "failed", "compensation_failed", "cancelled"})


@strawberry.type
class Event:
    """One recorded change of a work. ``cursor`` is its place in the global feed."""

    cursor: str
    work_id: str
    seq: int
    type: str
    path: str
    attempt: int
    payload: JSON
    time: float
    worker: str | None

    @classmethod
    def of(cls, recorded: RecordedEvent) -> Event:
        return cls(cursor=str(recorded.position or 0), work_id=recorded.work_id,
                   seq=recorded.seq, type=recorded.type, path=recorded.path,
                   attempt=recorded.event.attempt, payload=dict(recorded.event.payload),
                   time=recorded.time, worker=recorded.worker)


@strawberry.type
class Divergence:
    seq: int
    mine: Event | None
    theirs: Event | None


@strawberry.type
class StageRun:
    """A stage of one work: how it went."""

    path: str
    status: str
    attempts: int
    started_at: float | None
    finished_at: float | None
    duration: float | None
    error: JSON | None
    saga: str
    template: str

    @classmethod
    def of(cls, row: dict[str, Any]) -> StageRun:
        return cls(path=row["path"], status=row["status"], attempts=row["attempts"],
                   started_at=row["started_at"], finished_at=row["finished_at"],
                   duration=row["duration"], error=_json(row["error"]), saga=row["saga"],
                   template=row["template"])


@strawberry.type
class Work(relay.Node):
    """One run of a saga."""

    key: relay.NodeID[str]
    work_id: str
    saga: str
    status: str
    paused: bool
    phase: str
    input: JSON | None
    output: JSON | None
    error: JSON | None
    failure: JSON | None
    current_stage: str | None
    stages_done: int
    stages_total: int
    last_seq: int
    created_at: float
    updated_at: float
    parent_work_id: str | None
    forked_at_seq: int | None
    waiting: JSON | None
    breakpoints: JSON
    priority: int
    started_at: float | None
    finished_at: float | None
    duration: float | None
    error_type: str | None
    worker: str | None
    node: str | None
    definition: str | None

    @classmethod
    def of(cls, row: dict[str, Any]) -> Work:
        return cls(key=row["work_id"], work_id=row["work_id"], saga=row["saga"],
                   status="paused" if row["paused"] and row["status"] not in _ENDED
                   else row["status"], paused=bool(row["paused"]), phase=row["phase"],
                   input=_json(row["input"]), output=_json(row["output"]),
                   error=_json(row["error"]), failure=_json(row["failure"]),
                   current_stage=row["current_stage"], stages_done=row["stages_done"],
                   stages_total=row["stages_total"], last_seq=row["last_seq"],
                   created_at=row["created_at"], updated_at=row["updated_at"],
                   parent_work_id=row["parent_work_id"], forked_at_seq=row["forked_at_seq"],
                   waiting=_json(row["waiting"]),
                   breakpoints=_json(row["breakpoints"]) or [],
                   priority=row["priority"], started_at=row["started_at"],
                   finished_at=row["finished_at"], duration=row["duration"],
                   error_type=row["error_type"], worker=row["worker"], node=row["node"],
                   definition=row["definition"])

    @classmethod
    async def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str],
                            required: bool = False) -> list[Work | None]:
        rows = await context_of(info).works.load_many(list(node_ids))
        return [None if row is None else cls.of(row) for row in rows]

    @strawberry.field
    def progress(self) -> float:
        """The share of the saga's top-level stages done, 0 to 1."""
        if self.status == "completed":
            return 1.0
        return self.stages_done / self.stages_total if self.stages_total else 0.0

    @strawberry.field
    async def stage_runs(self, info: Info) -> list[StageRun]:
        rows = await context_of(info).stage_runs.load(self.work_id)
        return [StageRun.of(r) for r in rows]

    @strawberry.field
    async def events(self, info: Info, after_seq: int = 0, first: int = 100,
                     types: list[str] | None = None) -> list[Event]:
        """Its events after ``afterSeq``, at most ``first`` (up to 1,000); only those of
        ``types`` when given (the compensations of a long work without reading it all)."""
        if isinstance(first, bool) or not 1 <= first <= 1000:
            raise ValueError(f"first must be 1 to 1000, got {first!r}")
        if after_seq < 0:
            raise ValueError(f"afterSeq must be >= 0, got {after_seq!r}")
        if types is not None and not 1 <= len(types) <= 100:
            raise ValueError(f"types must name 1 to 100 event types, got {len(types)}")
        chosen = tuple(sorted(set(types))) if types is not None else None
        stream = await context_of(info).events.load((self.work_id, (after_seq, first, chosen)))
        return [Event.of(r) for r in stream]

    @strawberry.field
    async def state_at(self, info: Info, seq: int) -> JSON:
        """Time travel: the work's state right after event ``seq``."""
        import dataclasses

        state = await service_of(info).state_at(self.work_id, seq)
        return json.loads(json.dumps(dataclasses.asdict(state), default=str))

    @strawberry.field
    async def state_diff(self, info: Info, from_seq: int, to_seq: int) -> JSON:
        """What changed in its state from seq ``fromSeq`` to ``toSeq``: a list of
        ``{path, before, after}``."""
        found = await service_of(info).diff(self.work_id, from_seq, to_seq)
        return json.loads(json.dumps(found, default=str))

    @strawberry.field
    async def compare(self, info: Info, other_work_id: str) -> Divergence | None:
        """The first event where this work and another differ (a fork and its origin);
        null when one's events are a copy of the other's."""
        found = await service_of(info).compare(self.work_id, other_work_id)
        if found is None:
            return None
        seq, left, right = found
        return Divergence(seq=seq, mine=None if left is None else Event.of(left),
                          theirs=None if right is None else Event.of(right))

    @strawberry.field
    async def pending_commands(self, info: Info) -> list[PendingCommand]:
        """Commands sent to it that its holder has not taken yet."""
        return [PendingCommand(number=c.number, kind=c.command.kind, by=c.command.by,
                               sent_at=c.sent_at)
                for c in await context_of(info).pending.load(self.work_id)]


@strawberry.type
class PendingCommand:
    number: int
    kind: str
    by: str
    sent_at: float


@strawberry.type
class WorkEdge:
    cursor: str
    node: Work


@strawberry.type
class WorkConnection:
    edges: list[WorkEdge]
    page_info: relay.PageInfo
    total_count: int


# what a works list may be ordered by (engine.store.queries.WORK_ORDERS), as an enum
_ORDERS = {name.upper(): name for name in queries.WORK_ORDERS}
WorkOrder: Any = strawberry.enum(enum.Enum("WorkOrder", _ORDERS),  # type: ignore[misc]
                                 description="What a works list is ordered by; ties go "
                                             "by work id.")


@strawberry.type
class AggregateRow:
    """One group: its fields (and ``bucket``, the start of its time bucket), the
    reducer's value and how many rows it has."""

    group: JSON
    value: float | None
    count: int


@strawberry.type
class WorkDeleted:
    """The audit record of a deleted work, which outlives it."""

    work_id: str
    saga: str
    status: str
    events: int
    deleted_by: str
    reason: str
    deleted_at: float


async def work_of(info: Info, work_id: str) -> Work | None:
    """The work as it is now (from the store, not the request's loader)."""
    row = await service_of(info).store.work(work_id)
    return None if row is None else Work.of(row)


@strawberry.field
async def aggregate(info: Info, over: str = "works",
                    group_by: list[str] | None = None, reducer: str = "count",
                    field: str | None = None, expression: str | None = None,
                    bucket_seconds: float | None = None, saga: list[str] | None = None,
                    status: list[str] | None = None, since: float | None = None,
                    until: float | None = None, time: str | None = None
                    ) -> list[AggregateRow]:
    """Group works (``over: "works"``) or stage runs (``"stage_runs"``) by fields and
    time buckets, and fold each group with a reducer (count, sum, avg, min, max, p95,
    or one the server's app registered: ``reducers`` lists them) over a numeric field
    or a CEL expression mapping each row (``work`` or ``stage``) to a number, e.g.
    ``size(work.output.items)``. Buckets and ``since``/``until`` go by ``time``:
    ``created_at`` (the default for works), ``started_at`` (for stage runs) or
    ``finished_at``."""
    from engine.store.aggregates import aggregate as fold

    service = service_of(info)
    rows = await fold(service.store, over=over, group_by=group_by or [],
                      reducer=reducer, field=field, expression=expression,
                      bucket=bucket_seconds, saga=saga, status=status, since=since,
                      until=until, time=time, reducers=service.reducers)
    return [AggregateRow(group=r["group"], value=r["value"], count=r["count"])
            for r in rows]


@strawberry.field
def reducers(info: Info) -> list[str]:
    """The reducers aggregate folds with: the built-in ones, then those the server's
    app registered in Python."""
    from engine.store.aggregates import REDUCERS

    return [*REDUCERS, *sorted(service_of(info).reducers)]


@strawberry.type
class DeletionEdge:
    cursor: str
    node: WorkDeleted


@strawberry.type
class DeletionConnection:
    edges: list[DeletionEdge]
    page_info: relay.PageInfo


@strawberry.field
async def deletions(info: Info, work_id: str | None = None, first: int = 100,
                    after: str | None = None) -> DeletionConnection:
    """The audit of deleted works (of one work, or all), newest first, ``first`` (at
    most 1,000) after cursor ``after``."""
    from engine.store.deletion import deletions_of

    if not 0 <= first <= 1000:
        raise ValueError(f"first must be 0 to 1000, got {first!r}")
    if after is not None and not after.isdigit():
        raise ValueError(f"{after!r:.60} is not a cursor of this list")
    rows = await deletions_of(service_of(info).store, work_id, first + 1,
                              before=None if after is None else int(after))
    edges = [DeletionEdge(cursor=str(r["position"]), node=WorkDeleted(**{
        k: r[k] for k in ("work_id", "saga", "status", "events", "deleted_by", "reason",
                          "deleted_at")})) for r in rows[:first]]
    return DeletionConnection(edges=edges, page_info=relay.PageInfo(
        has_next_page=len(rows) > first, has_previous_page=after is not None,
        start_cursor=edges[0].cursor if edges else None,
        end_cursor=edges[-1].cursor if edges else None))


@strawberry.field
async def work(info: Info, work_id: str) -> Work | None:
    """A work (null: none such, or one its asker may not read)."""
    from .access import may_read

    row = await service_of(info).store.work(work_id)
    return None if row is None or not await may_read(info.context, row) else Work.of(row)


@strawberry.field
async def all_works(info: Info, first: int = 50, after: str | None = None,
                    saga: list[str] | None = None, status: list[str] | None = None,
                    order_by: WorkOrder = WorkOrder.CREATED_AT,
                    descending: bool = True) -> WorkConnection:
    """Works filtered by saga and status, ordered by ``orderBy`` (newest first by
    default; a time a work does not have yet, as an unfinished work's
    ``finishedAt``, counts as later than any)."""
    from .access import may_read, readable_sagas

    service = service_of(info)
    store = service.store
    order = order_by.value
    # only the sagas its asker may read; with a policy's condition, each row checked too
    saga, each = await readable_sagas(info, saga, service.runtime.sagas)
    if saga == []:
        return WorkConnection(edges=[], total_count=0, page_info=relay.PageInfo(
            has_next_page=False, has_previous_page=after is not None, start_cursor=None,
            end_cursor=None))
    rows, more = await queries.works_page(store, first=first, after=after, saga=saga,
                                          status=status, order=order,
                                          descending=descending)
    if each:
        rows = [r for r in rows if await may_read(info.context, r)]
    edges = [WorkEdge(cursor=queries.encode_cursor(r, order), node=Work.of(r))
             for r in rows]
    total = await queries.count_works(store, saga=saga, status=status)
    return WorkConnection(edges=edges, total_count=total, page_info=relay.PageInfo(
        has_next_page=more, has_previous_page=after is not None,
        start_cursor=edges[0].cursor if edges else None,
        end_cursor=edges[-1].cursor if edges else None))
