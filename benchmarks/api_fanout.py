"""``fanout`` of ``benchmarks/api.py``: subscribers of busy works, delivery delay and
the workers' CPU with and without them (see that module's docstring)."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from benchmarks.api_common import (
    CANCEL,
    CREATE,
    EVENTS,
    Processes,
    _ask,
    _gql,
    _http,
    _log,
    _percentiles,
    _ratio,
    _serve,
    _worker,
    _ws,
    cpu_seconds,
    preemptions,
)

# ------------------------------------------------------------------ fan-out

STATUS_TYPES = ["work.created", "work.started", "work.paused", "work.resumed",
                "work.completed", "work.compensating", "work.failed",
                "work.compensation_failed", "work.compensation_retried", "work.resolved",
                "work.cancelled"]


# A probe of what CPU time costs on this host now: every 0.1 s the same few
# milliseconds of pure Python, each burst's CPU time written down with the wall time.
# When the host is busier, cache misses and shared cores make the same work take more
# CPU time; the fan-out phases compare their medians (``cpu_cost_inflation``).
_PROBE = """
import sys, time
out = open(sys.argv[1], "w")
while True:
    start = time.thread_time_ns()
    total = 0
    for n in range(100_000):
        total += n
    out.write(f"{time.time()} {time.thread_time_ns() - start}\\n")
    out.flush()
    time.sleep(0.1)
"""


def _probe_costs(path: Path, window: Sequence[float]) -> list[float]:
    """The probe's bursts (CPU ms) within ``window`` (wall clock)."""
    found: list[float] = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and window[0] <= float(parts[0]) <= window[1]:
            found.append(int(parts[1]) / 1e6)
    return found


async def _last_position(store_url: str) -> int:
    import asyncpg
    import sqlalchemy as sa

    dsn = sa.make_url(store_url).set(drivername="postgresql")
    conn = await asyncpg.connect(dsn.render_as_string(hide_password=False))
    try:
        return int(await conn.fetchval("SELECT coalesce(max(position), 0) FROM events"))
    finally:
        await conn.close()


async def _until_running(store_url: str, works: Sequence[str]) -> None:
    """Until every one of ``works`` has started (a look every 0.1 s, for 60 s at most)."""
    import asyncpg
    import sqlalchemy as sa

    dsn = sa.make_url(store_url).set(drivername="postgresql")
    conn = await asyncpg.connect(dsn.render_as_string(hide_password=False))
    try:
        for _ in range(600):
            if await conn.fetchval("SELECT count(*) FROM works WHERE work_id = ANY($1) "
                                   "AND started_at IS NOT NULL", list(works)) == len(works):
                return
            await anyio.sleep(0.1)
    finally:
        await conn.close()
    raise RuntimeError(f"the {len(works)} paced works did not all start within 60 s")


async def _committed(store_url: str, after: int, until: int) -> int:
    import asyncpg
    import sqlalchemy as sa

    dsn = sa.make_url(store_url).set(drivername="postgresql")
    conn = await asyncpg.connect(dsn.render_as_string(hide_password=False))
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM events WHERE position > $1 AND position <= $2", after, until))
    finally:
        await conn.close()


async def _fanout_phase(api_url: str, store_url: str, works: Sequence[str],
                        subscribers: bool, seconds: float, pids: dict[str, Sequence[int]],
                        churn: float, status_subscribers: int) -> dict[str, Any]:
    """One phase of the fan-out: for ``seconds``, the busy works commit while a trickle of
    ``blip`` works starts and ends (``churn`` a second, in both phases); with
    ``subscribers``, one per work follows its events and ``status_subscribers`` follow
    every work's status changes. CPU of the processes in ``pids`` and events committed
    are read before and after."""
    from gql import GraphQLRequest

    gql = _gql()
    follow, create = gql(EVENTS), gql(CREATE)
    delays: dict[str, list[float]] = {"work": [], "status": []}
    window = [float("inf"), float("inf")]  # the measured span, wall clock
    first_seen: set[int] = set()
    all_live = anyio.Event()

    async def subscriber(index: int, variables: dict[str, Any], kind: str) -> None:
        async with _ws(api_url) as session:
            async for item in session.subscribe(GraphQLRequest(follow,
                                                               variable_values=variables)):
                now = time.time()
                event = item["workEvents"]
                first_seen.add(index)
                if len(first_seen) >= len(works):
                    all_live.set()
                if window[0] <= event["time"] <= window[1]:
                    delays[kind].append((now - event["time"]) * 1000)

    async def trickle(client: Any, until: float) -> int:
        made = 0
        while time.monotonic() < until:
            await _ask(client, create, {"saga": "blip", "input": made})
            made += 1
            await anyio.sleep(1 / churn)
        return made

    async with anyio.create_task_group() as tg, _http(api_url) as client:
        if subscribers:
            for index, work_id in enumerate(works):
                tg.start_soon(subscriber, index, {"id": work_id}, "work")
            for index in range(status_subscribers):
                tg.start_soon(subscriber, len(works) + index, {"types": STATUS_TYPES},
                              "status")
            with anyio.fail_after(60):
                await all_live.wait()  # every work's subscriber got an event: it is live
            await anyio.sleep(0.5)  # and the status subscribers (no event to tell)
        position = await _last_position(store_url)
        cpu = {name: sum(cpu_seconds(p) for p in group) for name, group in pids.items()}
        switched = sum(preemptions(p) for p in pids["workers"])
        window[0], start = time.time(), time.perf_counter()
        made = await trickle(client, time.monotonic() + seconds)
        window[1], elapsed = time.time(), time.perf_counter() - start
        used = {name: sum(cpu_seconds(p) for p in group) - cpu[name]
                for name, group in pids.items()}
        switched = sum(preemptions(p) for p in pids["workers"]) - switched
        last = await _last_position(store_url)
        tg.cancel_scope.cancel()
    committed = await _committed(store_url, position, last)
    return {"window": list(window), "seconds": round(elapsed, 2), "events": committed,
            "events_per_s": round(committed / elapsed, 1), "blip_works": made,
            "cpu_s": {k: round(v, 3) for k, v in used.items()},
            "cpu_us_per_event": {k: round(v / committed * 1e6, 2) for k, v in used.items()},
            "worker_preemptions_per_s": round(switched / elapsed, 1),
            "delays": delays}


def fanout(procs: Processes, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Busy works run by ``stepsaga worker`` processes on PostgreSQL at a paced total
    rate; an API-only node serves the subscribers. Phases without and with subscribers
    alternate for ``--fanout-rounds`` rounds."""
    api_node, api_url = _serve(procs, url, "--no-workers")
    workers = [_worker(procs, url, f"fan-{i}", args.fanout_works // args.fanout_workers + 10)
               for i in range(args.fanout_workers)]
    probe = None
    try:
        # two events a stage (transaction started, completed): each work ends a stage
        # every `period` seconds, on a grid (whatever a step costs), its phase spread
        # over the period, so that together they commit --fanout-rate events a second
        period = 2 * args.fanout_works / args.fanout_rate

        async def start() -> list[str]:
            async with _http(api_url) as client:
                create = _gql()(CREATE)
                return [(await _ask(client, create, {"saga": "paced", "input": {
                    "period": period, "phase": period * n / args.fanout_works}}))[
                    "createWork"]["work"]["workId"] for n in range(args.fanout_works)]

        async def stop(works: Sequence[str]) -> None:
            async with _http(api_url) as client:
                cancel = _gql()(CANCEL)
                for work_id in works:
                    await _ask(client, cancel, {"id": work_id})

        probe_file = procs.logs / "probe.txt"
        probe = procs.start(sys.executable, "-c", _PROBE, str(probe_file))
        pids = {"workers": [w.pid for w in workers], "api": [api_node.pid],
                "client": [os.getpid()]}
        phases: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
        for n in range(args.fanout_rounds):
            # fresh works each round: a work's state grows with every stage it ran, and
            # with it the cost of its snapshots; one set of works for the whole run made
            # the last phases dearer than the first
            works = anyio.run(start)
            anyio.run(_until_running, url, works)
            # without-with, then with-without: what drifts within a round (the works'
            # states grow, the host's load changes) weighs on both sides alike
            for name in ("without", "with") if n % 2 == 0 else ("with", "without"):
                _log(f"fanout: round {n + 1}, {name} subscribers, {args.fanout_seconds} s")
                phases[name].append(anyio.run(
                    _fanout_phase, api_url, url, works, name == "with", args.fanout_seconds,
                    pids, args.fanout_churn, args.status_subscribers))
            anyio.run(stop, works)
        costs = {name: [c for p in group for c in _probe_costs(probe_file, p["window"])]
                 for name, group in phases.items()}
    finally:
        procs.stop([api_node, *workers] + ([probe] if probe is not None else []))
    delays = {kind: [d for p in phases["with"] for d in p["delays"][kind]]
              for kind in ("work", "status")}
    for group in phases.values():
        for phase in group:
            phase.pop("delays")
            phase.pop("window")
    inflation = _ratio(statistics.median(costs["with"]), statistics.median(costs["without"])) \
        if costs["with"] and costs["without"] else None

    def per_event(name: str, who: str) -> float:
        cpu = sum(p["cpu_s"][who] for p in phases[name])
        return cpu / max(sum(p["events"] for p in phases[name]), 1)

    every = _percentiles(delays["work"] + delays["status"])
    ratio = _ratio(per_event("with", "workers"), per_event("without", "workers"))
    return {"p50_ms": every["p50_ms"], "p99_ms": every["p99_ms"],
            "worker_cpu_ratio": ratio,
            # the same pure-Python work's CPU time, with subscribers over without: how
            # much of the ratio is the busier host rather than the workers' own doing
            "cpu_cost_inflation": inflation,
            "worker_cpu_ratio_over_inflation": _ratio(ratio, inflation),
            "delay_ms": every, "work_subscribers_delay_ms": _percentiles(delays["work"]),
            "status_subscribers_delay_ms": _percentiles(delays["status"]),
            "worker_cpu_us_per_event": {name: round(per_event(name, "workers") * 1e6, 2)
                                        for name in phases},
            "api_cpu_us_per_event": {name: round(per_event(name, "api") * 1e6, 2)
                                     for name in phases},
            "client_cpu_us_per_event": {name: round(per_event(name, "client") * 1e6, 2)
                                        for name in phases},
            # the workers lose their core more often while the API node and the client
            # are busy with the subscribers: the cost of sharing two cores, not of the
            # workers doing more
            "worker_preemptions_per_s": {name: round(statistics.fmean(
                p["worker_preemptions_per_s"] for p in phases[name]), 1) for name in phases},
            "stage_period_s": period, "phases": phases}
