"""The backups pack's part of the GraphQL API (a :class:`graphql_api.extensions.ApiPart`
in the pack's ``WorkerApp``; ``stepsaga serve --app workers.actions.backups:app``).

Queries (``read``): ``backupJobs`` (each job's source, target, steps, schedule and the
schedule's next fire time) and ``backupManifests(job, target)`` (the backups on the
targets, newest first, as their manifests say: id, times, sizes and checksums per step,
and whether the manifest checked and its object is there at its size). A client sees
the jobs whose ``backups.backup`` works it may read.

Mutations, each a work of the pack's sagas run to its end (up to ``wait`` seconds; over
HTTP the server's ``serve.query_timeout`` bounds it too) by
:func:`graphql_api.extensions.run_saga`, answering a ``BackupRun`` (the work's id,
status, output and error; a work still going after ``wait`` as it is then) or a typed
error: ``triggerBackup(job)`` (``write``),
``verifyBackup(job, backup)`` (``write``: the integrity check), ``restoreBackup(job,
backup, into, replace)`` (``admin``: a restore into an existing database or directory
is refused unless ``replace``) and ``rollbackRestore(workId)`` (``admin``: puts back
what that restore replaced). Under the policies each also needs ``write`` on its saga.

This is the one module of the pack that knows of the API: the app imports it only
when it is built, as graphql_api.extensions asks a pack to.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

import anyio
import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from engine.store.aggregates import plain_row
from graphql_api.access import may_read, require
from graphql_api.context import service_of
from graphql_api.extensions import ApiPart, run_saga
from graphql_api.results import Conflict, InvalidInput, NotFound, WrongState, error_result
from graphql_api.service import ApiError
from workers import schedules as schedule_rows
from workers.actions.backups.config import BackupsConfig
from workers.actions.backups.errors import BackupConfigError
from workers.actions.backups.inventory import jobs as job_rows
from workers.actions.backups.inventory import list_backups

__all__ = ["ACTIONS", "BackupEndpoint", "BackupJob", "BackupManifest", "BackupRun",
           "BackupRunResult", "BackupStep", "api_part"]

ACTIONS = {"triggerBackup": "write", "verifyBackup": "write", "restoreBackup": "admin",
           "rollbackRestore": "admin"}
_WAIT = 25.0  # under the server's query timeout (serve.query_timeout, 30 s by default)


@strawberry.type
class BackupEndpoint:
    """A job's source or target: its name in the config and its kind."""

    name: str
    kind: str


@strawberry.type
class BackupJob:
    """A backup job of the config. ``nextAt``: when its schedule fires next (the
    store's schedule once a node created it, else computed from the cron; null without
    a schedule); ``steps`` and ``retention`` as the config gives them."""

    name: str
    source: BackupEndpoint
    target: BackupEndpoint
    steps: JSON
    schedule: str | None
    timezone: str
    schedule_name: str | None
    next_at: float | None
    schedule_paused: bool
    retention: JSON


@strawberry.type
class BackupStep:
    """One step of a backup as its manifest records it (``source``, then each
    middleware step): the content type and the size (bytes; a Float, as a backup may
    pass GraphQL's 32-bit Int), sha256 and md5 of what it gave on."""

    step: str
    kind: str
    content_type: str
    size: float
    sha256: str
    md5: str


@strawberry.type
class BackupManifest:
    """A backup on a target. ``verified``: its manifest read with its digest matching and
    its object is there at the manifest's size (what retention counts as a backup; the
    integrity check, verifyBackup, recomputes every checksum); a manifest that does not
    read has only ``id`` and ``error``."""

    id: str
    job: str
    target: str
    created_at: float | None
    completed_at: float | None
    size: float | None
    sha256: str | None
    md5: str | None
    steps: list[BackupStep]
    tools: JSON | None
    verified: bool
    error: str | None


@strawberry.type
class BackupRun:
    """A work of one of the pack's sagas: ended, or as it is when the mutation's wait
    was over (it goes on: ``workId`` follows it); ``error`` its message and ``stage``
    the stage that failed, when it failed."""

    work_id: str
    saga: str
    status: str
    output: JSON | None
    error: str | None
    stage: str | None


BackupRunResult = Annotated[BackupRun | NotFound | InvalidInput | WrongState | Conflict,
                            strawberry.union("BackupRunResult")]


def _job(row: dict[str, Any], schedule: dict[str, Any] | None) -> BackupJob:
    next_at = None
    if schedule is not None:
        next_at = float(schedule["next_at"])
    elif row["schedule"]:
        next_at = schedule_rows.next_tick(row["schedule"], row["timezone"], time.time())
    return BackupJob(
        name=row["name"], source=BackupEndpoint(**row["source"]),
        target=BackupEndpoint(**row["target"]), steps=row["steps"],
        schedule=row["schedule"], timezone=row["timezone"],
        schedule_name=row["schedule_name"], next_at=next_at,
        schedule_paused=bool(schedule and schedule["paused"]), retention=row["retention"])


def _manifest(job: str, target: str, row: dict[str, Any]) -> BackupManifest:
    steps = [BackupStep(step=s.get("step", ""), kind=s.get("kind", ""),
                        content_type=s.get("content_type", ""), size=float(s.get("size", 0)),
                        sha256=s.get("sha256", ""), md5=s.get("md5", ""))
             for s in row.get("steps", [])]
    return BackupManifest(
        id=row["id"], job=job, target=target, created_at=row.get("created_at"),
        completed_at=row.get("completed_at"),
        size=None if row.get("size") is None else float(row["size"]),
        sha256=row.get("sha256"), md5=row.get("md5"), steps=steps, tools=row.get("tools"),
        verified=bool(row.get("object_present")), error=row.get("error"))


def _run(row: dict[str, Any]) -> BackupRun:
    error = row.get("error") if isinstance(row.get("error"), dict) else None
    failure = row.get("failure") if isinstance(row.get("failure"), dict) else None
    return BackupRun(work_id=row["work_id"], saga=row["saga"], status=row["status"],
                     output=row.get("output"),
                     error=None if error is None else str(error.get("message", "")),
                     stage=None if failure is None else failure.get("path"))


async def _readable(info: Info, job: str) -> bool:
    return await may_read(info.context, {"saga": "backups.backup", "input": {"job": job}})


def api_part(config: BackupsConfig) -> ApiPart:
    """The pack's fields over ``config`` (see the module docstring)."""

    async def started(info: Info, saga: str, input: Any, request_id: str | None,
                      wait: float) -> BackupRun | NotFound | InvalidInput | WrongState | Conflict:
        if isinstance(wait, bool) or not 0 < wait <= 300:
            return InvalidInput(message=f"wait: expected seconds from 0 to 300, got {wait}",
                                field="wait")
        # a request id of our own when none is given: the work is found again by it when
        # it outlives the wait (the same request answers the same work)
        asked = request_id or f"backups-{uuid.uuid4().hex}"
        try:
            return _run(await run_saga(info, saga, input, request_id=asked, wait=wait))
        except ApiError as exc:
            if exc.kind != "wrong_state" or exc.status in (None, "disabled"):
                return error_result(exc)
        # it goes on past the wait: answered as it is now (running, waiting for a lock...)
        work_id, _ = await service_of(info).create_work(saga, input, request_id=asked)
        row = await service_of(info).store.work(work_id)
        assert row is not None  # the work the call above made
        return _run(plain_row(row))

    @strawberry.type
    class BackupsQuery:
        @strawberry.field
        async def backup_jobs(self, info: Info) -> list[BackupJob]:
            """The config's backup jobs this client may see, by name."""
            store = service_of(info).store
            found = []
            for row in job_rows(config):
                if not await _readable(info, row["name"]):
                    continue
                schedule = None
                if row["schedule_name"]:
                    try:
                        schedule = await schedule_rows.get(store, row["schedule_name"])
                    except KeyError:  # no node has created it yet
                        schedule = None
                found.append(_job(row, schedule))
            return found

        @strawberry.field
        async def backup_manifests(self, info: Info, job: str | None = None,
                                   target: str | None = None) -> list[BackupManifest]:
            """The backups of a job (or of every job writing to ``target``, or of all),
            newest first; an unknown job or target is an error naming it."""
            if job is not None:
                config.job(job)  # BackupConfigError naming the jobs
            if target is not None and target not in config.targets:
                raise BackupConfigError(f"target: unknown backup target {target!r} (the "
                                        f"targets are: {', '.join(sorted(config.targets))})")
            found: list[BackupManifest] = []
            for name, spec in sorted(config.jobs.items()):
                if job not in (None, name) or target not in (None, spec.target):
                    continue
                if not await _readable(info, name):
                    continue
                rows = await anyio.to_thread.run_sync(list_backups, config, name)
                found += [_manifest(name, spec.target, r) for r in rows]
            return sorted(found, key=lambda m: m.created_at or 0.0, reverse=True)

    @strawberry.type
    class BackupsMutation:
        @strawberry.mutation
        async def trigger_backup(self, info: Info, job: str, request_id: str | None = None,
                                 wait: float = _WAIT) -> BackupRunResult:
            """Back ``job`` up now (a work of ``backups.backup``), waiting up to ``wait``
            seconds for it to end (WrongState after: it goes on)."""
            return await started(info, "backups.backup", {"job": job}, request_id, wait)

        @strawberry.mutation
        async def verify_backup(self, info: Info, job: str, backup: str = "latest",
                                request_id: str | None = None,
                                wait: float = _WAIT) -> BackupRunResult:
            """The integrity check of a backup (its id, or ``latest``): every checksum
            recomputed from the target; failed, naming what differs, when one does."""
            return await started(info, "backups.verify", {"job": job, "backup": backup},
                                 request_id, wait)

        @strawberry.mutation
        async def restore_backup(self, info: Info, job: str, backup: str = "latest",
                                 into: JSON | None = None, replace: bool = False,
                                 request_id: str | None = None,
                                 wait: float = _WAIT) -> BackupRunResult:
            """Restore a backup into ``into`` (null: the job's source; see
            ``backups.restore``): refused into an existing database or directory unless
            ``replace``, which keeps the old one aside for rollbackRestore."""
            return await started(info, "backups.restore",
                                 {"job": job, "backup": backup, "into": into,
                                  "replace": replace}, request_id, wait)

        @strawberry.mutation
        async def rollback_restore(self, info: Info, work_id: str,
                                   request_id: str | None = None,
                                   wait: float = _WAIT) -> BackupRunResult:
            """Undo the completed restore ``workId``: put back what it replaced (or
            remove what it loaded where there was nothing)."""
            row = await service_of(info).store.work(work_id)
            if row is None or row["saga"] != "backups.restore":
                return NotFound(message=f"no restore has work id {work_id!r}",
                                field="workId")
            await require(info, "read", row)
            if row["status"] != "completed":
                return WrongState(message=f"restore {work_id} is {row['status']}: only a "
                                          "completed restore is rolled back (a failed one "
                                          "put everything back itself)",
                                  status=row["status"])
            return await started(info, "backups.rollback", plain_row(row).get("output"),
                                 request_id, wait)

    return ApiPart(name="backups", query=BackupsQuery, mutation=BackupsMutation,
                   actions=ACTIONS)
