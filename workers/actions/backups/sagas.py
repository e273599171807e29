"""The backups pack's sagas, built from a checked :class:`BackupsConfig`.

- ``backups.backup`` ``{"job": NAME}``: ``prepare`` (the backup's id and creation
  time; its compensation calls the failure hook), ``transfer`` (the source through
  the job's steps into the target's ``data`` object; locked per source; its
  compensation aborts the multipart upload and removes the object), ``manifest``
  (written last, atomically; locked per target; its compensation removes it).
- ``backups.verify`` ``{"job", "backup": ID or "latest"}``: the integrity check, every
  checksum recomputed from the target.
- ``backups.restore`` ``{"job", "backup", "into", "replace": false}``: ``into`` is
  ``{"source": NAME}`` with optionally ``database`` (another database on that source's
  server, with its credentials) or ``path``, or a table like a source's, or null (the
  job's source); a path must be a source's own or under ``restore_paths``. Stages:
  ``fetch`` (the manifest, verified), ``verify``
  (the object's checksums), ``load`` (decrypt, decompress and load, the result's
  checksum compared with the source's; refused into an existing destination unless
  ``replace``, which moves it aside; its compensation removes what was loaded and
  puts the old one back).
- ``backups.rollback`` (the output of a restore): put back what a restore replaced.
- ``backups.retention`` ``{"job", "now": optional Unix time}``: ``plan`` which backups
  go (see :mod:`.retention`), ``prune`` them under the target's lock (a deletion
  cannot be undone, so prune is the last stage and has no compensation).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

import anyio

from engine import Clock, RetryPolicy, Saga, Stage, StageContext, SystemClock

from . import manifest as manifests
from . import retention, sources
from .config import BackupsConfig, Job, SourceSpec, StepSpec, load_key, source_table
from .errors import BackupConfigError, IntegrityError, TargetError
from .notify import failure, tell
from .streams import CONTENT_TYPES, Digest, Hashing, make_decoder, make_encoder, pull, push
from .targets import Storage, open_storage

__all__ = ["backup_sagas"]

_NAMESPACE = uuid.UUID("6f1d1c52-4a57-4d43-9a8e-2f6c3b7f0e11")
_RETRY = RetryPolicy(attempts=3)


def _steps_of(job: Job) -> list[dict[str, Any]]:
    return [{k: v for k, v in asdict(s).items() if v not in ("", None)} for s in job.steps]


class _Pack:
    def __init__(self, config: BackupsConfig, clock: Clock,
                 notify: Callable[[dict[str, Any]], Any] | None) -> None:
        self.config = config
        self.clock = clock
        self.notify = notify

    # ------------------------------------------------------------ helpers

    def storage(self, job: Job) -> Storage:
        return open_storage(self.config.targets[job.target])

    def keys(self, steps: list[StepSpec]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for step in steps:
            if step.kind == "aes-gcm":
                if step.key not in self.config.keys:
                    raise BackupConfigError(f"the backup was encrypted with key {step.key!r}, "
                                            "which is not in [backups.keys] any more")
                found[step.key] = load_key(self.config.keys[step.key])
        return found

    def find(self, job: Job, backup: object) -> dict[str, Any]:
        """A backup's manifest, verified; ``latest``: the newest whose manifest reads and
        whose object is there at its size."""
        storage = self.storage(job)
        if backup == "latest":
            ids = sorted({k.split("/")[1] for k in storage.keys(job.name + "/")
                          if k.endswith("/manifest.json")})
            newest: dict[str, Any] | None = None
            for backup_id in ids:
                try:
                    found = self._manifest(storage, job, backup_id)
                except IntegrityError:
                    continue
                if not manifests.present(storage, found):
                    continue
                if newest is None or found["created_at"] > newest["created_at"]:
                    newest = found
            if newest is None:
                raise TargetError(f"job {job.name!r} has no backup with a valid manifest and "
                                  f"its object on target {job.target!r}")
            return newest
        if not isinstance(backup, str) or not backup or "/" in backup or ".." in backup:
            raise BackupConfigError(f"backup: expected a backup id or 'latest', got {backup!r}")
        return self._manifest(storage, job, backup)

    def _manifest(self, storage: Storage, job: Job, backup_id: str) -> dict[str, Any]:
        key = manifests.manifest_key(job.name, backup_id)
        data = storage.get(key)
        if data is None:
            raise TargetError(f"job {job.name!r}: no backup {backup_id!r} on target "
                              f"{job.target!r} (no {key})")
        found = manifests.read(data, where=key)
        if found["id"] != backup_id or found["job"] != job.name:
            raise IntegrityError(f"{key}: it describes backup {found['id']!r} of job "
                                 f"{found['job']!r} (the manifest was moved)")
        return found

    def check_object(self, job: Job, found: dict[str, Any]) -> dict[str, Any]:
        with Hashing() as hashing:
            digest = Digest(found["final"].get("content_type", ""), hashing)
            for chunk in self.storage(job).read(found["object"]):
                digest.update(chunk)
            got = digest.record()
        backup_id = found.get("id", found.get("backup"))
        for field in ("size", "sha256", "md5"):
            if got[field] != found["final"].get(field):
                raise IntegrityError(f"backup {backup_id!r}: the object's {field} is "
                                     f"{got[field]}, its manifest says "
                                     f"{found['final'].get(field)} (the object was altered "
                                     "or truncated)")
        return got

    # ------------------------------------------------------------ backup

    async def prepare(self, ctx: StageContext, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise BackupConfigError(f"a backup's input is {{\"job\": NAME}}, got {data!r:.60}")
        job = self.config.job(data.get("job"))
        return {"job": job.name, "source": job.source, "target": job.target,
                "backup_id": str(uuid.uuid5(_NAMESPACE, ctx.work_id)),
                "created_at": self.clock.now()}

    async def failed(self, ctx: StageContext, data: Any, output: Any, reason: Any) -> None:
        """prepare's compensation: the backup failed, whichever stage it was; the hook
        is told (see :mod:`.notify`)."""
        if self.notify is None:
            return
        name = data.get("job") if isinstance(data, dict) else None
        job = self.config.jobs.get(name) if isinstance(name, str) else None
        message = failure(
            saga=ctx.saga, work_id=ctx.work_id, job=None if job is None else job.name,
            source=None if job is None else job.source,
            target=None if job is None else job.target,
            backup_id=(output or {}).get("backup_id"), reason=reason,
            failed_at=self.clock.now())
        await tell(self.notify, message)

    async def transfer(self, ctx: StageContext, prepared: dict[str, Any]) -> dict[str, Any]:
        job = self.config.job(prepared["job"])
        source = self.config.sources[job.source]
        return await anyio.to_thread.run_sync(self._transfer, job, source, prepared)

    def _transfer(self, job: Job, source: SourceSpec, prepared: dict[str, Any]
                  ) -> dict[str, Any]:
        began = time.time()  # the wall clock, whatever the pack's clock: how long it ran
        storage = self.storage(job)
        key = manifests.object_key(job.name, prepared["backup_id"])
        storage.abort_uploads(key)  # what a crashed attempt left
        chain = [make_encoder(s, self.keys(list(job.steps))) for s in job.steps]
        with Hashing() as hashing:
            digests = [Digest(sources.CONTENT_TYPES[source.kind], hashing),
                       *(Digest(CONTENT_TYPES[s.kind], hashing) for s in job.steps)]
            writer = storage.writer(key)
            try:
                for chunk in push(chain, sources.dump(source, self.config.staging), digests):
                    writer.write(chunk)
                writer.commit()
            except BaseException:
                try:
                    writer.abort()
                except Exception:  # the compensation aborts it again
                    pass
                raise
            steps = [{"step": "source", "kind": source.kind, **digests[0].record()}]
            steps += [{"step": s["kind"], **s, **d.record()}
                      for s, d in zip(_steps_of(job), digests[1:], strict=True)]
        return {"object": key, "steps": steps, "final": digests[-1].record(),
                "ran": [began, time.time()],
                "tools": sources.tool_versions(source.kind, [s.kind for s in job.steps])}

    async def untransfer(self, ctx: StageContext, prepared: dict[str, Any], output: Any,
                         reason: Any) -> None:
        job = self.config.job(prepared["job"])
        key = manifests.object_key(job.name, prepared["backup_id"])

        def clean() -> None:
            storage = self.storage(job)
            storage.abort_uploads(key)
            storage.delete(key)

        await anyio.to_thread.run_sync(clean)

    async def write_manifest(self, ctx: StageContext, done: dict[str, Any]) -> dict[str, Any]:
        prepared, sent = done["prepare"], done["transfer"]
        job = self.config.job(prepared["job"])
        source = self.config.sources[job.source]

        def write() -> dict[str, Any]:
            storage = self.storage(job)
            size = storage.size(sent["object"])
            if size != sent["final"]["size"]:
                raise IntegrityError(f"backup {prepared['backup_id']!r}: the object "
                                     f"{sent['object']!r} holds {size} bytes, the transfer "
                                     f"wrote {sent['final']['size']}; no manifest written")
            key = manifests.manifest_key(job.name, prepared["backup_id"])
            existing = storage.get(key)
            if existing is not None:  # this stage ran before a crash: the same backup
                found = manifests.read(existing, where=key)
                if found.get("work_id") == ctx.work_id:
                    return {"manifest": key, "id": found["id"], "size": found["final"]["size"],
                            "sha256": found["final"]["sha256"], "transferred": sent.get("ran")}
            body = manifests.seal({
                "id": prepared["backup_id"], "job": job.name, "work_id": ctx.work_id,
                "source": {"name": source.name, "kind": source.kind},
                "target": {"name": job.target, "kind": self.config.targets[job.target].kind},
                "object": sent["object"], "steps": sent["steps"], "final": sent["final"],
                "tools": sent["tools"], "created_at": prepared["created_at"],
                "completed_at": self.clock.now()})
            storage.put_new(key, manifests.encode(body))
            return {"manifest": key, "id": body["id"], "size": sent["final"]["size"],
                    "sha256": sent["final"]["sha256"], "transferred": sent.get("ran")}

        return await anyio.to_thread.run_sync(write)

    async def unwrite_manifest(self, ctx: StageContext, done: dict[str, Any], output: Any,
                               reason: Any) -> None:
        prepared = done["prepare"]
        job = self.config.job(prepared["job"])
        key = manifests.manifest_key(job.name, prepared["backup_id"])

        def remove() -> None:
            storage = self.storage(job)
            existing = storage.get(key)
            if existing is not None:
                try:
                    owner = manifests.read(existing, where=key).get("work_id")
                except IntegrityError:
                    owner = ctx.work_id
                if owner == ctx.work_id:  # only ours: never one another work wrote
                    storage.delete(key)

        await anyio.to_thread.run_sync(remove)

    # ------------------------------------------------------------ verify

    async def verify(self, ctx: StageContext, data: Any) -> dict[str, Any]:
        job, backup = self._job_and_backup(data)

        def check() -> dict[str, Any]:
            found = self.find(job, backup)
            return {"job": job.name, "backup": found["id"], "ok": True,
                    **self.check_object(job, found)}

        return await anyio.to_thread.run_sync(check)

    def _job_and_backup(self, data: Any) -> tuple[Job, object]:
        if not isinstance(data, dict):
            raise BackupConfigError(f"expected {{\"job\": NAME, \"backup\": ID or "
                                    f"\"latest\"}}, got {data!r:.60}")
        return self.config.job(data.get("job")), data.get("backup", "latest")

    # ------------------------------------------------------------ restore

    async def fetch(self, ctx: StageContext, data: Any) -> dict[str, Any]:
        job, backup = self._job_and_backup(data)
        replace = data.get("replace", False)
        if not isinstance(replace, bool):
            raise BackupConfigError(f"replace: expected true or false, got {replace!r}")
        given = data.get("into")
        into = self.destination({"source": job.source} if given is None else given)
        found = await anyio.to_thread.run_sync(self.find, job, backup)
        if found["source"]["kind"] != into.kind:
            raise BackupConfigError(f"into: backup {found['id']!r} is of a "
                                    f"{found['source']['kind']} source, it cannot be "
                                    f"restored into a {into.kind}")
        return {"job": job.name, "backup": found["id"], "replace": replace,
                # the job's source by name: its password stays in the config, not the
                # work's events
                "into": {"source": job.source} if given is None else given,
                "object": found["object"], "steps": found["steps"], "final": found["final"]}

    async def check_fetched(self, ctx: StageContext, fetched: dict[str, Any]
                            ) -> dict[str, Any]:
        job = self.config.job(fetched["job"])
        found = await anyio.to_thread.run_sync(self.check_object, job, fetched)
        return {**fetched, "checked": found}

    async def load(self, ctx: StageContext, fetched: dict[str, Any]) -> dict[str, Any]:
        job = self.config.job(fetched["job"])
        into = self.destination(fetched["into"])
        tag = ctx.work_id[-12:]

        def run() -> dict[str, Any]:
            aside = None
            if fetched["replace"] and sources.exists(into):
                aside = sources.move_aside(into, tag)
            try:
                steps = [self._decoding(job, s) for s in fetched["steps"][1:]]
                chain = [make_decoder(s, self.keys(steps)) for s in reversed(steps)]
                plain = Digest(fetched["steps"][0]["content_type"])
                decoded = pull(self.storage(job).read(fetched["object"]), chain)
                sources.load(into, _counted(decoded, plain))
                expected = fetched["steps"][0]
                if plain.sha256.hexdigest() != expected["sha256"] or \
                        plain.size != expected["size"]:
                    raise IntegrityError(f"backup {fetched['backup']!r}: what was restored "
                                         "is not what was backed up (its sha256 differs)")
            except BaseException:
                if aside is not None:
                    sources.put_back(into, aside)
                raise
            return {"into": fetched["into"], "aside": aside, "backup": fetched["backup"]}

        return await anyio.to_thread.run_sync(run)

    def _decoding(self, job: Job, step: dict[str, Any]) -> StepSpec:
        """How to undo a step as the manifest records it; gpg's home directory (where
        the secret key is) is the job's as configured now, not the one of the time of
        the backup."""
        spec = StepSpec(**{k: v for k, v in step.items() if k in (
            "kind", "level", "key", "recipient", "homedir")})
        now = [s for s in job.steps if s.kind == spec.kind == "gpg"]
        return StepSpec(kind="gpg", recipient=spec.recipient, homedir=now[0].homedir) \
            if now else spec

    async def unload(self, ctx: StageContext, fetched: dict[str, Any], output: Any,
                     reason: Any) -> None:
        if not output:  # the load failed: it cleaned up before it raised
            return
        await anyio.to_thread.run_sync(self._roll_back, output)

    def destination(self, into: Any) -> SourceSpec:
        """A restore's destination: ``{"source": NAME}`` (a source of the config), with
        ``database`` (another database on its server, with its credentials) or ``path``
        (another file or directory) to go elsewhere; or a table like a source's. A path
        must be the source's own or lie under one of ``restore_paths``."""
        if isinstance(into, dict) and "source" in into:
            extra = set(into) - {"source", "database", "path"}
            if extra:
                raise BackupConfigError(f"into.{sorted(extra)[0]}: not a field; into is "
                                        "{source, database or path}")
            if into["source"] not in self.config.sources:
                raise BackupConfigError(f"into.source: unknown source {into['source']!r} "
                                        f"(the sources are: "
                                        f"{', '.join(sorted(self.config.sources))})")
            base = self.config.sources[into["source"]]
            table = source_table(base)
            if base.kind == "postgres" and "database" in into:
                table["url"] = sources.pg_url_of(base, str(into["database"]))
            elif "database" in into:
                table["database"] = into["database"]
            if "path" in into:
                table["path"] = into["path"]
            found = sources.check_destination(table)
        else:
            found = sources.check_destination(into)
        if found.kind in ("sqlite", "directory"):
            self._allowed(found.path)
        return found

    def _allowed(self, path: str) -> None:
        own = {os.path.realpath(s.path) for s in self.config.sources.values()
               if s.kind in ("sqlite", "directory")}
        real = os.path.realpath(path)
        if real in own:
            return
        for root in self.config.restore_paths:
            if os.path.commonpath([real, os.path.realpath(root)]) == os.path.realpath(root):
                return
        raise BackupConfigError(f"into.path: {path!r} is neither a source's path nor under "
                                f"backups.restore_paths "
                                f"({', '.join(self.config.restore_paths) or 'none'})")

    def _roll_back(self, restored: dict[str, Any]) -> dict[str, Any]:
        into = self.destination(restored["into"])
        if restored.get("aside"):
            sources.put_back(into, restored["aside"])
        else:
            sources.remove(into)
        return {"rolled_back": restored.get("backup"), "into": restored["into"]}

    async def rollback(self, ctx: StageContext, restored: Any) -> dict[str, Any]:
        if not isinstance(restored, dict) or not isinstance(restored.get("into"), dict):
            raise BackupConfigError("a rollback's input is the output of a restore "
                                    f"({{\"into\": ..., \"aside\": ...}}), got {restored!r:.60}")
        into = self.destination(restored["into"])  # checked before anything moves
        if restored.get("aside") is not None:
            sources.check_aside(into, restored["aside"])
        return await anyio.to_thread.run_sync(self._roll_back, restored)

    # ------------------------------------------------------------ retention

    async def plan(self, ctx: StageContext, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise BackupConfigError(f"retention's input is {{\"job\": NAME}}, got {data!r:.60}")
        job = self.config.job(data.get("job"))
        now = data.get("now")
        if now is not None and (isinstance(now, bool) or not isinstance(now, int | float)):
            raise BackupConfigError(f"now: expected a Unix time in seconds, got {now!r}")

        def look() -> dict[str, Any]:
            storage = self.storage(job)
            found: list[dict[str, Any]] = []
            for key in storage.keys(job.name + "/"):
                if not key.endswith("/manifest.json"):
                    continue
                backup_id = key.split("/")[1]
                try:
                    m = self._manifest(storage, job, backup_id)
                except (IntegrityError, TargetError):
                    continue  # not a backup this job can restore: left for a person
                verified = manifests.present(storage, m)
                found.append({"id": backup_id, "created_at": m["created_at"],
                              "verified": verified})
            keep, drop = retention.select(
                found, now=self.clock.now() if now is None else float(now),
                keep_last=job.keep_last, keep_daily=job.keep_daily,
                keep_weekly=job.keep_weekly, keep_monthly=job.keep_monthly,
                max_age_days=job.max_age_days)
            return {"job": job.name, "target": job.target, "keep": [b["id"] for b in keep],
                    "delete": [b["id"] for b in drop]}

        return await anyio.to_thread.run_sync(look)

    async def prune(self, ctx: StageContext, planned: dict[str, Any]) -> dict[str, Any]:
        job = self.config.job(planned["job"])

        def delete() -> dict[str, Any]:
            storage = self.storage(job)
            for backup_id in planned["delete"]:
                # the manifest first: a backup without one is no backup, whatever is left
                storage.delete(manifests.manifest_key(job.name, backup_id))
                storage.delete(manifests.object_key(job.name, backup_id))
            return planned

        return await anyio.to_thread.run_sync(delete)


def _counted(chunks: Iterator[bytes], digest: Digest) -> Iterator[bytes]:
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


def _schema(config: BackupsConfig, **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": ["job"], "properties": {
        "job": {"type": "string", "title": "Backup job", "enum": sorted(config.jobs)},
        **properties}, "examples": [{"job": name} for name in sorted(config.jobs)[:1]]}


# The input schemas list the config's jobs, so a definition's hash changes with the
# config; the stages stay the same, so a node goes on with the works created under any
# config (a job gone from it fails at prepare, naming it)
_ANY_CONFIG: dict[str, Any] = {"version": 1, "continues": (1,)}


def backup_sagas(config: BackupsConfig, *, clock: Clock | None = None,
                 notify: Callable[[dict[str, Any]], Any] | None = None) -> list[Saga]:
    """The pack's five sagas (see the module docstring) over ``config``."""
    pack = _Pack(config, clock or SystemClock(), notify or config.notifier())
    backup_id = {"type": "string", "title": "Backup id or latest", "default": "latest"}
    return [
        Saga(**_ANY_CONFIG,
             name="backups.backup", description="back a job's source up to its target",
             input_schema=_schema(config), stages=[
                 Stage(name="prepare", transaction=pack.prepare, compensation=pack.failed),
                 Stage(name="transfer", transaction=_pass_through(pack.transfer),
                       compensation=_undo_through(pack.untransfer), retry=_RETRY,
                       lock_key="backups.source:{source}"),
                 Stage(name="manifest", transaction=pack.write_manifest,
                       compensation=pack.unwrite_manifest, retry=_RETRY,
                       lock_key="backups.target:{target}"),
             ]),
        Saga(**_ANY_CONFIG,
             name="backups.verify", description="recompute a backup's checksums from its target",
             input_schema=_schema(config, backup=backup_id), stages=[
                 Stage(name="check", transaction=pack.verify)]),
        Saga(**_ANY_CONFIG,
             name="backups.restore", description="restore a backup into a database or directory",
             input_schema=_schema(config, backup=backup_id,
                                  replace={"type": "boolean", "default": False},
                                  into={"type": ["object", "null"]}), stages=[
                 Stage(name="fetch", transaction=pack.fetch),
                 Stage(name="verify", transaction=pack.check_fetched),
                 Stage(name="load", transaction=pack.load, compensation=pack.unload,
                       lock_key="backups.restore:{job}"),
             ]),
        Saga(**_ANY_CONFIG,
             name="backups.rollback", description="undo a restore: put back what it replaced",
             stages=[Stage(name="put_back", transaction=pack.rollback)]),
        Saga(**_ANY_CONFIG,
             name="backups.retention", description="delete the backups a job no longer keeps",
             input_schema=_schema(config, now={"type": "number"}), stages=[
                 Stage(name="plan", transaction=pack.plan),
                 Stage(name="prune", transaction=pack.prune, lock_key="backups.target:{target}"),
             ]),
    ]


def _pass_through(transfer: Callable[..., Any]) -> Callable[..., Any]:
    """transfer takes prepare's output and gives both on: manifest needs them together."""
    async def run(ctx: StageContext, prepared: dict[str, Any]) -> dict[str, Any]:
        return {"prepare": prepared, "transfer": await transfer(ctx, prepared),
                "source": prepared["source"], "target": prepared["target"]}

    return run


def _undo_through(untransfer: Callable[..., Any]) -> Callable[..., Any]:
    async def run(ctx: StageContext, prepared: dict[str, Any], output: Any,
                  reason: Any) -> None:
        await untransfer(ctx, prepared, output, reason)

    return run
