"""A bucket opened for an operation: its repository's storage, how it keeps names
(:class:`.names.Names`) and content (:class:`.sealing.Seal`), with the keys derived
for it; and the streaming reads and writes the sagas and the asset routes share.

Reading is always checked: :meth:`Bucket.open` gives a file's header and a stream of
its plain bytes that raises :class:`.errors.TamperedError` before any byte that does
not verify; :meth:`Bucket.open_part` the same for a span of them (an HTTP Range, read
by :func:`byte_range`), reading only the segments that hold it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..shared.storage import Storage, open_storage
from .config import BucketSpec, FilesConfig, load_key
from .errors import FilesConfigError, MissingFileError, RepositoryError, TamperedError
from .names import Names, check_key
from .sealing import HEADER_BYTES, Seal, read_header

__all__ = ["ASIDE", "Bucket", "byte_range", "derive", "is_byte_range", "open_bucket"]

ASIDE = ".aside"  # where an operation keeps what it may have to put back (no bucket's)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def is_byte_range(value: str) -> bool:
    """Whether an HTTP Range header's value is one range of bytes (others are ignored:
    the whole file is sent)."""
    found = _RANGE.match(value.strip())
    return found is not None and found.groups() != ("", "")


def byte_range(value: Any, size: int) -> tuple[int, int] | None:
    """``bytes=A-B`` (or ``A-``, ``-N``) as (first, last) inside a file of ``size``
    bytes; None when no byte of the file is in it (not satisfiable).

    >>> byte_range("bytes=0-99", 1000), byte_range("bytes=-10", 1000)
    ((0, 99), (990, 999))
    >>> byte_range("bytes=1000-", 1000) is None
    True
    """
    found = _RANGE.match(value.strip()) if isinstance(value, str) else None
    if found is None or found.groups() == ("", ""):
        raise FilesConfigError(f"range: expected bytes=FIRST-LAST, bytes=FIRST- or "
                               f"bytes=-COUNT, got {value!r:.60}")
    first, last = found.groups()
    if not first:  # the last N bytes
        count = int(last)
        return (max(0, size - count), size - 1) if count and size else None
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return None
    return start, end


def derive(secret: bytes, purpose: str, bucket: str, length: int = 32) -> bytes:
    """The key of one purpose in one bucket, from a configured secret."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None,
                info=f"stepsaga files {purpose} {bucket}".encode()).derive(secret)


@dataclass(slots=True)
class Bucket:
    spec: BucketSpec
    storage: Storage
    names: Names
    seal: Seal

    @property
    def name(self) -> str:
        return self.spec.name

    def stored(self, key: Any, field: str = "key") -> str:
        return self.names.stored(check_key(key, field, encrypted=self.names.encrypted))

    def header(self, stored: str) -> dict[str, Any] | None:
        """The header of the object at ``stored`` as written (unchecked: whose it is),
        None when there is none or it is not a file this pack wrote."""
        if self.storage.size(stored) is None:
            return None
        opening = self.storage.read(stored, 0, HEADER_BYTES)
        try:
            found, _, _ = read_header(opening, self.name, stored)
        except TamperedError:
            return None
        finally:
            getattr(opening, "close", lambda: None)()
        return found

    def open(self, key: str, stored: str | None = None
             ) -> tuple[dict[str, Any], Iterator[bytes]]:
        """A file's header and its plain bytes, verified as they are read."""
        stored = stored or self.stored(key)
        if self.storage.size(stored) is None:
            raise MissingFileError(f"key: bucket {self.name!r} has no file {key!r}")
        return self.seal.read(self.storage.read(stored), self.name, key)

    def open_part(self, key: str, first: int, stop: int, stored: str | None = None
                  ) -> tuple[dict[str, Any], Iterator[bytes]]:
        """A file's header and its plain bytes [first, stop), verified as they are
        read, reading only the segments that hold them."""
        where = stored or self.stored(key)
        if self.storage.size(where) is None:
            raise MissingFileError(f"key: bucket {self.name!r} has no file {key!r}")
        return self.seal.read_part(lambda a, b: self.storage.read(where, a, b), self.name,
                                   key, first, stop)

    def write(self, key: str, stored: str, chunks: Iterable[bytes], header: dict[str, Any]
              ) -> dict[str, Any]:
        """Write a file (never seen in part under its name): its plain size and sha256."""
        digest = hashlib.sha256()
        size = 0

        def counted() -> Iterator[bytes]:
            nonlocal size
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                yield chunk

        self.storage.abort_uploads(stored)  # what a crashed attempt left
        writer = self.storage.writer(stored)
        try:
            for piece in self.seal.write(counted(), header, self.name, key):
                writer.write(piece)
            if size != header["size"]:
                raise TamperedError(f"file {key!r}: {size} bytes came, {header['size']} were "
                                    "announced (the source changed while it was read)")
            writer.commit()
        except BaseException:
            try:
                writer.abort()
            except Exception:  # the compensation cleans up again
                pass
            raise
        return {"size": size, "sha256": digest.hexdigest()}


def open_bucket(config: FilesConfig, name: Any, field: str = "bucket") -> Bucket:
    """A bucket of the config, its keys loaded and derived (errors name ``field``, or
    the key's setting)."""
    spec = config.bucket(name, field)
    repository = config.repositories[spec.repository]
    names_key = content_key = sign_key = None
    if spec.encrypt_names:
        names_key = derive(load_key(config.keys[spec.encrypt_names]), "names", spec.name, 64)
    if spec.encrypt_content:
        content_key = derive(load_key(config.keys[spec.encrypt_content]), "content",
                             spec.name)
    if spec.sign == "hmac-sha256":
        sign_key = derive(load_key(config.keys[spec.sign_key]), "hmac-sha256", spec.name)
    elif spec.sign == "ed25519":
        sign_key = load_key(config.keys[spec.sign_key])
    return Bucket(spec=spec, storage=open_storage(repository, RepositoryError, "repository"),
                  names=Names(spec.name, names_key),
                  seal=Seal(content_key=content_key, content_key_name=spec.encrypt_content,
                            sign=spec.sign, sign_key=sign_key, sign_key_name=spec.sign_key))
