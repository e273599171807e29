"""What is backed up and restored: dumps as streams of chunks, and loads from them.

- ``sqlite``: the online backup API (``sqlite3.Connection.backup``) copies the live
  database consistently into a snapshot file in the staging directory, streamed and
  removed; a restore writes a file beside the destination, checks it with
  ``PRAGMA integrity_check`` and renames it into place.
- ``postgres``: ``pg_dump --format=custom``; restored with ``pg_restore`` into a
  database it creates.
- ``mariadb``: ``mariadb-dump --single-transaction`` (one consistent snapshot of
  InnoDB tables without locking them); restored with the ``mariadb`` client into a
  database it creates.
- ``directory``: a tar stream (``tarfile``, written by a thread into a bounded queue);
  restored with tarfile's ``data`` filter, so no member lands outside the directory.

A restore into something that exists is refused unless ``replace`` is asked for; then
the existing one is moved aside (a file or directory renamed, a database renamed, or
for MariaDB its tables moved to another database) so a rollback can put it back.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .config import SourceSpec
from .errors import BackupConfigError, SourceError, TargetExistsError
from .streams import CHUNK

__all__ = ["CONTENT_TYPES", "dump", "exists", "load", "put_back", "tool_versions"]

CONTENT_TYPES = {"sqlite": "application/vnd.sqlite3",
                 "postgres": "application/vnd.postgresql.custom-dump",
                 "mariadb": "application/sql", "directory": "application/x-tar"}


# ------------------------------------------------------------------ helpers

def _tool(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        raise SourceError(f"cannot run {argv[0]}: {exc.strerror} (is it installed?)") from None
    return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else ""


def tool_versions(kind: str, steps: list[str]) -> dict[str, str]:
    """The versions of stepsaga and of every tool a backup of this kind uses."""
    import zlib
    from importlib.metadata import version

    import cryptography
    import zstandard

    found = {"stepsaga": version("stepsaga"), "python": sys.version.split()[0]}
    if kind == "sqlite":
        found["sqlite"] = sqlite3.sqlite_version
    elif kind == "postgres":
        found["pg_dump"] = _tool(["pg_dump", "--version"])
    elif kind == "mariadb":
        found["mariadb-dump"] = _tool(["mariadb-dump", "--version"])
    else:
        found["tarfile"] = "python " + sys.version.split()[0]
    if "gzip" in steps:
        found["zlib"] = zlib.ZLIB_VERSION
    if "zstd" in steps:
        found["zstandard"] = zstandard.__version__
    if "aes-gcm" in steps:
        found["cryptography"] = cryptography.__version__
    if "gpg" in steps:
        found["gpg"] = _tool(["gpg", "--version"])
    return found


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


class _Queued:
    """A writable file whose writes a generator takes from a bounded queue: a producer
    that writes (tarfile) runs in a thread, its reader never holds more than a few
    chunks."""

    def __init__(self) -> None:
        self.items: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=4)
        self.stopped = threading.Event()
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        if len(self._buffer) >= CHUNK:
            self._put(bytes(self._buffer))
            self._buffer.clear()
        return len(data)

    def _put(self, item: bytes | BaseException | None) -> None:
        while True:
            if self.stopped.is_set():
                raise SourceError("the reader of the stream stopped")
            try:
                self.items.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def flush(self) -> None:
        pass


def _produced(produce: Callable[[_Queued], None]) -> Iterator[bytes]:
    sink = _Queued()

    def run() -> None:
        try:
            produce(sink)
            if sink._buffer:
                sink._put(bytes(sink._buffer))
            sink._put(None)
        except BaseException as exc:  # handed to the reader, which raises it
            if not sink.stopped.is_set():
                sink._put(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        while True:
            item = sink.items.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        sink.stopped.set()
        thread.join()


def _process_chunks(argv: list[str], what: str, env: dict[str, str] | None = None
                    ) -> Iterator[bytes]:
    errors = tempfile.TemporaryFile()
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors,
                                stdin=subprocess.DEVNULL, env=env)
    except OSError as exc:
        errors.close()
        raise SourceError(f"{what}: cannot run {argv[0]}: {exc.strerror}") from None
    assert proc.stdout is not None
    try:
        while chunk := proc.stdout.read(CHUNK):
            yield chunk
        if proc.wait() != 0:
            errors.seek(0)
            message = errors.read()[-2000:].decode(errors="replace").strip()
            raise SourceError(f"{what} failed (exit {proc.returncode}): {message}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        errors.close()


def _feed(argv: list[str], chunks: Iterator[bytes], what: str,
          env: dict[str, str] | None = None) -> None:
    errors = tempfile.TemporaryFile()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=errors, env=env)
    except OSError as exc:
        errors.close()
        raise SourceError(f"{what}: cannot run {argv[0]}: {exc.strerror}") from None
    assert proc.stdin is not None
    try:
        try:
            for chunk in chunks:
                proc.stdin.write(chunk)
        except BrokenPipeError:
            pass  # the tool stopped: its exit status and message say why
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        if proc.wait() != 0:
            errors.seek(0)
            message = errors.read()[-2000:].decode(errors="replace").strip()
            raise SourceError(f"{what} failed (exit {proc.returncode}): {message}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        errors.close()


# ---------------------------------------------------------------- postgres

def _pg_url(spec: SourceSpec, database: str | None = None) -> str:
    """A libpq URL (a SQLAlchemy driver suffix dropped), optionally of another database."""
    url = re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", spec.url)
    if database is None:
        return url
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


def pg_url_of(spec: SourceSpec, database: str) -> str:
    """The URL of another database on the server of ``spec``."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", database):
        raise BackupConfigError(f"into.database: expected letters, digits and '_', got "
                                f"{database!r}")
    return _pg_url(spec, database)


def _pg_database(spec: SourceSpec) -> str:
    name = urllib.parse.urlsplit(_pg_url(spec)).path.lstrip("/")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
        raise BackupConfigError(f"the postgres url names database {name!r}: expected "
                                "letters, digits and '_'")
    return name


def _psql(spec: SourceSpec, sql: str) -> str:
    done = subprocess.run(["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
                           "-d", _pg_url(spec, "postgres"), "-c", sql],
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise SourceError(f"psql failed: {done.stderr.strip()}")
    return done.stdout.strip()


# ---------------------------------------------------------------- mariadb

def _my_args(spec: SourceSpec, options: Path) -> list[str]:
    options.write_text("[client]\n" + (f"password={spec.password}\n" if spec.password else ""))
    options.chmod(0o600)
    argv = [f"--defaults-extra-file={options}"]
    if spec.socket:
        argv.append(f"--socket={spec.socket}")
    else:
        argv += [f"--host={spec.host}", f"--port={spec.port}", "--protocol=TCP"]
    if spec.user:
        argv.append(f"--user={spec.user}")
    return argv


def _mariadb(spec: SourceSpec, sql: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(["mariadb", *_my_args(spec, Path(tmp) / "my.cnf"), "-N", "-B",
                               "-e", sql], capture_output=True, text=True, timeout=120,
                              check=False)
    if done.returncode != 0:
        raise SourceError(f"mariadb failed: {done.stderr.strip()}")
    return done.stdout.strip()


# ------------------------------------------------------------------- dumps

def dump(spec: SourceSpec, staging: str = "") -> Iterator[bytes]:
    """The source's bytes, chunk by chunk (a generator: nothing runs until read)."""
    if spec.kind == "sqlite":
        return _dump_sqlite(spec, staging)
    if spec.kind == "postgres":
        return _process_chunks(["pg_dump", "--format=custom", "--no-password",
                                "--dbname", _pg_url(spec)], f"pg_dump of source {spec.name!r}")
    if spec.kind == "mariadb":
        return _dump_mariadb(spec)
    return _dump_directory(spec)


def _dump_sqlite(spec: SourceSpec, staging: str) -> Iterator[bytes]:
    if not Path(spec.path).is_file():
        raise SourceError(f"source {spec.name!r}: no SQLite database at {spec.path!r}")
    with tempfile.TemporaryDirectory(dir=staging or None, prefix="stepsaga-sqlite-") as tmp:
        snapshot = Path(tmp) / "snapshot.sqlite"
        try:
            src = sqlite3.connect(spec.path)
            try:
                dst = sqlite3.connect(snapshot)
                try:
                    src.backup(dst, pages=1024)  # in steps: writers are not held up long
                finally:
                    dst.close()
            finally:
                src.close()
        except sqlite3.Error as exc:
            raise SourceError(f"source {spec.name!r}: SQLite backup of {spec.path!r} "
                              f"failed: {exc}") from None
        yield from _file_chunks(snapshot)


def _dump_mariadb(spec: SourceSpec) -> Iterator[bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["mariadb-dump", *_my_args(spec, Path(tmp) / "my.cnf"), "--single-transaction",
                "--routines", "--triggers", "--events", "--hex-blob", spec.database]
        yield from _process_chunks(argv, f"mariadb-dump of source {spec.name!r}")


def _dump_directory(spec: SourceSpec) -> Iterator[bytes]:
    root = Path(spec.path)
    if not root.is_dir():
        raise SourceError(f"source {spec.name!r}: no directory at {spec.path!r}")

    def produce(sink: _Queued) -> None:
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for entry in sorted(root.iterdir()):
                tar.add(entry, arcname=entry.name)

    return _produced(produce)


# ------------------------------------------------------------------- loads

def exists(spec: SourceSpec) -> bool:
    if spec.kind in ("sqlite", "directory"):
        return os.path.lexists(spec.path)
    if spec.kind == "postgres":
        name = _pg_database(spec)
        return _psql(spec, f"SELECT 1 FROM pg_database WHERE datname = '{name}'") == "1"
    return _mariadb(spec, f"SHOW DATABASES LIKE '{spec.database}'") == spec.database


def _aside_name(spec: SourceSpec, tag: str) -> str:
    if spec.kind in ("sqlite", "directory"):
        return f"{spec.path}.before-{tag}"
    base = _pg_database(spec) if spec.kind == "postgres" else spec.database
    return f"{base[:40]}_before_{tag}"


def check_aside(spec: SourceSpec, aside: object) -> str:
    """``aside`` if it is a name :func:`move_aside` gives ``spec``'s destination (a
    rollback's input is not trusted to name anything else)."""
    if isinstance(aside, str):
        tag = aside.rpartition(".before-" if spec.kind in ("sqlite", "directory")
                               else "_before_")[2]
        if re.fullmatch(r"[0-9a-f]{1,32}", tag) and aside == _aside_name(spec, tag):
            return aside
    raise BackupConfigError(f"aside: {aside!r} is not where a restore moved "
                            f"{_shown(spec)} aside")


def move_aside(spec: SourceSpec, tag: str) -> str:
    """Move the existing destination aside; the name it has now."""
    aside = _aside_name(spec, tag)
    if spec.kind in ("sqlite", "directory"):
        os.replace(spec.path, aside)
        for suffix in ("-wal", "-shm", "-journal"):
            if spec.kind == "sqlite" and os.path.exists(spec.path + suffix):
                os.replace(spec.path + suffix, aside + suffix)
    elif spec.kind == "postgres":
        name = _pg_database(spec)
        _psql(spec, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
        _psql(spec, f'ALTER DATABASE "{name}" RENAME TO "{aside}"')
    else:
        _mariadb_move(spec, spec.database, aside)
    return aside


def _mariadb_move(spec: SourceSpec, source: str, destination: str) -> None:
    _mariadb(spec, f"CREATE DATABASE IF NOT EXISTS `{destination}`")
    tables = _mariadb(spec, f"SELECT table_name FROM information_schema.tables "
                            f"WHERE table_schema = '{source}'").split()
    if tables:
        _mariadb(spec, "RENAME TABLE " + ", ".join(
            f"`{source}`.`{t}` TO `{destination}`.`{t}`" for t in tables))
    _mariadb(spec, f"DROP DATABASE `{source}`")


def remove(spec: SourceSpec) -> None:
    """Remove what a restore made at the destination (its compensation)."""
    if spec.kind == "sqlite":
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(spec.path + suffix).unlink(missing_ok=True)
    elif spec.kind == "directory":
        shutil.rmtree(spec.path, ignore_errors=True)
    elif spec.kind == "postgres":
        name = _pg_database(spec)
        _psql(spec, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        _mariadb(spec, f"DROP DATABASE IF EXISTS `{spec.database}`")


def put_back(spec: SourceSpec, aside: str) -> None:
    """Remove the restored destination and put what was moved aside back."""
    remove(spec)
    if spec.kind in ("sqlite", "directory"):
        os.replace(aside, spec.path)
        for suffix in ("-wal", "-shm", "-journal"):
            if spec.kind == "sqlite" and os.path.exists(aside + suffix):
                os.replace(aside + suffix, spec.path + suffix)
    elif spec.kind == "postgres":
        _psql(spec, f'ALTER DATABASE "{aside}" RENAME TO "{_pg_database(spec)}"')
    else:
        _mariadb_move(spec, aside, spec.database)


def load(spec: SourceSpec, chunks: Iterator[bytes]) -> None:
    """Load a dump into the destination ``spec`` names, which must not exist."""
    if exists(spec):
        raise TargetExistsError(f"restore: {spec.kind} destination {_shown(spec)} exists "
                                "(ask for replace to move it aside)")
    if spec.kind == "sqlite":
        _load_sqlite(spec, chunks)
    elif spec.kind == "postgres":
        name = _pg_database(spec)
        _psql(spec, f'CREATE DATABASE "{name}"')
        _feed(["pg_restore", "--no-owner", "--no-password", "--exit-on-error",
               "--dbname", _pg_url(spec)], chunks, "pg_restore")
    elif spec.kind == "mariadb":
        _mariadb(spec, f"CREATE DATABASE `{spec.database}`")
        with tempfile.TemporaryDirectory() as tmp:
            _feed(["mariadb", *_my_args(spec, Path(tmp) / "my.cnf"), spec.database], chunks,
                  "mariadb (loading the dump)")
    else:
        _load_directory(spec, chunks)


def _shown(spec: SourceSpec) -> str:
    if spec.kind in ("sqlite", "directory"):
        return repr(spec.path)
    return repr(_pg_database(spec) if spec.kind == "postgres" else spec.database)


def _load_sqlite(spec: SourceSpec, chunks: Iterator[bytes]) -> None:
    destination = Path(spec.path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=destination.parent, prefix=destination.name + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        try:
            with sqlite3.connect(name) as db:
                verdict = db.execute("PRAGMA integrity_check").fetchone()[0]
            db.close()
        except sqlite3.Error as exc:
            raise SourceError(f"restore: the restored file is not a SQLite database: "
                              f"{exc}") from None
        if verdict != "ok":
            raise SourceError(f"restore: the restored SQLite database fails its integrity "
                              f"check: {verdict}")
        os.replace(name, destination)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


class _Reader:
    """A readable file over an iterator of chunks (tarfile's stream mode reads one)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


def _load_directory(spec: SourceSpec, chunks: Iterator[bytes]) -> None:
    destination = Path(spec.path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=destination.parent, prefix=destination.name + "."))
    try:
        reader: IO[bytes] = _Reader(chunks)  # type: ignore[assignment]
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                for member in tar:
                    tar.extract(member, partial, filter="data")
        except tarfile.TarError as exc:
            raise SourceError(f"restore: the archive cannot be extracted: {exc}") from None
        for _ in iter(lambda: reader.read(CHUNK), b""):
            pass  # the rest (tar's padding) goes through the checks of the steps
        os.replace(partial, destination)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def check_destination(value: Any) -> SourceSpec:
    """A restore's ``into`` (a table like a source's), checked."""
    from .config import source_spec

    return source_spec("into", value, "into")
