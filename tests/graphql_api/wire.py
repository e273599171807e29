"""What the API tests share: real processes (`stepsaga serve`, `stepsaga worker`) and
a real gql client over HTTP and WebSocket (graphql-transport-ws)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path
from typing import Any

import anyio
from gql import Client, GraphQLRequest, gql
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport

from tests.auth import admin_token, bearer

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.graphql_api.app:sagas"
# the token for each `stepsaga serve` this test process started, by the URL it serves
# at: http() and ws() send it (auth is on, as it is for users)
TOKENS: dict[str, str] = {}

# tables the server writes on its own, whatever clients ask
QUIET = frozenset({"health_checks", "worker_events", "workers", "leases", "rate_buckets"})


def fingerprint(path: Path) -> str:
    """A digest of every row of every table of a SQLite store that the server does not
    write on its own: equal before and after, a request changed nothing stored."""
    import hashlib
    import sqlite3

    digest = hashlib.sha256()
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        for table in tables:
            if table in QUIET:
                continue
            digest.update(table.encode())
            for row in conn.execute(f'SELECT * FROM "{table}" ORDER BY 1'):
                digest.update(repr(row).encode())
    return digest.hexdigest()


async def until(check: Any, seconds: float = 20.0) -> None:
    """Wait (bounded) until ``check()`` is true."""
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await anyio.sleep(0.02)
    raise AssertionError(f"not so after {seconds} s")


class Served:
    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = args
        # its log to a file, not a pipe: a pipe nobody reads till the end fills up and
        # stops the server in its next log line
        self.log = tempfile.TemporaryFile(mode="w+")
        weakref.finalize(self, self.log.close)  # a test that never stops it leaks nothing
        self.process = subprocess.Popen(
            [sys.executable, "-m", "graphql_api.cli", *args], cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            stdout=subprocess.PIPE, stderr=self.log, text=True)

    def ready(self) -> dict[str, Any]:
        """The line the process printed once it serves; a server's token made then."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=60)
            raise AssertionError(f"the process died: {self._log()}")
        told = dict(json.loads(line))
        if self.args[0] == "serve" and "url" in told and told.get("auth", True):
            store = self.args[self.args.index("--store") + 1]
            TOKENS[told["url"]] = told["token"] = admin_token(store)
        return told

    def stop(self) -> tuple[int, str, str]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=60)
        return self.process.returncode, out, self._log()

    def _log(self) -> str:
        if self.log.closed:
            return ""
        self.log.seek(0)
        return self.log.read()


async def ask(client: Any, document: Any, variables: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = await client.execute(
        GraphQLRequest(document, variable_values=variables))
    return found


def _headers(url: str) -> dict[str, str]:
    token = TOKENS.get(url.replace("ws://", "http://"))
    return bearer(token) if token else {}


def http(url: str) -> Client:
    return Client(transport=HTTPXAsyncTransport(url=url, timeout=30, headers=_headers(url)))


def ws(url: str) -> Client:
    return Client(transport=WebsocketsTransport(
        url=url.replace("http://", "ws://"), headers=_headers(url),
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL]))


CREATE = gql("""mutation($saga: String!, $input: JSON, $paused: Boolean! = false) {
  createWork(saga: $saga, input: $input, paused: $paused) {
    __typename
    ... on WorkCreated { work { workId status id } }
    ... on InvalidInput { message field }
    ... on NotFound { message field }
  }
}""")
STEER = """mutation($id: String!, $rid: String) {{
  {name}(workId: $id, requestId: $rid{extra}) {{
    __typename
    ... on CommandTaken {{ number outcome report event {{ seq type cursor }}
                          work {{ status paused lastSeq }} }}
    ... on WrongState {{ message status }}
    ... on NotFound {{ message field }}
    ... on InvalidInput {{ message field }}
    ... on Conflict {{ message field }}
  }}
}}"""
EVENTS = gql("""subscription($id: String, $after: String) {
  workEvents(workId: $id, after: $after) { cursor seq type workId }
}""")
WORK = gql("""query($id: String!) {
  work(workId: $id) { workId status paused progress lastSeq output
                      stageRuns { path status } events(first: 3) { seq type } }
}""")


def steer(name: str, extra: str = "") -> Any:
    return gql(STEER.format(name=name, extra=extra))
