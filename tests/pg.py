"""A throwaway PostgreSQL cluster for tests: started on 127.0.0.1 and a free port.

Example (``with`` runs ``start()`` and ``stop()``)::

    with PostgresCluster() as cluster:
        url = cluster.create_database("orders")
        # 'postgresql+asyncpg://postgres@127.0.0.1:40123/orders'

It uses Debian's PostgreSQL 15 binaries (``apt-get install -y postgresql``;
``.ci/run`` installs them). ``initdb`` and ``pg_ctl`` refuse to run as root, so
as root they run as the ``postgres`` user in a directory that user owns. The
cluster trusts every loopback connection (it holds nothing but test data) and
keeps ``fsync`` on, so commits are as durable as in production.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["BIN_DIR", "PostgresCluster", "PostgresUnavailable"]

BIN_DIR = Path("/usr/lib/postgresql/15/bin")

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # an unquoted identifier PostgreSQL keeps as is


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL binaries (or the user to run them as) are not on this machine."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class PostgresCluster:
    """One PostgreSQL cluster in a temporary directory, for as long as a test session.

    ``start()`` runs ``initdb`` and ``pg_ctl start``; ``stop()`` stops it and removes
    the directory. Also a context manager.
    """

    def __init__(self, bin_dir: Path = BIN_DIR, *, user: str = "postgres") -> None:
        self.bin_dir = bin_dir
        self.user = user  # the database superuser, and the OS user the server runs as under root
        self.port: int | None = None
        self.base: Path | None = None
        self._databases = 0

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self.base is not None:
            raise RuntimeError("this PostgreSQL cluster is started already")
        initdb = self.bin_dir / "initdb"
        if not os.access(initdb, os.X_OK):
            raise PostgresUnavailable(
                f"PostgreSQL 15 is not installed: no {initdb}. Install Debian's package "
                "with 'apt-get install -y postgresql' (.ci/run does this in CI).")
        as_user = self._as_user_prefix()
        # short and under /tmp: the socket path must stay under 107 bytes, and pytest's
        # tmp_path is neither short nor enterable by the postgres user
        base = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
        self.base = base
        try:
            if as_user:
                entry = pwd.getpwnam(self.user)
                os.chown(base, entry.pw_uid, entry.pw_gid)
            self._run([*as_user, str(initdb), "-D", str(base / "data"), "-U", self.user,
                       "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-instructions"],
                      what="initdb")
            self._start_server(as_user)
        except BaseException:
            self.base = None
            shutil.rmtree(base, ignore_errors=True)
            raise

    def _start_server(self, as_user: list[str]) -> None:
        assert self.base is not None
        last_error: RuntimeError | None = None
        for _ in range(3):  # another process may take the free port between probe and bind
            port = _free_port()
            options = " ".join([
                "-c listen_addresses=127.0.0.1", f"-p {port}",
                f"-c unix_socket_directories={self.base}",
                "-c fsync=on", "-c synchronous_commit=on",  # durable, like production
                "-c max_connections=200",  # each open store pools up to 20 connections
            ])
            try:
                self._run([*as_user, str(self.bin_dir / "pg_ctl"), "start", "-w", "-t", "60",
                           "-D", str(self.base / "data"), "-l", str(self.base / "server.log"),
                           "-o", options], what="pg_ctl start")
            except RuntimeError as exc:
                last_error = exc
                continue
            self.port = port
            self._options = options
            return
        assert last_error is not None
        raise last_error

    def restart(self) -> None:
        """Restart the server on the same port (fast shutdown: every connection drops)."""
        assert self.base is not None, "the cluster is not running"
        self._run([*self._as_user_prefix(), str(self.bin_dir / "pg_ctl"), "restart", "-w",
                   "-t", "60", "-m", "fast", "-D", str(self.base / "data"),
                   "-l", str(self.base / "server.log"), "-o", self._options],
                  what="pg_ctl restart", cwd=self.base)

    def halt(self) -> None:
        """Stop the server (fast shutdown), keeping its data: :meth:`resume` starts it
        again on the same port (an outage)."""
        assert self.base is not None, "the cluster is not running"
        self._run([*self._as_user_prefix(), str(self.bin_dir / "pg_ctl"), "stop", "-w",
                   "-m", "fast", "-D", str(self.base / "data")], what="pg_ctl stop",
                  cwd=self.base)

    def resume(self) -> None:
        """Start the server :meth:`halt` stopped, on the same port."""
        assert self.base is not None, "the cluster is not running"
        self._run([*self._as_user_prefix(), str(self.bin_dir / "pg_ctl"), "start", "-w",
                   "-t", "60", "-D", str(self.base / "data"),
                   "-l", str(self.base / "server.log"), "-o", self._options],
                  what="pg_ctl start", cwd=self.base)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory."""
        base, self.base, self.port = self.base, None, None
        if base is None:
            return
        try:
            if (base / "data" / "postmaster.pid").exists():
                self._run([*self._as_user_prefix(), str(self.bin_dir / "pg_ctl"), "stop",
                           "-w", "-m", "fast", "-D", str(base / "data")], what="pg_ctl stop",
                          cwd=base)
        finally:
            shutil.rmtree(base, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------ databases

    def url(self, database: str = "postgres") -> str:
        if self.port is None:
            raise RuntimeError("start the PostgreSQL cluster first")
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a fresh name if none is given); return its URL."""
        if self.port is None:
            raise RuntimeError("start the PostgreSQL cluster first")
        if name is None:
            self._databases += 1
            name = f"test_{self._databases}"
        if not _NAME.fullmatch(name):
            raise ValueError(f"database name {name!r}: expected lower-case letters, digits "
                             "and '_', at most 63 characters, not starting with a digit")
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still connected to it."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"database name {name!r} is not one create_database makes")
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql over TCP; return what it printed."""
        if self.port is None:
            raise RuntimeError("start the PostgreSQL cluster first")
        return self._run([str(self.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                          "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                          "-d", database, "-c", sql], what="psql")

    # ------------------------------------------------------------ helpers

    def _as_user_prefix(self) -> list[str]:
        if os.geteuid() != 0:
            return []  # initdb and pg_ctl run as the current user
        try:
            pwd.getpwnam(self.user)
        except KeyError:
            raise PostgresUnavailable(
                f"running as root, but there is no {self.user!r} user to run PostgreSQL as "
                "(Debian's postgresql package creates it)") from None
        runuser = shutil.which("runuser")
        if runuser is None:
            raise PostgresUnavailable("running as root, but runuser is missing")
        return [runuser, "-u", self.user, "--"]

    def _run(self, argv: list[str], *, what: str, cwd: Path | None = None) -> str:
        # cwd: a directory the postgres user may enter (the clone may not be one)
        done = subprocess.run(argv, cwd=cwd or self.base, capture_output=True, text=True,
                              timeout=120, check=False, env={**os.environ, "LC_ALL": "C"})
        if done.returncode != 0:
            message = f"{what} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}"
            if self.base is not None and (self.base / "server.log").exists():
                log = (self.base / "server.log").read_text(errors="replace")[-2000:]
                message += f"\nend of the server log:\n{log}"
            raise RuntimeError(message)
        return done.stdout
