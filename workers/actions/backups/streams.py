"""The middleware chain: compression and encryption steps over a stream of chunks.

Every step is a :class:`Codec`: ``update(chunk) -> bytes`` and ``finish() -> bytes``,
so a chain holds at most a chunk or two in memory per step whatever the size of the
stream. A backup pushes the source's bytes through the steps in the job's order; a
restore pulls the object's bytes through their inverses in reverse order.

AES-256-GCM is applied in authenticated segments (:mod:`workers.actions.shared.aead`,
which the files pack uses too): every segment is checked before any of it is used,
and a wrong key fails on the first segment.

GnuPG runs ``gpg`` as a filter process (``--encrypt --recipient`` / ``--decrypt``).

>>> chain = [make_encoder(StepSpec(kind="gzip", level=6), {})]
>>> packed = b"".join(push(chain, [b"hello " * 100]))
>>> b"".join(pull(iter([packed]), [make_decoder(StepSpec(kind="gzip"), {})]))[:11]
b'hello hello'
"""

from __future__ import annotations

import hashlib
import os
import queue
import subprocess
import threading
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import zstandard

from ..shared.aead import AesDecrypt, AesEncrypt
from ..shared.storage import CHUNK
from .config import StepSpec
from .errors import BackupConfigError, IntegrityError, SourceError, WrongKeyError

__all__ = ["CHUNK", "Codec", "Digest", "Hashing", "make_decoder", "make_encoder", "pull", "push"]

CONTENT_TYPES = {"gzip": "application/gzip", "zstd": "application/zstd",
                 "aes-gcm": "application/vnd.stepsaga.aes-256-gcm",
                 "gpg": "application/pgp-encrypted"}


class Codec(Protocol):
    def update(self, data: bytes) -> bytes: ...
    def finish(self) -> bytes: ...
    def close(self) -> None: ...


class Hashing:
    """Threads that hash what digests are given while the chain goes on (hashlib lets
    go of the GIL over large buffers, as zstd does): one for sha256, one for md5 (the
    slower, about 480 MB/s here), so the checksums of every step cost little more than
    the slowest step. At most ``depth`` chunks wait for each."""

    def __init__(self, depth: int = 8) -> None:
        self._queues: list[queue.Queue[tuple[Any, bytes] | None]] = [
            queue.Queue(maxsize=depth) for _ in range(2)]
        self._threads = [threading.Thread(target=self._run, args=(q,), daemon=True)
                         for q in self._queues]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _run(todo: queue.Queue[tuple[Any, bytes] | None]) -> None:
        while (item := todo.get()) is not None:
            hasher, data = item
            hasher.update(data)
            todo.task_done()
        todo.task_done()

    def put(self, digest: Digest, data: bytes) -> None:
        self._queues[0].put((digest.sha256, data))
        self._queues[1].put((digest.md5, data))

    def wait(self) -> None:
        """Until every chunk given so far is hashed."""
        for todo in self._queues:
            todo.join()

    def close(self) -> None:
        for todo in self._queues:
            todo.put(None)
        for thread in self._threads:
            thread.join()

    def __enter__(self) -> Hashing:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(slots=True)
class Digest:
    """Size, sha256 and md5 of the bytes that went past one point of the chain (hashed
    by ``hashing``'s thread when given one)."""

    content_type: str
    hashing: Hashing | None = None
    size: int = 0
    sha256: Any = None
    md5: Any = None

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)

    def update(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self.hashing is not None:
            self.hashing.put(self, data)
        else:
            self.sha256.update(data)
            self.md5.update(data)

    def record(self) -> dict[str, Any]:
        if self.hashing is not None:
            self.hashing.wait()
        return {"content_type": self.content_type, "size": self.size,
                "sha256": self.sha256.hexdigest(), "md5": self.md5.hexdigest()}


class _Gzip:
    def __init__(self, level: int, decode: bool) -> None:
        self._z: Any = zlib.decompressobj(wbits=31) if decode else \
            zlib.compressobj(level, wbits=31)
        self._decode = decode

    def update(self, data: bytes) -> bytes:
        try:
            return bytes(self._z.decompress(data) if self._decode else self._z.compress(data))
        except zlib.error as exc:
            raise IntegrityError(f"the gzip step cannot decompress the object: {exc}") from None

    def finish(self) -> bytes:
        if self._decode:
            if not self._z.eof:
                raise IntegrityError("the gzip stream ends early (the object is truncated)")
            return b""
        return bytes(self._z.flush())

    def close(self) -> None:
        pass


class _Zstd:
    def __init__(self, level: int, decode: bool) -> None:
        self._decode = decode
        self._z: Any = zstandard.ZstdDecompressor().decompressobj() if decode else \
            zstandard.ZstdCompressor(level=level).compressobj()

    def update(self, data: bytes) -> bytes:
        try:
            return bytes(self._z.decompress(data) if self._decode else self._z.compress(data))
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"the zstd step cannot decompress the object: {exc}") from None

    def finish(self) -> bytes:
        if self._decode:
            if not self._z.eof:
                raise IntegrityError("the zstd stream ends early (the object is truncated)")
            return b""
        return bytes(self._z.flush())

    def close(self) -> None:
        pass


class _Filter:
    """A filter process (gpg): chunks in on its stdin, what it wrote so far out; a thread
    reads its stdout so neither pipe fills up while the other is written."""

    def __init__(self, argv: list[str], env: dict[str, str] | None, what: str) -> None:
        self._what = what
        try:
            self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, env=env)
        except OSError as exc:
            raise SourceError(f"{what}: cannot run {argv[0]}: {exc.strerror}") from None
        self._out: list[bytes] = []
        self._lock = threading.Lock()
        self._err = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._errors = threading.Thread(target=self._read_errors, daemon=True)
        self._errors.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        while chunk := self._proc.stdout.read1(CHUNK):  # type: ignore[attr-defined]
            with self._lock:
                self._out.append(chunk)

    def _read_errors(self) -> None:
        assert self._proc.stderr is not None
        self._err = self._proc.stderr.read()[-4000:]

    def _taken(self) -> bytes:
        with self._lock:
            out, self._out = b"".join(self._out), []
        return out

    def update(self, data: bytes) -> bytes:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(data)
        except BrokenPipeError:
            self._fail()
        return self._taken()

    def _fail(self) -> NoReturn:
        self.close()
        message = self._err.decode(errors="replace").strip()
        status = f"exit {self._proc.returncode}"
        raise IntegrityError(f"{self._what} failed: {message or status}")

    def finish(self) -> bytes:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        self._reader.join()
        self._errors.join()
        if self._proc.wait() != 0:
            self._fail()
        return self._taken()

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._reader.join()
        self._errors.join()
        for pipe in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except BrokenPipeError:
                    pass


def _gpg(spec: StepSpec, decode: bool) -> _Filter:
    env = dict(os.environ)
    if spec.homedir:
        env["GNUPGHOME"] = spec.homedir
    argv = ["gpg", "--batch", "--yes", "--quiet", "--no-tty", "--trust-model", "always"]
    # compression is a step of its own: gpg's would only spend time on compressed data
    argv += ["--decrypt"] if decode else ["--encrypt", "--compress-algo", "none",
                                          "--recipient", spec.recipient]
    what = "decrypt" if decode else f"encrypt to {spec.recipient}"
    return _Filter(argv, env, f"the gpg step ({what})")


def make_encoder(spec: StepSpec, keys: Mapping[str, bytes]) -> Codec:
    if spec.kind == "gzip":
        return _Gzip(spec.level or 6, False)
    if spec.kind == "zstd":
        return _Zstd(spec.level or 3, False)
    if spec.kind == "aes-gcm":
        return AesEncrypt(_key(spec, keys))
    if spec.kind == "gpg":
        return _gpg(spec, False)
    raise BackupConfigError(f"unknown step kind {spec.kind!r}")


def make_decoder(spec: StepSpec, keys: Mapping[str, bytes]) -> Codec:
    if spec.kind == "gzip":
        return _Gzip(0, True)
    if spec.kind == "zstd":
        return _Zstd(0, True)
    if spec.kind == "aes-gcm":
        return AesDecrypt(_key(spec, keys), spec.key, integrity=IntegrityError,
                          wrong_key=WrongKeyError)
    if spec.kind == "gpg":
        return _gpg(spec, True)
    raise BackupConfigError(f"unknown step kind {spec.kind!r}")


def _key(spec: StepSpec, keys: Mapping[str, bytes]) -> bytes:
    if spec.key not in keys:
        raise BackupConfigError(f"the aes-gcm step needs key {spec.key!r}, which is not in "
                                f"[backups.keys] (have: {', '.join(sorted(keys)) or 'none'})")
    return keys[spec.key]


def push(chain: Sequence[Codec], chunks: Iterable[bytes],
         digests: Sequence[Digest] = ()) -> Iterator[bytes]:
    """The chunks through every codec in order; ``digests[i]`` (if given) sees what
    step i gave out, ``digests[0]`` the input itself (so one more digest than codecs)."""
    try:
        for chunk in chunks:
            yield from _through(chain, chunk, digests, 0)
        for i, codec in enumerate(chain):
            tail = codec.finish()
            if digests:
                digests[i + 1].update(tail)
            yield from _through(chain[i + 1:], tail, digests[i + 1:], -1) if tail else ()
    finally:
        for codec in chain:
            codec.close()


def _through(chain: Sequence[Codec], chunk: bytes, digests: Sequence[Digest],
             at: int) -> Iterator[bytes]:
    if digests and at == 0:
        digests[0].update(chunk)
    for i, codec in enumerate(chain):
        if not chunk:
            return
        chunk = codec.update(chunk)
        if digests:
            digests[i + 1].update(chunk)
    if chunk:
        yield chunk


def pull(chunks: Iterator[bytes], chain: Sequence[Codec]) -> Iterator[bytes]:
    """The chunks through every codec in order (a restore's decoders)."""
    return push(chain, chunks)
