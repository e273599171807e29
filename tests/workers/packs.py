"""What the domain packs' tests share: a real S3 server (moto's server mode) on
loopback with a bucket per test, and a runtime on a SQLite store whose gate takes the
store's locks, as a worker node's does. A pack's conftest imports the fixtures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from engine import RecordedEvent, Runtime
from engine.store import SqlStore
from workers.gate import NodeGate
from workers.node import WorkerApp

__all__ = ["Child", "running", "s3_bucket", "s3_client", "s3_endpoint"]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A new bucket on the S3 server, for this test alone."""
    name = f"b-{uuid.uuid4().hex[:12]}"
    s3_client(s3_endpoint).create_bucket(Bucket=name)
    return name


def s3_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


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


class Child:
    """A pack's worker script (``script``, a file beside the test) in a process of its
    own, given ``args``; it prints a line once it runs."""

    def __init__(self, script: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(script), *args], cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def ready(self) -> None:
        assert self.process.stdout is not None
        if not self.process.stdout.readline():
            raise AssertionError(f"the worker died: {self.process.communicate()[1]}")

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.communicate(timeout=60)[1]
