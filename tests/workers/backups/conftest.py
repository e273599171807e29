"""The backups pack's fixtures: a real S3 server (moto's server mode) on loopback (in
tests/workers/conftest.py), a real MariaDB server, a real PostgreSQL (tests/pg.py), and a
runtime on a SQLite store whose gate takes the store's locks, as a worker node's does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import pytest

from engine import RecordedEvent, Runtime
from engine.store import SqlStore
from workers.gate import NodeGate
from workers.node import WorkerApp

from ...mariadb import MariadbServer, MariadbUnavailable
from ..conftest import s3_client

__all__ = ["s3_client"]  # the backups tests import it from here


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


@asynccontextmanager
async def running(app: WorkerApp, store_path: str,
                  on_event: Callable[[RecordedEvent], None] | None = None
                  ) -> AsyncIterator[Runtime]:
    """A runtime of the app's sagas on a store (a SQLite file's path, or a URL); its gate
    holds the store's locks."""
    url = store_path if "://" in store_path else f"sqlite+aiosqlite:///{store_path}"
    async with SqlStore.open(url) as store:
        gate = NodeGate(store, holder="test", lock_ttl=5.0)
        async with Runtime(app.sagas, store=store, gate=gate, on_event=on_event) as runtime:
            yield runtime
