"""The files pack's sagas, built from a checked :class:`FilesConfig`.

Each work's output is the record of what it did (``op``, ``bucket``, ``key`` and
more): its ``work.completed`` event is the change feed's entry (:mod:`.changes`).

- ``files.upload`` ``{"bucket", "key", "staged", "content_type", "replace": false}``
  (``staged``: :func:`.staging.stage`'s id): ``take`` (everything checked and the keys
  loaded before anything is written; the staged file is dropped when the upload
  fails), ``store`` (streamed, encrypted and signed as the bucket says, never seen in
  part; a file there already is refused unless ``replace``, then kept aside; locked
  per file; its compensation removes what it wrote and puts the old file back),
  ``finish`` (drops the staged file and what was kept aside).
- ``files.download`` ``{"bucket", "key", "range": optional "bytes=A-B"}``: ``verify``
  reads the whole file (or the segments holding the range), every signature and
  authentication tag checked: its size, sha256 (of the whole) and content type, and
  the range as ``[first, last]`` (null: no byte of the file is in it). The asset
  route then streams it, checked again as it goes. A read changes nothing: no
  compensation.
- ``files.delete`` ``{"bucket", "key"}``: ``aside`` (the file moved aside; its
  compensation puts it back), ``drop`` (removed for good).
- ``files.list`` ``{"bucket", "prefix": "", "after": "", "limit": 100}``: a page of
  names (in stored order: by name, or by encrypted name) and ``next``, the cursor of
  the page after (null at the end).
- ``files.copy`` ``{"bucket", "key", "to_bucket" (default: the same), "to_key",
  "replace": false}``: ``check``, ``write`` (the source read, verified and decrypted,
  written as the target bucket keeps files; compensation as ``store``'s), ``finish``.
- ``files.move``: as copy, then ``remove`` (the source deleted, unless it changed since
  it was copied: then the move fails and is compensated), then ``finish``: a failed
  move leaves its source where it was and no copy.
- ``files.sweep`` ``{"now": optional Unix time}``: removes the staged uploads older than
  ``files.staging_ttl`` (never taken); the app's schedule ``files.sweep`` runs it
  hourly. It changes no bucket: its record is no change of the feed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import anyio

from engine import Clock, RetryPolicy, Saga, Stage, StageContext, SystemClock

from .buckets import ASIDE, Bucket, byte_range, open_bucket
from .config import FilesConfig
from .errors import ExistingFileError, FilesConfigError, FilesError, MissingFileError
from .names import check_key, check_prefix
from .staging import discard, staged_path, sweep

__all__ = ["OPS", "file_sagas"]

OPS = ("upload", "download", "delete", "list", "copy", "move")
_RETRY = RetryPolicy(attempts=3)
MAX_LIMIT = 1000


def _input(data: Any, saga: str, shape: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise FilesConfigError(f"{saga}'s input is {shape}, got {data!r:.60}")
    return data


def _flag(data: dict[str, Any], field: str) -> bool:
    value = data.get(field, False)
    if not isinstance(value, bool):
        raise FilesConfigError(f"{field}: expected true or false, got {value!r:.40}")
    return value


def _content_type(value: Any) -> str:
    if value is None:
        return "application/octet-stream"
    if not isinstance(value, str) or not value or len(value) > 255 or \
            any(ord(c) < 32 or ord(c) == 127 for c in value) or "/" not in value:
        raise FilesConfigError(f"content_type: expected a media type like text/plain, got "
                               f"{value!r:.60}")
    return value


def _lock(bucket: Bucket, stored: str) -> str:
    """The lock of one file of a repository (a digest of its stored name: a lock's
    name is at most 200 characters, a stored name may be 1024)."""
    digest = hashlib.sha256(stored.encode()).hexdigest()[:40]
    return f"files:{bucket.spec.repository}:{digest}"


def _aside(ctx: StageContext, which: str = "object") -> str:
    return f"{ASIDE}/{ctx.work_id}/{which}"


class _Pack:
    def __init__(self, config: FilesConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock

    def bucket(self, name: Any, field: str = "bucket") -> Bucket:
        return open_bucket(self.config, name, field)

    # ------------------------------------------------------------ writing a file

    def _make_room(self, ctx: StageContext, bucket: Bucket, key: str, stored: str,
                   replace: bool, field: str = "key") -> str | None:
        """Before a file is written at ``stored``: the file there kept aside when it is
        to be replaced (its aside key), refused when it is not; ours (this work's,
        from an attempt that crashed): written over."""
        aside = _aside(ctx)
        if bucket.storage.size(aside) is not None:
            return aside  # an earlier attempt put it aside already
        existing = bucket.header(stored) if bucket.storage.size(stored) is not None \
            else None
        if bucket.storage.size(stored) is None or (existing or {}).get("work") == ctx.work_id:
            return None
        if not replace:
            raise ExistingFileError(f"{field}: bucket {bucket.name!r} has a file {key!r} "
                                    "already; give replace: true to replace it")
        bucket.storage.rename(stored, aside)
        return aside

    def _unwrite(self, ctx: StageContext, bucket: Bucket, stored: str,
                 aside: str | None) -> None:
        """Undo a write: our file at ``stored`` removed, the one kept aside put back."""
        bucket.storage.abort_uploads(stored)
        if (bucket.header(stored) or {}).get("work") == ctx.work_id:
            bucket.storage.delete(stored)
        if aside is None:
            aside = _aside(ctx)
        if bucket.storage.size(aside) is not None:
            bucket.storage.rename(aside, stored)

    # ------------------------------------------------------------ upload

    async def take(self, ctx: StageContext, data: Any) -> dict[str, Any]:
        data = _input(data, "files.upload", '{"bucket", "key", "staged", "content_type"}')
        try:
            bucket = self.bucket(data.get("bucket"))
            stored = bucket.stored(data.get("key"))
            path = staged_path(self.config, data.get("staged"))
            found = {"bucket": bucket.name, "key": data["key"], "stored": stored,
                     "staged": data["staged"], "size": path.stat().st_size,
                     "content_type": _content_type(data.get("content_type")),
                     "replace": _flag(data, "replace"),
                     "lock": _lock(bucket, stored)}
        except FilesError as exc:
            if not exc.retryable:  # it will not be taken: nothing of it is kept
                discard(self.config, data.get("staged"))
            raise
        return found

    async def drop_staged(self, ctx: StageContext, data: Any, output: Any,
                          reason: Any) -> None:
        discard(self.config, (output or {}).get("staged"))

    async def store(self, ctx: StageContext, taken: dict[str, Any]) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            bucket = self.bucket(taken["bucket"])
            aside = self._make_room(ctx, bucket, taken["key"], taken["stored"],
                                    taken["replace"])
            path = staged_path(self.config, taken["staged"])

            def chunks() -> Any:
                with open(path, "rb") as f:
                    while chunk := f.read(1024 * 1024):
                        yield chunk

            wrote = bucket.write(taken["key"], taken["stored"], chunks(), {
                "content_type": taken["content_type"], "size": taken["size"],
                "work": ctx.work_id})
            return {**taken, **wrote, "aside": aside}

        return await anyio.to_thread.run_sync(run)

    async def unstore(self, ctx: StageContext, taken: dict[str, Any], output: Any,
                      reason: Any) -> None:
        def run() -> None:
            self._unwrite(ctx, self.bucket(taken["bucket"]), taken["stored"],
                          (output or {}).get("aside"))

        await anyio.to_thread.run_sync(run)

    async def finish_upload(self, ctx: StageContext, done: dict[str, Any]) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            discard(self.config, done["staged"])
            if done.get("aside"):
                self.bucket(done["bucket"]).storage.delete(done["aside"])
            return {"op": "upload", "bucket": done["bucket"], "key": done["key"],
                    "size": done["size"], "sha256": done["sha256"],
                    "content_type": done["content_type"], "replaced": bool(done["aside"])}

        return await anyio.to_thread.run_sync(run)

    # ------------------------------------------------------------ download

    async def verify(self, ctx: StageContext, data: Any) -> dict[str, Any]:
        data = _input(data, "files.download", '{"bucket", "key", "range"}')

        def run() -> dict[str, Any]:
            bucket = self.bucket(data.get("bucket"))
            key = data.get("key")
            stored = bucket.stored(key)
            found: dict[str, Any] = {"op": "download", "bucket": bucket.name, "key": key}
            if data.get("range") is None:
                header, body = bucket.open(key, stored)
                digest = hashlib.sha256()
                for chunk in body:
                    digest.update(chunk)
                found["sha256"] = digest.hexdigest()
            else:
                told = bucket.header(stored) if bucket.storage.size(stored) is not None \
                    else None
                if told is None:
                    raise MissingFileError(f"key: bucket {bucket.name!r} has no file {key!r}")
                size = told.get("size")
                span = byte_range(data["range"], size if isinstance(size, int) else 0)
                first, stop = (span[0], span[1] + 1) if span else (0, 0)
                header, body = bucket.open_part(key, first, stop, stored)
                for _ in body:
                    pass
                found["range"] = None if span is None else list(span)
            return {**found, "size": header["size"], "content_type": header["content_type"],
                    "encrypted": bool(header.get("encrypted")),
                    "signed": header.get("signed")}

        return await anyio.to_thread.run_sync(run)

    # ------------------------------------------------------------ delete

    async def put_aside(self, ctx: StageContext, data: Any) -> dict[str, Any]:
        data = _input(data, "files.delete", '{"bucket", "key"}')

        def run() -> dict[str, Any]:
            bucket = self.bucket(data.get("bucket"))
            key = data.get("key")
            stored = bucket.stored(key)
            aside = _aside(ctx)
            if bucket.storage.size(aside) is None:  # else an earlier attempt did it
                if bucket.storage.size(stored) is None:
                    raise MissingFileError(f"key: bucket {bucket.name!r} has no file "
                                           f"{key!r}")
                bucket.storage.rename(stored, aside)
            return {"bucket": bucket.name, "key": key, "stored": stored, "aside": aside}

        return await anyio.to_thread.run_sync(run)

    async def put_back(self, ctx: StageContext, data: Any, output: Any, reason: Any) -> None:
        if not output:
            return

        def run() -> None:
            bucket = self.bucket(output["bucket"])
            if bucket.storage.size(output["aside"]) is not None:
                bucket.storage.rename(output["aside"], output["stored"])

        await anyio.to_thread.run_sync(run)

    async def drop(self, ctx: StageContext, aside: dict[str, Any]) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            self.bucket(aside["bucket"]).storage.delete(aside["aside"])
            return {"op": "delete", "bucket": aside["bucket"], "key": aside["key"]}

        return await anyio.to_thread.run_sync(run)

    # ------------------------------------------------------------ list

    async def list(self, ctx: StageContext, data: Any) -> dict[str, Any]:
        data = _input(data, "files.list", '{"bucket", "prefix", "after", "limit"}')

        def run() -> dict[str, Any]:
            bucket = self.bucket(data.get("bucket"))
            prefix = check_prefix(data.get("prefix"))
            after = data.get("after") or ""
            if after:
                check_key(after, "after", cursor=True)
            limit = data.get("limit", 100)
            if isinstance(limit, bool) or not isinstance(limit, int) or \
                    not 1 <= limit <= MAX_LIMIT:
                raise FilesConfigError(f"limit: expected a whole number from 1 to "
                                       f"{MAX_LIMIT}, got {limit!r:.40}")
            stored_prefix, must = bucket.names.listing(prefix)
            base = f"{bucket.name}/"
            cursor = base + after if after else ""
            found: list[dict[str, Any]] = []
            while len(found) < limit:
                page = bucket.storage.page(stored_prefix, cursor, limit)
                for stored, size in page:
                    cursor = stored
                    name = bucket.names.plain(stored)
                    if name is not None and name.startswith(must):
                        found.append({"key": name, "stored_size": size})
                        if len(found) == limit:
                            break
                if len(page) < limit:
                    break
            more = len(found) == limit and bool(bucket.storage.page(stored_prefix, cursor, 1))
            return {"op": "list", "bucket": bucket.name, "prefix": prefix, "files": found,
                    "next": cursor[len(base):] if more else None}

        return await anyio.to_thread.run_sync(run)

    # ------------------------------------------------------------ sweep

    async def sweep(self, ctx: StageContext, data: Any) -> dict[str, Any]:
        now = (data or {}).get("now") if isinstance(data, dict) else None
        if now is not None and (isinstance(now, bool) or not isinstance(now, int | float)):
            raise FilesConfigError(f"now: expected a Unix time in seconds, got {now!r:.40}")
        found = self.clock.now() if now is None else float(now)
        removed = await anyio.to_thread.run_sync(sweep, self.config, found)
        return {"op": "sweep", "removed": removed}

    # ------------------------------------------------------------ copy and move

    async def check_copy(self, ctx: StageContext, data: Any) -> dict[str, Any]:
        shape = '{"bucket", "key", "to_bucket", "to_key", "replace"}'
        data = _input(data, ctx.saga, shape)

        def run() -> dict[str, Any]:
            source = self.bucket(data.get("bucket"))
            stored = source.stored(data.get("key"))
            target = self.bucket(data.get("to_bucket", source.name), "to_bucket")
            to_key = data.get("to_key", data.get("key"))
            to_stored = target.stored(to_key, "to_key")
            if source.spec.repository == target.spec.repository and stored == to_stored:
                raise FilesConfigError(f"to_key: {to_key!r} in bucket {target.name!r} is the "
                                       "file itself")
            version = source.storage.version(stored)
            if version is None:
                raise MissingFileError(f"key: bucket {source.name!r} has no file "
                                       f"{data.get('key')!r}")
            return {"bucket": source.name, "key": data["key"], "stored": stored,
                    "version": version, "to_bucket": target.name, "to_key": to_key,
                    "to_stored": to_stored, "replace": _flag(data, "replace"),
                    "lock": _lock(target, to_stored), "source_lock": _lock(source, stored)}

        return await anyio.to_thread.run_sync(run)

    async def write_copy(self, ctx: StageContext, checked: dict[str, Any]) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            source = self.bucket(checked["bucket"])
            target = self.bucket(checked["to_bucket"], "to_bucket")
            aside = self._make_room(ctx, target, checked["to_key"], checked["to_stored"],
                                    checked["replace"], "to_key")
            header, body = source.open(checked["key"], checked["stored"])
            wrote = target.write(checked["to_key"], checked["to_stored"], body, {
                "content_type": header["content_type"], "size": header["size"],
                "work": ctx.work_id})
            return {**checked, **wrote, "aside": aside}

        return await anyio.to_thread.run_sync(run)

    async def unwrite_copy(self, ctx: StageContext, checked: dict[str, Any], output: Any,
                           reason: Any) -> None:
        def run() -> None:
            self._unwrite(ctx, self.bucket(checked["to_bucket"], "to_bucket"),
                          checked["to_stored"], (output or {}).get("aside"))

        await anyio.to_thread.run_sync(run)

    async def remove_source(self, ctx: StageContext, copied: dict[str, Any]
                            ) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            source = self.bucket(copied["bucket"])
            now = source.storage.version(copied["stored"])
            if now != copied["version"]:
                raise FilesError(f"key: file {copied['key']!r} of bucket {source.name!r} "
                                 "changed (or went) while it was moved; the move is undone "
                                 "and the source left as it is now")
            source.storage.delete(copied["stored"])
            return copied

        return await anyio.to_thread.run_sync(run)

    def finisher(self, op: str) -> Callable[..., Any]:
        async def finish(ctx: StageContext, done: dict[str, Any]) -> dict[str, Any]:
            def run() -> dict[str, Any]:
                if done.get("aside"):
                    self.bucket(done["to_bucket"]).storage.delete(done["aside"])
                return {"op": op, "bucket": done["bucket"], "key": done["key"],
                        "to_bucket": done["to_bucket"], "to_key": done["to_key"],
                        "size": done["size"], "sha256": done["sha256"],
                        "replaced": bool(done["aside"])}

            return await anyio.to_thread.run_sync(run)

        return finish


def _schema(config: FilesConfig, required: list[str], **properties: Any) -> dict[str, Any]:
    bucket: dict[str, Any] = {"type": "string", "title": "Bucket"}
    if config.buckets:
        bucket["enum"] = sorted(config.buckets)
    return {"type": "object", "required": ["bucket", *required],
            "properties": {"bucket": bucket, **properties}}


_KEY = {"type": "string", "title": "File name"}
# the input schemas list the config's buckets, so a definition's hash changes with the
# config; the stages stay the same, so a node goes on with works made under any config
_ANY_CONFIG: dict[str, Any] = {"version": 1, "continues": (1,)}


def file_sagas(config: FilesConfig, *, clock: Clock | None = None) -> list[Saga]:
    """The pack's sagas (see the module docstring) over ``config``."""
    pack = _Pack(config, clock or SystemClock())
    replace = {"type": "boolean", "default": False}
    copy = _schema(config, ["key", "to_key"], key=_KEY, to_key=_KEY, replace=replace,
                   to_bucket={"type": "string"})
    return [
        Saga(**_ANY_CONFIG, name="files.upload",
             description="take a staged upload into a bucket, encrypted and signed",
             input_schema=_schema(config, ["key", "staged"], key=_KEY, replace=replace,
                                  staged={"type": "string"},
                                  content_type={"type": "string"}),
             stages=[
                 Stage(name="take", transaction=pack.take, compensation=pack.drop_staged),
                 Stage(name="store", transaction=pack.store, compensation=pack.unstore,
                       retry=_RETRY, lock_key="{lock}"),
                 Stage(name="finish", transaction=pack.finish_upload, retry=_RETRY)]),
        Saga(**_ANY_CONFIG, name="files.download",
             description="check a file (every signature) and give its size and type",
             input_schema=_schema(config, ["key"], key=_KEY, range={"type": "string"}),
             stages=[Stage(name="verify", transaction=pack.verify, retry=_RETRY)]),
        Saga(**_ANY_CONFIG, name="files.delete", description="delete a file",
             input_schema=_schema(config, ["key"], key=_KEY),
             stages=[Stage(name="aside", transaction=pack.put_aside,
                           compensation=pack.put_back, retry=_RETRY),
                     Stage(name="drop", transaction=pack.drop, retry=_RETRY)]),
        Saga(**_ANY_CONFIG, name="files.list", description="a page of a bucket's files",
             input_schema=_schema(config, [], prefix={"type": "string"},
                                  after={"type": "string"},
                                  limit={"type": "integer", "minimum": 1,
                                         "maximum": MAX_LIMIT}),
             stages=[Stage(name="list", transaction=pack.list, retry=_RETRY)]),
        Saga(**_ANY_CONFIG, name="files.copy", description="copy a file", input_schema=copy,
             stages=[Stage(name="check", transaction=pack.check_copy),
                     Stage(name="write", transaction=pack.write_copy,
                           compensation=pack.unwrite_copy, retry=_RETRY, lock_key="{lock}"),
                     Stage(name="finish", transaction=pack.finisher("copy"), retry=_RETRY)]),
        Saga(**_ANY_CONFIG, name="files.move", description="move a file", input_schema=copy,
             stages=[Stage(name="check", transaction=pack.check_copy),
                     Stage(name="write", transaction=pack.write_copy,
                           compensation=pack.unwrite_copy, retry=_RETRY, lock_key="{lock}"),
                     Stage(name="remove", transaction=pack.remove_source,
                           lock_key="{source_lock}"),
                     Stage(name="finish", transaction=pack.finisher("move"), retry=_RETRY)]),
        Saga(**_ANY_CONFIG, name="files.sweep",
             description="remove staged uploads older than files.staging_ttl",
             input_schema={"type": ["object", "null"],
                           "properties": {"now": {"type": "number"}}},
             stages=[Stage(name="sweep", transaction=pack.sweep)]),
    ]
