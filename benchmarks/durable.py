"""Durable sagas per second: stepsaga against DBOS Transact and against bare commits.

One run measures, on a SQLite file and on a throwaway PostgreSQL 15 cluster, a
saga of five stages that each return their input plus one:

- stepsaga (:class:`engine.Runtime` on :class:`engine.store.SqlStore`): the latency
  of one saga at a time (p50, p99) and the throughput with ``--inflight`` sagas in
  flight (sagas/s, events/s);
- the same five-step workflow on DBOS Transact (``pip install -e '.[bench,postgres]'``):
  ``@DBOS.step()`` functions called from a ``@DBOS.workflow()``, through its
  synchronous API (faster here than its async one). Sequential latency calls the
  workflow directly; throughput keeps ``--inflight`` workflows in flight either
  from a pool of threads calling the workflow (``threads``) or through
  ``DBOS.start_workflow`` (``start_workflow``); the faster one is DBOS's figure;
- the limit of the hardware: bare single-row INSERTs per second, each its own
  commit, on the same database and settings (stdlib ``sqlite3``; one asyncpg
  connection).

Durability is the same on both sides and read back from each system's own
connections into ``durability``: SQLite in WAL mode with ``synchronous=FULL``
(``--sqlite-synchronous``), set on DBOS through a ``sqlite3.Connection`` factory in
its engine's ``connect_args`` as DBOS sets no journal mode itself; PostgreSQL with
the server's defaults ``fsync=on`` and ``synchronous_commit=on``, both systems on
the same server, each in a fresh database. DBOS's ``pool_pre_ping`` is turned off,
as stepsaga's pools do not ping either.

Both sides call ``gc.freeze()`` once warmed up, as a long-running server does once
started: the objects of the imported modules then stay out of every later garbage
collection. Each measurement runs in a fresh child process, one at a time, so the systems do
not share a core, an interpreter or leftover threads. Commits are counted with
SQLAlchemy's ``commit`` event on DBOS's engines, and by stepsaga's store itself
(``SqlStore.commits``: on PostgreSQL a group commit is one statement sent straight
through the driver, which SQLAlchemy's events do not see).

With ``--observability`` it measures instead what seeing the sagas costs, on the SQLite
throughput run: the same saga (each stage writes a DEBUG record through ``ctx.logger``,
the first an INFO one too) with everything off (no metrics: ``Runtime(metrics=False)``,
``StoreConfig(metrics=False)``; no log capture: ``keep_logs=False``; no tracer provider,
so the engine opens no span) against the same with metrics, log capture and tracing on,
once with OpenTelemetry's no-op tracer provider (``noop``) and once with the SDK's
``TracerProvider`` exporting through a ``BatchSpanProcessor`` to an in-memory exporter
(``sdk``; its queue holds every span: none is dropped, and the spans exported are
counted). Every side runs with the garbage collector tuned as ``stepsaga serve`` and
``stepsaga worker`` tune it (``graphql_api.cli.tune_gc_for_long_run``). Each round runs
the three in fresh child processes, one after the other, in an order rotated from round
to round. A ratio is the cost on over the cost off: the median
over rounds of the child's CPU time (all its threads: the event loop, SQLite's writer,
the span exporter) per saga in the throughput run, 1.0 being free. Keys
``observability.ratio_noop`` (goal <= 1.1) and ``observability.ratio_sdk`` (goal <= 1.6).
The throughput itself (``sagas_per_s``, ``throughput_ratio_*``: median sagas/s off over
on) is reported too; on a machine shared with other work it varies up to twice between
identical rounds, where the CPU time per saga stays within about a tenth.

Run from the repository root (``--quick`` takes about two minutes)::

    python benchmarks/durable.py --quick
    python benchmarks/durable.py --observability --quick   # about three minutes
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import importlib.util
import json
import multiprocessing
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
try:
    from engine import Runtime, Saga, Stage
    from engine.store import SqlStore, StoreConfig
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(ROOT))
    from engine import Runtime, Saga, Stage
    from engine.store import SqlStore, StoreConfig

STAGES = 5
GOALS = {  # backend: (min throughput ratio vs DBOS, max p50 ratio vs DBOS)
    "sqlite": (20.0, 0.4),
    "postgres": (15.0, 0.4),
}
DBOS_MODES = ("threads", "start_workflow")
OBSERVED = ("off", "noop", "sdk")  # what --observability compares, see the docstring
OBSERVABILITY_GOALS = {"noop": 1.1, "sdk": 1.6}  # at most this cost over "off"


def _log(message: str) -> None:
    print(f"[durable] {message}", file=sys.stderr, flush=True)


def _latency(seconds: Sequence[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    p99 = statistics.quantiles(ms, n=100, method="inclusive")[98] if len(ms) > 1 else ms[0]
    return {"p50_ms": round(statistics.median(ms), 3), "p99_ms": round(p99, 3),
            "mean_ms": round(statistics.fmean(ms), 3)}


class _Commits:
    """Counts the commits of the SQLAlchemy engines it listens to."""

    def __init__(self, engines: Sequence[sa.Engine]) -> None:
        self.count = 0
        self._lock = threading.Lock()  # DBOS commits from many threads at once
        for engine in engines:
            sa.event.listen(engine, "commit", self._commit)

    def _commit(self, conn: Any) -> None:
        with self._lock:
            self.count += 1


# ------------------------------------------------------------------ the bare limit


def insert_limit(backend: str, target: str, seconds: float, synchronous: str) -> dict[str, Any]:
    """Single-row INSERTs per second, each in its own transaction and commit."""
    if backend == "sqlite":
        conn = sqlite3.connect(target, isolation_level=None)  # autocommit: one commit each
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            conn.execute(f"PRAGMA synchronous={synchronous}")
            level = conn.execute("PRAGMA synchronous").fetchone()[0]
            conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            done, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds:
                conn.execute("INSERT INTO t (v) VALUES (?)", ("x",))
                done += 1
            (rows,) = conn.execute("SELECT count(*) FROM t").fetchone()
        finally:
            conn.close()
        settings = {"journal_mode": mode, "synchronous": level}
    else:
        async def run() -> tuple[int, float, int, dict[str, Any]]:
            import asyncpg

            conn = await asyncpg.connect(target)
            try:
                await conn.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text NOT NULL)")
                done, start = 0, time.perf_counter()
                while (elapsed := time.perf_counter() - start) < seconds:
                    await conn.execute("INSERT INTO t (v) VALUES ($1)", "x")  # implicit commit
                    done += 1
                rows = await conn.fetchval("SELECT count(*) FROM t")
                return done, elapsed, rows, await _pg_settings_asyncpg(conn)
            finally:
                await conn.close()

        done, elapsed, rows, settings = anyio.run(run)
    if rows != done:
        raise RuntimeError(f"{rows} rows for {done} inserts")
    return {"inserts_per_s": round(done / elapsed, 1), "inserts": done,
            "durability": settings}


async def _pg_settings_asyncpg(conn: Any) -> dict[str, Any]:
    return {name: await conn.fetchval(f"SHOW {name}")
            for name in ("synchronous_commit", "fsync", "wal_sync_method", "server_version")}


def _pg_settings(conn: sa.Connection) -> dict[str, Any]:
    return {name: conn.exec_driver_sql(f"SHOW {name}").scalar()
            for name in ("synchronous_commit", "fsync", "wal_sync_method")}


def _sqlite_settings(conn: sa.Connection) -> dict[str, Any]:
    return {"journal_mode": conn.exec_driver_sql("PRAGMA journal_mode").scalar(),
            "synchronous": conn.exec_driver_sql("PRAGMA synchronous").scalar()}


# ------------------------------------------------------------------ stepsaga


async def _inc(ctx: Any, value: int) -> int:
    return value + 1


def run_stepsaga(url: str, seq: int, sagas: int, inflight: int, warmup: int,
                 synchronous: str) -> dict[str, Any]:
    saga = Saga(name="five", stages=[Stage(name=f"s{i}", transaction=_inc)
                                     for i in range(STAGES)])

    async def main() -> dict[str, Any]:
        config = StoreConfig(url=url, sqlite_synchronous=synchronous)
        async with SqlStore.open(config=config) as store, \
                Runtime([saga], store=store) as runtime:
            # the store counts its group commits (on PostgreSQL they bypass SQLAlchemy's
            # transaction events: one statement each, straight through the driver)
            writer = getattr(store, "_sync_engine", None)

            counted = 0  # events of every saga run, to compare with the store's

            async def one() -> int:
                nonlocal counted
                result = await runtime.run("five", 0)
                if result.status != "completed" or result.output != STAGES:
                    raise RuntimeError(f"saga ended {result.status} with {result.output!r}")
                counted += result.events
                return result.events

            for _ in range(warmup):
                await one()
            gc.freeze()  # as a long-running server does once started; DBOS gets the same
            before = store.commits
            times = []
            for _ in range(seq):
                start = time.perf_counter()
                await one()
                times.append(time.perf_counter() - start)
            seq_commits = store.commits - before

            left, events = sagas, 0

            async def worker() -> None:
                nonlocal left, events
                while left > 0:
                    left -= 1
                    count = await one()  # not 'events += await ...': that reads before awaiting
                    events += count

            before = store.commits
            start = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(min(inflight, sagas)):
                    tg.start_soon(worker)
            elapsed = time.perf_counter() - start
            inflight_commits = store.commits - before

            from engine.store.schema import events as events_table

            async with store.engine.connect() as conn:
                stored = (await conn.execute(
                    sa.select(sa.func.count()).select_from(events_table))).scalar_one()
            if stored != counted:
                raise RuntimeError(f"{stored} events stored, {counted} recorded in memory")
            read_settings = _sqlite_settings if store.dialect == "sqlite" else _pg_settings
            if writer is not None:  # the engine that commits
                with writer.connect() as sync_conn:
                    settings = read_settings(sync_conn)
            else:
                async with store.engine.connect() as conn:
                    settings = await conn.run_sync(read_settings)
            return {**_latency(times), "sagas_per_s": round(sagas / elapsed, 1),
                    "events_per_s": round(events / elapsed, 1),
                    "commits_per_saga_sequential": round(seq_commits / max(seq, 1), 2),
                    "commits_per_saga_inflight": round(inflight_commits / sagas, 3),
                    "events_per_saga": round(events / sagas, 2), "durability": settings}

    return anyio.run(main, backend="asyncio")


# ------------------------------------------------------------------ observability


async def _logged_inc(ctx: Any, value: int) -> int:
    if ctx.path == "s0":
        ctx.logger.info("starting from %s", value)  # kept in the store at once
    ctx.logger.debug("adding one to %s", value)  # held, dropped when the work completes
    return value + 1


def run_observed(url: str, mode: str, sagas: int, inflight: int, warmup: int,
                 synchronous: str) -> dict[str, Any]:
    """Throughput with observability ``mode`` (off, noop, sdk): sagas/s, and what was
    seen (spans exported, log records kept) to show it was on."""
    from opentelemetry import trace

    exporter = provider = None
    if mode == "noop":
        trace.set_tracer_provider(trace.NoOpTracerProvider())
    elif mode == "sdk":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        # a queue that holds every span of the run: a full queue drops spans, which
        # would make the SDK look cheaper than it is
        provider.add_span_processor(BatchSpanProcessor(
            exporter, max_queue_size=(sagas + warmup) * (STAGES + 1) + 1024))
        trace.set_tracer_provider(provider)
    on = mode != "off"
    saga = Saga(name="five", stages=[Stage(name=f"s{i}", transaction=_logged_inc)
                                     for i in range(STAGES)])

    async def main() -> dict[str, Any]:
        config = StoreConfig(url=url, sqlite_synchronous=synchronous, metrics=on)
        async with SqlStore.open(config=config) as store:
            async with Runtime([saga], store=store, metrics=on, keep_logs=on) as runtime:
                async def one() -> None:
                    result = await runtime.run("five", 0)
                    if result.status != "completed" or result.output != STAGES:
                        raise RuntimeError(f"saga ended {result.status} with "
                                           f"{result.output!r}")

                for _ in range(warmup):
                    await one()
                # the collector tuned as stepsaga serve and stepsaga worker tune it
                from graphql_api.cli import tune_gc_for_long_run

                tune_gc_for_long_run()
                left = sagas

                async def worker() -> None:
                    nonlocal left
                    while left > 0:
                        left -= 1
                        await one()

                start, cpu = time.perf_counter(), time.process_time()
                async with anyio.create_task_group() as tg:
                    for _ in range(min(inflight, sagas)):
                        tg.start_soon(worker)
                elapsed = time.perf_counter() - start
                cpu = time.process_time() - cpu
            from engine.store.schema import work_logs

            async with store.engine.connect() as conn:  # the runtime flushed them closing
                kept = (await conn.execute(
                    sa.select(sa.func.count()).select_from(work_logs))).scalar_one()
        return {"sagas_per_s": round(sagas / elapsed, 1),
                "cpu_us_per_saga": round(cpu / sagas * 1e6, 1), "log_records_kept": kept}

    figures = anyio.run(main, backend="asyncio")
    if provider is not None and exporter is not None:
        provider.force_flush(60_000)
        figures["spans_exported"] = len(exporter.get_finished_spans())
        provider.shutdown()
    return figures


def run_observability(args: argparse.Namespace) -> dict[str, Any]:
    """Alternating rounds of off, noop and sdk on fresh SQLite files; the ratios."""
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in OBSERVED}
    expected_spans = (args.sagas + args.warmup) * (STAGES + 1)  # a work's and its stages'
    expected_logs = args.sagas + args.warmup  # the first stage's INFO record
    with tempfile.TemporaryDirectory(prefix="stepsaga-observed-") as base:
        for round_ in range(args.rounds):
            order = OBSERVED[round_ % 3:] + OBSERVED[:round_ % 3]
            for mode in order:
                file = Path(base) / f"{mode}-{round_}.sqlite"
                _log(f"observability round {round_ + 1}/{args.rounds}: {mode}, "
                     f"{args.sagas} sagas {args.inflight} in flight")
                got = _in_child(run_observed, f"sqlite+aiosqlite:///{file}", mode,
                                args.sagas, args.inflight, args.warmup,
                                args.sqlite_synchronous)
                wanted = {"off": (0, None), "noop": (expected_logs, None),
                          "sdk": (expected_logs, expected_spans)}[mode]
                if (got["log_records_kept"], got.get("spans_exported")) != wanted:
                    raise RuntimeError(f"{mode}: {got} does not show what was on "
                                       f"(log records kept, spans exported: {wanted})")
                runs[mode].append(got)
                file.unlink()
    rate = {mode: statistics.median(r["sagas_per_s"] for r in runs[mode]) for mode in runs}
    cpu = {mode: statistics.median(r["cpu_us_per_saga"] for r in runs[mode]) for mode in runs}
    figures: dict[str, Any] = {
        "rounds": args.rounds,
        "sagas_per_s": rate,
        "sagas_per_s_by_round": {m: [r["sagas_per_s"] for r in runs[m]] for m in runs},
        "cpu_us_per_saga": cpu,
        "cpu_us_per_saga_by_round": {m: [r["cpu_us_per_saga"] for r in runs[m]]
                                     for m in runs},
        "spans_per_round_sdk": expected_spans,
        "log_records_kept_per_round": expected_logs,
    }
    goals = {}
    for mode, goal in OBSERVABILITY_GOALS.items():
        ratio = _ratio(cpu[mode], cpu["off"])
        figures[f"ratio_{mode}"] = ratio
        figures[f"throughput_ratio_{mode}"] = _ratio(rate["off"], rate[mode])
        goals[f"ratio_{mode}"] = {"goal": f"<= {goal:g}",
                                  "met": ratio is not None and ratio <= goal}
    figures["goals"] = goals
    return figures


# ------------------------------------------------------------------ DBOS


class _DurableSqlite(sqlite3.Connection):
    """DBOS's SQLite connections in WAL mode with the chosen ``synchronous``: DBOS sets
    neither (so SQLite's rollback journal), and takes no PRAGMAs in its config."""

    synchronous = "FULL"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.execute("PRAGMA journal_mode=WAL")
        self.execute(f"PRAGMA synchronous={self.synchronous}")


def run_dbos(url: str, seq: int, sagas: int, inflight: int, warmup: int, mode: str,
             synchronous: str) -> dict[str, Any]:
    from dbos import DBOS

    @DBOS.step()
    def inc(value: int) -> int:
        return value + 1

    @DBOS.workflow()
    def five(value: int) -> int:
        for _ in range(STAGES):
            value = inc(value)
        return value

    kwargs: dict[str, Any] = {"pool_pre_ping": False}
    if url.startswith("sqlite"):
        _DurableSqlite.synchronous = synchronous
        kwargs["connect_args"] = {"factory": _DurableSqlite}
    config: Any = {"name": "stepsaga-bench", "system_database_url": url,
                   "log_level": "WARNING", "db_engine_kwargs": kwargs}
    instance = DBOS(config=config)
    DBOS.launch()
    try:
        engine = instance._sys_db.engine
        commits = _Commits([engine.engine if hasattr(engine, "engine") else engine])

        def one(_: object = None) -> None:
            if (out := five(0)) != STAGES:
                raise RuntimeError(f"workflow returned {out!r}")

        for _ in range(warmup):
            one()
        gc.freeze()
        commits.count = 0
        times = []
        for _ in range(seq):
            start = time.perf_counter()
            one()
            times.append(time.perf_counter() - start)
        seq_commits = commits.count

        commits.count = 0
        start = time.perf_counter()
        if mode == "threads":
            with concurrent.futures.ThreadPoolExecutor(max_workers=inflight) as pool:
                for _ in pool.map(one, range(sagas)):
                    pass
        else:
            window, finished = threading.Semaphore(inflight), threading.Semaphore(0)
            results: list[concurrent.futures.Future[int]] = []

            def release(_: object) -> None:
                window.release()
                finished.release()

            for _ in range(sagas):
                window.acquire()
                handle = DBOS.start_workflow(five, 0)
                results.append(handle.future)
                handle.future.add_done_callback(release)
            for _ in range(sagas):
                finished.acquire()
            if any(f.result() != STAGES for f in results):
                raise RuntimeError("a workflow returned a wrong result")
        elapsed = time.perf_counter() - start

        with engine.connect() as conn:
            settings = (_sqlite_settings if url.startswith("sqlite") else _pg_settings)(conn)
        figures: dict[str, Any] = {
            "sagas_per_s": round(sagas / elapsed, 1),
            "commits_per_saga_inflight": round(commits.count / sagas, 2),
            "durability": settings}
        if seq:
            figures.update(_latency(times))
            figures["commits_per_saga_sequential"] = round(seq_commits / seq, 2)
        return figures
    finally:
        DBOS.destroy()


# ------------------------------------------------------------------ orchestration


def _child(send: Any, function: Callable[..., dict[str, Any]], args: tuple[Any, ...]) -> None:
    try:
        result = ("ok", function(*args))
    except BaseException:
        result = ("error", traceback.format_exc())
    send.send(result)


def _in_child(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and wait for it; stop it if we stop."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(send, function, args), daemon=True)
    process.start()
    send.close()  # ours: so that receiving fails instead of hanging if the child dies
    try:
        try:
            status, value = receive.recv()
        except EOFError:
            process.join()
            raise RuntimeError(f"{function.__name__} died (exit code "
                               f"{process.exitcode})") from None
        process.join()
    finally:
        receive.close()
        if process.is_alive():
            process.terminate()
            process.join(10)
    if status != "ok":
        raise RuntimeError(f"{function.__name__} failed in its child process:\n{value}")
    return value  # type: ignore[no-any-return]


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def measure_backend(backend: str, targets: Callable[[str], dict[str, str]],
                    args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement of one backend; ``targets(name)`` gives a fresh database."""
    sync = args.sqlite_synchronous
    _log(f"{backend}: bare inserts for {args.insert_seconds} s")
    limit = _in_child(insert_limit, backend, targets("bench_limit")["raw"],
                      args.insert_seconds, sync)
    _log(f"{backend}: stepsaga, {args.seq} sequential and {args.sagas} sagas "
         f"{args.inflight} in flight")
    ours = _in_child(run_stepsaga, targets("bench_stepsaga")["stepsaga"], args.seq, args.sagas,
                     args.inflight, args.warmup, sync)
    modes: dict[str, dict[str, Any]] = {}
    for index, mode in enumerate(args.dbos_modes):
        seq = args.seq if index == 0 else 0  # latency does not depend on the mode
        _log(f"{backend}: DBOS ({mode}), {seq} sequential and {args.dbos_sagas} workflows "
             f"{args.inflight} in flight")
        modes[mode] = _in_child(run_dbos, targets(f"bench_dbos_{mode}")["dbos"], seq,
                                args.dbos_sagas, args.inflight, args.warmup, mode, sync)
    first = modes[args.dbos_modes[0]]
    best = max(modes, key=lambda m: modes[m]["sagas_per_s"])
    theirs = {**first, "sagas_per_s": modes[best]["sagas_per_s"],
              "commits_per_saga_inflight": modes[best]["commits_per_saga_inflight"]}
    server_version = limit["durability"].pop("server_version", None)
    limit_rate = limit["inserts_per_s"]
    min_throughput, max_p50 = GOALS[backend]
    throughput_ratio = _ratio(ours["sagas_per_s"], theirs["sagas_per_s"])
    p50_ratio = _ratio(ours["p50_ms"], theirs["p50_ms"])
    return {
        "sagas_per_s": ours["sagas_per_s"],
        "events_per_s": ours["events_per_s"],
        "events_per_saga": ours["events_per_saga"],
        "p50_ms": ours["p50_ms"],
        "p99_ms": ours["p99_ms"],
        "commits_per_saga_sequential": ours["commits_per_saga_sequential"],
        "commits_per_saga_inflight": ours["commits_per_saga_inflight"],
        "dbos_sagas_per_s": theirs["sagas_per_s"],
        "dbos_mode": best,
        "dbos_sagas_per_s_by_mode": {m: modes[m]["sagas_per_s"] for m in modes},
        "dbos_p50_ms": theirs["p50_ms"],
        "dbos_p99_ms": theirs["p99_ms"],
        "dbos_commits_per_saga_sequential": theirs["commits_per_saga_sequential"],
        "dbos_commits_per_saga_inflight": theirs["commits_per_saga_inflight"],
        "insert_limit_per_s": limit_rate,
        "throughput_ratio_vs_dbos": throughput_ratio,
        "p50_ratio_vs_dbos": p50_ratio,
        "p99_ratio_vs_dbos": _ratio(ours["p99_ms"], theirs["p99_ms"]),
        "fraction_of_insert_limit": _ratio(ours["events_per_s"], limit_rate),
        "dbos_commits_fraction_of_insert_limit": _ratio(
            theirs["sagas_per_s"] * theirs["commits_per_saga_inflight"], limit_rate),
        "goals": {
            "throughput_ratio_vs_dbos": {"goal": f">= {min_throughput:g}",
                                         "met": (throughput_ratio or 0) >= min_throughput},
            "p50_ratio_vs_dbos": {"goal": f"<= {max_p50:g}",
                                  "met": p50_ratio is not None and p50_ratio <= max_p50},
        },
        "durability": {"stepsaga": ours["durability"], "dbos": theirs["durability"],
                       "insert_limit": limit["durability"]},
        **({"server_version": server_version} if server_version else {}),
    }


def run_sqlite(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="stepsaga-durable-") as base:
        def targets(name: str) -> dict[str, str]:
            path = Path(base) / name
            path.mkdir()
            file = path / "bench.sqlite"
            return {"raw": str(file), "stepsaga": f"sqlite+aiosqlite:///{file}",
                    "dbos": f"sqlite:///{file}"}

        return measure_backend("sqlite", targets, args)


def run_postgres(args: argparse.Namespace) -> dict[str, Any]:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.pg import PostgresCluster, PostgresUnavailable

    cluster = PostgresCluster()
    try:
        cluster.start()
    except PostgresUnavailable as exc:
        return {"skipped": str(exc)}
    try:

        def targets(name: str) -> dict[str, str]:
            url = cluster.create_database(name)  # postgresql+asyncpg://...
            return {"raw": url.replace("+asyncpg", ""), "stepsaga": url,
                    "dbos": url.replace("+asyncpg", "")}  # DBOS picks psycopg itself

        return measure_backend("postgres", targets, args)
    finally:
        cluster.stop()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer sagas: finishes in about two minutes")
    parser.add_argument("--inflight", type=int, default=500,
                        help="sagas (and DBOS workflows) in flight in the throughput runs")
    parser.add_argument("--sagas", type=int, default=None,
                        help="stepsaga sagas in the throughput run (10000; 3000 quick)")
    parser.add_argument("--dbos-sagas", type=int, default=None,
                        help="DBOS workflows per throughput run (3000; 1000 quick)")
    parser.add_argument("--seq", type=int, default=None,
                        help="sagas run one after the other for latency (1000; 200 quick)")
    parser.add_argument("--warmup", type=int, default=20,
                        help="sagas run before measuring, on each side")
    parser.add_argument("--insert-seconds", type=float, default=None,
                        help="how long to measure bare inserts (5; 2 quick)")
    parser.add_argument("--dbos-modes", default=",".join(DBOS_MODES),
                        help="how DBOS keeps workflows in flight, comma-separated; the "
                             "fastest counts (threads,start_workflow)")
    parser.add_argument("--backends", default="sqlite,postgres",
                        help="comma-separated: sqlite, postgres")
    parser.add_argument("--observability", action="store_true",
                        help="measure instead the cost of metrics, tracing and log capture "
                             "on SQLite throughput (no DBOS needed)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="--observability: rounds of off, noop and sdk (7; 5 quick)")
    parser.add_argument("--sqlite-synchronous", default="FULL",
                        choices=["OFF", "NORMAL", "FULL", "EXTRA"],
                        help="PRAGMA synchronous on every SQLite side (WAL on all)")
    args = parser.parse_args(argv)
    q = args.quick
    args.sagas = args.sagas or (3000 if q else 10_000)
    args.dbos_sagas = args.dbos_sagas or (1000 if q else 3000)
    args.seq = args.seq if args.seq is not None else (200 if q else 1000)
    args.rounds = args.rounds or (5 if q else 7)
    args.insert_seconds = args.insert_seconds or (2.0 if q else 5.0)
    args.dbos_modes = [m.strip() for m in args.dbos_modes.split(",") if m.strip()]
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for mode in args.dbos_modes:
        if mode not in DBOS_MODES:
            parser.error(f"--dbos-modes: {mode!r} is not one of {', '.join(DBOS_MODES)}")
    for backend in args.backends:
        if backend not in GOALS:
            parser.error(f"--backends: {backend!r} is not one of {', '.join(GOALS)}")
    if not args.dbos_modes or not args.backends:
        parser.error("--dbos-modes and --backends need at least one entry")
    if min(args.inflight, args.sagas, args.dbos_sagas, args.seq, args.rounds) < 1:
        parser.error("--inflight, --sagas, --dbos-sagas, --seq and --rounds must be positive")
    return args


def _git() -> dict[str, Any] | None:
    """The commit measured, and whether engine/ differs from it."""
    try:
        def git(*argv: str) -> str:
            return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True,
                                  check=True, timeout=10).stdout.strip()

        return {"commit": git("rev-parse", "--short", "HEAD"),
                "engine_modified": bool(git("status", "--porcelain", "--", "engine"))}
    except (OSError, subprocess.SubprocessError):
        return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.observability:
        return observability_report(args)
    if importlib.util.find_spec("dbos") is None:
        raise SystemExit("DBOS Transact is missing: pip install -e '.[bench,postgres]'")
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "durable",
        "params": {"quick": args.quick, "inflight": args.inflight, "sagas": args.sagas,
                   "dbos_sagas": args.dbos_sagas, "seq": args.seq, "warmup": args.warmup,
                   "insert_seconds": args.insert_seconds, "dbos_modes": args.dbos_modes,
                   "stages": STAGES, "sqlite_synchronous": args.sqlite_synchronous},
        "environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "platform": platform.platform(), "sqlite": sqlite3.sqlite_version,
                        "dbos": _version("dbos"), "sqlalchemy": _version("sqlalchemy"),
                        "aiosqlite": _version("aiosqlite"), "asyncpg": _version("asyncpg"),
                        "psycopg": _version("psycopg"), "git": _git()},
        "durability": {
            "sqlite": f"journal_mode=WAL and synchronous={args.sqlite_synchronous} for "
                      "stepsaga, DBOS and the bare inserts alike",
            "postgres": "fsync=on, synchronous_commit=on (the server's defaults) for all "
                        "three, on one server, a fresh database each",
        },
        "definitions": {
            "throughput_ratio_vs_dbos": "stepsaga sagas/s over DBOS workflows/s, "
                                        "both with --inflight in flight",
            "p50_ratio_vs_dbos": "stepsaga's p50 over DBOS's, one saga at a time",
            "fraction_of_insert_limit": "stepsaga events/s (one row each) over bare "
                                        "single-row commits/s; group commit can take it "
                                        "above 1",
            "dbos_commits_fraction_of_insert_limit": "DBOS commits/s over bare commits/s",
            "durability": "read back from each system's own connections; SQLite "
                          "synchronous 2 = FULL, 1 = NORMAL",
        },
    }
    runners = {"sqlite": run_sqlite, "postgres": run_postgres}
    for backend in args.backends:
        report[backend] = runners[backend](args)
    report["all_goals_met"] = all(
        "goals" in report[b] and all(goal["met"] for goal in report[b]["goals"].values())
        for b in args.backends)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def observability_report(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "durable.observability",
        "params": {"quick": args.quick, "inflight": args.inflight, "sagas": args.sagas,
                   "warmup": args.warmup, "rounds": args.rounds, "stages": STAGES,
                   "sqlite_synchronous": args.sqlite_synchronous},
        "environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "sqlite": sqlite3.sqlite_version,
                        "opentelemetry_sdk": _version("opentelemetry-sdk"),
                        "prometheus_client": _version("prometheus-client"), "git": _git()},
        "definitions": {
            "off": "Runtime(metrics=False, keep_logs=False), StoreConfig(metrics=False), "
                   "no tracer provider",
            "noop": "metrics and log capture on, trace.NoOpTracerProvider()",
            "sdk": "metrics and log capture on, the SDK's TracerProvider with a "
                   "BatchSpanProcessor to an InMemorySpanExporter",
            "ratio_noop": "median CPU time per saga noop over off (the process's, all "
                          "threads, in the throughput run)",
            "ratio_sdk": "median CPU time per saga sdk over off",
            "throughput_ratio_noop": "median sagas/s off over median sagas/s noop",
            "throughput_ratio_sdk": "median sagas/s off over median sagas/s sdk",
        },
        "observability": run_observability(args),
    }
    report["all_goals_met"] = all(g["met"] for g in report["observability"]["goals"].values())
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds: PostgreSQL stopped, temporary files removed


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    print(json.dumps(main(), indent=2))
