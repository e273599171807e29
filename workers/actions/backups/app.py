"""The backups pack as a :class:`workers.node.WorkerApp`.

Load it on a node with ``stepsaga serve --app workers.actions.backups:app --config
stepsaga.toml`` (or ``stepsaga worker``); its ``[backups]`` section is documented in
:mod:`workers.actions.backups.config`. Each job with a ``schedule`` gets a schedule
named ``backups.<job>`` starting ``backups.backup`` at its ticks (created or brought
in line when the node starts, deleted when its job is gone from the config; a tick is
skipped while the last tick's backup still runs).
From Python::

    app = backups_app(config=parse({...}))
    async with Runtime(app.sagas, store=store, gate=NodeGate(store, holder="me")) as rt:
        result = await rt.run("backups.backup", {"job": "nightly"})

Through the API (the app's :mod:`.api` part): ``backupJobs``, ``backupManifests``,
``triggerBackup``, ``verifyBackup``, ``restoreBackup`` and ``rollbackRestore``; or
``createWork(saga: "backups.backup", input: {job: "nightly"})``, and likewise
``backups.restore``, ``backups.verify``, ``backups.retention`` and ``backups.rollback``
(with a restore's output as its input).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from engine import Clock
from workers.node import ApiRef, WorkerApp
from workers.schedules import Schedule

from .config import BackupsConfig, parse
from .sagas import backup_sagas

__all__ = ["app", "backups_app", "job_schedules"]


def job_schedules(config: BackupsConfig) -> list[Schedule]:
    return [Schedule(name=f"backups.{job.name}", saga="backups.backup",
                     input={"job": job.name}, cron=job.schedule, timezone=job.timezone,
                     overlap="skip")
            for job in config.jobs.values() if job.schedule]


def backups_app(settings: Mapping[str, Any] | None = None, *,
                config: BackupsConfig | None = None, clock: Clock | None = None,
                notify: Callable[[dict[str, Any]], Any] | None = None) -> WorkerApp:
    """The pack's sagas and schedules, from ``config`` or the ``backups`` section of
    ``settings`` (what :func:`graphql_api.config.load` returns); ``notify`` is called
    with a dict (saga, work_id, job, backup_id, stage, error) when a backup fails, in
    place of the config's ``notify``."""
    if config is None:
        config = parse((settings or {}).get("backups"))
    return WorkerApp(sagas=backup_sagas(config, clock=clock, notify=notify),
                     schedules=job_schedules(config), schedule_prefix="backups.",
                     api=[ApiRef("graphql_api.packs.backups:api_part", (config,))])


def app(settings: Mapping[str, Any] | None = None) -> WorkerApp:
    """What ``--app workers.actions.backups:app`` loads (with the config's settings)."""
    return backups_app(settings)
