"""The GraphQL API under load: command latency, subscription fan-out, list queries.

Real processes on this machine, talked to over loopback with a real gql client
(graphql-transport-ws for subscriptions), on a throwaway PostgreSQL 15 cluster
(``tests.pg``) and on SQLite files. The sagas are ``benchmarks/api_app.py``'s. Each
figure stands beside a baseline measured in the same run; the host's load average is
recorded too (every process here shares its two cores with whatever else runs).

- ``command_latency``: a ``pauseWork`` sent to API node A until ``work.paused``
  reaches a ``workEvents`` subscriber on API node B (both ``stepsaga serve
  --no-workers``) while a ``stepsaga worker`` runs the work, on PostgreSQL; and the
  same within one ``stepsaga serve`` (with its own worker node) on SQLite. The work
  is a saga of a hundred stages of about 1 ms, so a step boundary is always near; it
  is paused 20-40 ms after it started or was resumed, resumed at once after each
  sample, and replaced by a fresh one before its last stages (a pause racing the
  work's end is another measurement; such pauses are counted, not timed). The
  baseline: the same client's round trip of a trivial query (``{ __typename }``) to
  node A just before each pause. The time is split into ``sent_to_commit`` (to the
  ``work.paused`` event's time, both wall clocks of this machine) and
  ``commit_to_received``, and the first part again by the store's own records:
  ``client_to_inbox`` (to the inbox row's ``sent_at``: the API node's checks before
  sending) and ``inbox_to_taken`` (to the holder's ``work.command`` event).
- ``fanout``: ``--fanout-works`` (50) busy works, each ending a stage every
  ``period`` seconds on a grid (two events a stage), so that together they commit
  ``--fanout-rate`` (1,000) events a second, run by ``--fanout-workers`` (1)
  ``stepsaga worker`` processes on PostgreSQL, with a trickle of one-stage works
  created through the API (``--fanout-churn`` a second: status changes). Phases
  without and with subscribers alternate: ``--fanout-rounds`` rounds, each on fresh
  works cancelled after it, in turns without-with and with-without (a work's state
  and its snapshots grow with every stage it ran, so the later phase of a round costs
  more), ``--fanout-seconds`` a phase. With subscribers, one WebSocket subscriber per
  work follows its events and ``--status-subscribers`` (5) follow every work's
  status-changing events, all served by one ``stepsaga serve --no-workers``. The
  delay of an event is the time it reached its client minus its ``time`` field (its
  commit time; one clock). The CPU of the worker processes (``/proc/<pid>/stat``
  utime + stime, read before and after each phase) per event committed in the phase,
  with subscribers over without, is ``worker_cpu_ratio``; the API node's and this
  client's CPU per event, the workers' preemptions and a probe of what CPU time
  costs on the host in each phase are shown too.
- ``queries``: ``--works`` (100,000) works of four sagas with compensations, a wait
  for a signal and a map, in every status (completed, failed, compensation_failed,
  cancelled, running, paused, pending, by weight), made by copying one real run of
  each kind under new ids and later times, the rows the store's own row functions
  make bulk-inserted through the driver, then ANALYZE. Two requests:
  ``allWorks(first: 50, saga: [order, refund], status: [failed,
  compensation_failed])`` newest first with ``totalCount``, and ``work(workId)`` of a
  finished backup with its ``stageRuns``. ``ratio_vs_floor``: the median time of a
  request over HTTP (``stepsaga serve --no-workers``) over that of the same request to
  the floor server, a strawberry schema with the same fields answering the same data
  from memory, served by starlette and uvicorn as stepsaga serves its own (the
  stack's floor for that shape); the two answers are checked to be equal.
  ``db_ratio_vs_handwritten``: the median time of the store's query functions the
  resolvers call (``works_page`` and ``count_works``; ``store.work`` and
  ``stage_runs_of``), timed in this process, over hand-written SQL returning the same
  rows through the same engine and driver (checked equal). Requests and queries of
  both kinds are interleaved in a shuffled order. Both stores are measured (``sqlite``
  and ``postgres`` sub-keys); ``queries.ratio_vs_floor`` and
  ``queries.db_ratio_vs_handwritten`` are PostgreSQL's (``queries.store`` says which),
  each the worse of the two requests.

Every figure with a goal has ``<key>_goal`` and ``<key>_goal_met`` beside it, and
``goals`` repeats them under their dotted keys. A measurement that fails is recorded
under ``errors`` and the run goes on; every process started and the cluster are
stopped at the end, also on an error, Ctrl-C or SIGTERM.

Run from the repository root (``--quick``: about three minutes)::

    python benchmarks/api.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import strawberry
from strawberry import relay
from strawberry.scalars import JSON

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

APP = "benchmarks.api_app:sagas"
GOALS = {  # key: (comparison, bound)
    "command_latency.postgres.p50_ms": ("<=", 20.0),
    "command_latency.postgres.p99_ms": ("<=", 100.0),
    "command_latency.sqlite.p50_ms": ("<=", 5.0),
    "fanout.p99_ms": ("<=", 100.0),
    "fanout.worker_cpu_ratio": ("<=", 1.1),
    "queries.ratio_vs_floor": ("<=", 2.0),
    "queries.db_ratio_vs_handwritten": ("<=", 1.5),
}


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


def _serve(procs: Processes, store: str, *extra: str) -> tuple[subprocess.Popen[str], str]:
    process = procs.stepsaga("serve", "--store", store, "--port", "0", "--app", APP, *extra)
    return process, str(_ready(procs, process, "stepsaga serve")["url"])


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
    return Client(transport=AIOHTTPTransport(url=url, timeout=30), execute_timeout=30)


def _ws(url: str) -> Any:
    from gql import Client
    from gql.transport.websockets import WebsocketsTransport

    return Client(transport=WebsocketsTransport(
        url=url.replace("http://", "ws://"),
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


# ------------------------------------------------------------------ command latency


async def _pause_samples(send_url: str, watch_url: str, samples: int, warmup: int,
                         seed: int, store_url: str) -> dict[str, Any]:
    """Pause a running ``ms`` work through ``send_url`` and time until its
    ``work.paused`` reaches a subscriber of ``watch_url``; resume it; again, until the
    work nears its end (its last stages are never paused: a pause racing the work's
    end measures something else), then a fresh work. Before each pause, the same
    client's round trip of a trivial query to ``send_url`` is the baseline."""
    from gql import GraphQLRequest

    from benchmarks.api_app import MS_STAGES

    gql = _gql()
    create, pause, resume, follow = gql(CREATE), gql(PAUSE), gql(RESUME), gql(EVENTS)
    trivial = gql(TRIVIAL)
    rng = random.Random(seed)
    total: list[float] = []  # sent -> received, ms
    to_commit: list[float] = []  # sent -> the event's commit time (wall clocks), ms
    delivery: list[float] = []  # commit time -> received, ms
    answers: list[float] = []  # sent -> the mutation's answer, ms
    floor: list[float] = []  # a trivial query's round trip, ms
    sent_walls: list[tuple[str, float, float]] = []  # (work, sent, event time) per sample
    refused: list[str] = []  # pauses answered with an error (the work had ended)
    pending: list[float] = []  # pauses no holder took within the API's wait, ms
    works = 0
    async with _http(send_url) as client, _ws(watch_url) as watcher:
        async def fresh(tg: Any) -> tuple[str, Any, anyio.CancelScope]:
            """A new work, and a subscription to its pauses (from cursor 0: nothing is
            missed even before the subscription is live)."""
            nonlocal works
            found = await _ask(client, create, {"saga": "ms", "input": 0})
            work_id = found["createWork"]["work"]["workId"]
            send, receive = anyio.create_memory_object_stream[Any](100)
            scope = anyio.CancelScope()
            request = GraphQLRequest(follow, variable_values={
                "id": work_id, "after": "0", "types": ["work.paused"]})

            async def run() -> None:
                with scope:
                    async for item in watcher.subscribe(request):
                        send.send_nowait((time.perf_counter(), item["workEvents"]))

            tg.start_soon(run)
            works += 1
            return work_id, receive, scope

        async with anyio.create_task_group() as tg:
            work_id, receive, scope = await fresh(tg)
            taken = 0
            with anyio.fail_after(120 + samples * 5):
                while taken < samples + warmup:
                    await anyio.sleep(rng.uniform(0.02, 0.04))  # running, mid-stage
                    start = time.perf_counter()
                    await _ask(client, trivial, {})
                    trivial_ms = (time.perf_counter() - start) * 1000
                    wall, start = time.time(), time.perf_counter()
                    answer = (await _ask(client, pause, {"id": work_id}))["pauseWork"]
                    answered = time.perf_counter()
                    if answer["__typename"] != "CommandTaken" or \
                            answer["outcome"] != "applied":
                        if answer.get("outcome") == "pending":
                            pending.append((answered - start) * 1000)
                            # taken later, it would keep a worker slot paused
                            tg.start_soon(_ask, client, resume, {"id": work_id})
                        else:
                            refused.append(answer.get("message", answer["__typename"]))
                        scope.cancel()
                        work_id, receive, scope = await fresh(tg)
                        continue
                    with anyio.fail_after(30):
                        received, event = await receive.receive()
                    if taken >= warmup:
                        total.append((received - start) * 1000)
                        to_commit.append((event["time"] - wall) * 1000)
                        delivery.append(total[-1] - to_commit[-1])
                        answers.append((answered - start) * 1000)
                        floor.append(trivial_ms)
                        sent_walls.append((work_id, wall, event["time"]))
                    taken += 1
                    resumed = (await _ask(client, resume, {"id": work_id}))["resumeWork"]
                    if resumed["__typename"] != "CommandTaken":
                        raise RuntimeError(f"resume refused: {resumed}")
                    done = answer["work"]["stagesDone"]
                    if done >= MS_STAGES - 50:  # ~25 stages run before the next pause
                        scope.cancel()
                        work_id, receive, scope = await fresh(tg)
            scope.cancel()
    figures = _percentiles(total)
    figures["trivial_query_round_trip"] = _percentiles(floor)  # the baseline
    figures["sent_to_commit"] = _percentiles(to_commit)
    figures["commit_to_received"] = _percentiles(delivery)
    figures["mutation_answer"] = _percentiles(answers)
    figures["works_used"] = works
    figures["pauses_refused"] = len(refused)
    figures["pauses_not_taken_in_time_ms"] = [round(x, 1) for x in pending]
    figures["phases"] = await _command_phases(store_url, sent_walls)
    return figures


async def _command_phases(store_url: str, samples: Sequence[tuple[str, float, float]]
                          ) -> dict[str, Any]:
    """Where a command's time goes, from the store's own records: the client's send to
    the inbox row's ``sent_at`` (the API node's checks before sending), ``sent_at`` to
    the holder's ``work.command`` event (noticing and taking it at a step boundary)."""
    import sqlalchemy as sa

    from engine.store import SqlStore
    from engine.store.schema import commands, events

    before: list[float] = []
    taken: list[float] = []
    async with SqlStore.open(store_url, create=False) as store, \
            store.engine.connect() as conn:
        for work_id, wall, _ in samples:
            row = (await conn.execute(
                sa.select(commands.c.number, commands.c.sent_at)
                .where(commands.c.work_id == work_id, commands.c.kind == "pause",
                       commands.c.sent_at >= wall - 0.001)
                .order_by(commands.c.number).limit(1))).first()
            if row is None:
                continue
            number, sent_at = int(row[0]), float(row[1])
            took = None
            for payload, at in (await conn.execute(
                    sa.select(events.c.payload, events.c.time).where(
                        events.c.work_id == work_id, events.c.type == "work.command"))):
                if json.loads(payload).get("number") == number:
                    took = float(at)
            before.append((sent_at - wall) * 1000)
            if took is not None:
                taken.append((took - sent_at) * 1000)
    return {"client_to_inbox": _percentiles(before),
            "inbox_to_taken": _percentiles(taken)}


def command_latency_postgres(procs: Processes, url: str, args: argparse.Namespace
                             ) -> dict[str, Any]:
    """Two API-only nodes and a worker process on one PostgreSQL: pause sent to A,
    followed on B, the work run by the worker."""
    api_a, url_a = _serve(procs, url, "--no-workers")  # the first migrates the database
    api_b, url_b = _serve(procs, url, "--no-workers")
    worker = _worker(procs, url, "cmd-worker", 4)
    try:
        return anyio.run(_pause_samples, url_a, url_b, args.samples, args.warmup,
                         args.seed, url)
    finally:
        procs.stop([api_a, api_b, worker])


def command_latency_sqlite(procs: Processes, url: str, args: argparse.Namespace
                           ) -> dict[str, Any]:
    """One ``stepsaga serve`` with its own worker node on a SQLite file: pause sent to it
    and followed on it."""
    server, served = _serve(procs, url, "--worker", "main=4")
    try:
        return anyio.run(_pause_samples, served, served, args.samples, args.warmup,
                         args.seed, url)
    finally:
        procs.stop([server])


# ------------------------------------------------------------------ list queries: the data

# what the 100,000 works are made of: (saga, how it ends, weight); each kind is one real
# work run by a Runtime, its events then copied under new ids and later times
MIX_SAGAS = {"order": 40, "signup": 25, "backup": 15, "refund": 20}
MIX_ENDS = {"completed": 60, "failed": 12, "compensation_failed": 3, "cancelled": 5,
            "running": 8, "paused": 4, "pending": 8}
_LAST = {"order": "ship", "signup": "welcome", "backup": "prune", "refund": "notify"}


async def _templates(rt: Any, store: Any) -> list[tuple[str, str, list[Any]]]:
    """One real work per (saga, end): ``(saga, end, its events)``."""
    from engine.state import replay

    found: list[tuple[str, str, list[Any]]] = []

    async def ended(work_id: str) -> None:
        for _ in range(500):
            state = replay(await store.read(work_id))
            if state.terminal:
                return
            await anyio.sleep(0.01)
        raise RuntimeError(f"template work {work_id} did not end")

    for saga in MIX_SAGAS:
        base: dict[str, Any] = {"files": 3} if saga == "backup" else {}
        for end in MIX_ENDS:
            if end == "pending":
                work_id = await rt.start(saga, base, run=False)
            elif end == "paused":
                work_id = await rt.start(saga, base, paused=True)
                for _ in range(3):  # paused mid-way, as a person stepping it leaves it
                    await rt.step(work_id)
            elif end == "cancelled":
                work_id = await rt.start(saga, base, paused=True)
                for _ in range(3):
                    await rt.step(work_id)
                await rt.cancel(work_id, by="ops", reason="duplicate order")
                await ended(work_id)
            else:
                inputs = {"completed": base, "running": base,
                          "failed": {**base, "fail": _LAST[saga]},
                          "compensation_failed": {**base, "fail": _LAST[saga],
                                                  "fail_compensation": True}}
                work_id = await rt.start(saga, inputs[end])
                if saga == "signup" and end != "running":
                    await anyio.sleep(0.05)
                    await rt.signal(work_id, "verified", {"ok": True})
                await ended(work_id) if end != "running" or saga != "signup" else \
                    await anyio.sleep(0.1)
            records = await store.read(work_id)
            if end == "running" and saga != "signup":
                # in the middle of its second stage: a prefix of a completed run
                cut = [i for i, r in enumerate(records)
                       if r.type == "stage.transaction.started"][1]
                records = records[:cut + 1]
            found.append((saga, end, records))
    return found


_TIMES = {"events": ("time",), "works": ("created_at", "updated_at", "started_at",
                                      "finished_at", "wake_at"),
          "stage_runs": ("started_at", "finished_at"), "leases": ()}


def _template_rows(records: list[Any]) -> dict[str, list[dict[str, Any]]]:
    """The rows the store writes for a work of these events (its own row functions)."""
    from engine.state import replay
    from engine.store.codec import EVENT_ROW, encode_event_row
    from engine.store.projection import stage_row, work_row

    state = replay(records)
    work_id = state.work_id
    paths = {r.event.path for r in records}
    rows: dict[str, list[dict[str, Any]]] = {
        "events": [dict(zip(EVENT_ROW, encode_event_row(r), strict=True)) for r in records],
        "works": [work_row(state, records[-1].event.path)],
        "stage_runs": [stage_row(work_id, state.stages[p], state.saga)
                       for p in sorted(paths) if p and p in state.stages],
        "leases": []}
    if not state.terminal:  # unfinished works have a lease row: free, or held by a node
        held = state.status == "running" or state.paused
        rows["leases"].append({
            "work_id": work_id, "saga": state.saga, "priority": 0,
            "owner": "bench-node" if held else None, "worker": "main" if held else None,
            "token": 1 if held else 0, "expires_at": time.time() + 86400 if held else 0.0,
            "claimed_at": time.time() if held else None, "waiting": None, "mail": 0})
    return rows


def _copies(kinds: list[tuple[str, str, list[Any]]], works: int, seed: int
            ) -> tuple[dict[str, list[tuple[Any, ...]]], dict[str, tuple[str, ...]],
                       dict[str, int]]:
    """The rows of ``works`` copies of the template works, as tuples per table."""
    rng = random.Random(seed)
    templates = [(f"{saga}/{end}", records[0].time, _template_rows(records))
                 for saga, end, records in kinds]
    weights = [MIX_SAGAS[s] * MIX_ENDS[e] for s, e, _ in kinds]
    columns = {table: tuple(rows[0]) for table in _TIMES
               for _, _, t in templates if (rows := t[table])}
    out: dict[str, list[tuple[Any, ...]]] = {table: [] for table in columns}
    counts: dict[str, int] = {}
    span = 30 * 86400.0  # a month of works, the newest an hour ago
    first = time.time() - span - 3600
    for index in range(works):
        name, created, rows = rng.choices(templates, weights)[0]
        counts[name] = counts.get(name, 0) + 1
        shift = first + span * index / works - created
        work_id = f"{index:08d}{rng.getrandbits(96):024x}"
        for table, names in columns.items():
            shifted = _TIMES[table]
            for row in rows[table]:
                out[table].append(tuple(
                    work_id if c == "work_id" else
                    (row[c] + shift if c in shifted and row[c] is not None else row[c])
                    for c in names))
    return out, columns, counts


async def populate(url: str, works: int, seed: int) -> dict[str, Any]:
    """``works`` works in the store at ``url``: copies of one real work per (saga, end)
    (run by a Runtime on that store), chosen at random by weight and created one after
    the other over a month; their rows (events, works, stage runs, leases, as the store's
    own row functions make them) are inserted in bulk, straight through the driver
    (COPY on PostgreSQL, one executemany per table on SQLite). Then ANALYZE."""
    from benchmarks.api_app import sagas
    from engine import Runtime
    from engine.store import SqlStore

    started = time.perf_counter()
    async with SqlStore.open(url) as store, Runtime(sagas(), store=store) as rt:
        kinds = await _templates(rt, store)
    rows, columns, counts = _copies(kinds, works, seed)
    import sqlalchemy as sa

    target = sa.make_url(url)
    if target.get_backend_name() == "postgresql":
        import asyncpg

        conn = await asyncpg.connect(target.set(drivername="postgresql")
                                     .render_as_string(hide_password=False))
        try:
            for table, names in columns.items():
                await conn.copy_records_to_table(table, records=rows[table], columns=names)
            await conn.execute("VACUUM ANALYZE")
        finally:
            await conn.close()
    else:
        import sqlite3

        assert target.database is not None
        db = sqlite3.connect(target.database)
        try:
            with db:
                for table, names in columns.items():
                    db.executemany(f"INSERT INTO {table} ({', '.join(names)}) VALUES "
                                   f"({', '.join('?' for _ in names)})", rows[table])
            db.execute("ANALYZE")
        finally:
            db.close()
    return {"works": works, "events": len(rows["events"]),
            "stage_runs": len(rows["stage_runs"]), "seconds": round(time.perf_counter() -
                                                                    started, 1),
            "by_kind": dict(sorted(counts.items()))}


# ------------------------------------------------------------------ list queries: timing

LIST_SAGAS = ["order", "refund"]
LIST_STATUSES = ["failed", "compensation_failed"]
WORK_FIELDS = ("id workId saga status paused phase input output error failure currentStage "
               "stagesDone stagesTotal lastSeq createdAt updatedAt priority startedAt "
               "finishedAt duration errorType worker node progress")
RUN_FIELDS = "path status attempts startedAt finishedAt duration error saga template"
LIST = ("query($saga: [String!], $status: [String!]) {\n"
        "  allWorks(first: 50, saga: $saga, status: $status) {\n"
        "    totalCount pageInfo { hasNextPage endCursor }\n"
        f"    edges {{ cursor node {{ {WORK_FIELDS} }} }}\n  }}\n}}")
ONE = ("query($id: String!) {\n"
       f"  work(workId: $id) {{ {WORK_FIELDS} stageRuns {{ {RUN_FIELDS} }} }}\n}}")


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


# The floor: a strawberry schema with the fields the two queries select, answering from
# memory what the real API answered. Its types live at module level: strawberry resolves
# the (postponed) annotations by name in the module.


@strawberry.type(name="StageRun")
class FloorStageRun:
    path: str
    status: str
    attempts: int
    started_at: float | None
    finished_at: float | None
    duration: float | None
    error: JSON | None
    saga: str
    template: str


@strawberry.type(name="Work")
class FloorWork(relay.Node):
    key: relay.NodeID[str]
    work_id: str
    saga: str
    status: str
    paused: bool
    phase: str
    input: JSON | None
    output: JSON | None
    error: JSON | None
    failure: JSON | None
    current_stage: str | None
    stages_done: int
    stages_total: int
    last_seq: int
    created_at: float
    updated_at: float
    priority: int
    started_at: float | None
    finished_at: float | None
    duration: float | None
    error_type: str | None
    worker: str | None
    node: str | None
    progress: float
    stage_runs: list[FloorStageRun]


@strawberry.type(name="WorkEdge")
class FloorWorkEdge:
    cursor: str
    node: FloorWork


@strawberry.type(name="WorkConnection")
class FloorWorkConnection:
    edges: list[FloorWorkEdge]
    page_info: relay.PageInfo
    total_count: int


_FLOOR: dict[str, Any] = {}  # what the floor answers: set by floor_schema


@strawberry.type(name="Query")
class FloorQuery:
    """The root fields are async, as any API over a database must be; the rest are
    plain attributes of objects built once."""

    @strawberry.field
    async def all_works(self, first: int = 50, after: str | None = None,
                        saga: list[str] | None = None, status: list[str] | None = None,
                        newest_first: bool = True) -> FloorWorkConnection:
        connection: FloorWorkConnection = _FLOOR["connection"]
        return connection

    @strawberry.field
    async def work(self, work_id: str) -> FloorWork | None:
        found: FloorWork | None = _FLOOR["works"].get(work_id)
        return found


def _floor_work(found: dict[str, Any], runs: list[dict[str, Any]] | None = None) -> FloorWork:
    fields = {_snake(k): v for k, v in found.items() if k not in ("id", "stageRuns")}
    return FloorWork(key=found["workId"], **fields, stage_runs=[
        FloorStageRun(**{_snake(k): v for k, v in r.items()}) for r in runs or []])


def floor_schema(data: dict[str, Any]) -> strawberry.Schema:
    """The floor schema answering ``data`` (the real API's two responses)."""
    page = data["list"]["allWorks"]
    edges = [FloorWorkEdge(cursor=e["cursor"], node=_floor_work(e["node"]))
             for e in page["edges"]]
    _FLOOR["connection"] = FloorWorkConnection(
        edges=edges, total_count=page["totalCount"], page_info=relay.PageInfo(
            has_next_page=page["pageInfo"]["hasNextPage"], has_previous_page=False,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=page["pageInfo"]["endCursor"]))
    one = data["one"]["work"]
    _FLOOR["works"] = {one["workId"]: _floor_work(one, one["stageRuns"])}
    return strawberry.Schema(query=FloorQuery, types=[FloorWork])


def serve_floor(data_file: str) -> None:
    """The floor server (``--floor-server FILE``): the floor schema served as stepsaga
    serves its own (a starlette route, strawberry's ASGI app, uvicorn with the same
    options); prints one JSON line with its URL once it listens, stops on SIGTERM."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Route
    from strawberry.asgi import GraphQL

    data = json.loads(Path(data_file).read_text())
    app = Starlette(routes=[Route("/graphql", GraphQL(floor_schema(data), graphql_ide=None),
                                  methods=["GET", "POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                            lifespan="off", ws="websockets-sansio")
    server = uvicorn.Server(config)

    async def main() -> None:
        async def announce() -> None:
            for _ in range(6000):  # a minute at most to bind
                if server.started:
                    port = server.servers[0].sockets[0].getsockname()[1]
                    print(json.dumps({"ready": True,
                                      "url": f"http://127.0.0.1:{port}/graphql"}), flush=True)
                    return
                await anyio.sleep(0.01)

        async with anyio.create_task_group() as tg:
            tg.start_soon(announce)
            await server.serve()

    anyio.run(main, backend="asyncio")


async def _post(client: Any, url: str, query: str, variables: dict[str, Any]
                ) -> dict[str, Any]:
    response = await client.post(url, json={"query": query, "variables": variables})
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    if body.get("errors"):
        raise RuntimeError(f"{url} answered errors: {body['errors']}")
    return dict(body["data"])


async def _http_times(targets: dict[str, str], requests: dict[str, tuple[str, dict[str, Any]]],
                      rounds: int, warmup: int, seed: int) -> dict[str, dict[str, list[float]]]:
    """Per target and request, the time of each of ``rounds`` requests (ms), over one
    keep-alive connection each; targets and requests interleaved in a shuffled order."""
    import httpx

    rng = random.Random(seed)
    times: dict[str, dict[str, list[float]]] = {t: {r: [] for r in requests} for t in targets}
    pairs = [(t, r) for t in targets for r in requests]
    async with httpx.AsyncClient(timeout=30) as client:
        for n in range(rounds + warmup):
            rng.shuffle(pairs)
            for target, name in pairs:
                query, variables = requests[name]
                start = time.perf_counter()
                await _post(client, targets[target], query, variables)
                if n >= warmup:
                    times[target][name].append((time.perf_counter() - start) * 1000)
    return times


def _handwritten(dialect: str) -> dict[str, str]:
    """The same rows as the store's queries, in SQL written by hand."""
    if dialect == "postgresql":
        inside, one = "= ANY($1) AND w.status = ANY($2)", "$1"
        counted = "saga = ANY($1) AND status = ANY($2)"
    else:
        marks = lambda n: ", ".join("?" for _ in range(n))  # noqa: E731
        inside = (f"IN ({marks(len(LIST_SAGAS))}) AND w.status IN "
                  f"({marks(len(LIST_STATUSES))})")
        one = "?"
        counted = (f"saga IN ({marks(len(LIST_SAGAS))}) AND status IN "
                   f"({marks(len(LIST_STATUSES))})")
    joined = ("SELECT w.*, l.waiting AS held_back FROM works w "
              "LEFT JOIN leases l ON l.work_id = w.work_id ")
    return {"page": f"{joined}WHERE w.saga {inside} "
                    "ORDER BY w.created_at DESC, w.work_id DESC LIMIT 51",
            "count": f"SELECT count(*) FROM works WHERE {counted}",
            "work": f"{joined}WHERE w.work_id = {one}",
            "runs": f"SELECT * FROM stage_runs WHERE work_id = {one} ORDER BY path"}


async def _db_times(url: str, work_id: str, rounds: int, warmup: int, seed: int
                    ) -> dict[str, dict[str, list[float]]]:
    """The database part of each request, timed in this process: the store's query
    functions the resolvers call against the hand-written SQL through the same engine
    and driver (each a fresh connection from the pool, as the resolvers take)."""
    from engine.store import SqlStore, queries

    rng = random.Random(seed)
    async with SqlStore.open(url, create=False) as store:
        sql = _handwritten(store.dialect)
        pg = store.dialect == "postgresql"
        list_args: tuple[Any, ...] = (LIST_SAGAS, LIST_STATUSES) if pg else \
            (*LIST_SAGAS, *LIST_STATUSES)

        async def store_list() -> Any:
            rows, more = await queries.works_page(store, first=50, saga=LIST_SAGAS,
                                                  status=LIST_STATUSES)
            total = await queries.count_works(store, saga=LIST_SAGAS, status=LIST_STATUSES)
            return [r["work_id"] for r in rows], more, total

        async def hand_list() -> Any:
            async with store.engine.connect() as conn:
                rows = [dict(r) for r in
                        (await conn.exec_driver_sql(sql["page"], list_args)).mappings()]
                total = (await conn.exec_driver_sql(sql["count"], list_args)).scalar_one()
            return [r["work_id"] for r in rows[:50]], len(rows) > 50, int(total)

        async def store_one() -> Any:
            row = await store.work(work_id)
            runs = (await queries.stage_runs_of(store, [work_id]))[work_id]
            assert row is not None
            return row["work_id"], [r["path"] for r in runs]

        async def hand_one() -> Any:
            async with store.engine.connect() as conn:
                row = (await conn.exec_driver_sql(sql["work"], (work_id,))).mappings().one()
                runs = [dict(r) for r in
                        (await conn.exec_driver_sql(sql["runs"], (work_id,))).mappings()]
            return dict(row)["work_id"], [r["path"] for r in runs]

        calls = {("store", "list"): store_list, ("handwritten", "list"): hand_list,
                 ("store", "one"): store_one, ("handwritten", "one"): hand_one}
        if await store_list() != await hand_list() or await store_one() != await hand_one():
            raise RuntimeError("the hand-written SQL does not return the store's rows")
        times: dict[str, dict[str, list[float]]] = {"store": {"list": [], "one": []},
                                                    "handwritten": {"list": [], "one": []}}
        order = list(calls)
        for n in range(rounds + warmup):
            rng.shuffle(order)
            for key in order:
                start = time.perf_counter()
                await calls[key]()
                if n >= warmup:
                    times[key[0]][key[1]].append((time.perf_counter() - start) * 1000)
    return times


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def query_figures(procs: Processes, url: str, args: argparse.Namespace, base: Path
                  ) -> dict[str, Any]:
    """Populate ``url``, then time both queries over HTTP (stepsaga serve --no-workers
    against the floor server) and their database part (store functions against
    hand-written SQL)."""
    _log(f"queries: {args.works} works into {url.split(':')[0]}")
    made = anyio.run(populate, url, args.works, args.seed)
    server, served = _serve(procs, url, "--no-workers")
    floor = None
    try:
        import httpx

        variables = {"saga": LIST_SAGAS, "status": LIST_STATUSES}

        async def answers() -> dict[str, Any]:
            async with httpx.AsyncClient(timeout=30) as client:
                page = await _post(client, served, LIST, variables)
                # a finished backup: a map's stage runs, a few more rows than most
                chosen = await _post(client, served, LIST.replace("first: 50", "first: 1"),
                                     {"saga": ["backup"], "status": ["completed"]})
                work_id = chosen["allWorks"]["edges"][0]["node"]["workId"]
                one = await _post(client, served, ONE, {"id": work_id})
            return {"list": page, "one": one, "work_id": work_id}

        data = anyio.run(answers)
        data_file = base / f"floor-{len(procs.started)}.json"
        data_file.write_text(json.dumps(data))
        floor = procs.start(sys.executable, str(Path(__file__).resolve()),
                            "--floor-server", str(data_file))
        floor_url = str(_ready(procs, floor, "the floor server")["url"])
        requests = {"list": (LIST, variables), "one": (ONE, {"id": data["work_id"]})}

        async def same() -> None:
            async with httpx.AsyncClient(timeout=30) as client:
                for name, (query, values) in requests.items():
                    if await _post(client, floor_url, query, values) != data[name]:
                        raise RuntimeError(f"the floor server answers {name} differently")

        anyio.run(same)
        _log(f"queries: {args.query_rounds} rounds over HTTP")
        http = anyio.run(_http_times, {"api": served, "floor": floor_url}, requests,
                         args.query_rounds, args.query_warmup, args.seed)
    finally:
        procs.stop([server] + ([floor] if floor is not None else []))
    _log(f"queries: {args.query_rounds} rounds of the database part")
    db = anyio.run(_db_times, url, data["work_id"], args.query_rounds, args.query_warmup,
                   args.seed)
    shapes: dict[str, Any] = {}
    for name in requests:
        api_ms = _percentiles(http["api"][name])
        floor_ms = _percentiles(http["floor"][name])
        store_ms = _percentiles(db["store"][name])
        hand_ms = _percentiles(db["handwritten"][name])
        shapes["allWorks" if name == "list" else "work"] = {
            "http_ms": api_ms, "floor_http_ms": floor_ms,
            "ratio_vs_floor": _ratio(api_ms["p50_ms"], floor_ms["p50_ms"]),
            "db_ms": store_ms, "handwritten_db_ms": hand_ms,
            "db_ratio_vs_handwritten": _ratio(store_ms["p50_ms"], hand_ms["p50_ms"])}
    total = data["list"]["allWorks"]["totalCount"]
    return {"ratio_vs_floor": max(s["ratio_vs_floor"] for s in shapes.values()),
            "db_ratio_vs_handwritten": max(s["db_ratio_vs_handwritten"]
                                           for s in shapes.values()),
            **shapes, "matching_works": total, "data": made}


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


# ------------------------------------------------------------------ the run


def _with_goals(section: dict[str, Any], prefix: str, goals: dict[str, Any]) -> dict[str, Any]:
    """``section`` with ``<key>_goal`` and ``<key>_goal_met`` right after each figure that
    has a goal; every goal also goes into ``goals`` under its dotted key."""
    shown: dict[str, Any] = {}
    for key, value in section.items():
        shown[key] = value
        name = f"{prefix}.{key}"
        if name in GOALS:
            op, bound = GOALS[name]
            met = value is not None and (value <= bound if op == "<=" else value >= bound)
            shown[f"{key}_goal"] = f"{op} {bound:g}"
            shown[f"{key}_goal_met"] = met
            goals[name] = {"value": value, "goal": f"{op} {bound:g}", "goal_met": met}
    return shown


def _guarded(result: dict[str, Any], key: str, what: str, run: Any) -> Any:
    """Run one measurement; an error is recorded under ``key`` and the run goes on."""
    try:
        return run()
    except Exception as exc:
        _log(f"{what} failed: {exc!r}")
        result.setdefault("errors", {})[key] = traceback.format_exc()[-4000:]
        return None


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (a few minutes)")
    parser.add_argument("--floor-server", metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--sections", default="command,fanout,queries",
                        help="what to measure: a comma-separated list of command, fanout, "
                             "queries (default all)")
    parser.add_argument("--query-backends", default="postgres,sqlite",
                        help="stores for the list queries (default postgres,sqlite)")
    parser.add_argument("--samples", type=int, help="pauses timed per store (300; quick 60)")
    parser.add_argument("--warmup", type=int, default=3, help="pauses not timed first")
    parser.add_argument("--fanout-works", type=int, default=50)
    parser.add_argument("--fanout-rate", type=float, default=1000.0,
                        help="events a second all busy works commit together")
    parser.add_argument("--fanout-workers", type=int, default=1,
                        help="stepsaga worker processes running them")
    parser.add_argument("--status-subscribers", type=int, default=5)
    parser.add_argument("--fanout-churn", type=float, default=5.0,
                        help="short works created a second during each phase")
    parser.add_argument("--fanout-seconds", type=float, help="per phase (15; quick 6)")
    parser.add_argument("--fanout-rounds", type=int,
                        help="rounds of a phase without and one with subscribers, in "
                             "turns without-with and with-without (4; quick 2)")
    parser.add_argument("--works", type=int, default=100_000,
                        help="works in the store for the list queries")
    parser.add_argument("--query-rounds", type=int, help="requests of each kind (500; "
                                                         "quick 100)")
    parser.add_argument("--query-warmup", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.floor_server:
        serve_floor(args.floor_server)
        return 0
    args.samples = args.samples or (60 if args.quick else 300)
    args.fanout_seconds = args.fanout_seconds or (6.0 if args.quick else 15.0)
    args.fanout_rounds = args.fanout_rounds or (2 if args.quick else 4)
    args.query_rounds = args.query_rounds or (100 if args.quick else 500)
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    backends = [b.strip() for b in args.query_backends.split(",") if b.strip()]
    if not sections <= {"command", "fanout", "queries"} or not sections:
        parser.error("--sections: a comma-separated list of command, fanout, queries")
    if not set(backends) <= {"postgres", "sqlite"}:
        parser.error("--query-backends: a comma-separated list of postgres, sqlite")
    if min(args.samples, args.fanout_works, args.fanout_workers, args.fanout_rounds,
           args.works, args.query_rounds) < 1 or not (args.fanout_rate > 0 and
                                                     args.fanout_seconds > 0 and
                                                     args.fanout_churn > 0):
        parser.error("counts, rates and durations must be positive")

    # SIGTERM ends the run like Ctrl-C: every process and the cluster are stopped
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    from tests.pg import PostgresCluster

    result: dict[str, Any] = {"parameters": {
        k: v for k, v in vars(args).items() if k not in ("floor_server",)}}
    result["parameters"]["ms_stages"] = __import__("benchmarks.api_app").api_app.MS_STAGES
    goals: dict[str, Any] = {}
    procs = Processes()
    cluster = PostgresCluster()
    started = time.monotonic()
    load = {"start": _load()}
    try:
        cluster.start()
        with tempfile.TemporaryDirectory(prefix="stepsaga-api-") as tmp:
            base = Path(tmp)
            if "command" in sections:
                _log(f"command latency: PostgreSQL, {args.samples} pauses")
                figures: dict[str, Any] = {}
                pg = _guarded(result, "command_latency.postgres", "command latency (PostgreSQL)",
                              lambda: command_latency_postgres(
                                  procs, cluster.create_database("command"), args))
                if pg is not None:
                    figures["postgres"] = _with_goals(pg, "command_latency.postgres", goals)
                _log(f"command latency: SQLite, {args.samples} pauses")
                lite = _guarded(result, "command_latency.sqlite", "command latency (SQLite)",
                                lambda: command_latency_sqlite(
                                    procs, f"sqlite+aiosqlite:///{base}/command.sqlite", args))
                if lite is not None:
                    figures["sqlite"] = _with_goals(lite, "command_latency.sqlite", goals)
                result["command_latency"] = figures
                load["after_command"] = _load()
            if "fanout" in sections:
                _log(f"fanout: {args.fanout_works} works at {args.fanout_rate:g} events/s")
                fan = _guarded(result, "fanout", "fanout",
                               lambda: fanout(procs, cluster.create_database("fanout"), args))
                if fan is not None:
                    result["fanout"] = _with_goals(fan, "fanout", goals)
                load["after_fanout"] = _load()
            if "queries" in sections:
                found: dict[str, Any] = {}
                for backend in backends:
                    url = cluster.create_database("queries") if backend == "postgres" else \
                        f"sqlite+aiosqlite:///{base}/queries.sqlite"
                    got = _guarded(result, f"queries.{backend}", f"queries ({backend})",
                                   lambda url=url: query_figures(procs, url, args, base))
                    if got is not None:
                        found[backend] = got
                    if backend == "postgres":
                        cluster.drop_database("queries")
                    load[f"after_queries_{backend}"] = _load()
                named = "postgres" if "postgres" in found else "sqlite"
                head: dict[str, Any] = {"store": named if found else None}
                if found:
                    head["ratio_vs_floor"] = found[named]["ratio_vs_floor"]
                    head["db_ratio_vs_handwritten"] = found[named]["db_ratio_vs_handwritten"]
                result["queries"] = {**_with_goals(head, "queries", goals), **found}
    except KeyboardInterrupt:
        result.setdefault("errors", {})["interrupted"] = "stopped by a signal"
    finally:
        procs.stop()
        cluster.stop()
    result["goals"] = goals
    result["all_goals_met"] = bool(goals) and all(g["goal_met"] for g in goals.values())
    result["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                         "load_average_1m_5m_15m": load,
                         "seconds": round(time.monotonic() - started, 1)}
    print(json.dumps(result, indent=2))
    return 1 if result.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
