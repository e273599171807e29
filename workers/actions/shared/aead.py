"""AES-256-GCM over a stream, in authenticated segments (``SEGMENT`` bytes of plain
text each), so every segment is checked before any of it is used and memory stays at
a segment or two whatever the size.

The stream starts with a magic and a random 7-byte nonce prefix; each segment is a
flag byte (1 on the last), its length (4 bytes) and its cipher text with the tag; its
nonce is the prefix, the segment's number and the flag, so segments cannot be
reordered, dropped or the stream cut short without the check failing. A wrong key
fails on the first segment. ``aad`` (associated data, the magic by default) is bound
to every segment: a pack binds an object's name with it, so an object moved under
another name does not decrypt.

>>> key = bytes(32)
>>> box = AesEncrypt(key)
>>> data = box.update(b"hello " * 3) + box.finish()
>>> opened = AesDecrypt(key, "k", integrity=ValueError, wrong_key=ValueError)
>>> opened.update(data) + opened.finish()
b'hello hello hello '
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["MAGIC", "SEGMENT", "AesDecrypt", "AesEncrypt"]

SEGMENT = 64 * 1024
MAGIC = b"SSAGCM1\0"


class AesEncrypt:
    """The encrypting codec: ``update(chunk) -> bytes``, ``finish() -> bytes``."""

    def __init__(self, key: bytes, aad: bytes = MAGIC, segment: int = SEGMENT) -> None:
        self._aead = AESGCM(key)
        self._aad = aad
        self._size = segment
        self._prefix = os.urandom(7)
        self._buffer = bytearray()
        self._number = 0
        self._started = False

    def _segment(self, plain: bytes | memoryview, last: bool) -> bytes:
        flag = b"\1" if last else b"\0"
        nonce = self._prefix + struct.pack(">I", self._number) + flag
        self._number += 1
        sealed = self._aead.encrypt(nonce, plain, self._aad)
        return flag + struct.pack(">I", len(sealed)) + sealed

    def update(self, data: bytes) -> bytes:
        out: list[bytes] = []
        if not self._started:
            out.append(MAGIC + self._prefix)
            self._started = True
        self._buffer += data
        # keep at least one byte back: the last segment is sealed with the flag set
        while len(self._buffer) > self._size:
            with memoryview(self._buffer) as view:
                out.append(self._segment(view[:self._size], False))
            del self._buffer[:self._size]
        return b"".join(out)

    def finish(self) -> bytes:
        head = self.update(b"")
        tail = self._segment(bytes(self._buffer), True)
        self._buffer.clear()
        return head + tail

    def close(self) -> None:
        pass


class AesDecrypt:
    """The decrypting codec; a damaged stream raises ``integrity``, one that does not
    decrypt from its first segment ``wrong_key`` (the pack's error classes), each
    message starting with ``what``. Given the stream's ``prefix`` (its nonce prefix,
    read before), it takes the segments from ``number`` on: a part of the stream."""

    def __init__(self, key: bytes, key_name: str, *, integrity: type[Exception],
                 wrong_key: type[Exception], aad: bytes = MAGIC, segment: int = SEGMENT,
                 what: str = "the aes-gcm step", prefix: bytes | None = None,
                 number: int = 0) -> None:
        self._aead = AESGCM(key)
        self._key_name = key_name
        self._integrity = integrity
        self._wrong_key = wrong_key
        self._aad = aad
        self._size = segment
        self._what = what
        self._buffer = bytearray()
        # given a stream's prefix (read before), the segments from ``number`` on
        self._prefix: bytes | None = prefix
        self._number = number
        self._ended = False

    @property
    def pending(self) -> int:
        """Bytes taken but not yet part of a whole segment."""
        return len(self._buffer)

    def update(self, data: bytes) -> bytes:
        self._buffer += data
        out: list[bytes] = []
        what = self._what
        if self._prefix is None:
            if len(self._buffer) < len(MAGIC) + 7:
                return b""
            if bytes(self._buffer[:len(MAGIC)]) != MAGIC:
                raise self._integrity(f"{what}: the object does not start like one this "
                                      "pack encrypted (altered, or not encrypted)")
            self._prefix = bytes(self._buffer[len(MAGIC):len(MAGIC) + 7])
            del self._buffer[:len(MAGIC) + 7]
        while len(self._buffer) >= 5:
            if self._ended:
                raise self._integrity(f"{what}: bytes after the last segment (the object "
                                      "was altered)")
            flag = self._buffer[0]
            (length,) = struct.unpack(">I", self._buffer[1:5])
            if flag not in (0, 1) or length > self._size + 16:
                raise self._integrity(f"{what}: a segment's header is damaged (the object "
                                      "was altered)")
            if len(self._buffer) < 5 + length:
                break
            nonce = self._prefix + struct.pack(">I", self._number) + bytes([flag])
            try:
                with memoryview(self._buffer) as view:
                    out.append(self._aead.decrypt(nonce, view[5:5 + length], self._aad))
                del self._buffer[:5 + length]
            except InvalidTag:
                if self._number == 0:
                    raise self._wrong_key(
                        f"{what}: the object does not decrypt with key "
                        f"{self._key_name!r} (a wrong key, or the object was altered)"
                    ) from None
                raise self._integrity(f"{what}: segment {self._number} fails its "
                                      "authentication (the object was altered)") from None
            self._number += 1
            self._ended = flag == 1
        return b"".join(out)

    def finish(self) -> bytes:
        out = self.update(b"")
        if not self._ended or self._buffer:
            raise self._integrity(f"{self._what}: the object ends before its last segment "
                                  "(truncated)")
        return out

    def close(self) -> None:
        pass
