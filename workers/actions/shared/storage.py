"""Object storage the packs share: a directory or an S3-compatible object store
(the backups' targets, the files' repositories), one :class:`StorageSpec` each.

Both write an object so a reader never sees part of it under its name: a directory
writes ``<name>.partial`` and renames it once it is synced; S3 uploads it in parts (a
multipart upload, a part being filled while the one before is sent) that only become
the object when completed. :meth:`Storage.put_new` writes only if no object has the
name (a hard link on a directory, which fails when the name exists; ``If-None-Match:
*`` on S3), so an object written that way is never replaced.

Errors are the pack's: a storage is opened with the error class it raises and the
noun its messages use (``target``, ``repository``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from engine import StageFailure

__all__ = ["CHUNK", "MIN_PART", "DirectoryStorage", "S3Storage", "Storage", "StorageSpec",
           "Writer", "open_storage", "s3_client"]

CHUNK = 1024 * 1024  # what storages read and write at a time
MIN_PART = 5 * 1024 * 1024  # S3's smallest part but the last
COPY_PART = 1024 * 1024 * 1024  # bytes of an object copied per part by append()


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageSpec:
    """Where objects are kept: ``kind`` directory (``path``) or s3 (``bucket``, every
    key under ``prefix``, ``endpoint_url`` empty for AWS, credentials empty for
    boto3's own lookup, ``part_size`` of multipart uploads)."""

    name: str
    kind: str
    path: str = ""
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str = ""
    region: str = "us-east-1"
    access_key_id: str = ""
    secret_access_key: str = ""
    part_size: int = 8 * 1024 * 1024


class Writer(Protocol):
    def write(self, data: bytes) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


class Storage(Protocol):
    spec: StorageSpec

    def writer(self, key: str) -> Writer: ...
    def read(self, key: str, start: int = 0, stop: int | None = None
             ) -> Iterator[bytes]: ...
    def get(self, key: str) -> bytes | None: ...
    def put_new(self, key: str, data: bytes) -> None: ...
    def size(self, key: str) -> int | None: ...
    def keys(self, prefix: str) -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def abort_uploads(self, key: str) -> int: ...
    def page(self, prefix: str, after: str, limit: int) -> list[tuple[str, int]]: ...
    def rename(self, key: str, new: str) -> None: ...
    def version(self, key: str) -> str | None: ...
    def append(self, key: str, data: bytes) -> None: ...


def _safe(key: str, error: type[StageFailure]) -> str:
    parts = key.split("/")
    if key.startswith("/") or any(p in ("", ".", "..") for p in parts) or \
            any(ord(c) < 32 or c == "\x7f" for c in key):
        raise error(f"object key {key!r} is not a plain relative path")
    return key


class _FileWriter:
    def __init__(self, final: Path) -> None:
        self.final = final
        self.partial = final.with_name(final.name + ".partial")
        final.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.partial, "wb")

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def commit(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.partial, self.final)
        _sync_dir(self.final.parent)

    def abort(self) -> None:
        self._file.close()
        self.partial.unlink(missing_ok=True)


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectoryStorage:
    def __init__(self, spec: StorageSpec, error: type[StageFailure],
                 noun: str = "target") -> None:
        self.spec = spec
        self.root = Path(spec.path)
        self.error = error
        self.noun = noun

    def _path(self, key: str) -> Path:
        return self.root / _safe(key, self.error)

    def writer(self, key: str) -> Writer:
        try:
            return _FileWriter(self._path(key))
        except OSError as exc:
            raise self.error(f"{self.noun} {self.spec.name!r}: cannot write {key!r}: "
                              f"{exc.strerror}") from None

    def read(self, key: str, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """The object's bytes [start, stop) (to its end when stop is None)."""
        path = self._path(key)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise self.error(f"{self.noun} {self.spec.name!r}: no object {key!r}") from None
        with f:
            if start:
                f.seek(start)
            left = -1 if stop is None else max(0, stop - start)
            while left:
                chunk = f.read(CHUNK if left < 0 else min(CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk) if left > 0 else 0
                yield chunk

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def put_new(self, key: str, data: bytes) -> None:
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=final.parent, prefix=".manifest-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(name, 0o444)
            try:
                os.link(name, final)  # atomic, and refused when the name exists
            except FileExistsError:
                raise self.error(f"{self.noun} {self.spec.name!r}: {key!r} exists already; "
                                 "an object written with put_new is never replaced") from None
            _sync_dir(final.parent)
        finally:
            os.unlink(name)

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def keys(self, prefix: str) -> list[str]:
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file())

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".partial").unlink(missing_ok=True)
        try:
            path.parent.rmdir()  # the backup's folder, once empty
        except OSError:
            pass

    def append(self, key: str, data: bytes) -> None:
        """``data`` added at the end of object ``key`` (made if missing), durably."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        made = not path.exists()
        with open(path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if made:
            _sync_dir(path.parent)

    def abort_uploads(self, key: str) -> int:
        partial = self._path(key).with_name(self._path(key).name + ".partial")
        found = partial.exists()
        partial.unlink(missing_ok=True)
        return int(found)

    def page(self, prefix: str, after: str, limit: int) -> list[tuple[str, int]]:
        """Up to ``limit`` (key, size) whose key starts with ``prefix`` and sorts after
        ``after``, in key order (objects being written are not listed)."""
        head, _, _ = prefix.rpartition("/")
        base = self.root / head if head else self.root
        if not base.is_dir():
            return []
        found: list[tuple[str, int]] = []
        for path in base.rglob("*"):
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix) and key > after and not key.endswith(".partial") \
                    and path.is_file():
                found.append((key, path.stat().st_size))
        return sorted(found)[:limit]

    def version(self, key: str) -> str | None:
        """What changes whenever the object under ``key`` is written (None: no object)."""
        try:
            found = self._path(key).stat()
        except FileNotFoundError:
            return None
        return f"{found.st_ino}:{found.st_size}:{found.st_mtime_ns}"

    def rename(self, key: str, new: str) -> None:
        """``key`` under the name ``new`` (replacing what had it), at once."""
        path, to = self._path(key), self._path(new)
        to.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, to)
        except FileNotFoundError:
            raise self.error(f"{self.noun} {self.spec.name!r}: no object {key!r}") from None
        _sync_dir(to.parent)
        try:
            path.parent.rmdir()
        except OSError:
            pass


class _S3Writer:
    """A multipart upload fed part by part: a full part is sent by a thread of its own
    while the chain goes on making the next (``IN_FLIGHT`` parts at once: memory stays
    at two parts whatever the size; a second in flight added 10 MiB and no speed in
    benchmarks/backup.py on two cores)."""

    IN_FLIGHT = 1

    def __init__(self, storage: S3Storage, key: str) -> None:
        self.storage = storage
        self.key = key
        self.client = storage.client
        self.upload_id: str = self.client.create_multipart_upload(
            Bucket=storage.spec.bucket, Key=key)["UploadId"]
        self.parts: list[dict[str, Any]] = []
        self.buffer = bytearray()
        self.sent = 0
        self.pool = ThreadPoolExecutor(max_workers=self.IN_FLIGHT,
                                       thread_name_prefix="s3-part")
        self.pending: list[Future[dict[str, Any]]] = []

    def _upload(self, number: int, body: bytes) -> dict[str, Any]:
        found = self.client.upload_part(Bucket=self.storage.spec.bucket, Key=self.key,
                                        UploadId=self.upload_id, PartNumber=number,
                                        Body=body)
        return {"PartNumber": number, "ETag": found["ETag"]}

    def _send(self) -> None:
        while len(self.pending) >= self.IN_FLIGHT:
            self.parts.append(self.pending.pop(0).result())
        self.sent += 1
        self.pending.append(self.pool.submit(self._upload, self.sent, bytes(self.buffer)))
        self.buffer.clear()

    def write(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= self.storage.spec.part_size:
            self._send()

    def commit(self) -> None:
        try:
            if self.buffer or not self.sent:
                self._send()
            self.parts += [f.result() for f in self.pending]
            self.pending.clear()
        finally:
            self.pool.shutdown(wait=True)
        self.client.complete_multipart_upload(
            Bucket=self.storage.spec.bucket, Key=self.key, UploadId=self.upload_id,
            MultipartUpload={"Parts": sorted(self.parts, key=lambda p: p["PartNumber"])})

    def abort(self) -> None:
        self.buffer.clear()
        for future in self.pending:
            future.cancel()
        self.pool.shutdown(wait=True)  # a part still being sent ends before the abort
        self.client.abort_multipart_upload(Bucket=self.storage.spec.bucket, Key=self.key,
                                           UploadId=self.upload_id)


def s3_client(spec: StorageSpec) -> Any:
    """A boto3 S3 client for ``spec`` (its endpoint, region and credentials)."""
    import boto3
    from botocore.config import Config

    options: dict[str, Any] = {"region_name": spec.region}
    if spec.endpoint_url:
        options["endpoint_url"] = spec.endpoint_url
    if spec.access_key_id:
        options["aws_access_key_id"] = spec.access_key_id
        options["aws_secret_access_key"] = spec.secret_access_key
    return boto3.client("s3", config=Config(retries={"max_attempts": 3}), **options)


class S3Storage:
    def __init__(self, spec: StorageSpec, error: type[StageFailure],
                 noun: str = "target") -> None:
        self.spec = spec
        self.error = error
        self.noun = noun
        self.client = s3_client(spec)

    def _key(self, key: str) -> str:
        return self.spec.prefix + _safe(key, self.error)

    def _error(self, exc: Exception, what: str) -> StageFailure:
        return self.error(f"{self.noun} {self.spec.name!r} (s3://{self.spec.bucket}/"
                          f"{self.spec.prefix}): {what}: {exc}", retryable=True)

    def writer(self, key: str) -> Writer:
        try:
            return _S3Writer(self, self._key(key))
        except Exception as exc:  # botocore's errors have no common root worth naming
            raise self._error(exc, f"cannot start the upload of {key!r}") from None

    def read(self, key: str, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """The object's bytes [start, stop) (to its end when stop is None)."""
        from botocore.exceptions import ClientError

        options: dict[str, Any] = {"Bucket": self.spec.bucket, "Key": self._key(key)}
        if stop is not None and stop <= start:
            return
        if start or stop is not None:
            options["Range"] = f"bytes={start}-{'' if stop is None else stop - 1}"
        try:
            body = self.client.get_object(**options)["Body"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                raise self.error(f"{self.noun} {self.spec.name!r}: no object {key!r}") from None
            if code == "InvalidRange":  # past its end: nothing there
                return
            raise self._error(exc, f"cannot read {key!r}") from None
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            found = self.client.get_object(Bucket=self.spec.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._error(exc, f"cannot read {key!r}") from None
        return bytes(found["Body"].read())

    def put_new(self, key: str, data: bytes) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.spec.bucket, Key=self._key(key), Body=data,
                                   IfNoneMatch="*", ContentType="application/json")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                raise self.error(f"{self.noun} {self.spec.name!r}: {key!r} exists already; "
                                 "an object written with put_new is never replaced") from None
            raise self._error(exc, f"cannot write {key!r}") from None

    def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            found = self.client.head_object(Bucket=self.spec.bucket, Key=self._key(key))
        except ClientError:
            return None
        return int(found["ContentLength"])

    def keys(self, prefix: str) -> list[str]:
        found: list[str] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.spec.bucket, Prefix=self.spec.prefix + prefix)
        for page in pages:
            found += [o["Key"][len(self.spec.prefix):] for o in page.get("Contents", [])]
        return sorted(found)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.spec.bucket, Key=self._key(key))

    def page(self, prefix: str, after: str, limit: int) -> list[tuple[str, int]]:
        """Up to ``limit`` (key, size) whose key starts with ``prefix`` and sorts after
        ``after``, in key order."""
        options: dict[str, Any] = {"Bucket": self.spec.bucket,
                                   "Prefix": self.spec.prefix + prefix,
                                   "MaxKeys": max(1, min(limit, 1000))}
        if after:
            options["StartAfter"] = self.spec.prefix + after
        try:
            found = self.client.list_objects_v2(**options)
        except Exception as exc:  # botocore's errors have no common root worth naming
            raise self._error(exc, f"cannot list {prefix!r}") from None
        return [(o["Key"][len(self.spec.prefix):], int(o["Size"]))
                for o in found.get("Contents", [])][:limit]

    def version(self, key: str) -> str | None:
        """What changes whenever the object under ``key`` is written (None: no object)."""
        from botocore.exceptions import ClientError

        try:
            found = self.client.head_object(Bucket=self.spec.bucket, Key=self._key(key))
        except ClientError:
            return None
        return f"{found['ETag']}:{found['LastModified'].isoformat()}"

    def rename(self, key: str, new: str) -> None:
        """``key`` under the name ``new`` (a server-side copy, then the old deleted)."""
        from botocore.exceptions import ClientError

        try:
            self.client.copy({"Bucket": self.spec.bucket, "Key": self._key(key)},
                             self.spec.bucket, self._key(new))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise self.error(f"{self.noun} {self.spec.name!r}: no object "
                                 f"{key!r}") from None
            raise self._error(exc, f"cannot rename {key!r}") from None
        self.delete(key)

    def append(self, key: str, data: bytes) -> None:
        """``data`` added at the end of object ``key`` (made if missing). An object
        cannot be appended to: it is replaced by one whose first parts are copies of the
        old one made by the server (``UploadPartCopy``: nothing downloaded), whose last
        part is ``data``; an old one smaller than a part (5 MiB) is read and sent again."""
        from botocore.exceptions import ClientError

        size = self.size(key) or 0
        if size < MIN_PART:
            before = (self.get(key) or b"") if size else b""
            try:
                self.client.put_object(Bucket=self.spec.bucket, Key=self._key(key),
                                       Body=before + data)
            except ClientError as exc:
                raise self._error(exc, f"cannot write {key!r}") from None
            return
        bucket, name = self.spec.bucket, self._key(key)
        try:
            upload = self.client.create_multipart_upload(Bucket=bucket, Key=name)["UploadId"]
        except ClientError as exc:
            raise self._error(exc, f"cannot start the upload of {key!r}") from None
        try:
            parts = []
            # copies of equal size, at most COPY_PART each (S3 takes up to 5 GiB) and so
            # at least 5 MiB (only the last part, data, may be smaller)
            count = -(-size // COPY_PART)
            length = -(-size // count)
            for number, start in enumerate(range(0, size, length), 1):
                end = min(start + length, size) - 1
                found = self.client.upload_part_copy(
                    Bucket=bucket, Key=name, UploadId=upload, PartNumber=number,
                    CopySource={"Bucket": bucket, "Key": name},
                    CopySourceRange=f"bytes={start}-{end}")
                parts.append({"PartNumber": number, "ETag": found["CopyPartResult"]["ETag"]})
            found = self.client.upload_part(Bucket=bucket, Key=name, UploadId=upload,
                                            PartNumber=len(parts) + 1, Body=data)
            parts.append({"PartNumber": len(parts) + 1, "ETag": found["ETag"]})
            self.client.complete_multipart_upload(Bucket=bucket, Key=name, UploadId=upload,
                                                  MultipartUpload={"Parts": parts})
        except ClientError as exc:
            self.client.abort_multipart_upload(Bucket=bucket, Key=name, UploadId=upload)
            raise self._error(exc, f"cannot append to {key!r}") from None

    def abort_uploads(self, key: str) -> int:
        """Abort every unfinished multipart upload of ``key`` (a crashed attempt's)."""
        from botocore.exceptions import ClientError

        try:
            found = self.client.list_multipart_uploads(Bucket=self.spec.bucket,
                                                       Prefix=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
                return 0  # nothing was ever uploaded there
            raise self._error(exc, f"cannot list the uploads of {key!r}") from None
        uploads = [u for u in found.get("Uploads", []) if u["Key"] == self._key(key)]
        for upload in uploads:
            self.client.abort_multipart_upload(Bucket=self.spec.bucket, Key=upload["Key"],
                                               UploadId=upload["UploadId"])
        return len(uploads)


def open_storage(spec: StorageSpec, error: type[StageFailure], noun: str = "target"
                 ) -> Storage:
    """The storage ``spec`` describes, raising ``error`` (its messages name the
    ``noun`` and the spec's name)."""
    if spec.kind == "directory":
        return DirectoryStorage(spec, error, noun)
    return S3Storage(spec, error, noun)
