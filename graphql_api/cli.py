"""The ``stepsaga`` command line.

``stepsaga run demo`` runs the demo saga with a progress bar and prints the
result as JSON; ``--fail pay/charge`` makes a stage fail to show compensation,
``--fail-compensation reserve`` makes a compensation fail too (compensation_failed),
``--dry-run`` uses each stage's example output instead of its transaction.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, TextIO, get_args

import anyio

from engine import (
    Loop,
    Map,
    RecordedEvent,
    Runtime,
    Saga,
    SchemaTooNewError,
    Stage,
    StageContext,
    StageFailure,
    compile_saga,
)
from engine.catalog import fail_globs
from engine.definitions import Node
from engine.store.urls import check_store_url
from workers.actions import DEMO_ORDER, demo_saga

__all__ = ["ProgressBar", "main"]

_NODES = get_args(Node)  # the classes of saga nodes, for rebuilding a saga
_STAGE_END = {"stage.completed", "stage.transaction.completed", "stage.failed",
              "stage.compensation.completed"}


class ProgressBar:
    """Draws the progress of one work: top-level stages done out of all of them."""

    def __init__(self, saga: Saga, out: TextIO, *, width: int = 30) -> None:
        self.names = [s.name for s in saga.stages]
        self.out = out
        self.width = width
        self.done: set[str] = set()
        self.undone: set[str] = set()
        self.phase = "running"
        self.last = ""
        self.tty = out.isatty()

    def on_event(self, recorded: RecordedEvent) -> None:
        event = recorded.event
        top = event.path.split("/", 1)[0].split("[", 1)[0]
        if event.type == "work.compensating":
            self.phase = "compensating"
        elif event.type in ("work.completed", "work.failed", "work.cancelled",
                            "work.compensation_failed"):
            self.phase = event.type.split(".", 1)[1]
        elif event.type in _STAGE_END and top in self.names:
            finished_top = event.path == top
            if event.type == "stage.compensation.completed":
                self.undone.add(event.path)
            elif finished_top and event.type != "stage.failed":
                self.done.add(top)
        else:
            return
        self.draw(event.path or self.phase)

    def draw(self, current: str) -> None:
        total = len(self.names)
        filled = round(self.width * len(self.done) / total) if total else self.width
        bar = "#" * filled + "." * (self.width - filled)
        line = f"[{bar}] {len(self.done)}/{total} stages  {self.phase:<12} {current}"
        if self.undone:
            line += f"  (compensated {len(self.undone)})"
        if line == self.last:
            return
        self.last = line
        if self.tty:
            self.out.write("\r\x1b[2K" + line)
            if self.phase in ("completed", "failed", "cancelled", "compensation_failed"):
                self.out.write("\n")
        else:
            self.out.write(line + "\n")
        self.out.flush()


class UsageError(ValueError):
    """A command-line value that cannot work: said in one line, exit status 2."""


@dataclass(frozen=True, slots=True)
class _RunPlan:
    saga: Saga
    order: Any
    dry_fail: tuple[str, ...]  # --fail for Runtime.dry_run (see engine.catalog.fail_globs)


def _stage_paths(saga: Saga) -> dict[str, tuple[re.Pattern[str], str, Stage]]:
    """Each stage with a transaction, by template path: a regex its concrete paths match
    (``pack[2]/box``) and how it is shown (``pack[i]/box``)."""
    nodes = compile_saga(saga).nodes
    found: dict[str, tuple[re.Pattern[str], str, Stage]] = {}
    for template, info in nodes.items():
        if not isinstance(info.node, Stage):
            continue
        parts = template.split("/")
        pattern, shown = [], []
        for i, part in enumerate(parts):
            indexed = i + 1 < len(parts) and isinstance(
                nodes["/".join(parts[:i + 1])].node, Map | Loop)
            pattern.append(re.escape(part) + (r"\[\d+\]" if indexed else ""))
            shown.append(part + ("[i]" if indexed else ""))
        found[template] = (re.compile("/".join(pattern)), "/".join(shown), info.node)
    return found


def _named_stage(paths: dict[str, tuple[re.Pattern[str], str, Stage]], path: str) -> Stage | None:
    for regex, _, stage in paths.values():
        if regex.fullmatch(path):
            return stage
    return None


def _check_fail(saga: Saga, args: argparse.Namespace) -> tuple[str, ...]:
    """--fail and --fail-compensation name stages of ``saga``; the --fail patterns for a
    dry run, as :func:`engine.catalog.fail_globs` reads them (a literal path such as
    ``pack[2]/box`` is only that item, ``pack[*]/box`` every item, or a glob)."""
    paths = _stage_paths(saga)
    listed = ", ".join(shown for _, shown, _ in paths.values())
    plan = compile_saga(saga)
    for pattern in args.fail:
        if args.dry_run:
            try:
                fail_globs(plan, [pattern])
                continue
            except ValueError:
                pass
        elif _named_stage(paths, pattern) is not None:
            continue
        globs = "" if args.dry_run else " (globs only with --dry-run)"
        raise UsageError(f"--fail {pattern!r} names no stage of saga {saga.name!r}; expected "
                         f"a stage path{globs}: {listed} (i: an item's index)")
    with_compensation = [shown for _, shown, stage in paths.values() if stage.compensation]
    for path in args.fail_compensation:
        stage = _named_stage(paths, path)
        if stage is None or stage.compensation is None:
            raise UsageError(f"--fail-compensation {path!r} names no stage of saga "
                             f"{saga.name!r} with a compensation; expected one of: "
                             f"{', '.join(with_compensation)}")
    if args.fail_compensation and args.dry_run:
        raise UsageError("--fail-compensation cannot be used with --dry-run: a dry run "
                         "records compensations as done without calling them")
    return tuple(args.fail) if args.dry_run else ()


def _failing_compensations(node: Any, paths: frozenset[str]) -> Any:
    """``node`` with every compensation raising when its stage's path is in ``paths``."""
    if isinstance(node, Stage):
        compensate = node.compensation
        if compensate is None:
            return node

        async def compensation(ctx: StageContext, input: Any, output: Any, reason: Any) -> Any:
            if ctx.path in paths:
                raise StageFailure(f"compensation of {ctx.path} failed (asked with "
                                   "--fail-compensation)", retryable=False)
            return await compensate(ctx, input, output, reason)

        return dataclasses.replace(node, compensation=compensation)
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if isinstance(value, _NODES):
            changes[f.name] = _failing_compensations(value, paths)
        elif isinstance(value, list | tuple) and value and all(
                isinstance(v, _NODES) for v in value):
            changes[f.name] = [_failing_compensations(v, paths) for v in value]
        elif isinstance(value, Mapping) and value and all(
                isinstance(v, _NODES) for v in value.values()):
            changes[f.name] = {k: _failing_compensations(v, paths) for k, v in value.items()}
    return dataclasses.replace(node, **changes) if changes else node


def _read_input(text: str) -> Any:
    def no_constant(name: str) -> Any:
        raise UsageError(f"--input holds {name}, which is not JSON; expected a JSON value "
                         "(numbers must be finite)")

    try:
        return json.loads(text, parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--input is not valid JSON: {exc}") from None
    except RecursionError:
        raise UsageError("--input is nested too deeply for Python's JSON reader (its "
                         f"recursion limit is {sys.getrecursionlimit()}); expected shallower "
                         "JSON") from None
    except UsageError:
        raise
    except ValueError:  # Python's limit on the digits of an integer read from text
        raise UsageError(f"--input holds an integer longer than "
                         f"{sys.get_int_max_str_digits()} digits; expected shorter integers "
                         "(pass a longer number as a JSON string)") from None


def _plan_run(args: argparse.Namespace) -> _RunPlan:
    """Every value of ``stepsaga run`` checked before anything runs."""
    if args.saga != "demo":
        raise UsageError(f"unknown saga {args.saga!r}; available: demo")
    if not (math.isfinite(args.delay) and args.delay >= 0):
        raise UsageError(f"--delay must be >= 0 and finite (seconds each demo stage takes), "
                         f"got {args.delay}")
    if args.store is not None:
        try:
            check_store_url(args.store)
        except ValueError as exc:
            raise UsageError(f"--store: {exc}") from None
    saga = demo_saga(delay=args.delay, fail=tuple(args.fail))
    dry_fail = _check_fail(saga, args)
    if args.fail_compensation:
        saga = _failing_compensations(saga, frozenset(args.fail_compensation))
    order = DEMO_ORDER if args.input is None else _read_input(args.input)
    return _RunPlan(saga=saga, order=order, dry_fail=dry_fail)


def _shown(error: dict[str, Any] | None) -> dict[str, Any] | None:
    """An error or failure as printed: without tracebacks (stderr has the progress)."""
    if not error:
        return error
    return {k: _shown(v) if k == "error" and isinstance(v, dict) else v
            for k, v in error.items() if k != "traceback"}


async def _run(args: argparse.Namespace, plan: _RunPlan) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    saga = plan.saga
    bar = ProgressBar(saga, sys.stderr)
    async with AsyncExitStack() as stack:
        store = None
        if args.store is not None:
            from engine.store import SqlStore

            try:
                store = await stack.enter_async_context(SqlStore.open(args.store))
            except ValueError as exc:
                print(f"stepsaga: --store: {exc}", file=sys.stderr)
                return 2
            except (OSError, SQLAlchemyError) as exc:
                print(f"stepsaga: cannot open the store {_hidden(args.store)!r}: {_why(exc)}",
                      file=sys.stderr)
                return 1
        runtime = await stack.enter_async_context(
            Runtime([saga], on_event=bar.on_event, store=store))
        if args.dry_run:
            result = await runtime.dry_run(saga.name, plan.order, fail=plan.dry_fail)
        else:
            result = await runtime.run(saga.name, plan.order)
        events = len(runtime.events(result.work_id))
    # error: why the work ended as it did (for compensation_failed, the compensation's
    # error); failure: the original failure that made it compensate
    summary = {"work_id": result.work_id, "status": result.status, "output": result.output,
               "error": _shown(result.error), "failure": _shown(result.failure),
               "compensated": list(result.compensated), "events": events}
    print(json.dumps(summary, indent=2))
    return 0 if result.status == "completed" else 1


DEFAULT_STORE = "sqlite+aiosqlite:///stepsaga.sqlite"


async def _migrate(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from engine.store import SqlStore
    from engine.store.migrate import copy_store

    for option, url in (("--url", args.url), ("--to", args.to)):
        try:
            if url is not None:
                check_store_url(url)
        except ValueError as exc:
            print(f"stepsaga: {option}: {exc}", file=sys.stderr)
            return 2
    if args.to is not None and _canonical_url(args.to) == _canonical_url(args.url):
        print(f"stepsaga: --to names the store --url names ({args.url!r}); expected another "
              "store to copy it to", file=sys.stderr)
        return 2
    try:
        async with SqlStore.open(args.url) as source:
            if args.to is None:
                print(json.dumps({"migrated": args.url}))
                return 0
            async with SqlStore.open(args.to) as target:
                # resumable: an interrupted copy goes on where it stopped when run again
                summary = await copy_store(source, target)
    except SchemaTooNewError as exc:
        print(f"stepsaga: cannot migrate {_hidden(args.url)}: {exc}", file=sys.stderr)
        return 3
    except (ValueError, OSError, SQLAlchemyError) as exc:
        what = (f"copy {_hidden(args.url)} to {_hidden(args.to)}" if args.to
                else f"migrate {_hidden(args.url)}")
        print(f"stepsaga: cannot {what}: {_why(exc)}", file=sys.stderr)
        return 2
    print(json.dumps({"from": args.url, "to": args.to, **summary}))
    return 0


def _refusing_old_code(run: Any) -> int:
    """``run()``'s exit code; 3, saying why, when the store's schema is newer than this
    version of stepsaga knows (it does not start on it)."""
    try:
        return int(run())
    except SchemaTooNewError as exc:
        print(f"stepsaga: not starting: {exc}", file=sys.stderr)
        return 3


def _hidden(url: str) -> str:
    """A store URL as printed: without its password."""
    import sqlalchemy as sa

    return sa.make_url(url).render_as_string(hide_password=True)


def _why(exc: BaseException) -> str:
    """An error in one line: the database's own words, without SQLAlchemy's wrapping."""
    from sqlalchemy.exc import DBAPIError

    reason = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    return (str(reason).strip().splitlines() or [type(reason).__name__])[0]


def _canonical_url(url: str) -> str:
    """A store URL in one spelling, to tell whether two name the same store."""
    import sqlalchemy as sa

    return sa.make_url(url).render_as_string(hide_password=False)


def load_app(spec: str, settings: dict[str, dict[str, Any]] | None = None) -> Any:
    """``module:attribute``: a Saga, a list of them, a :class:`workers.node.WorkerApp`,
    or a function returning one of these; always returned as a WorkerApp. A function
    with a ``settings`` parameter is given the settings (graphql_api.config.load's), so
    a pack reads its section (``workers.actions.backups:app`` its ``[backups]``).
    Several, comma-separated, are one app (``WorkerApp.combine``)."""
    from workers.node import WorkerApp

    specs = [part.strip() for part in spec.split(",") if part.strip()]
    if not specs:
        raise ValueError(f"--app {spec!r}: use module:attribute, e.g. myapp.sagas:SAGAS")
    apps = [_load_one_app(one, settings) for one in specs]
    try:
        return WorkerApp.combine(apps)
    except Exception as exc:
        raise ValueError(f"--app {spec!r}: {exc}") from None


def _load_one_app(spec: str, settings: dict[str, dict[str, Any]] | None) -> Any:
    import importlib
    import inspect

    from workers.node import WorkerApp

    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"--app {spec!r}: use module:attribute, e.g. myapp.sagas:SAGAS")
    try:
        value: Any = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"--app {spec!r}: {exc}") from None
    if callable(value) and not isinstance(value, Saga | WorkerApp):
        try:
            wants = "settings" in inspect.signature(value).parameters
        except (TypeError, ValueError):  # a builtin or a class without a signature
            wants = False
        value = value(settings=settings or {}) if wants else value()
    if isinstance(value, WorkerApp):
        app = value
    else:
        app = WorkerApp(sagas=[value] if isinstance(value, Saga) else list(value))
    if not app.sagas or not all(isinstance(s, Saga) for s in app.sagas):
        raise ValueError(f"--app {spec!r} is not a Saga, a list of them or a WorkerApp")
    return app


GC_THRESHOLD = (50_000, 20, 100)


def tune_gc_for_long_run() -> None:
    """For a process that runs works for a long time: what start-up allocated (modules,
    the app, the store's engine) is frozen out of the cyclic collector, and the young
    generation is collected every 50,000 net allocations instead of CPython's 700.

    The engine's per-step objects are short-lived and freed by reference counting; with
    the default thresholds a worker running 200 works at once spent about a quarter of
    its CPU in the collector, mostly in full collections over objects that never die
    (measured with gc.callbacks: 0.84 s of 3.1 s for 5,000 sagas, 0.02 s after this).
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


async def _worker(args: argparse.Namespace, specs: list[Any]) -> int:
    import signal

    from engine.store import SqlStore

    app = load_app(args.app, getattr(args, "settings", None))
    async with SqlStore.open(args.store) as store:
        node = app.node(store, specs, node_id=args.node_id, lease_ttl=args.lease_ttl,
                        drain_deadline=args.drain_deadline, park_after=args.park_after)
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)
            ready: dict[str, Any] = {"ready": node.node_id, "workers": node.workers()}
            if args.http:
                from .observability import node_app, serve_http

                host, port = await tg.start(serve_http, node_app(store, node), *args.http)
                shown = f"[{host}]" if ":" in host else host
                ready["http"] = f"http://{shown}:{port}"
            tune_gc_for_long_run()
            print(json.dumps(ready), flush=True)

            async def on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        await node.drain()
                        return

            tg.start_soon(on_signal)
            await node.stopped()
            tg.cancel_scope.cancel()
    print(json.dumps({"stopped": node.node_id, "claimed": node.claimed}), flush=True)
    return 0


def _node_args(args: argparse.Namespace) -> tuple[list[Any], Any]:
    """The checked worker specs and app of ``serve`` and ``worker``; a ValueError naming
    the flag at fault."""
    from engine.store.urls import check_store_url
    from workers.node import WorkerSpec

    specs = [WorkerSpec.parse(w) for w in args.worker or ["main=10"]]
    if getattr(args, "http", None):
        from .config import http_address

        try:
            args.http = http_address(args.http)
        except TypeError as bad:
            raise ValueError(f"--http: {bad}, got {args.http!r}") from None
    if not args.lease_ttl > 0:
        raise ValueError(f"--lease-ttl must be > 0 seconds, got {args.lease_ttl}")
    if getattr(args, "drain_deadline", None) is not None and not args.drain_deadline >= 0:
        raise ValueError(f"--drain-deadline must be >= 0, got {args.drain_deadline}")
    if not args.park_after >= 0:
        raise ValueError(f"--park-after must be >= 0 seconds, got {args.park_after}")
    try:
        check_store_url(args.store)
    except ValueError as bad:
        raise ValueError(f"--store: {bad}") from None
    app = load_app(args.app, getattr(args, "settings", None))
    names = {saga.name for saga in app.sagas}
    for spec in specs:
        unknown = sorted(set(spec.sagas or ()) - names)
        if unknown:
            raise ValueError(f"worker {spec.name!r} serves sagas that are not registered: "
                             f"{', '.join(unknown)} (have {', '.join(sorted(names))})")
    return specs, app


# the flags of serve and worker that a config file (or its variables) may set instead
_SETTINGS = {"store": ("store", "url"), "app": ("serve", "app"), "host": ("serve", "host"),
             "port": ("serve", "port"), "no_workers": ("serve", "no_workers"),
             "no_auth": ("serve", "no_auth"), "explorer": ("serve", "explorer"),
             "worker": ("worker", "workers"), "lease_ttl": ("worker", "lease_ttl"),
             "park_after": ("worker", "park_after"),
             "drain_deadline": ("worker", "drain_deadline"), "node_id": ("worker", "node_id"),
             "http": ("worker", "http"), "log_format": ("log", "format"),
             "log_level": ("log", "level")}


def _settle(args: argparse.Namespace, settings: dict[str, dict[str, Any]]) -> None:
    """Fill the flags not given on the command line from the settings (a config file,
    STEPSAGA_* variables, the defaults), in that order of precedence after the flags."""
    for dest, (section, key) in _SETTINGS.items():
        if hasattr(args, dest) and getattr(args, dest) in (None, []):
            value = settings[section][key]
            setattr(args, dest, value if value != "" else None)
    args.command_timeout = settings["serve"]["command_timeout"]
    args.query_timeout = settings["serve"]["query_timeout"]


async def _serve(args: argparse.Namespace, app: Any, specs: list[Any]) -> int:
    from .limits import LimitsSource
    from .server import serve

    def ready(server: Any, login: str | None = None) -> None:
        tune_gc_for_long_run()  # a long-running process, like stepsaga worker
        sockets = [s for srv in server.servers for s in srv.sockets]
        host, port = sockets[0].getsockname()[:2] if sockets else (args.host, args.port)
        shown = f"[{host}]" if ":" in str(host) else host
        told: dict[str, Any] = {"ready": True, "url": f"http://{shown}:{port}/graphql",
                                "store": _hidden(args.store), "workers": not args.no_workers,
                                "auth": not args.no_auth}
        if login is not None:
            # the first start of a fresh store: its administrator signs in once with this
            told["login_url"] = f"http://{shown}:{port}{login}"
            print(f"stepsaga: a fresh store: sign in as its administrator at "
                  f"{told['login_url']} (once, within 15 minutes); scripts get tokens "
                  f"with 'stepsaga token create'", file=sys.stderr, flush=True)
        print(json.dumps(told), flush=True)

    await serve(store_url=args.store, app=app, host=args.host, port=args.port,
                workers=specs, no_workers=args.no_workers, auth=not args.no_auth,
                explorer=bool(args.explorer), command_timeout=args.command_timeout,
                query_timeout=args.query_timeout,
                limits=LimitsSource(args.settings["limits"], args.config),
                node_options={"node_id": args.node_id, "lease_ttl": args.lease_ttl,
                              "park_after": args.park_after}, ready=ready)
    print(json.dumps({"stopped": True}), flush=True)
    return 0


def _exit_when_threads_linger(code: int, grace: float = 5.0) -> None:
    """A node that has drained exits even if a driver thread outlives its store (a
    database connection cut off by the shutdown): after ``grace`` seconds, hard."""
    import os
    import threading
    import time

    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not [t for t in threading.enumerate()
                if t is not threading.main_thread() and not t.daemon and t.is_alive()]:
            return
        time.sleep(0.05)
    print("stepsaga: threads still running after the node stopped; exiting", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stepsaga", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one saga with a progress bar")
    run.add_argument("saga", help="the saga to run (available: demo)")
    run.add_argument("--input", help="the work's input, as JSON")
    run.add_argument("--fail", action="append", default=[], metavar="PATH",
                     help="make the stage at PATH fail for good, e.g. pay/book or "
                          "pack[2]/box (repeatable; with --dry-run also a glob)")
    run.add_argument("--fail-compensation", action="append", default=[], metavar="PATH",
                     help="make the compensation of the stage at PATH fail, so the work "
                          "ends compensation_failed, e.g. --fail pay/book "
                          "--fail-compensation reserve (repeatable)")
    run.add_argument("--delay", type=float, default=0.05,
                     help="seconds each demo stage takes (default 0.05)")
    run.add_argument("--dry-run", action="store_true",
                     help="use each stage's example output instead of running it")
    run.add_argument("--store", metavar="URL",
                     help="record the work durably in this store, e.g. "
                          f"{DEFAULT_STORE} (default: in memory)")
    migrate = commands.add_parser(
        "migrate", help="apply the store's schema migrations, or copy it to another database")
    migrate.add_argument("--url", default=DEFAULT_STORE,
                         help=f"the store to migrate (default {DEFAULT_STORE})")
    migrate.add_argument("--to", metavar="URL",
                         help="copy every event stream to this store, e.g. "
                              "postgresql+asyncpg://user@host/db, and rebuild its projections; "
                              "run it again after an interruption: streams copied already are "
                              "skipped, one copied in part is completed")
    from . import config_cli, tokens_cli

    tokens_cli.add_parser(commands)
    config_cli.add_parser(commands)
    worker = commands.add_parser(
        "worker", help="run a worker node: claim works from the store and run them")
    worker.add_argument("--store", default=None, metavar="URL",
                        help=f"the store to take works from (default {DEFAULT_STORE})")
    worker.add_argument("--app", default=None,
                        help="module:attribute holding the sagas to run, or a "
                             "workers.node.WorkerApp with services, health checks and "
                             "limits too; several comma-separated run as one (default: the "
                             "product's own)")
    worker.add_argument("--worker", action="append", default=[], metavar="NAME=N[:SAGAS]",
                        help="a named worker running up to N works at once, of the listed "
                             "sagas (comma-separated) or all; repeatable (default main=10)")
    worker.add_argument("--lease-ttl", type=float, default=None,
                        help="seconds a lease lasts unless renewed (default 10)")
    worker.add_argument("--drain-deadline", type=float, default=None,
                        help="on SIGTERM, seconds to let works finish their step (default 30)")
    worker.add_argument("--park-after", type=float, default=None,
                        help="a work that sleeps this many seconds or more (a timer, a "
                             "retry's backoff) is handed back to the store until it is "
                             "due, freeing its slot (default 60)")
    worker.add_argument("--node-id", help="this node's id (default host:pid:random)")
    worker.add_argument("--http", default=None, metavar="HOST:PORT",
                        help="serve /metrics, /healthz and /readyz there (port 0: any free "
                             "one, printed; default: no HTTP server)")
    worker.add_argument("--config", metavar="FILE",
                        help="a TOML file of settings (see graphql_api.config); flags and "
                             "STEPSAGA_<SECTION>_<KEY> variables override it")
    serve = commands.add_parser(
        "serve", help="run the GraphQL API and a worker node on one store (SQLite default)")
    serve.add_argument("--store", default=None, metavar="URL",
                       help=f"the store (default {DEFAULT_STORE}, created when missing)")
    serve.add_argument("--app", default=None,
                       help="module:attribute holding the sagas, or a WorkerApp (a pack, "
                            "with its API fields and routes); several comma-separated run "
                            "as one (default: the demo saga)")
    serve.add_argument("--host", default=None,
                       help="the address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=None, help="the port (default 8000; 0: any "
                       "free one, printed)")
    serve.add_argument("--worker", action="append", default=[], metavar="NAME=N[:SAGAS]",
                       help="a named worker of this process's node (default main=10)")
    serve.add_argument("--no-workers", action="store_true", default=None,
                       help="serve the API only: worker nodes run elsewhere")
    serve.add_argument("--explorer", action="store_true", default=None,
                       help="serve GraphiQL at /graphql and answer introspection "
                            "(both off by default)")
    serve.add_argument("--no-auth", action="store_true", default=None,
                       help="local development only: no sign-in, every request an "
                            "administrator (refused on any address but loopback)")
    serve.add_argument("--node-id", help="this node's id (default host:pid:random)")
    serve.add_argument("--config", metavar="FILE",
                       help="a TOML file of settings (see graphql_api.config); flags and "
                            "STEPSAGA_<SECTION>_<KEY> variables override it")
    serve.add_argument("--lease-ttl", type=float, default=None,
                       help="seconds a lease lasts unless renewed (default 10)")
    serve.add_argument("--park-after", type=float, default=None,
                       help="a work idle this many seconds or more is parked (default 60)")
    for node in (worker, serve):
        node.add_argument("--log-format", choices=["text", "json"], default=None,
                          help="json: one JSON object a line, with the work id, stage "
                               "and attempt of records from stage code (default text)")
        node.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                          default=None, help="the least level logged (default info)")
    args = parser.parse_args(argv)
    if args.command in ("serve", "worker"):
        from .config import ConfigError, load

        try:
            args.settings = load(args.config)
            _settle(args, args.settings)
        except ConfigError as exc:
            parser.error(str(exc))
        from .observability import setup_logging

        setup_logging(args.log_format, args.log_level)
    if args.command == "serve":
        try:
            if not 0 <= args.port <= 65535:
                raise ValueError(f"--port must be 0 to 65535, got {args.port}")
            if args.no_auth:
                from .server import check_loopback

                check_loopback(args.host)
            specs, app = _node_args(args)
        except ValueError as exc:
            parser.error(str(exc))
        code = _refusing_old_code(lambda: anyio.run(_serve, args, app, specs))
        _exit_when_threads_linger(code)
        return code
    if args.command == "worker":
        try:
            specs, _ = _node_args(args)
        except ValueError as exc:
            parser.error(str(exc))
        code = _refusing_old_code(lambda: anyio.run(_worker, args, specs))
        _exit_when_threads_linger(code)
        return code
    if args.command == "config":
        return config_cli.run(args)
    if args.command == "migrate":
        return anyio.run(_migrate, args)
    if args.command == "token":
        from . import tokens_cli

        return anyio.run(tokens_cli.run, args)
    if args.command == "policy":
        from . import tokens_cli

        return anyio.run(tokens_cli.run_policy, args)
    try:
        plan = _plan_run(args)
    except UsageError as exc:
        print(f"stepsaga: {exc}", file=sys.stderr)
        return 2
    return anyio.run(_run, args, plan)


if __name__ == "__main__":
    sys.exit(main())
