"""A rolling restart under load: two ``stepsaga serve`` nodes on one PostgreSQL behind
Debian's haproxy (one address, /readyz as its health check), restarted one after the
other (SIGTERM, then started again) while clients create works, query them and follow
every event over a subscription through haproxy. No subscription event is missed (the
subscriber resumes from its cursor), and no request fails that a client retried once."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from gql import GraphQLRequest

from engine.store import SqlStore

from .wire import APP, EVENTS, Served, ws

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
CREATE = """mutation($input: JSON, $rid: String) {
  createWork(saga: "slow", input: $input, requestId: $rid) {
    __typename ... on WorkCreated { work { workId } } } }"""
WORK = "query($id: String!) { work(workId: $id) { workId status } }"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def haproxy_config(front: int, backends: list[int]) -> str:
    servers = "\n".join(f"    server n{i} 127.0.0.1:{port} check inter 200ms fall 2 rise 2"
                        for i, port in enumerate(backends))
    return f"""global
    maxconn 500
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 120s
    timeout check 2s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout
frontend api
    bind 127.0.0.1:{front}
    default_backend nodes
backend nodes
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
{servers}
"""


class Node:
    """One ``stepsaga serve`` on a fixed port, so it comes back where haproxy looks."""

    def __init__(self, store: str, port: int) -> None:
        self.store, self.port = store, port
        self.served: Served | None = None

    def start(self) -> None:
        self.served = Served("serve", "--store", self.store, "--port", str(self.port),
                             "--app", APP, "--no-auth", "--worker", "main=20",
                             "--lease-ttl", "2")
        self.served.ready()

    def stop(self) -> None:
        assert self.served is not None
        code, _, err = self.served.stop()
        assert code == 0, err


def start_proxy(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([HAPROXY, "-f", str(config), "-db"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_ready(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"port {port} never became ready")


@pytest.mark.timeout(240)
async def test_a_rolling_restart_under_load_misses_nothing(postgres_url: str,
                                                           tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    nodes = [Node(postgres_url, port) for port in ports]
    front = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(front, ports))
    proxy = None
    try:
        for node in nodes:
            node.start()
        proxy = start_proxy(config)
        await anyio.to_thread.run_sync(wait_ready, front)
        url = f"http://127.0.0.1:{front}/graphql"
        created: list[str] = []
        cursors: list[int] = []
        failures: list[str] = []
        retried = {"requests": 0, "resubscribed": 0}
        stop = anyio.Event()
        began = time.monotonic()
        marks: list[str] = []

        async def request(client: httpx.AsyncClient, document: str,
                          variables: dict[str, Any]) -> dict[str, Any]:
            for attempt in (1, 2):  # a client that retries once
                try:
                    response = await client.post(url, json={"query": document,
                                                            "variables": variables})
                    body = response.json()
                    if response.status_code == 200 and "errors" not in body:
                        return dict(body["data"])
                    problem = f"{response.status_code}: {body}"
                except ValueError:
                    problem = f"{response.status_code}: {response.text[:200]!r}"
                except httpx.HTTPError as exc:
                    problem = repr(exc)
                problem = f"{time.monotonic() - began:.1f}s {problem}"
                if attempt == 1:
                    retried["requests"] += 1
                    await anyio.sleep(0.5)
            failures.append(problem)
            return {}

        async def creating() -> None:
            async with httpx.AsyncClient(timeout=10) as client:
                i = 0
                while not stop.is_set():
                    made = await request(client, CREATE, {"input": i, "rid": f"load-{i}"})
                    if made:
                        work_id = made["createWork"]["work"]["workId"]
                        created.append(work_id)
                        await request(client, WORK, {"id": work_id})
                    i += 1
                    await anyio.sleep(0.05)

        async def following() -> None:
            after = "0"
            while not stop.is_set() or len(cursors) < expected:
                try:
                    async with ws(url) as session:
                        async for item in session.subscribe(GraphQLRequest(
                                EVENTS, variable_values={"id": None, "after": after})):
                            event = item["workEvents"]
                            cursors.append(int(event["cursor"]))
                            after = event["cursor"]
                            if stop.is_set() and len(cursors) >= expected:
                                return
                except Exception:  # the node it was on stops: resume from the cursor
                    retried["resubscribed"] += 1
                    marks.append(f"{time.monotonic() - began:.1f}s resubscribe after {after}")
                    await anyio.sleep(0.2)

        expected = 10**9
        async with anyio.create_task_group() as tg:
            tg.start_soon(creating)
            tg.start_soon(following)
            await anyio.sleep(2)
            for node in nodes:  # one after the other, under load
                marks.append(f"{time.monotonic() - began:.1f}s stop {node.port}")
                await anyio.to_thread.run_sync(node.stop)
                marks.append(f"{time.monotonic() - began:.1f}s stopped")
                await anyio.sleep(0.5)
                await anyio.to_thread.run_sync(node.start)
                await anyio.to_thread.run_sync(wait_ready, node.port)
                await anyio.sleep(1.5)  # haproxy sees it up again (rise 2)
            await anyio.sleep(1)
            stop.set()
            async with SqlStore.open(postgres_url) as store:
                for _ in range(600):
                    rows = [await store.work(w) for w in created]
                    if all(r is not None and r["status"] == "completed" for r in rows):
                        break
                    await anyio.sleep(0.1)
                stored = [r.position for r in await store.read_all(limit=1_000_000)]
            expected = len(stored)
            for _ in range(600):  # the subscriber catches up
                if len(cursors) >= expected:
                    break
                await anyio.sleep(0.1)
            tg.cancel_scope.cancel()
        assert failures == [], (failures, marks)
        assert len(created) > 20
        assert all(r is not None and r["status"] == "completed" for r in rows), \
            sorted({(r or {}).get("status", "missing") for r in rows})
        missed = sorted(set(stored) - set(cursors))
        assert missed == [], (missed[:20], marks)  # every event, none missed
        assert cursors == sorted(cursors)  # in order
        assert len(set(cursors)) == len(cursors)  # none twice
        assert retried["resubscribed"] >= 1  # the restarts did cut subscriptions
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.communicate(timeout=30)
        for node in nodes:
            if node.served is not None and node.served.process.poll() is None:
                node.stop()
