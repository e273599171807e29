"""How a file is kept: a header, then its content, encrypted and signed as its
bucket says, as a stream (memory stays at a segment or two whatever the size).

An object is ``MAGIC``, the header's length (4 bytes) and the header (JSON: format
version, content type, plain size, whether it is encrypted, how it is signed, the work
that wrote it), then the body. Everything is bound to a *context*: the SHA-256 of the
magic, the header, the bucket's name and the file's name, so an object copied under
another name or into another bucket, or with its header changed, fails its checks.

- Encryption: AES-256-GCM in authenticated segments (:mod:`workers.actions.shared.aead`)
  with the context as associated data.
- Signing: the body (cipher text when encrypted) cut into segments of ``SIGNED`` bytes,
  each a flag byte (1 on the last), its length (4 bytes), its bytes and a tag over
  SHA-256(context, segment number, flag, bytes): HMAC-SHA256 (32 bytes) or Ed25519
  (64 bytes). A reader checks each segment before it gives any of its bytes on, and
  the last one's flag, so nothing altered, reordered, dropped or cut short gets through.

>>> seal = Seal()
>>> stored = b"".join(seal.write([b"hello"], {"content_type": "text/plain", "size": 5},
...                              "docs", "a.txt"))
>>> header, body = seal.read(iter([stored]), "docs", "a.txt")
>>> header["content_type"], b"".join(body)
('text/plain', b'hello')
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature

from ..shared.aead import MAGIC as AES_MAGIC
from ..shared.aead import AesDecrypt, AesEncrypt
from .errors import TamperedError, WrongKeyError

__all__ = ["HEADER_BYTES", "MAGIC", "SIGNED", "Seal", "read_header"]

MAGIC = b"SSFILE1\0"
SIGNED = 1024 * 1024  # bytes of body per signed segment
ENCRYPTED = 256 * 1024  # bytes of plain text per AES-GCM segment
MAX_HEADER = 16 * 1024
HEADER_BYTES = len(MAGIC) + 4 + MAX_HEADER  # what holds a header, whatever its length
VERSION = 1
_AES_HEAD = len(AES_MAGIC) + 7  # an encrypted stream's magic and nonce prefix
_AES_EXTRA = 5 + 16  # an encrypted segment's flag, length and tag


@dataclass(frozen=True, slots=True, kw_only=True)
class Seal:
    """A bucket's way of keeping content: ``content_key`` (32 bytes: AES-256-GCM),
    ``sign`` (``hmac-sha256`` with ``sign_key`` 32 bytes, ``ed25519`` with an
    ``Ed25519PrivateKey``) and the names of the keys, for messages."""

    content_key: bytes | None = None
    content_key_name: str = ""
    sign: str = ""
    sign_key: Any = None
    sign_key_name: str = ""

    # ------------------------------------------------------------ writing

    def write(self, chunks: Iterable[bytes], header: dict[str, Any], bucket: str,
              name: str) -> Iterator[bytes]:
        """The stored bytes of a file of these plain chunks (``header``: its content
        type and size, and what else the writer records)."""
        head = json.dumps({**header, "v": VERSION, "encrypted": self.content_key is not None,
                           "signed": self.sign or None}, sort_keys=True).encode()
        if len(head) > MAX_HEADER:
            raise TamperedError(f"a file's header is at most {MAX_HEADER} bytes")
        yield MAGIC + struct.pack(">I", len(head)) + head
        context = _context(head, bucket, name)
        body: Iterable[bytes] = chunks
        if self.content_key is not None:
            body = _through(AesEncrypt(self.content_key, aad=context, segment=ENCRYPTED),
                            body)
        if self.sign:
            body = self._signed(body, context)
        yield from body

    def _tag(self, digest: bytes) -> bytes:
        if self.sign == "hmac-sha256":
            return hmac.digest(self.sign_key, digest, "sha256")
        return bytes(self.sign_key.sign(digest))

    def _signed(self, body: Iterable[bytes], context: bytes) -> Iterator[bytes]:
        buffer = bytearray()
        number = 0
        for chunk in body:
            buffer += chunk
            while len(buffer) > SIGNED:  # keep one byte back: the last segment is flagged
                with memoryview(buffer) as view:
                    data = bytes(view[:SIGNED])
                del buffer[:SIGNED]
                yield from self._segment(context, number, 0, data)
                number += 1
        yield from self._segment(context, number, 1, bytes(buffer))

    def _segment(self, context: bytes, number: int, flag: int, data: bytes
                 ) -> Iterator[bytes]:
        tag = self._tag(_digest(context, number, flag, data))
        yield bytes([flag]) + struct.pack(">I", len(data))
        yield data  # not joined: a segment's bytes are copied once
        yield tag

    # ------------------------------------------------------------ reading

    def read(self, stored: Iterator[bytes], bucket: str, name: str
             ) -> tuple[dict[str, Any], Iterator[bytes]]:
        """The header of a stored file and its plain content, checked as it goes:
        ``TamperedError`` (``WrongKeyError``) as soon as something does not check,
        before any byte of what does not is given."""
        header, head, rest = read_header(stored, bucket, name)
        self._expect(header, bucket, name)
        context = _context(head, bucket, name)

        body: Iterator[bytes] = _prepend(rest, stored)
        if self.sign:
            body = self._verified(body, context, bucket, name)
        if self.content_key is not None:
            body = _through(AesDecrypt(self.content_key, self.content_key_name,
                                       integrity=TamperedError, wrong_key=WrongKeyError,
                                       aad=context, segment=ENCRYPTED,
                                       what=f"file {name!r} of bucket {bucket!r}"), body)
        return header, _sized(body, header.get("size"), bucket, name)

    def read_part(self, read: Callable[[int, int | None], Iterator[bytes]], bucket: str,
                  name: str, first: int, stop: int) -> tuple[dict[str, Any], Iterator[bytes]]:
        """The plain bytes [first, stop) of a stored file (``read(a, b)``: its stored
        bytes [a, b), to its end when b is None), reading only the segments that hold
        them (and the header, and the first segment for the cipher's prefix), each
        checked as :meth:`read` checks them. ``stop`` past the file's end: to its end."""
        opening = read(0, HEADER_BYTES)
        try:
            header, head, _ = read_header(opening, bucket, name)
        finally:
            getattr(opening, "close", lambda: None)()
        self._expect(header, bucket, name)
        size = header.get("size")
        if not isinstance(size, int) or size < 0:
            raise TamperedError(f"file {name!r} of bucket {bucket!r}: its header is damaged")
        stop = min(stop, size)
        context = _context(head, bucket, name)
        start = len(MAGIC) + 4 + len(head)  # where the body starts
        if first >= stop:
            return header, iter(())
        encrypted_size = _AES_HEAD + _segments(size, ENCRYPTED) * _AES_EXTRA + size
        body_size = encrypted_size if self.content_key is not None else size

        def body(a: int, b: int) -> Iterator[bytes]:  # the body's bytes [a, b)
            if not self.sign:
                return read(start + a, start + b)
            segment = 5 + SIGNED + self._tag_size()
            count = _segments(body_size, SIGNED)
            k0, k1 = a // SIGNED, (b - 1) // SIGNED
            stored = read(start + k0 * segment,
                          None if k1 == count - 1 else start + (k1 + 1) * segment)
            return _cut(self._verified(stored, context, bucket, name, k0, k1 == count - 1),
                        a - k0 * SIGNED, b - a)

        if self.content_key is None:
            return header, _sized_part(body(first, stop), stop - first, bucket, name)
        head_bytes = b"".join(body(0, _AES_HEAD))
        if head_bytes[:len(AES_MAGIC)] != AES_MAGIC:
            raise TamperedError(f"file {name!r} of bucket {bucket!r}: its encrypted content "
                                "does not start as it should (altered)")
        count = _segments(size, ENCRYPTED)
        j0, j1 = first // ENCRYPTED, (stop - 1) // ENCRYPTED
        last = min(ENCRYPTED, size - j1 * ENCRYPTED)
        a = _AES_HEAD + j0 * (ENCRYPTED + _AES_EXTRA)
        b = _AES_HEAD + j1 * (ENCRYPTED + _AES_EXTRA) + _AES_EXTRA + last
        decrypt = AesDecrypt(self.content_key, self.content_key_name,
                             integrity=TamperedError, wrong_key=WrongKeyError, aad=context,
                             segment=ENCRYPTED, what=f"file {name!r} of bucket {bucket!r}",
                             prefix=head_bytes[len(AES_MAGIC):], number=j0)

        def plain() -> Iterator[bytes]:
            for chunk in body(a, b):
                out = decrypt.update(chunk)
                if out:
                    yield out
            if j1 == count - 1:
                tail = decrypt.finish()
                if tail:
                    yield tail
            elif decrypt.pending:
                raise TamperedError(f"file {name!r} of bucket {bucket!r}: a segment ends "
                                    "short (altered); refused")

        return header, _sized_part(_cut(plain(), first - j0 * ENCRYPTED, stop - first),
                                   stop - first, bucket, name)

    def _tag_size(self) -> int:
        return 32 if self.sign == "hmac-sha256" else 64

    def _expect(self, header: dict[str, Any], bucket: str, name: str) -> None:
        where = f"file {name!r} of bucket {bucket!r}"
        if self.sign and header.get("signed") != self.sign:
            raise TamperedError(f"{where}: the bucket signs its files with {self.sign}, this "
                                f"one says {header.get('signed')!r} (altered, or written "
                                "before the bucket was signed); refused")
        if self.content_key is not None and not header.get("encrypted"):
            raise TamperedError(f"{where}: the bucket encrypts its files, this one says it "
                                "is not encrypted (altered, or written before); refused")
        if self.content_key is None and header.get("encrypted"):
            raise WrongKeyError(f"{where}: the file is encrypted and the bucket has no "
                                "encrypt_content key to decrypt it")

    def _check(self, digest: bytes, tag: bytes) -> bool:
        if self.sign == "hmac-sha256":
            return hmac.compare_digest(hmac.digest(self.sign_key, digest, "sha256"), tag)
        try:
            self.sign_key.public_key().verify(tag, digest)
        except InvalidSignature:
            return False
        return True

    def _verified(self, body: Iterator[bytes], context: bytes, bucket: str, name: str,
                  number: int = 0, to_end: bool = True) -> Iterator[bytes]:
        """The body of the signed segments in ``body`` (from segment ``number``; to the
        last one, or, unless ``to_end``, as many whole segments as come)."""
        size = self._tag_size()
        where = f"file {name!r} of bucket {bucket!r}"
        buffer = bytearray()
        ended = False
        for chunk in _then_end(body):
            if chunk is not None:
                buffer += chunk
            while len(buffer) >= 5:
                if ended:
                    raise TamperedError(f"{where}: bytes after its last signed segment "
                                        "(altered); refused")
                flag = buffer[0]
                (length,) = struct.unpack(">I", buffer[1:5])
                if flag not in (0, 1) or length > SIGNED:
                    raise TamperedError(f"{where}: a signed segment's header is damaged "
                                        "(altered); refused")
                if len(buffer) < 5 + length + size:
                    break
                with memoryview(buffer) as view:
                    data = bytes(view[5:5 + length])
                    tag = bytes(view[5 + length:5 + length + size])
                del buffer[:5 + length + size]
                if not self._check(_digest(context, number, flag, data), tag):
                    raise TamperedError(f"{where}: its signature ({self.sign}, key "
                                        f"{self.sign_key_name!r}) does not verify at "
                                        f"segment {number}: the file was altered; refused")
                number += 1
                ended = flag == 1
                if data:
                    yield data
            if chunk is None and ((to_end and not ended) or buffer):
                raise TamperedError(f"{where}: the file ends before its last signed "
                                    "segment (truncated); refused")


def read_header(stored: Iterator[bytes], bucket: str, name: str
            ) -> tuple[dict[str, Any], bytes, bytes]:
    """A stored file's header read: (header, its bytes, the bytes read after it)."""
    buffer = bytearray()
    for chunk in stored:
        buffer += chunk
        if len(buffer) >= len(MAGIC) + 4:
            break
    if bytes(buffer[:len(MAGIC)]) != MAGIC:
        raise TamperedError(f"file {name!r} of bucket {bucket!r}: the object does not "
                            "start like a file this pack wrote (altered, or not ours)")
    (length,) = struct.unpack(">I", buffer[len(MAGIC):len(MAGIC) + 4])
    if length > MAX_HEADER:
        raise TamperedError(f"file {name!r} of bucket {bucket!r}: its header is damaged")
    while len(buffer) < len(MAGIC) + 4 + length:
        more = next(stored, None)
        if more is None:
            raise TamperedError(f"file {name!r} of bucket {bucket!r}: the object ends "
                                "inside its header (truncated)")
        buffer += more
    head = bytes(buffer[len(MAGIC) + 4:len(MAGIC) + 4 + length])
    try:
        header = json.loads(head)
        assert isinstance(header, dict) and header.get("v") == VERSION
    except (ValueError, AssertionError):
        raise TamperedError(f"file {name!r} of bucket {bucket!r}: its header is "
                            "damaged") from None
    return header, head, bytes(buffer[len(MAGIC) + 4 + length:])


def _context(head: bytes, bucket: str, name: str) -> bytes:
    found = hashlib.sha256(MAGIC + head)
    found.update(struct.pack(">I", len(bucket.encode())) + bucket.encode())
    found.update(name.encode())
    return found.digest()


def _digest(context: bytes, number: int, flag: int, data: bytes) -> bytes:
    found = hashlib.sha256(context)
    found.update(struct.pack(">QB", number, flag))
    found.update(data)
    return found.digest()


def _then_end(chunks: Iterator[bytes]) -> Iterator[bytes | None]:
    yield from chunks
    yield None


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _through(codec: Any, chunks: Iterable[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        out = codec.update(chunk)
        if out:
            yield out
    tail = codec.finish()
    if tail:
        yield tail


def _segments(size: int, segment: int) -> int:
    """How many segments a stream of ``size`` bytes is cut into (at least one: the
    last, flagged, holds at least one byte unless the stream is empty)."""
    return max(1, -(-size // segment))


def _cut(chunks: Iterable[bytes], skip: int, take: int) -> Iterator[bytes]:
    """``take`` bytes of ``chunks`` after the first ``skip``."""
    for chunk in chunks:
        if take <= 0:
            return
        if skip >= len(chunk):
            skip -= len(chunk)
            continue
        piece = chunk[skip:skip + take]
        skip = 0
        take -= len(piece)
        yield piece


def _sized_part(body: Iterator[bytes], size: int, bucket: str, name: str
                ) -> Iterator[bytes]:
    seen = 0
    for chunk in body:
        seen += len(chunk)
        yield chunk
    if seen != size:
        raise TamperedError(f"file {name!r} of bucket {bucket!r}: {seen} bytes where its "
                            f"header says {size} (truncated or altered); refused")


def _sized(body: Iterator[bytes], size: Any, bucket: str, name: str) -> Iterator[bytes]:
    seen = 0
    for chunk in body:
        seen += len(chunk)
        if isinstance(size, int) and seen > size:
            raise TamperedError(f"file {name!r} of bucket {bucket!r}: more bytes than its "
                                f"header's {size} (altered); refused")
        yield chunk
    if isinstance(size, int) and seen != size:
        raise TamperedError(f"file {name!r} of bucket {bucket!r}: {seen} bytes, its header "
                            f"says {size} (truncated or altered); refused")
