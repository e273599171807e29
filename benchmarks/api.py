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
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from benchmarks.api_command import command_latency_postgres, command_latency_sqlite  # noqa: E402
from benchmarks.api_common import Processes, _log  # noqa: E402
from benchmarks.api_fanout import fanout  # noqa: E402
from benchmarks.api_queries import query_figures, serve_floor  # noqa: E402

GOALS = {  # key: (comparison, bound)
    "command_latency.postgres.p50_ms": ("<=", 20.0),
    "command_latency.postgres.p99_ms": ("<=", 100.0),
    "command_latency.sqlite.p50_ms": ("<=", 5.0),
    "fanout.p99_ms": ("<=", 100.0),
    "fanout.worker_cpu_ratio": ("<=", 1.1),
    "queries.ratio_vs_floor": ("<=", 2.0),
    "queries.db_ratio_vs_handwritten": ("<=", 1.5),
}


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
