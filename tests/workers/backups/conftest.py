"""The backups pack's fixtures: a real S3 server on loopback and a runtime whose gate
takes the store's locks (tests/workers/packs.py), a real MariaDB server and a real
PostgreSQL (tests/pg.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ...mariadb import MariadbServer, MariadbUnavailable
from ..packs import running, s3_client

__all__ = ["mariadb_server", "running", "s3_client"]


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariadbServer]:
    server = MariadbServer()
    try:
        server.start()
    except MariadbUnavailable as exc:  # fail, never skip: CI installs it
        pytest.fail(f"these tests need a real MariaDB: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
