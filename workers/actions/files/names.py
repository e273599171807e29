"""A file's name (its key in a bucket) checked, and as it is stored.

A key is a relative path of segments joined by ``/``: no empty segment, no ``.`` or
``..`` (nothing climbs out of its bucket), no control character, at most 1024 bytes
and 200 bytes a segment (640 and 150 when names are encrypted, so the stored name
stays under S3's 1024 bytes and a segment under a file system's 255). Stored, it is
``<bucket>/<key>``; in a bucket with ``encrypt_names`` each segment is encrypted with
AES-SIV (deterministic: the same name always gives the same stored name, so a lookup
finds it and a listing by a prefix of whole segments asks the repository for that
stored prefix), bound to the bucket, in URL-safe base64.

>>> check_key("photos/2024/cat.jpg")
'photos/2024/cat.jpg'
>>> check_key("../etc/passwd")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
workers.actions.files.errors.FilesConfigError: key: '../etc/passwd' climbs out of its bucket ...
>>> names = Names("docs", bytes(64))
>>> names.plain(names.stored("a/b.txt")), names.stored("a/b.txt").count("/")
('a/b.txt', 2)
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from .errors import FilesConfigError

__all__ = ["Names", "check_key", "check_prefix"]

MAX_KEY = 1024
MAX_SECRET_KEY = 640  # encrypted, a name grows by a third and 22 bytes a part (S3: 1024)
MAX_SEGMENT = 200
MAX_SECRET_SEGMENT = 150
# names the repositories keep for themselves: a directory's object being written
_RESERVED_SUFFIX = ".partial"


def _controls(text: str) -> bool:
    return any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text)


def check_key(key: Any, field: str = "key", *, encrypted: bool = False,
              cursor: bool = False) -> str:
    """``key`` if it is a file's name that stays in its bucket; else FilesConfigError
    naming ``field``. ``cursor``: a listing's cursor (a stored name: the bounds on a
    name's length are not its)."""
    if not isinstance(key, str) or not key:
        raise FilesConfigError(f"{field}: expected a file's name (a non-empty string), got "
                               f"{key!r:.60}")
    if _controls(key):
        raise FilesConfigError(f"{field}: control characters are not allowed in a name, "
                               f"got {key!r:.80}")
    if "\\" in key:
        raise FilesConfigError(f"{field}: use '/' between a name's parts, not '\\', got "
                               f"{key!r:.80}")
    parts = key.split("/")
    if key.startswith("/") or any(p in ("..", ".") for p in parts):
        raise FilesConfigError(f"{field}: {key!r:.80} climbs out of its bucket (no leading "
                               "'/', no '.' or '..' parts)")
    if any(not p for p in parts):
        raise FilesConfigError(f"{field}: {key!r:.80} has an empty part (a '//' or a "
                               "trailing '/')")
    if cursor:
        return key
    longest = MAX_SECRET_KEY if encrypted else MAX_KEY
    if len(key.encode()) > longest:
        raise FilesConfigError(f"{field}: a name is at most {longest} bytes"
                               f"{' (names are encrypted)' if encrypted else ''}, got "
                               f"{len(key.encode())}")
    top = MAX_SECRET_SEGMENT if encrypted else MAX_SEGMENT
    for part in parts:
        if len(part.encode()) > top:
            raise FilesConfigError(f"{field}: a part of a name is at most {top} bytes"
                                   f"{' (names are encrypted)' if encrypted else ''}, got "
                                   f"{part[:40]!r}... of {len(part.encode())}")
    if not encrypted and parts[-1].endswith(_RESERVED_SUFFIX):
        raise FilesConfigError(f"{field}: names ending in {_RESERVED_SUFFIX!r} are kept for "
                               "objects being written")
    return key


def check_prefix(prefix: Any, field: str = "prefix") -> str:
    """A listing's prefix: empty, or the start of a name (it may end with '/')."""
    if prefix in (None, ""):
        return ""
    if not isinstance(prefix, str):
        raise FilesConfigError(f"{field}: expected a string, got {prefix!r:.60}")
    check_key(prefix.removesuffix("/") or ".", field)
    return prefix


class Names:
    """How one bucket stores names (``secret``: its 64-byte AES-SIV key, or None)."""

    def __init__(self, bucket: str, secret: bytes | None) -> None:
        self.bucket = bucket
        self._siv = AESSIV(secret) if secret else None
        self._bound = [f"stepsaga files bucket {bucket}".encode()]

    @property
    def encrypted(self) -> bool:
        return self._siv is not None

    def _segment(self, part: str) -> str:
        assert self._siv is not None
        sealed = self._siv.encrypt(part.encode(), self._bound)
        return base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def stored(self, key: str) -> str:
        """Where ``key`` (checked) is kept in the repository."""
        if self._siv is None:
            return f"{self.bucket}/{key}"
        return "/".join([self.bucket, *(self._segment(p) for p in key.split("/"))])

    def plain(self, stored: str) -> str | None:
        """The name an object kept at ``stored`` has (None: not one of this bucket's)."""
        head, _, rest = stored.partition("/")
        if head != self.bucket or not rest:
            return None
        if self._siv is None:
            return rest
        parts = []
        for part in rest.split("/"):
            try:
                raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
                parts.append(self._siv.decrypt(raw, self._bound).decode())
            except (binascii.Error, ValueError, InvalidTag, UnicodeDecodeError):
                return None  # not a name this bucket's key encrypted
        return "/".join(parts)

    def listing(self, prefix: str) -> tuple[str, str]:
        """The stored prefix to ask the repository for, and what the plain names found
        must start with (when names are encrypted, only whole segments of ``prefix``
        make the stored prefix: the rest is checked on the names decrypted)."""
        if self._siv is None:
            return f"{self.bucket}/{prefix}", prefix
        whole, _, _ = prefix.rpartition("/")
        return (self.stored(whole) + "/" if whole else f"{self.bucket}/"), prefix
