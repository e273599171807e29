"""A dry run over GraphQL: ``dryRun`` rehearses a work of a saga, chosen stages forced
to fail, to see the path its compensation takes, and answers how it went
(``DryRunReport``: its status, error, events and the outcome of each stage) with
nothing stored. See :meth:`graphql_api.service.Service.dry_run` for what runs."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from .context import service_of
from .results import InvalidInput, NotFound, error_result
from .service import ApiError

__all__ = ["DryRunReport", "DryRunResult", "RehearsedEvent", "RehearsedStage", "dry_run"]


@strawberry.type
class RehearsedEvent:
    """An event of the rehearsed work, as a work's stream would hold it."""

    seq: int
    type: str
    path: str
    attempt: int
    payload: JSON


@strawberry.type
class RehearsedStage:
    """A stage the rehearsal reached, in the order it started: ``status`` completed,
    failed (``forced`` when ``fail`` named it), compensated, or running (still going
    when the rehearsal stopped); ``output`` is the example it gave."""

    path: str
    status: str
    attempts: int
    forced: bool
    output: JSON | None
    error: JSON | None


@strawberry.type
class DryRunReport:
    """How a dry run went. ``status`` is the status the work ended in (completed,
    failed, compensation_failed), ``ended`` false when its time ran out first (a Sleep
    or a Wait); ``error`` why it ended so, ``failure`` the failure that made it
    compensate, ``compensated`` the stages compensated, in their order; ``fail`` the
    globs the forced failures were matched with."""

    saga: str
    status: str
    ended: bool
    output: JSON | None
    error: JSON | None
    failure: JSON | None
    compensated: list[str]
    fail: list[str]
    stages: list[RehearsedStage]
    events: list[RehearsedEvent]


DryRunResult = Annotated[DryRunReport | NotFound | InvalidInput,
                         strawberry.union("DryRunResult")]


@strawberry.mutation
async def dry_run(info: Info, saga: str, input: JSON | None = None,
                  fail: list[str] | None = None) -> DryRunResult:
    """Rehearse a work of ``saga``: each stage gives its declared example output
    instead of running its transaction, the stages ``fail`` names fail for good
    (``pay/charge``; ``pack[*]/box`` every item, ``pack[1]/box`` one; a glob such as
    ``pay/*``), and compensations are recorded as done, never called. Guards and the
    conditions that choose the path (map items, branches, loops) run for real;
    observers are not told. Nothing is stored: no work is created. A mutation, not a
    query, because it runs that code. An unknown saga is ``NotFound``; an input that
    does not match the saga's schema, or a ``fail`` that names no stage, is
    ``InvalidInput`` naming the field."""
    try:
        found = await service_of(info).dry_run(saga, input, fail or [])
    except ApiError as exc:
        return error_result(exc)  # type: ignore[return-value]
    state = found.state
    return DryRunReport(
        saga=saga, status=state.display_status, ended=found.ended, output=state.output,
        error=state.error, failure=state.failure, compensated=list(state.compensated),
        fail=list(found.fail),
        stages=[RehearsedStage(path=st.path, status=st.status, attempts=st.attempt,
                               forced=found.forced(st.path), output=st.output, error=st.error)
                for st in state.stages.values() if st.path],
        events=[RehearsedEvent(seq=e.seq, type=e.type, path=e.path, attempt=e.event.attempt,
                               payload=dict(e.event.payload)) for e in found.events])
