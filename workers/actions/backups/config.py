"""The ``[backups]`` section: sources, targets, keys and jobs, checked as a whole.

Every error names the field at fault (``backups.jobs.nightly.source``) and what was
expected, before anything is dumped or written. The section, as TOML::

    [backups]
    notify = "myapp.hooks:backup_failed"  # optional: called with a dict when a backup fails
                                          # (its keys and how it is called: .notify)
    staging = ""                          # a directory for SQLite snapshots (default: temp)
    restore_paths = []                    # where a restore may write a file or directory
                                          # it is given (into.path); a source's own path
                                          # and databases are always allowed

    [backups.keys.main]                   # an AES-256 key: 32 bytes
    key_file = "/etc/stepsaga/backup.key" # raw 32 bytes, or 64 hex digits, or base64
    # key = "64 hex digits or base64"     # or inline

    [backups.sources.app]                 # kind: sqlite | postgres | mariadb | directory
    kind = "sqlite"
    path = "/var/lib/app/app.sqlite"
    # postgres: url = "postgresql://user:password@host:5432/db"
    # mariadb: host, port, user, password, database (or socket)
    # directory: path (archived as a tar stream)

    [backups.targets.offsite]             # kind: directory | s3
    kind = "s3"
    bucket = "backups"
    prefix = "app/"                       # every object of this target is under it
    endpoint_url = ""                     # empty: AWS; else any S3-compatible store
    region = "us-east-1"
    access_key_id = ""                    # empty: boto3's own lookup
    secret_access_key = ""
    part_size = 8388608                   # multipart part size, >= 5 MiB
    # directory: path

    [backups.jobs.nightly]
    source = "app"
    target = "offsite"
    steps = ["zstd", {kind = "aes-gcm", key = "main"}]  # in order; each optional
    # a step: "gzip" | "zstd" | "aes-gcm" | "gpg", or a table with options:
    # {kind = "gzip", level = 6}, {kind = "zstd", level = 3},
    # {kind = "aes-gcm", key = "main"}, {kind = "gpg", recipient = "ops@example.com",
    #  homedir = ""}
    schedule = "0 3 * * *"                # optional cron; its ticks start backups
    timezone = "UTC"
    keep_last = 7                         # retention: 0 keeps all by count
    keep_daily = 7                        # one per day for the last N days with one
    keep_weekly = 4
    keep_monthly = 6
    max_age_days = 0                      # 0: no age limit; else older ones go
                                          # (unless a generation above keeps them)

>>> cfg = parse({"sources": {"db": {"kind": "sqlite", "path": "/tmp/a.sqlite"}},
...              "targets": {"here": {"kind": "directory", "path": "/tmp/b"}},
...              "jobs": {"daily": {"source": "db", "target": "here", "steps": ["gzip"]}}})
>>> cfg.jobs["daily"].steps[0].kind
'gzip'
>>> parse({"jobs": {"daily": {"source": "nope", "target": "x"}}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
workers.actions.backups.errors.BackupConfigError: backups.jobs.daily.source: unknown ...
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..shared.checks import Checks, decode_key
from ..shared.storage import StorageSpec
from .errors import BackupConfigError

__all__ = ["BackupsConfig", "Job", "KeySpec", "SourceSpec", "StepSpec", "TargetSpec",
           "load_key", "parse", "source_spec", "source_table"]

SOURCE_KINDS = ("sqlite", "postgres", "mariadb", "directory")
STEP_KINDS = ("gzip", "zstd", "aes-gcm", "gpg")
_DB = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceSpec:
    name: str
    kind: str
    path: str = ""
    url: str = ""
    host: str = "127.0.0.1"
    port: int = 3306
    user: str = ""
    password: str = ""
    database: str = ""
    socket: str = ""


TargetSpec = StorageSpec  # a target is a storage of workers.actions.shared


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSpec:
    kind: str
    level: int | None = None
    key: str = ""        # aes-gcm: the name of a key in [backups.keys]
    recipient: str = ""  # gpg
    homedir: str = ""    # gpg: its GNUPGHOME (empty: gpg's default)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeySpec:
    name: str
    key: str = ""
    key_file: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    name: str
    source: str
    target: str
    steps: tuple[StepSpec, ...] = ()
    schedule: str = ""
    timezone: str = "UTC"
    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    max_age_days: float = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupsConfig:
    """The checked ``[backups]`` section (see the module docstring)."""

    sources: Mapping[str, SourceSpec] = field(default_factory=dict)
    targets: Mapping[str, TargetSpec] = field(default_factory=dict)
    keys: Mapping[str, KeySpec] = field(default_factory=dict)
    jobs: Mapping[str, Job] = field(default_factory=dict)
    notify: str = ""
    staging: str = ""
    restore_paths: tuple[str, ...] = ()

    def job(self, name: object) -> Job:
        if not isinstance(name, str) or name not in self.jobs:
            raise BackupConfigError(f"job: unknown backup job {name!r} (the jobs are: "
                                    f"{', '.join(sorted(self.jobs)) or 'none'})")
        return self.jobs[name]

    def notifier(self) -> Callable[[dict[str, Any]], Any] | None:
        """The function ``notify`` names, imported (None when it is empty)."""
        if not self.notify:
            return None
        module, _, attribute = self.notify.partition(":")
        try:
            found = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError, ValueError) as exc:
            raise BackupConfigError(f"backups.notify: {self.notify!r} cannot be imported: "
                                    f"{exc}") from None
        if not callable(found):
            raise BackupConfigError(f"backups.notify: {self.notify!r} is not callable")
        return found  # type: ignore[no-any-return]


_CHECKS = Checks(BackupConfigError, "backups")
_where = _CHECKS.where
_table = _CHECKS.table
_text = _CHECKS.text
_whole = _CHECKS.whole
_done = _CHECKS.done
_named = _CHECKS.named
_kind = _CHECKS.kind


_SOURCE_FIELDS = {"sqlite": ("path",), "directory": ("path",), "postgres": ("url",),
                  "mariadb": ("host", "port", "user", "password", "database", "socket")}


def source_table(spec: SourceSpec) -> dict[str, Any]:
    """A source as its table in the config (what :func:`source_spec` reads)."""
    return {"kind": spec.kind, **{f: getattr(spec, f) for f in _SOURCE_FIELDS[spec.kind]}}


def source_spec(name: str, value: Any, where: str) -> SourceSpec:
    """A source's table checked (``where`` names it in errors)."""
    data = _table(value, where)
    kind = _kind(data, where, SOURCE_KINDS)
    if kind in ("sqlite", "directory"):
        path = _text(data, "path", where)
        if not path:
            raise BackupConfigError(f"{where}.path: a {kind} source needs a path")
        _done(data, where, "kind and path")
        return SourceSpec(name=name, kind=kind, path=path)
    if kind == "postgres":
        url = _text(data, "url", where)
        if not re.match(r"^postgres(ql)?(\+\w+)?://", url):
            raise BackupConfigError(f"{where}.url: expected postgresql://user@host:port/db, "
                                    f"got {url!r:.60}")
        _done(data, where, "kind and url")
        return SourceSpec(name=name, kind=kind, url=url)
    spec = SourceSpec(name=name, kind=kind, host=_text(data, "host", where, "127.0.0.1"),
                      port=_whole(data, "port", where, 3306, 1),
                      user=_text(data, "user", where), password=_text(data, "password", where),
                      database=_text(data, "database", where), socket=_text(data, "socket",
                                                                           where))
    if not _DB.match(spec.database):
        raise BackupConfigError(f"{where}.database: expected a database name (letters, "
                                f"digits, '_'), got {spec.database!r}")
    _done(data, where, "kind, host, port, user, password, database and socket")
    return spec


def _target(name: str, value: Any) -> TargetSpec:
    return _CHECKS.storage(name, value, _where("targets", name), "target")


def _step(value: Any, where: str, keys: Mapping[str, KeySpec]) -> StepSpec:
    data = {"kind": value} if isinstance(value, str) else _table(value, where)
    kind = _kind(data, where, STEP_KINDS)
    if kind in ("gzip", "zstd"):
        top = 9 if kind == "gzip" else 22
        level = _whole(data, "level", where, 6 if kind == "gzip" else 3, 1)
        if level > top:
            raise BackupConfigError(f"{where}.level: {kind} levels go from 1 to {top}, "
                                    f"got {level}")
        _done(data, where, "kind and level")
        return StepSpec(kind=kind, level=level)
    if kind == "aes-gcm":
        key = _text(data, "key", where)
        if key not in keys:
            raise BackupConfigError(f"{where}.key: unknown key {key!r} (the keys in "
                                    f"[backups.keys] are: {', '.join(sorted(keys)) or 'none'})")
        _done(data, where, "kind and key")
        return StepSpec(kind=kind, key=key)
    recipient = _text(data, "recipient", where)
    if not recipient:
        raise BackupConfigError(f"{where}.recipient: a gpg step needs a recipient (a key id, "
                                "fingerprint or e-mail address)")
    homedir = _text(data, "homedir", where)
    _done(data, where, "kind, recipient and homedir")
    return StepSpec(kind=kind, recipient=recipient, homedir=homedir)


def _job(name: str, value: Any, config: BackupsConfig) -> Job:
    where = _where("jobs", name)
    data = _table(value, where)
    source, target = _text(data, "source", where), _text(data, "target", where)
    if source not in config.sources:
        raise BackupConfigError(f"{where}.source: unknown source {source!r} (the sources "
                                f"are: {', '.join(sorted(config.sources)) or 'none'})")
    if target not in config.targets:
        raise BackupConfigError(f"{where}.target: unknown target {target!r} (the targets "
                                f"are: {', '.join(sorted(config.targets)) or 'none'})")
    steps = data.pop("steps", [])
    if not isinstance(steps, list):
        raise BackupConfigError(f"{where}.steps: expected a list, got {steps!r:.60}")
    checked = tuple(_step(s, f"{where}.steps[{i}]", config.keys) for i, s in enumerate(steps))
    schedule, timezone = _text(data, "schedule", where), _text(data, "timezone", where, "UTC")
    if schedule:
        from workers.schedules import next_tick

        try:
            next_tick(schedule, timezone, 0)
        except ValueError as exc:
            raise BackupConfigError(f"{where}.schedule: {exc}") from None
    age = data.pop("max_age_days", 0)
    if isinstance(age, bool) or not isinstance(age, int | float) or not age >= 0:
        raise BackupConfigError(f"{where}.max_age_days: expected a number of days >= 0, "
                                f"got {age!r:.60}")
    job = Job(name=name, source=source, target=target, steps=checked, schedule=schedule,
              timezone=timezone, keep_last=_whole(data, "keep_last", where, 0),
              keep_daily=_whole(data, "keep_daily", where, 0),
              keep_weekly=_whole(data, "keep_weekly", where, 0),
              keep_monthly=_whole(data, "keep_monthly", where, 0), max_age_days=float(age))
    _done(data, where, "source, target, steps, schedule, timezone, keep_last, keep_daily, "
                       "keep_weekly, keep_monthly and max_age_days")
    return job


def _key(name: str, value: Any) -> KeySpec:
    where = _where("keys", name)
    data = _table(value, where)
    spec = KeySpec(name=name, key=_text(data, "key", where), key_file=_text(data, "key_file",
                                                                            where))
    _done(data, where, "key or key_file")
    if bool(spec.key) == bool(spec.key_file):
        raise BackupConfigError(f"{where}: give exactly one of key and key_file")
    if spec.key:
        _decode_key(spec.key.encode(), f"{where}.key")
    return spec


def _decode_key(raw: bytes, where: str) -> bytes:
    return decode_key(raw, where, BackupConfigError)


def load_key(spec: KeySpec) -> bytes:
    """The 32 bytes of a key (read from its file now, so a rotated file is picked up)."""
    if spec.key:
        return _decode_key(spec.key.encode(), _where("keys", spec.name, "key"))
    where = _where("keys", spec.name, "key_file")
    try:
        raw = Path(spec.key_file).read_bytes()
    except OSError as exc:
        raise BackupConfigError(f"{where}: cannot read {spec.key_file!r}: "
                                f"{exc.strerror}") from None
    return _decode_key(raw, where)


def parse(section: Mapping[str, Any] | None) -> BackupsConfig:
    """Check a ``[backups]`` section (a mapping as TOML reads it) into a BackupsConfig."""
    data = _table(section or {}, "backups")
    tables: dict[str, dict[str, Any]] = {}
    for part in ("sources", "targets", "keys", "jobs"):
        tables[part] = _table(data.pop(part, {}), _where(part))
        for name in tables[part]:
            _named(name, _where(part, str(name)))
    notify, staging = _text(data, "notify", "backups"), _text(data, "staging", "backups")
    roots = data.pop("restore_paths", [])
    if not isinstance(roots, list) or not all(isinstance(r, str) and r.startswith("/")
                                              for r in roots):
        raise BackupConfigError(f"backups.restore_paths: expected a list of absolute "
                                f"directories, got {roots!r:.60}")
    if notify and not re.match(r"^[\w.]+:\w+$", notify):
        raise BackupConfigError(f"backups.notify: expected module:function, got {notify!r}")
    _done(data, "backups", "sources, targets, keys, jobs, notify, staging and "
                           "restore_paths")
    config = BackupsConfig(
        sources={n: source_spec(n, v, _where("sources", n))
                 for n, v in tables["sources"].items()},
        targets={n: _target(n, v) for n, v in tables["targets"].items()},
        keys={n: _key(n, v) for n, v in tables["keys"].items()}, notify=notify,
        staging=staging)
    jobs = {n: _job(n, v, config) for n, v in tables["jobs"].items()}
    return BackupsConfig(sources=config.sources, targets=config.targets, keys=config.keys,
                         jobs=jobs, notify=notify, staging=staging,
                         restore_paths=tuple(roots))
