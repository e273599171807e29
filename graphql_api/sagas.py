"""Sagas over GraphQL: ``Saga`` (a registered definition, code or data) with the
definitions live worker nodes run, ``StageInfo`` (a stage of one, with the figures of
its runs), the catalog queries (``allSagas``, ``saga``, ``allStages``, ``stage``) and
the mutations on sagas given as data (create, enable, disable, delete)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

import strawberry
from strawberry import relay
from strawberry.scalars import JSON
from strawberry.types import Info

from .audit import actor
from .context import service_of
from .results import Conflict, InvalidInput, NotFound, WrongState, error_result
from .service import ApiError

__all__ = ["Running", "Saga", "SagaChanged", "SagaResult", "StageFigures", "StageInfo",
           "all_sagas", "all_stages", "create_saga", "delete_saga", "disable_saga",
           "enable_saga", "saga", "stage"]


@strawberry.type
class StageFigures:
    """How a stage's runs went, across works: counts by status, durations."""

    runs: int
    completed: int
    failed: int
    avg_duration: float | None
    p95_duration: float | None


@strawberry.type
class StageInfo(relay.Node):
    """A stage of a saga as its definition has it (``path`` like ``pack[*]/box``), with
    its kind, children and settings (``details``: retries, timeouts, compensation,
    schemas, keys, the parameters of its kind), and the figures of its runs."""

    key: relay.NodeID[str]  # saga:path
    saga: str
    path: str
    template: str
    name: str
    kind: str
    children: list[str]
    has_compensation: bool
    details: JSON

    @classmethod
    def of(cls, saga: str, stage: dict[str, Any]) -> StageInfo:
        return cls(key=f"{saga}:{stage['path']}", saga=saga, path=stage["path"],
                   template=stage["template"], name=stage["name"], kind=stage["kind"],
                   children=list(stage.get("children", [])),
                   has_compensation=bool(stage.get("compensation")), details=stage)

    @classmethod
    async def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str],
                            required: bool = False) -> list[StageInfo | None]:
        found: list[StageInfo | None] = []
        for key in node_ids:
            saga, _, path = key.partition(":")
            found.append(next((s for s in _stages(info, saga) if s.path == path), None))
        return found

    @strawberry.field
    async def figures(self, info: Info) -> StageFigures:
        from engine.store.aggregates import aggregate

        store = service_of(info).store
        counts = await aggregate(store, over="stage_runs", group_by=["template", "status"],
                                 saga=[self.saga])
        mine = [r for r in counts if r["group"]["template"] == self.path]
        by_status = {r["group"]["status"]: r["count"] for r in mine}
        durations = {}
        for reducer in ("avg", "p95"):
            rows = await aggregate(store, over="stage_runs", group_by=["template"],
                                   reducer=reducer, field="duration", saga=[self.saga])
            durations[reducer] = next((r["value"] for r in rows
                                       if r["group"]["template"] == self.path), None)
        return StageFigures(runs=sum(by_status.values()),
                            completed=by_status.get("completed", 0),
                            failed=by_status.get("failed", 0),
                            avg_duration=durations["avg"], p95_duration=durations["p95"])


@strawberry.type
class Running:
    """A definition of the saga that live worker nodes run, and which nodes."""

    definition: str
    version: int
    nodes: list[str]
    published_at: float


@strawberry.type
class Saga(relay.Node):
    """A registered definition: its stages, its hash and version, and the definitions
    the live worker nodes actually run (two during a rolling deployment)."""

    key: relay.NodeID[str]
    name: str
    definition: str
    version: int
    continues: list[int]
    description: str
    input_schema: JSON | None
    stages: list[StageInfo]
    enabled: bool = True
    given_as_data: bool = False  # created with createSaga, not registered in code
    disabled_by: str | None = None
    disabled_reason: str | None = None

    @classmethod
    def of(cls, description: dict[str, Any], input_schema: Any,
           row: Any = None) -> Saga:
        name = description["saga"]
        return cls(key=name, name=name, definition=description["definition"],
                   version=description["version"], continues=description["continues"],
                   description=description["description"], input_schema=input_schema,
                   stages=[StageInfo.of(name, st) for st in description["stages"]],
                   enabled=row is None or bool(row.enabled),
                   given_as_data=row is not None and row.data is not None,
                   disabled_by=None if row is None else row.disabled_by,
                   disabled_reason=None if row is None else row.disabled_reason)

    @classmethod
    def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str],
                      required: bool = False) -> list[Saga | None]:
        known = {s.name: s for s in _sagas(info)}
        return [known.get(key) for key in node_ids]

    @strawberry.field
    async def running(self, info: Info) -> list[Running]:
        from engine.store.catalog import published

        return [Running(definition=p.definition, version=p.version, nodes=list(p.nodes),
                        published_at=p.published_at)
                for p in await published(service_of(info).store, saga=self.name)]


def _sagas(info: Info) -> list[Saga]:
    service = service_of(info)
    rows = service.follower.rows if service.follower is not None else {}
    return [Saga.of(service.runtime.describe(s.name), s.input_schema, rows.get(s.name))
            for s in service.sagas()]


def _stages(info: Info, saga: str | None = None) -> list[StageInfo]:
    return [stage for s in _sagas(info) if saga is None or s.name == saga
            for stage in s.stages]


@strawberry.type
class SagaChanged:
    """A saga after createSaga, enableSaga or disableSaga (null once deleted), and the
    version of its stored row."""

    saga: Saga | None
    name: str
    version: int
    enabled: bool


SagaResult = Annotated[SagaChanged | NotFound | WrongState | InvalidInput | Conflict,
                       strawberry.union("SagaResult")]


async def _change_saga(info: Info, action: str, name: str, by: str, data: Any = None,
                       reason: str = "") -> Any:
    service = service_of(info)
    try:
        row = await service.change_saga(action, name, by=actor(info, by), data=data,
                                        reason=reason)
    except ApiError as exc:
        return error_result(exc)
    saga = None if action == "delete" else next(
        (s for s in _sagas(info) if s.name == name), None)
    return SagaChanged(saga=saga, name=row.name, version=row.version, enabled=row.enabled)


@strawberry.field
def all_sagas(info: Info) -> list[Saga]:
    """The catalog: every saga this node knows, with its stages."""
    return _sagas(info)


@strawberry.field
def saga(info: Info, name: str) -> Saga | None:
    return next((s for s in _sagas(info) if s.name == name), None)


@strawberry.field
def all_stages(info: Info, saga: str | None = None,
               kind: str | None = None) -> list[StageInfo]:
    """Stage templates across sagas (of one saga, of one kind); each with the
    figures of its runs."""
    return [s for s in _stages(info, saga) if kind is None or s.kind == kind]


@strawberry.field
def stage(info: Info, saga: str, path: str) -> StageInfo | None:
    return next((s for s in _stages(info, saga) if s.path == path), None)


@strawberry.mutation
async def create_saga(info: Info, name: str, data: JSON, by: str) -> SagaResult:
    """Register (or replace) a saga given as data: the composites of a saga in code
    (kinds Stage, Saga, Parallel, Map, Loop, Branch, Wait, Sleep, SagaRef) naming the
    functions the app registered; the worker nodes take it at their next poll."""
    return await _change_saga(info, "put", name, by, data=data)


@strawberry.mutation
async def enable_saga(info: Info, name: str, by: str) -> SagaResult:
    return await _change_saga(info, "enable", name, by)


@strawberry.mutation
async def disable_saga(info: Info, name: str, by: str,
                       reason: str = "") -> SagaResult:
    """No new works of the saga (code or data) until enabled; its works go on."""
    return await _change_saga(info, "disable", name, by, reason=reason)


@strawberry.mutation
async def delete_saga(info: Info, name: str, by: str) -> SagaResult:
    """Delete a saga given as data; refused while works of it are unfinished."""
    return await _change_saga(info, "delete", name, by)
