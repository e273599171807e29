"""Backups run as sagas: SQLite, PostgreSQL, MariaDB and directories, to a directory or
an S3-compatible store, through compression and encryption steps, with manifests,
integrity checks, retention, restore, locks, schedules and a failure hook.

See :mod:`.app` for loading it, :mod:`.config` for its ``[backups]`` section and
:mod:`.sagas` for the sagas.
"""

from __future__ import annotations

from .app import app, backups_app, job_schedules
from .config import BackupsConfig, Job, KeySpec, SourceSpec, StepSpec, TargetSpec, parse
from .errors import (
    BackupConfigError,
    BackupError,
    IntegrityError,
    SourceError,
    TargetError,
    TargetExistsError,
    WrongKeyError,
)
from .inventory import jobs, list_backups
from .sagas import backup_sagas

__all__ = ["BackupConfigError", "BackupError", "BackupsConfig", "IntegrityError", "Job",
           "KeySpec", "SourceError", "SourceSpec", "StepSpec", "TargetError",
           "TargetExistsError", "TargetSpec", "WrongKeyError", "app", "backup_sagas",
           "backups_app", "job_schedules", "jobs", "list_backups", "parse"]
