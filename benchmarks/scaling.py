"""Worker processes sharing one store: throughput with one and two, and takeover time.

For PostgreSQL (a throwaway 15 cluster) and for a SQLite file, in one run:

- throughput: ``--sagas`` works of a five-stage saga (each stage returns its input
  plus one) are created up front, then one ``stepsaga worker`` process (later two,
  on a fresh database) runs them all. The time is read from the stored events:
  from the first event a worker recorded to the last work's end, so process start
  and the polling of this script are not counted. ``two_process_speedup`` is the
  two-process rate over the one-process rate; this machine has 2 cores, which the
  database server (or SQLite's single write lock) shares.
- takeover: a node runs works whose stages take a second, a second node idles;
  the first is killed with SIGKILL, and the time until the second records its first
  event on one of the dead node's works is divided by the lease time
  (``takeover_lease_periods``): a lease is renewed every third of its time, so it
  expires at most one period after the death, and the idle node looks within half a
  period (on PostgreSQL; NOTIFY does not come from a dead node) or 0.2 s (SQLite).

Run from the repository root (``--quick``: about a minute)::

    python benchmarks/scaling.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine import Runtime, Saga, Stage  # noqa: E402
from engine.store import SqlStore  # noqa: E402

STAGES = 5
GOALS = {"two_process_speedup_postgres": 1.5, "takeover_lease_periods": 2.0}


async def _inc(ctx: Any, value: int) -> int:
    return value + 1


async def _slow(ctx: Any, value: int) -> int:
    await anyio.sleep(1.0)
    return value + 1


def sagas() -> list[Saga]:
    """What the worker processes run (``--app benchmarks.scaling:sagas``)."""
    return [Saga(name="five", stages=[Stage(name=f"s{i}", transaction=_inc)
                                      for i in range(STAGES)]),
            Saga(name="slow", stages=[Stage(name=f"s{i}", transaction=_slow)
                                      for i in range(3)])]


def _log(message: str) -> None:
    print(f"[scaling] {message}", file=sys.stderr, flush=True)


def _worker(url: str, name: str, concurrency: int, ttl: float) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "graphql_api.cli", "worker", "--store", url,
         "--app", "benchmarks.scaling:sagas", "--worker", f"main={concurrency}",
         "--lease-ttl", str(ttl), "--node-id", name],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.stdout is not None
    if not process.stdout.readline():
        raise RuntimeError(f"worker {name} did not start: {process.communicate()[1][-2000:]}")
    return process


def _stop(processes: Sequence[subprocess.Popen[str]], sig: int = signal.SIGTERM) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(sig)
    for process in processes:
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


async def _submit(url: str, saga: str, count: int) -> list[str]:
    async with SqlStore.open(url) as store, Runtime(sagas(), store=store) as rt:
        ids: list[str] = []

        async def some(n: int) -> None:
            for _ in range(n):
                ids.append(await rt.start(saga, 0, run=False))

        async with anyio.create_task_group() as tg:  # group-committed creations
            for part in range(50):
                tg.start_soon(some, count // 50 + (part < count % 50))
        return ids


async def _wait_completed(url: str, count: int, seconds: float) -> None:
    """Until ``count`` works completed: one connection, a look every half second (the
    rate comes from the events' times, so looking more often would only take CPU from
    the workers)."""
    import sqlalchemy as sa

    from engine.store.schema import works

    query = sa.select(sa.func.count()).select_from(works).where(works.c.status == "completed")
    async with SqlStore.open(url, create=False) as store, store.engine.connect() as conn:
        for _ in range(int(seconds / 0.5)):
            if (await conn.execute(query)).scalar_one() == count:
                return
            await conn.rollback()  # a fresh snapshot for the next look
            await anyio.sleep(0.5)
    raise RuntimeError(f"{count} works did not complete in {seconds} s")


async def _span(url: str) -> tuple[float, float, int]:
    """From the first event a worker recorded to the last event; events recorded."""
    import sqlalchemy as sa

    from engine.store.schema import events

    async with SqlStore.open(url) as store, store.engine.connect() as conn:
        row = (await conn.execute(sa.select(
            sa.func.min(events.c.time), sa.func.max(events.c.time), sa.func.count())
            .where(events.c.worker.is_not(None)))).one()
    return float(row[0]), float(row[1]), int(row[2])


def throughput(url: str, processes: int, count: int, concurrency: int) -> dict[str, Any]:
    anyio.run(_submit, url, "five", count)
    workers = [_worker(url, f"t{processes}-{i}", concurrency, 10.0) for i in range(processes)]
    try:
        anyio.run(_wait_completed, url, count, 600.0)
    finally:
        _stop(workers)
    first, last, recorded = anyio.run(_span, url)
    return {"processes": processes, "sagas": count,
            "sagas_per_s": round(count / (last - first), 1),
            "events_per_s": round(recorded / (last - first), 1)}


async def _first_event_by(url: str, worker: str, works: Sequence[str]) -> float | None:
    async with SqlStore.open(url) as store:
        times = [e.time for w in works for e in await store.read(w) if e.worker == worker]
    return min(times) if times else None


async def _held_by(url: str, owner: str) -> list[str]:
    import sqlalchemy as sa

    from engine.store.schema import leases as lease_rows

    async with SqlStore.open(url, create=False) as store, store.engine.connect() as conn:
        rows = await conn.execute(sa.select(lease_rows.c.work_id).where(
            lease_rows.c.owner == owner, lease_rows.c.expires_at >= time.time()))
        return sorted(r[0] for r in rows)


def takeover(url: str, ttl: float) -> dict[str, Any]:
    ids = anyio.run(_submit, url, "slow", 20)
    victim = _worker(url, "victim", 20, ttl)
    try:
        for _ in range(int(30 / 0.05)):
            held = anyio.run(_held_by, url, "victim")
            if len(held) == len(ids):
                break
            time.sleep(0.05)
        heir = _worker(url, "heir", 20, ttl)
        time.sleep(ttl / 3)  # the victim renews once more, the heir is idle and listening
        killed = time.time()
        victim.send_signal(signal.SIGKILL)
        first = None
        for _ in range(int(10 * ttl / 0.05)):
            first = anyio.run(_first_event_by, url, "heir/main", held)
            if first is not None:
                break
            time.sleep(0.05)
    finally:
        _stop([victim])
        _stop([heir]) if "heir" in locals() else None
    if first is None:
        raise RuntimeError("no takeover within ten lease periods")
    return {"lease_ttl_s": ttl, "takeover_s": round(first - killed, 3),
            "takeover_lease_periods": round((first - killed) / ttl, 3)}


def measure(backend: str, fresh: Callable[[str], str], args: argparse.Namespace
            ) -> dict[str, Any]:
    _log(f"{backend}: one worker process, {args.sagas} sagas")
    one = throughput(fresh("one"), 1, args.sagas, args.concurrency)
    _log(f"{backend}: two worker processes, {args.sagas} sagas")
    two = throughput(fresh("two"), 2, args.sagas, args.concurrency)
    _log(f"{backend}: takeover after SIGKILL, lease {args.lease_ttl} s")
    taken = takeover(fresh("takeover"), args.lease_ttl)
    return {"one_process": one, "two_processes": two,
            "two_process_speedup": round(two["sagas_per_s"] / one["sagas_per_s"], 3),
            **taken}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sagas (about a minute)")
    parser.add_argument("--sagas", type=int, default=None,
                        help="works per throughput run (10000; 3000 quick)")
    parser.add_argument("--concurrency", type=int, default=200,
                        help="works each worker process runs at once")
    parser.add_argument("--lease-ttl", type=float, default=2.0,
                        help="lease time in the takeover run (seconds)")
    parser.add_argument("--backends", default="postgres,sqlite")
    args = parser.parse_args(argv)
    args.sagas = args.sagas or (3000 if args.quick else 10_000)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if args.sagas < 1 or args.concurrency < 1 or not args.lease_ttl > 0:
        parser.error("--sagas, --concurrency and --lease-ttl must be positive")
    if not set(backends) <= {"postgres", "sqlite"} or not backends:
        parser.error("--backends: a comma-separated list of postgres, sqlite")
    result: dict[str, Any] = {}
    if "postgres" in backends:
        from tests.pg import PostgresCluster

        cluster = PostgresCluster()
        cluster.start()
        try:
            result["postgres"] = measure("postgres", cluster.create_database, args)
        finally:
            cluster.stop()
    if "sqlite" in backends:
        with tempfile.TemporaryDirectory(prefix="stepsaga-scaling-") as base:
            result["sqlite"] = measure(
                "sqlite", lambda name: f"sqlite+aiosqlite:///{base}/{name}.sqlite", args)
    periods = [result[b]["takeover_lease_periods"] for b in backends]
    result["takeover_lease_periods"] = max(periods)
    goals: dict[str, Any] = {"takeover_lease_periods": {
        "goal": f"<= {GOALS['takeover_lease_periods']:g}",
        "met": max(periods) <= GOALS["takeover_lease_periods"]}}
    if "postgres" in result:
        speedup = result["postgres"]["two_process_speedup"]
        goals["postgres.two_process_speedup"] = {
            "goal": f">= {GOALS['two_process_speedup_postgres']:g}",
            "met": speedup >= GOALS["two_process_speedup_postgres"]}
    result["goals"] = goals
    result["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
