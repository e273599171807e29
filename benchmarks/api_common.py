"""What the sections of ``benchmarks/api.py`` share: the processes they start
(``stepsaga serve`` and ``stepsaga worker``), their CPU, the gql clients and the
GraphQL documents."""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

APP = "benchmarks.api_app:sagas"


def _log(message: str) -> None:
    print(f"[api] {message}", file=sys.stderr, flush=True)


def _percentiles(ms: Sequence[float]) -> dict[str, Any]:
    if not ms:
        return {"p50_ms": None, "p99_ms": None, "samples": 0}
    ordered = sorted(ms)
    p99 = statistics.quantiles(ordered, n=100, method="inclusive")[98] if len(ordered) > 1 \
        else ordered[0]
    return {"p50_ms": round(statistics.median(ordered), 3), "p99_ms": round(p99, 3),
            "mean_ms": round(statistics.fmean(ordered), 3), "max_ms": round(ordered[-1], 3),
            "samples": len(ordered)}


# ------------------------------------------------------------------ processes


class Processes:
    """The processes this run started: each one stopped at the end, whatever happens
    (SIGTERM, then SIGKILL after a grace period). Their stderr goes to files (a pipe
    nobody reads would block a chatty process), whose end an error message shows."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []
        self.logs = Path(tempfile.mkdtemp(prefix="stepsaga-api-logs-"))
        self._log_files: dict[int, Any] = {}
        self._count = 0

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        self._count += 1
        log = open(self.logs / f"{self._count}-{Path(args[-1]).name[:40]}.log", "w+")
        process = subprocess.Popen(
            list(args), cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        self._log_files[process.pid] = log
        self.started.append(process)
        return process

    def stepsaga(self, *args: str) -> subprocess.Popen[str]:
        return self.start(sys.executable, "-m", "graphql_api.cli", *args)

    def stderr(self, process: subprocess.Popen[str]) -> str:
        log = self._log_files.get(process.pid)
        if log is None:
            return ""
        log.flush()
        log.seek(0)
        return str(log.read())[-3000:]

    def stop(self, processes: Sequence[subprocess.Popen[str]] | None = None) -> None:
        chosen = list(self.started if processes is None else processes)
        for process in chosen:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in chosen:
            try:
                process.communicate(timeout=45)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
            if process in self.started:
                self.started.remove(process)
            log = self._log_files.pop(process.pid, None)
            if log is not None:
                log.close()
        if processes is None:
            shutil.rmtree(self.logs, ignore_errors=True)


def _ready(procs: Processes, process: subprocess.Popen[str], what: str) -> dict[str, Any]:
    """The JSON line a stepsaga process prints once it serves (bounded by its start)."""
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=30)
        raise RuntimeError(f"{what} did not start (exit {process.returncode}): "
                           f"{procs.stderr(process)}")
    return dict(json.loads(line))


# the token each `stepsaga serve` of this run is asked with, by the URL it serves at
# (auth is on, as for users: its cost is part of every figure)
TOKENS: dict[str, str] = {}


def _serve(procs: Processes, store: str, *extra: str) -> tuple[subprocess.Popen[str], str]:
    from tests.auth import admin_token

    process = procs.stepsaga("serve", "--store", store, "--port", "0", "--app", APP, *extra)
    url = str(_ready(procs, process, "stepsaga serve")["url"])
    TOKENS[url] = admin_token(store, "bench")
    return process, url


def auth_headers(url: str) -> dict[str, str]:
    """The Authorization header for a server of this run (none for another server)."""
    token = TOKENS.get(url.replace("ws://", "http://"))
    return {"Authorization": f"Bearer {token}"} if token else {}


def _worker(procs: Processes, store: str, name: str, concurrency: int
            ) -> subprocess.Popen[str]:
    process = procs.stepsaga("worker", "--store", store, "--app", APP,
                             "--worker", f"main={concurrency}", "--node-id", name)
    _ready(procs, process, f"stepsaga worker {name}")
    return process


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (/proc/<pid>/stat utime + stime)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def preemptions(pid: int) -> int:
    """How often the kernel took the CPU from a process so far (its involuntary
    context switches, /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("nonvoluntary_ctxt_switches:"):
                return int(line.split(":")[1])
    return 0


# ------------------------------------------------------------------ GraphQL clients


def _gql() -> Any:
    from gql import gql

    return gql


def _http(url: str) -> Any:
    from gql import Client
    from gql.transport.aiohttp import AIOHTTPTransport

    # aiohttp: the client's own share of a request is half httpx's (a trivial query's
    # round trip to an idle server, 0.68 against 1.29 ms), and it is not the server's.
    # Longer than the API's own wait for a command's holder (10 s): it answers first
    return Client(transport=AIOHTTPTransport(url=url, timeout=30, headers=auth_headers(url)),
                  execute_timeout=30)


def _ws(url: str) -> Any:
    from gql import Client
    from gql.transport.websockets import WebsocketsTransport

    return Client(transport=WebsocketsTransport(
        url=url.replace("http://", "ws://"), headers=auth_headers(url),
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL]))


async def _ask(session: Any, document: Any, variables: dict[str, Any]) -> dict[str, Any]:
    from gql import GraphQLRequest

    found: dict[str, Any] = await session.execute(
        GraphQLRequest(document, variable_values=variables))
    return found


CREATE = """mutation($saga: String!, $input: JSON) {
  createWork(saga: $saga, input: $input) {
    __typename ... on WorkCreated { work { workId status } }
  }
}"""
TRIVIAL = "query { __typename }"
ANSWER = """__typename ... on CommandTaken { outcome work { stagesDone } }
    ... on WrongState { status message } ... on InvalidInput { message field }
    ... on Conflict { message }"""
PAUSE = f"mutation($id: String!) {{ pauseWork(workId: $id) {{ {ANSWER} }} }}"
RESUME = f"mutation($id: String!) {{ resumeWork(workId: $id) {{ {ANSWER} }} }}"
CANCEL = """mutation($id: String!) {
  cancelWork(workId: $id, compensate: false, reason: "the phase is over") { __typename }
}"""
EVENTS = """subscription($id: String, $after: String, $types: [String!]) {
  workEvents(workId: $id, after: $after, types: $types) { cursor workId seq type time }
}"""

def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None
