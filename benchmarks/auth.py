"""What auth and policies cost a request, against the same requests with auth off, in
one run: two ``stepsaga serve --no-workers`` processes on one SQLite file, one with auth
on (asked with the token of a principal that is no administrator, whose policy gives it
``read`` over the saga ``demo``: the policy is checked, not short-cut), one with auth off
(``--no-auth``). One JSON object on stdout; progress on stderr.

- ``query``: ``allWorks(first: 50)`` over HTTP, each server over its own keep-alive
  connection, the two interleaved request by request (``--rounds`` each, after a
  warm-up); the ratio of the medians, auth on over off.
- ``subscription``: a ``workEvents`` subscriber on each server while a ``stepsaga
  worker`` runs works of the demo saga created through the API (about 25 events each),
  until ``--events`` reached both; for each event the time it reached each subscriber
  minus its ``time`` (one clock); the ratio of the medians.

Goal (issue 12): at most 1.15 for both. Keys ``query.ratio_vs_no_auth``,
``subscription.ratio_vs_no_auth``.

    python benchmarks/auth.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.api_common import Processes, _ready  # noqa: E402

GOAL = 1.15
LIST = "{ allWorks(first: 50) { totalCount edges { node { workId status saga } } } }"
# works to list: not due for years, so the worker of the subscription part leaves them
CREATE = 'mutation { createWork(saga: "demo", startAt: 4000000000) { __typename } }'
ORDER = ('mutation { createWork(saga: "demo", input: {items: [{sku: "a", price: 3}, '
         '{sku: "b", price: 4}]}) { __typename } }')
POLICY = [{"subject": "principal:reader", "actions": ["read", "write"], "sagas": ["demo"]}]


def _log(message: str) -> None:
    print(f"[auth] {message}", file=sys.stderr, flush=True)


def _cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "graphql_api.cli", *args], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"stepsaga {' '.join(args[:2])} failed: {done.stderr}")
    return done.stdout.strip()


async def _queries(urls: dict[str, str], headers: dict[str, dict[str, str]], rounds: int,
                   warmup: int) -> dict[str, list[float]]:
    import httpx

    times: dict[str, list[float]] = {name: [] for name in urls}
    clients = {name: httpx.AsyncClient(timeout=30, headers=headers[name]) for name in urls}
    try:
        for n in range(rounds + warmup):
            for name in (list(urls) if n % 2 else list(urls)[::-1]):
                start = time.perf_counter()
                answer = await clients[name].post(urls[name], json={"query": LIST})
                took = (time.perf_counter() - start) * 1000
                if answer.status_code != 200 or "errors" in answer.json():
                    raise RuntimeError(f"{name} answered {answer.text[:300]}")
                if n >= warmup:
                    times[name].append(took)
    finally:
        for client in clients.values():
            await client.aclose()
    return times


async def _subscription(urls: dict[str, str], headers: dict[str, dict[str, str]],
                        events: int) -> dict[str, list[float]]:
    import httpx
    import websockets

    delays: dict[str, list[float]] = {name: [] for name in urls}

    async def follow(name: str, ready: anyio.Event) -> None:
        url = urls[name].replace("http://", "ws://")
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"],
                                      additional_headers=headers[name]) as sock:
            await sock.send(json.dumps({"type": "connection_init"}))
            assert json.loads(await sock.recv())["type"] == "connection_ack"
            await sock.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
                "query": "subscription { workEvents { time } }"}}))
            ready.set()
            while len(delays[name]) < events:
                message = json.loads(await sock.recv())
                if message["type"] != "next":
                    raise RuntimeError(f"{name}: {message}")
                delays[name].append((time.time() - message["payload"]["data"]
                                     ["workEvents"]["time"]) * 1000)

    with anyio.fail_after(300):
        async with anyio.create_task_group() as tg:
            for name in urls:
                ready = anyio.Event()
                tg.start_soon(follow, name, ready)
                await ready.wait()
            await anyio.sleep(0.5)
            async with httpx.AsyncClient(timeout=30, headers=headers["on"]) as client:
                # a work every 0.1 s, each about 25 events over half a second, until
                # both subscribers have their events (bounded by the timeout above)
                while min(len(d) for d in delays.values()) < events:
                    await client.post(urls["on"], json={"query": ORDER})
                    await anyio.sleep(0.1)
    return delays


def _summary(times: dict[str, list[float]]) -> dict[str, Any]:
    on, off = statistics.median(times["on"]), statistics.median(times["off"])
    return {"auth_p50_ms": round(on, 3), "no_auth_p50_ms": round(off, 3),
            "ratio_vs_no_auth": round(on / off, 3), "samples": len(times["on"]),
            "goal": f"<= {GOAL}", "goal_met": on / off <= GOAL}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (a minute)")
    parser.add_argument("--rounds", type=int, default=None, help="queries per server (2000)")
    parser.add_argument("--events", type=int, default=None, help="events (600)")
    parser.add_argument("--works", type=int, default=200, help="works stored first")
    args = parser.parse_args()
    rounds = args.rounds or (400 if args.quick else 2000)
    events = args.events or (200 if args.quick else 600)
    folder = Path(tempfile.mkdtemp(prefix="stepsaga-auth-bench-"))
    store = f"sqlite+aiosqlite:///{folder}/auth.sqlite"
    # the principal and its policy first: the servers find a store with principals
    token = _cli("token", "--store", store, "create", "reader", "--label", "bench")
    (folder / "policies.json").write_text(json.dumps(POLICY))
    _cli("policy", "--store", store, "set", str(folder / "policies.json"))
    procs = Processes()
    try:
        on = procs.stepsaga("serve", "--store", store, "--port", "0", "--no-workers")
        url_on = str(_ready(procs, on, "stepsaga serve")["url"])
        off = procs.stepsaga("serve", "--store", store, "--port", "0", "--no-workers",
                             "--no-auth")
        url_off = str(_ready(procs, off, "stepsaga serve --no-auth")["url"])
        worker = procs.stepsaga("worker", "--store", store, "--worker", "main=4")
        _ready(procs, worker, "stepsaga worker")
        urls = {"on": url_on, "off": url_off}
        headers = {"on": {"Authorization": f"Bearer {token}"}, "off": {}}

        async def fill() -> None:
            import httpx

            async with httpx.AsyncClient(timeout=30, headers=headers["on"]) as client:
                for _ in range(args.works):
                    await client.post(url_on, json={"query": CREATE})

        _log(f"{args.works} works, then {rounds} queries a server")
        anyio.run(fill)
        query = _summary(anyio.run(_queries, urls, headers, rounds, max(20, rounds // 10)))
        _log(f"query: {query}")
        subscription = _summary(anyio.run(_subscription, urls, headers, events))
        _log(f"subscription: {subscription}")
    finally:
        procs.stop()
    print(json.dumps({"query": query, "subscription": subscription, "quick": args.quick,
                      "host": {"cpus": os.cpu_count(),
                               "load_average": [round(x, 2) for x in os.getloadavg()]}},
                     indent=2))


if __name__ == "__main__":
    main()
