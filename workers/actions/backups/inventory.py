"""What a backups page shows: the jobs of a config, and the backups of a job as their
manifests say (sizes, checksums, times), for the API and the UI to read.

Blocking (they read the targets): call them through ``anyio.to_thread.run_sync``.
A manifest that does not read is listed with its ``error`` instead of being left out,
so a person sees what retention and restores skip.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from . import manifest as manifests
from .config import BackupsConfig
from .errors import IntegrityError, TargetError
from .targets import open_storage

__all__ = ["jobs", "list_backups"]


def jobs(config: BackupsConfig) -> list[dict[str, Any]]:
    """Every job: its source, target, steps, schedule and retention (no secrets)."""
    found = []
    for job in sorted(config.jobs.values(), key=lambda j: j.name):
        source, target = config.sources[job.source], config.targets[job.target]
        found.append({
            "name": job.name, "source": {"name": source.name, "kind": source.kind},
            "target": {"name": target.name, "kind": target.kind},
            "steps": [{k: v for k, v in asdict(s).items() if v not in ("", None)}
                      for s in job.steps],
            "schedule": job.schedule or None, "timezone": job.timezone,
            "schedule_name": f"backups.{job.name}" if job.schedule else None,
            "retention": {"keep_last": job.keep_last, "keep_daily": job.keep_daily,
                          "keep_weekly": job.keep_weekly, "keep_monthly": job.keep_monthly,
                          "max_age_days": job.max_age_days}})
    return found


def list_backups(config: BackupsConfig, job_name: str) -> list[dict[str, Any]]:
    """The job's backups on its target, newest first: id, times, the object's size and
    checksums, each step's, and whether the object is there at its size."""
    job = config.job(job_name)
    storage = open_storage(config.targets[job.target])
    found: list[dict[str, Any]] = []
    for key in storage.keys(job.name + "/"):
        if not key.endswith("/manifest.json"):
            continue
        backup_id = key.split("/")[1]
        try:
            data = storage.get(key)
            if data is None:
                continue
            m = manifests.read(data, where=key)
        except (IntegrityError, TargetError) as exc:
            found.append({"id": backup_id, "error": str(exc), "created_at": None})
            continue
        found.append({
            "id": m["id"], "created_at": m["created_at"], "completed_at": m["completed_at"],
            "size": m["final"]["size"], "sha256": m["final"]["sha256"],
            "md5": m["final"]["md5"], "steps": m["steps"], "tools": m["tools"],
            "object_present": manifests.present(storage, m)})
    return sorted(found, key=lambda b: b["created_at"] or 0.0, reverse=True)
