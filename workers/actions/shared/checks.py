"""The checks of a pack's config section, each error naming the field at fault
(``files.buckets.avatars.repository``) and what was expected, raised as the pack's
own error class; and the storage tables both packs read (a directory or S3).

>>> checks = Checks(ValueError, "files")
>>> checks.storage("here", {"kind": "directory", "path": "/tmp/x"}, "files.repositories.here",
...                "repository").path
'/tmp/x'
>>> checks.storage("s", {"kind": "s3", "bucket": "B"}, "files.repositories.s",
...                "repository")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: files.repositories.s.bucket: expected an S3 bucket name (3 to 63 ...
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from .storage import MIN_PART, StorageSpec

__all__ = ["STORAGE_KINDS", "Checks", "decode_key"]

STORAGE_KINDS = ("directory", "s3")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class Checks:
    """Checks raising ``error`` (a ValueError subclass of the pack) for a section
    named ``section``."""

    def __init__(self, error: type[Exception], section: str) -> None:
        self.error = error
        self.section = section

    def where(self, *parts: str) -> str:
        return ".".join((self.section, *parts))

    def table(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(f"{where}: expected a table, got {value!r:.60}")
        return dict(value)

    def text(self, data: dict[str, Any], key: str, where: str, default: str = "") -> str:
        value = data.pop(key, default)
        if not isinstance(value, str):
            raise self.error(f"{where}.{key}: expected a string, got {value!r:.60}")
        if any(ord(c) < 32 for c in value):
            raise self.error(f"{where}.{key}: control characters are not allowed, "
                             f"got {value!r:.60}")
        return value

    def whole(self, data: dict[str, Any], key: str, where: str, default: int,
              low: int = 0) -> int:
        value = data.pop(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.error(f"{where}.{key}: expected a whole number >= {low}, "
                             f"got {value!r:.60}")
        return value

    def flag(self, data: dict[str, Any], key: str, where: str, default: bool) -> bool:
        value = data.pop(key, default)
        if not isinstance(value, bool):
            raise self.error(f"{where}.{key}: expected true or false, got {value!r:.60}")
        return value

    def done(self, data: dict[str, Any], where: str, allowed: str) -> None:
        if data:
            raise self.error(f"{where}.{sorted(data)[0]} is not a setting; {where} has "
                             f"{allowed}")

    def named(self, name: Any, where: str) -> str:
        if not isinstance(name, str) or not _NAME.match(name):
            raise self.error(f"{where}: the name {name!r} must be 1 to 64 letters, digits, "
                             "'_', '.' or '-', starting with a letter or digit")
        return name

    def kind(self, data: dict[str, Any], where: str, kinds: tuple[str, ...]) -> str:
        kind = data.pop("kind", None)
        if kind not in kinds:
            raise self.error(f"{where}.kind: expected one of {', '.join(kinds)}, "
                             f"got {kind!r}")
        return str(kind)

    def storage(self, name: str, value: Any, where: str, noun: str) -> StorageSpec:
        """A directory or S3 table (``noun``: what the pack calls one, in errors)."""
        data = self.table(value, where)
        kind = self.kind(data, where, STORAGE_KINDS)
        if kind == "directory":
            path = self.text(data, "path", where)
            if not path:
                raise self.error(f"{where}.path: a directory {noun} needs a path")
            self.done(data, where, "kind and path")
            return StorageSpec(name=name, kind=kind, path=path)
        spec = StorageSpec(
            name=name, kind=kind, bucket=self.text(data, "bucket", where),
            prefix=self.text(data, "prefix", where),
            endpoint_url=self.text(data, "endpoint_url", where),
            region=self.text(data, "region", where, "us-east-1"),
            access_key_id=self.text(data, "access_key_id", where),
            secret_access_key=self.text(data, "secret_access_key", where),
            part_size=self.whole(data, "part_size", where, 8 * 1024 * 1024, MIN_PART))
        if not _BUCKET.match(spec.bucket):
            raise self.error(f"{where}.bucket: expected an S3 bucket name (3 to 63 "
                             f"lower-case letters, digits, '.' or '-'), got {spec.bucket!r}")
        if spec.prefix.startswith("/") or ".." in spec.prefix.split("/"):
            raise self.error(f"{where}.prefix: must not start with '/' nor hold '..', "
                             f"got {spec.prefix!r}")
        self.done(data, where, "kind, bucket, prefix, endpoint_url, region, access_key_id, "
                               "secret_access_key and part_size")
        return spec


def decode_key(raw: bytes, where: str, error: type[Exception]) -> bytes:
    """A 256-bit key given as 32 raw bytes, 64 hex digits or base64 of 32 bytes."""
    text = raw.strip()
    if len(raw) == 32:
        return raw
    try:
        if len(text) == 64:
            return binascii.unhexlify(text)
        found = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        found = b""
    if len(found) != 32:
        raise error(f"{where}: expected an AES-256 key (32 bytes, 64 hex digits or base64 "
                    "of 32 bytes)")
    return found
