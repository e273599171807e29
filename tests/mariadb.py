"""A throwaway MariaDB server for tests: started on 127.0.0.1 and a free port.

Example (``with`` runs ``start()`` and ``stop()``)::

    with MariadbServer() as server:
        server.sql("CREATE DATABASE shop")
        server.port, server.user, server.password  # a user that may do anything

It uses Debian's MariaDB (``apt-get install -y --no-install-recommends mariadb-server
mariadb-client``; ``scripts/test.sh`` installs them when ``mariadbd`` is missing).
As root the server runs as the ``mysql`` user, in a directory under /tmp that user
owns; ``mariadb-install-db`` makes the system tables in about a second, and a user
with a password is created over the Unix socket, so clients connect over TCP as
they would to a production server.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["MariadbServer", "MariadbUnavailable"]

MARIADBD = Path("/usr/sbin/mariadbd")


class MariadbUnavailable(RuntimeError):
    """MariaDB's server is not installed on this machine."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class MariadbServer:
    user = "tester"
    password = "secret-pw"

    def __init__(self) -> None:
        self.base: Path | None = None
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self) -> None:
        if not os.access(MARIADBD, os.X_OK) or shutil.which("mariadb-install-db") is None:
            raise MariadbUnavailable(
                f"MariaDB is not installed: no {MARIADBD}. Install Debian's packages with "
                "'apt-get install -y --no-install-recommends mariadb-server mariadb-client' "
                "(scripts/test.sh does this in CI).")
        base = Path(tempfile.mkdtemp(prefix="my-", dir="/tmp"))
        self.base = base
        run_as = []
        if os.geteuid() == 0:
            entry = pwd.getpwnam("mysql")
            os.chown(base, entry.pw_uid, entry.pw_gid)
            run_as = ["--user=mysql"]
        try:
            subprocess.run(["mariadb-install-db", "--no-defaults", *run_as,
                            f"--datadir={base}/data", "--skip-test-db",
                            "--auth-root-authentication-method=socket"],
                           capture_output=True, check=True, timeout=120)
            self.port = _free_port()
            self._log = log = open(base / "server.log", "wb")
            self._proc = subprocess.Popen(
                [str(MARIADBD), "--no-defaults", *run_as, f"--datadir={base}/data",
                 f"--socket={base}/sock", f"--port={self.port}", "--bind-address=127.0.0.1",
                 f"--pid-file={base}/pid", "--skip-name-resolve",
                 "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M",
                 "--skip-log-bin"], stdout=log, stderr=log)
            deadline = time.monotonic() + 60
            while True:
                ok = subprocess.run(["mariadb", f"--socket={base}/sock", "-uroot", "-e",
                                     "SELECT 1"], capture_output=True, check=False)
                if ok.returncode == 0:
                    break
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mariadbd did not start:\n" + (
                        base / "server.log").read_text(errors="replace")[-2000:])
                time.sleep(0.1)
            self.root_sql(f"CREATE USER '{self.user}'@'127.0.0.1' IDENTIFIED BY "
                          f"'{self.password}'; GRANT ALL ON *.* TO '{self.user}'@'127.0.0.1'")
        except BaseException:
            self.stop()
            raise

    def root_sql(self, sql: str) -> str:
        assert self.base is not None, "start the server first"
        done = subprocess.run(["mariadb", f"--socket={self.base}/sock", "-uroot", "-N", "-B",
                               "-e", sql], capture_output=True, text=True, check=False,
                              timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"mariadb failed: {done.stderr}")
        return done.stdout

    def sql(self, sql: str, database: str = "") -> str:
        """Run ``sql`` as the test user over TCP; what it printed (tab-separated)."""
        assert self.port is not None, "start the server first"
        done = subprocess.run(["mariadb", "--protocol=TCP", "-h127.0.0.1", f"-P{self.port}",
                               f"-u{self.user}", f"-p{self.password}", "-N", "-B", "-e", sql,
                               *([database] if database else [])],
                              capture_output=True, text=True, check=False, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"mariadb failed: {done.stderr}")
        return done.stdout

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        base, self.base = self.base, None
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)

    def __enter__(self) -> MariadbServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
