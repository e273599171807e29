"""A worker node: named workers that claim works from the store and run them.

Each worker has a concurrency (how many works it runs at once) and optionally the
sagas it serves. It claims works through leases (:mod:`workers.leases`), runs them
on its own :class:`engine.Runtime`, and the node renews all its leases by heartbeat.
A work whose lease expired (its node died) is claimed by another worker and goes on
from its events. Idle workers on PostgreSQL sleep until a NOTIFY (new works, sent by
their creation's commit, or leases released by a draining node), until the next
delayed work is due, or, for leases that expire silently, until a poll at half the
lease time; on SQLite they poll.

A node publishes the catalog it runs (:mod:`engine.store.catalog`: the description,
hash and version of each saga's definition) when it starts, renews it with its
heartbeat and withdraws it when it stops. It claims only the works its definitions
continue (see :class:`engine.Saga`'s ``version`` and ``continues``); the works of its
sagas started on another definition are left for a node that runs it, shown as
waiting with the reason, and logged once per definition.

Besides the sagas of its app, a node runs the sagas given as data in the store
(:mod:`engine.store.sagas`) that build with its app's functions (``WorkerApp(functions=
...)``): loaded at start, and again when they change (a poll of the table every poll
interval and, on PostgreSQL, a NOTIFY of the change), registered on its workers'
runtimes, claimed and published in its catalog; a deleted one is no longer claimed, and
one naming a function the app does not have is not loaded here (logged once, naming it).
A disabled saga (given as data or in code) starts no new work on the node; its works go
on. See :mod:`workers.sagas`.

Draining (SIGTERM on ``stepsaga worker``) takes nothing new, lets every work finish
the step it is in, records it, and releases the lease, so another node goes on at
once; what is still running at the deadline is cut off and re-run elsewhere (at
least once, with the same idempotency key).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from engine import DefinitionMismatchError, Functions, Runtime, Saga, compile_saga, metrics
from engine.catalog import describe
from engine.lease import Lease
from engine.secrets import Secrets
from engine.services import Service
from engine.state import WorkState
from engine.store import SqlStore, inbox
from engine.store import catalog as published_catalog
from engine.store import sagas as stored_sagas
from engine.store.aggregates import check_reducers

from . import leases, registry
from .gate import NodeGate
from .health import Health, HealthCheck
from .limits import RateLimit
from .sagas import SagaFollower
from .schedules import Schedule
from .schedules import ensure as ensure_schedule
from .schedules import prune as prune_schedules

__all__ = ["ApiRef", "WorkerApp", "WorkerNode", "WorkerSpec"]

_LOG = logging.getLogger("stepsaga.worker")
# how often, at most, an idle node marks the works it leaves for another definition
HOLD_BACK_EVERY = 1.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """A named worker: how many works it runs at once, and which sagas (None: all)."""

    name: str
    concurrency: int = 10
    sagas: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"worker name {self.name!r}: use 1 to 64 letters, digits, "
                             "'_', '.' or '-', starting with a letter or digit")
        _check_concurrency(self.name, self.concurrency)

    @classmethod
    def parse(cls, text: str) -> WorkerSpec:
        """``name=concurrency`` or ``name=concurrency:saga1,saga2`` (the CLI's form)."""
        name, _, rest = text.partition("=")
        count, _, sagas = rest.partition(":")
        try:
            concurrency = int(count) if count else 10
        except ValueError:
            raise ValueError(f"worker {text!r}: concurrency {count!r} is not a whole number")\
                from None
        names = tuple(s for s in sagas.split(",") if s) or None
        return cls(name=name, concurrency=concurrency, sagas=names)


def _check_concurrency(name: str, concurrency: object) -> None:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"worker {name!r}: concurrency must be a whole number >= 1, "
                         f"got {concurrency!r}")


@dataclass(frozen=True, eq=False)  # a reference is itself: resolved once, by identity
class ApiRef:
    """A pack's part of the API named, not imported (workers/ imports nothing of
    graphql_api/): the server imports ``factory`` (``module:function``) and calls it with
    ``args`` (graphql_api.extensions.parts_of); a worker node never does."""

    factory: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True, kw_only=True)
class WorkerApp:
    """What ``stepsaga worker --app module:attribute`` runs when it needs more than
    sagas: the services, health checks and limits of its node."""

    sagas: Sequence[Saga]
    services: Sequence[Service] = ()
    health_checks: Sequence[HealthCheck] = ()
    rate_limits: Mapping[str, RateLimit] = field(default_factory=dict)
    lock_limits: Mapping[str, int] = field(default_factory=dict)
    saga_limits: Mapping[str, int] = field(default_factory=dict)
    # the functions sagas given as data name (engine.registry.Functions, or a mapping)
    functions: Mapping[str, Callable[..., Any]] = field(default_factory=Functions)
    # reducers the API's aggregate may fold groups with, besides the built-in ones: a
    # name and a function of a group's values (a list of floats) to a number or None
    reducers: Mapping[str, Callable[[list[float]], float | int | None]] = field(
        default_factory=dict)
    # schedules the node creates, or brings in line, when it starts (workers.schedules.
    # Schedule): those a pack's config declares, such as the backups' cron per job
    schedules: Sequence[Schedule] = ()
    # the schedules named with this prefix (or these) are the app's: those it no longer
    # declares are deleted when a node starts (a job gone from a pack's config); "": none
    schedule_prefix: str | tuple[str, ...] = ""
    # told when a work ends for good on an error (engine.worklogs.ErrorReport): where an
    # error tracker such as sentry-sdk plugs in (see engine.Runtime's on_error)
    on_error: Callable[[Any], Any] | None = None
    # what the app adds to the GraphQL API: graphql_api.extensions.ApiPart values (its
    # queries, mutations and HTTP routes) or ApiRef names of them (a pack's); a worker
    # node never looks at them
    api: Sequence[Any] = ()

    @classmethod
    def combine(cls, apps: Sequence[WorkerApp]) -> WorkerApp:
        """One app of several (``--app a:app,b:app``: the demo beside two packs); a
        saga, function, limit or reducer two of them name is refused, naming it."""
        if len(apps) == 1:
            return apps[0]
        sagas: dict[str, Saga] = {}
        for app in apps:
            for saga in app.sagas:
                if saga.name in sagas and sagas[saga.name] is not saga:
                    raise ValueError(f"two apps give saga {saga.name!r}")
                sagas[saga.name] = saga
        functions = Functions()
        for app in apps:
            for name, fn in app.functions.items():
                functions.add(name, fn)

        def merged(what: str) -> dict[str, Any]:
            found: dict[str, Any] = {}
            for app in apps:
                for key, value in getattr(app, what).items():
                    if key in found and found[key] != value:
                        raise ValueError(f"two apps give {what} {key!r} differently")
                    found[key] = value
            return found

        errors = [app.on_error for app in apps if app.on_error is not None]

        def on_error(report: Any) -> None:
            for told in errors:
                told(report)

        prefixes = tuple(p for app in apps for p in ((app.schedule_prefix,) if isinstance(
            app.schedule_prefix, str) else app.schedule_prefix) if p)
        return cls(sagas=list(sagas.values()),
                   services=[s for app in apps for s in app.services],
                   health_checks=[h for app in apps for h in app.health_checks],
                   rate_limits=merged("rate_limits"), lock_limits=merged("lock_limits"),
                   saga_limits=merged("saga_limits"), functions=functions,
                   reducers=merged("reducers"),
                   schedules=[s for app in apps for s in app.schedules],
                   schedule_prefix=prefixes, on_error=on_error if errors else None,
                   api=[part for app in apps for part in app.api])

    def __post_init__(self) -> None:
        if not isinstance(self.functions, Functions):
            object.__setattr__(self, "functions", Functions(self.functions))
        object.__setattr__(self, "reducers", check_reducers(self.reducers))

    def node(self, store: SqlStore, workers: Iterable[WorkerSpec], **options: Any
             ) -> WorkerNode:
        return WorkerNode(store, self.sagas, workers, services=self.services,
                          health_checks=self.health_checks, rate_limits=self.rate_limits,
                          lock_limits=self.lock_limits, saga_limits=self.saga_limits,
                          functions=self.functions, declared_schedules=self.schedules,
                          schedule_prefix=self.schedule_prefix, on_error=self.on_error,
                          **options)


@dataclass(eq=False)
class _Worker:
    spec: WorkerSpec
    worker_id: str
    concurrency: int
    status: str = "active"  # active, draining, removed
    runtime: Runtime | None = None
    wake: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    drained: anyio.Event = field(default_factory=anyio.Event)  # its works were handed on
    ended: anyio.Event = field(default_factory=anyio.Event)


class WorkerNode:
    """Runs named workers against one store until drained; see the module docstring."""

    def __init__(self, store: SqlStore, sagas: Sequence[Saga], workers: Iterable[WorkerSpec],
                 *, node_id: str | None = None, lease_ttl: float = 10.0,
                 poll_interval: float | None = None, drain_deadline: float = 30.0,
                 services: Iterable[Service] = (), schedules: bool = True,
                 health_checks: Iterable[HealthCheck] = (), health_interval: float = 2.0,
                 rate_limits: Mapping[str, RateLimit] | None = None,
                 lock_limits: Mapping[str, int] | None = None, lock_ttl: float = 30.0,
                 saga_limits: Mapping[str, int] | None = None,
                 park_after: float | None = 60.0,
                 functions: Mapping[str, Callable[..., Any]] | None = None,
                 declared_schedules: Sequence[Schedule] = (),
                 schedule_prefix: str | tuple[str, ...] = "",
                 on_error: Callable[[Any], Any] | None = None,
                 secrets: Secrets | None = None) -> None:
        self.on_error = on_error  # given to each worker's runtime
        self.secrets = secrets  # opens the secrets of stages' inputs (engine.secrets)
        if not lease_ttl > 0:
            raise ValueError(f"lease_ttl must be a positive number of seconds, got {lease_ttl!r}")
        if park_after is not None and not park_after >= 0:
            raise ValueError(f"park_after must be >= 0 seconds or None, got {park_after!r}")
        # a work that sleeps (a timer, a retry's backoff) this long or longer is parked:
        # handed back to the store until it is due, taking no slot meanwhile
        self.park_after = park_after
        if not drain_deadline >= 0:
            raise ValueError(f"drain_deadline must be >= 0 seconds, got {drain_deadline!r}")
        self.store = store
        self.node_id = node_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # the sagas given as data in the store, built with these functions, and which
        # sagas are disabled: loaded at start, followed while the node runs
        self.follower = SagaFollower(store, code_sagas=list(sagas),
                                     functions=Functions(functions or {}),
                                     owner=f"node {self.node_id}",
                                     on_change=self._sagas_changed)
        self.lease_ttl = lease_ttl
        self.drain_deadline = drain_deadline
        self.services = list(services)
        self.schedules = schedules  # this node fires the schedules' ticks too
        self.declared_schedules = list(declared_schedules)  # ensured at start
        self.schedule_prefix = schedule_prefix
        # works of a saga leased at once, at most
        self.saga_limits = leases.check_saga_limits(saga_limits or {})
        for saga in self.saga_limits:
            if saga not in {s.name for s in self.sagas}:
                raise ValueError(f"saga_limits names saga {saga!r}, which is not registered")
        checks = list(health_checks)
        self.health = (Health(store, checks, node=self.node_id, interval=health_interval)
                       if checks else None)
        self.gate = NodeGate(store, holder=self.node_id, health=self.health,
                             rate_limits=rate_limits, lock_limits=lock_limits,
                             lock_ttl=lock_ttl)
        # SQLite nodes poll; on PostgreSQL NOTIFY wakes them and the poll only finds
        # leases that expired without a word (a node died)
        pg = store.dialect == "postgresql"
        self.poll_interval = poll_interval or (lease_ttl / 2 if pg else min(0.2, lease_ttl / 4))
        known = {s.name for s in self.sagas}
        # what this node runs: published in the store, and the works its claims take
        self.catalog: dict[str, dict[str, Any]] = {}
        self._runs: dict[str, leases.Runs] = {}
        self._describe()
        self._held_back_at = -HOLD_BACK_EVERY  # when foreign works were last marked
        self._logged: set[tuple[str, str | None]] = set()  # (saga, definition) left, logged
        self._hard_stop = False
        self._withdrawn = False
        self._workers: dict[str, _Worker] = {}
        self._initial = list(workers)
        for spec in self._initial:
            unknown = set(spec.sagas or ()) - known
            if unknown:
                raise ValueError(f"worker {spec.name!r} serves sagas that are not registered: "
                                 f"{', '.join(sorted(unknown))}")
        names = [s.name for s in self._initial]
        if len(set(names)) != len(names):
            raise ValueError(f"two workers have the same name: {names}")
        self._tg: anyio.abc.TaskGroup | None = None
        self._stop = anyio.Event()
        self.claimed = 0  # works claimed since start (a lease taken over counts)
        # the commands sent to this node (engine.store.inbox.send_to_node) taken so far
        self._node_applied: int | None = None
        self._node_lock = anyio.Lock()

    @property
    def sagas(self) -> list[Saga]:
        """The sagas this node runs: those of its app, then those given as data in the
        store that it loaded (see :mod:`workers.sagas`)."""
        return self.follower.sagas

    def _describe(self) -> None:
        """The catalog and the definitions the claims take, of the sagas run now."""
        registered = {s.name: s for s in self.sagas}
        self.catalog = {s.name: describe(compile_saga(s, registered)) for s in self.sagas}
        self._runs = {name: leases.Runs(definition=found["definition"],
                                        version=found["version"],
                                        continues=tuple(found["continues"]))
                      for name, found in self.catalog.items()}

    async def _sagas_changed(self) -> None:
        """The store's sagas changed what this node runs: publish the catalog again and
        let the idle workers claim (the works of a new saga, or of one enabled again)."""
        self._describe()
        if self._tg is not None and not self._withdrawn:
            try:
                with anyio.CancelScope(shield=True):  # see _schedule
                    await published_catalog.publish(
                        self.store, node=self.node_id,
                        descriptions=list(self.catalog.values()), ttl=self.lease_ttl)
            except Exception:  # the store is away: the heartbeat publishes it again
                _LOG.exception("node %s could not publish its catalog", self.node_id)
        self._kick()

    # ------------------------------------------------------------ running

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Run until :meth:`drain` or :meth:`stop`; ``task_status.started()`` once every
        worker is registered and the node's catalog is published."""
        try:
            await self._run(task_status)
        finally:
            if not self._hard_stop:  # stop() is a crash: the catalog expires by itself
                await self._withdraw()

    async def _withdraw(self) -> None:
        self._withdrawn = True  # a heartbeat from now on publishes nothing again
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await published_catalog.withdraw(self.store, node=self.node_id)
            except Exception:  # the store is away: the catalog expires by itself
                _LOG.exception("node %s could not withdraw its catalog", self.node_id)

    async def _run(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        await self.follower.refresh()  # the sagas given as data, before anything runs
        for schedule in self.declared_schedules:
            await ensure_schedule(self.store, schedule)
        prefixes = (self.schedule_prefix,) if isinstance(self.schedule_prefix, str) \
            else self.schedule_prefix
        for prefix in filter(None, prefixes):
            await prune_schedules(self.store, prefix,
                                  {s.name for s in self.declared_schedules})
        self._describe()
        await published_catalog.publish(self.store, node=self.node_id,
                                        descriptions=list(self.catalog.values()),
                                        ttl=self.lease_ttl)
        async with anyio.create_task_group() as tg:
            self._tg = tg
            if self.health is not None:
                await self.health.check_all()  # works wait for what is down from the start
                tg.start_soon(self._check_health, self.health)
            for spec in self._initial:
                await self._start_worker(spec)
            tg.start_soon(self._heartbeat)
            tg.start_soon(self.follower.follow, self.poll_interval)
            if self.schedules:
                tg.start_soon(self._schedule)
            # commands sent to a node id before it started are not its own
            last = await inbox.pending(self.store, inbox.NODE_PREFIX + self.node_id)
            self._node_applied = last[-1].number if last else 0
            unlisten = None
            if self.store.dialect == "postgresql":
                await tg.start(self._listen)
            else:
                tg.start_soon(self._watch_commands)
                # a work this process's store made free to claim wakes the workers at
                # once (another process's is found at the next poll)
                unlisten = self.store.add_commit_listener(self._committed)
            try:
                task_status.started()
                await self._stop.wait()
                for worker in list(self._workers.values()):
                    await worker.ended.wait()
            finally:
                if unlisten is not None:
                    unlisten()
            tg.cancel_scope.cancel()
        self._tg = None

    def _committed(self, committed: Any) -> None:
        if committed is None or committed.made_claimable():
            self._kick()

    async def drain(self, deadline: float | None = None) -> None:
        """Drain every worker (see the module docstring), withdraw the node's catalog,
        then stop the node."""
        async with anyio.create_task_group() as tg:
            for worker in list(self._workers.values()):
                tg.start_soon(self._drain_one, worker, deadline)
        await self._withdraw()
        self._stop.set()

    @property
    def running(self) -> bool:
        """The node runs and is not stopping (draining, or stopped)."""
        return self._tg is not None and not self._stop.is_set()

    async def stopped(self) -> None:
        """Wait until the node was drained or stopped."""
        await self._stop.wait()

    def stop(self) -> None:
        """Stop at once, as a crash would (leases and the catalog expire; for tests and
        hard exits)."""
        self._hard_stop = True
        for worker in self._workers.values():
            worker.scope.cancel()
        self._stop.set()

    # ------------------------------------------------------------ changing workers

    async def add_worker(self, spec: WorkerSpec) -> str:
        if spec.name in self._workers and self._workers[spec.name].status != "removed":
            raise ValueError(f"node {self.node_id} has a worker {spec.name!r} already")
        unknown = set(spec.sagas or ()) - {s.name for s in self.sagas}
        if unknown:
            raise ValueError(f"worker {spec.name!r} serves sagas that are not registered: "
                             f"{', '.join(sorted(unknown))}")
        return (await self._start_worker(spec)).worker_id

    async def set_concurrency(self, name: str, concurrency: int) -> None:
        _check_concurrency(name, concurrency)
        worker = self._worker(name)
        worker.concurrency = concurrency
        await self._record(worker, "worker.updated", {"concurrency": concurrency})
        worker.wake.set()

    async def drain_worker(self, name: str, deadline: float | None = None) -> None:
        await self._drain_one(self._worker(name), deadline)

    async def remove_worker(self, name: str) -> None:
        """Remove a worker hard: its works stop now and are released to other workers."""
        worker = self._worker(name)
        worker.status = "removed"
        worker.scope.cancel()
        await worker.ended.wait()

    def workers(self) -> dict[str, dict[str, Any]]:
        return {name: {"worker_id": w.worker_id, "status": w.status,
                       "concurrency": w.concurrency,
                       "running": w.runtime.running if w.runtime else 0}
                for name, w in self._workers.items()}

    def _worker(self, name: str) -> _Worker:
        worker = self._workers.get(name)
        if worker is None or worker.status == "removed":
            raise KeyError(f"node {self.node_id} has no worker {name!r}")
        return worker

    # ------------------------------------------------------------ internals

    async def _start_worker(self, spec: WorkerSpec) -> _Worker:
        assert self._tg is not None, "the node is not running"
        worker = _Worker(spec=spec, worker_id=f"{self.node_id}/{spec.name}",
                         concurrency=spec.concurrency)
        self._workers[spec.name] = worker
        await self._record(worker, "worker.registered", {
            "concurrency": spec.concurrency, "sagas": list(spec.sagas) if spec.sagas else None})
        self._tg.start_soon(self._run_worker, worker)
        return worker

    def _row(self, worker: _Worker) -> dict[str, Any]:
        spec = worker.spec
        return {"node": self.node_id, "name": spec.name, "concurrency": worker.concurrency,
                "sagas": None if spec.sagas is None else ",".join(spec.sagas),
                "host": socket.gethostname(), "pid": os.getpid(),
                "running": worker.runtime.running if worker.runtime else 0}

    async def _record(self, worker: _Worker, kind: str, payload: dict[str, Any]) -> None:
        await registry.record(self.store, worker.worker_id, kind, payload, self._row(worker))

    def _driver_ended(self, worker: _Worker, work_id: str, ended: bool,
                      resume_at: float | None, applied: int) -> None:
        if self._tg is not None and not ended and (
                worker.status == "active" or resume_at is not None):
            # parked until resume_at (UNTIL_WOKEN: a command wakes it), or stopped without
            # ending (the store refused an append, the lease was lost): hand the lease
            # back if it is still ours, so the work does not wait for its expiry
            self._tg.start_soon(self._hand_back, work_id, resume_at, applied)
        self._kick()

    async def _hand_back(self, work_id: str, resume_at: float | None = None,
                         applied: int | None = None) -> None:
        try:
            with anyio.CancelScope(shield=True):
                await leases.release(self.store, owner=self.node_id, work_ids=[work_id],
                                     start_at=resume_at, applied=applied)
        except Exception:  # the lease expires by itself
            _LOG.exception("node %s could not hand back work %s", self.node_id, work_id)

    def _kick(self) -> None:
        for worker in self._workers.values():
            worker.wake.set()

    async def _run_worker(self, worker: _Worker) -> None:
        lease = Lease(owner=self.node_id, worker=worker.worker_id, ttl=self.lease_ttl,
                      park_after=self.park_after)
        try:
            with worker.scope:
                async with Runtime(self.sagas, store=self.store, worker=worker.worker_id,
                                   lease=lease, services=self.services,
                                   gate=self.gate, on_error=self.on_error,
                                   secrets=self.secrets) as runtime:
                    self.follower.attach(runtime)
                    worker.runtime = runtime
                    metrics.WORKER_SLOTS.labels(worker.worker_id).set_function(
                        lambda: worker.concurrency)
                    metrics.WORKER_SLOTS_USED.labels(worker.worker_id).set_function(
                        lambda: runtime.running)
                    runtime.on_driver_end = lambda work_id, ended, resume_at, applied: \
                        self._driver_ended(worker, work_id, ended, resume_at, applied)
                    try:
                        await self._claim_loop(worker, runtime)
                    finally:
                        self.follower.detach(runtime)
        finally:
            with anyio.CancelScope(shield=True):
                # what this worker still held (or handed on when draining) is free now
                try:
                    released = await leases.release(self.store, owner=self.node_id,
                                                    worker=worker.worker_id)
                    worker.runtime = None
                    await self._record(worker, "worker.removed", {"released": released})
                except Exception:  # the store is gone: the leases expire by themselves
                    _LOG.exception("worker %s could not release its leases", worker.worker_id)
                worker.status = "removed"
                worker.runtime = None
                for gauge in (metrics.WORKER_SLOTS, metrics.WORKER_SLOTS_USED):
                    with contextlib.suppress(KeyError):  # never started
                        gauge.remove(worker.worker_id)
                worker.ended.set()

    async def _claim_loop(self, worker: _Worker, runtime: Runtime) -> None:
        timed_out = True
        while worker.status == "active":
            # never a work of a saga this node does not run (another app on the store, a
            # newer version rolling out, a saga given as data deleted or not built here):
            # it would stop the worker
            names = tuple(n for n in worker.spec.sagas if n in self.catalog) \
                if worker.spec.sagas else tuple(self.catalog)
            worker.wake = anyio.Event()  # a wake-up from now on is not missed
            free = worker.concurrency - runtime.running
            # claims come in batches (each one is a query): when a few slots are free
            # and works are still running, more slots free up soon
            batch = max(1, worker.concurrency // 8)
            short = False  # the claim found fewer works than slots: a delayed one may be due
            if free > 0 and (free >= batch or timed_out or not runtime.running):
                try:
                    got = await self._claim(worker, runtime, free, names)
                except Exception:  # the database is away: the works wait, the node stays
                    _LOG.exception("worker %s could not claim works", worker.worker_id)
                    got = []
                if len(got) == free and worker.status == "active":
                    timed_out = False
                    continue  # there may be more
                short = True
            idle = await self._idle_for(names) if short else self.poll_interval
            with anyio.move_on_after(idle) as waited:
                await worker.wake.wait()
            timed_out = waited.cancelled_caught
        if worker.status == "draining":
            await worker.drained.wait()  # the runtime stays up while its works stop

    async def _idle_for(self, names: Sequence[str]) -> float:
        """How long an idle worker waits for a wake-up: the poll interval, or until the
        next delayed work is due if that comes sooner (nothing wakes a node for it)."""
        try:
            with anyio.CancelScope(shield=True):  # a stop never strands its connection
                due = await leases.next_due(self.store, names)
        except Exception:  # the database is away: poll as usual
            _LOG.exception("could not read when the next delayed work is due")
            return self.poll_interval
        if due is None:
            return self.poll_interval
        # a hair past the start time: a claim takes a delayed work only once it is due
        return max(0.0, min(self.poll_interval, due - time.time() + 0.005))

    async def _claim(self, worker: _Worker, runtime: Runtime, free: int,
                     names: Sequence[str]) -> list[leases.Claimed]:
        got = await leases.claim(self.store, owner=self.node_id, worker=worker.worker_id,
                                 limit=free, ttl=self.lease_ttl, sagas=names,
                                 saga_limits=self.saga_limits, definitions=self._runs)
        self.claimed += len(got)
        broken: dict[str, Exception] = {}
        adopted = await runtime.adopt_many([c.work_id for c in got],
                                           mail={c.work_id: c.mail for c in got},
                                           tokens={c.work_id: c.token for c in got},
                                           broken=broken)
        for claimed, ok in zip(got, adopted, strict=True):
            state = runtime.driven_state(claimed.work_id) if ok else None
            if state is not None:
                metrics.observe_claim(state.saga, state, taken_over=claimed.taken_over)
        # a work that cannot be loaded (None) keeps its row: its lease expires, it is
        # logged again by whoever claims it next, and it stays visible as unfinished
        ended = [c.work_id for c, ok in zip(got, adopted, strict=True) if ok is False]
        if ended:  # they ended elsewhere: their rows must not be claimed again
            await leases.drop(self.store, owner=self.node_id, work_ids=ended)
        foreign = [e for e in broken.values() if isinstance(e, DefinitionMismatchError)]
        if foreign:  # their rows did not say which definition: they do now
            await self._leave(foreign)
        if len(got) < free:
            await self._hold_back(names)
        return got

    async def _leave(self, refused: Sequence[DefinitionMismatchError]) -> None:
        """Hand back works this node would not adopt (started on a definition it does
        not continue), marked with the reason, for a node that runs their definition."""
        by_saga: dict[str, list[tuple[str, str, int | None]]] = {}
        for error in refused:
            by_saga.setdefault(error.saga, []).append(
                (error.work_id, error.definition, error.version))
        for saga, works in by_saga.items():
            runs = self._runs.get(saga)
            if runs is None:  # no longer run here (deleted meanwhile): its lease expires
                continue
            self._log_left(await leases.leave(self.store, owner=self.node_id, saga=saga,
                                              runs=runs, works=works))

    async def _hold_back(self, names: Sequence[str]) -> None:
        """Now and then, when idle: mark the works of ``names`` started on a definition
        this node does not continue as waiting, with the reason."""
        now = time.monotonic()
        if now - self._held_back_at < HOLD_BACK_EVERY:
            return
        self._held_back_at = now
        try:
            with anyio.CancelScope(shield=True):  # see _schedule
                self._log_left(await leases.hold_back_foreign(
                    self.store, owner=self.node_id, definitions=self._runs, sagas=names))
        except Exception:  # the store is away: the next idle claim marks them
            _LOG.exception("node %s could not mark the works it leaves", self.node_id)

    def _log_left(self, left: Sequence[leases.HeldBack]) -> None:
        """Log once per saga and definition why this node leaves works."""
        for held in left:
            if (held.saga, held.definition) not in self._logged:
                if len(self._logged) > 10_000:
                    self._logged.clear()
                self._logged.add((held.saga, held.definition))
                _LOG.warning("node %s leaves work %s (and any other of its definition): %s",
                             self.node_id, held.work_id, held.reason)

    async def _drain_one(self, worker: _Worker, deadline: float | None) -> None:
        if worker.status != "active":
            await worker.ended.wait()
            return
        try:
            await self._record(worker, "worker.draining", {})
        except Exception:  # the store is away: drain all the same
            _LOG.exception("worker %s could not record that it drains", worker.worker_id)
        worker.status = "draining"
        worker.wake.set()
        runtime = worker.runtime
        if runtime is not None:
            limit = self.drain_deadline if deadline is None else deadline
            with anyio.move_on_after(limit):
                # again until none is left: a claim under way may still adopt works
                while ids := runtime.driven():
                    async with anyio.create_task_group() as tg:
                        for work_id in ids:
                            tg.start_soon(runtime.release, work_id)
        worker.drained.set()
        worker.scope.cancel()  # what did not stop in time is cut off
        await worker.ended.wait()

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(self.lease_ttl / 3)
            # the works driven now: one claimed after this look is not checked this round
            driven = {name: set(w.runtime.driven()) for name, w in self._workers.items()
                      if w.runtime is not None and w.status != "removed"}
            try:
                with anyio.CancelScope(shield=True):  # see _schedule
                    held = await leases.renew_mail(
                        self.store, owner=self.node_id, ttl=self.lease_ttl,
                        work_ids=[i for ids in driven.values() for i in ids])
                self.mail(held)  # a wake-up that was missed is found here
            except Exception:
                _LOG.exception("node %s could not renew its leases", self.node_id)
                continue
            await self._renew_catalog()
            for name, ids in driven.items():
                worker = self._workers[name]
                runtime = worker.runtime
                if runtime is None or worker.status == "removed":  # removed meanwhile
                    continue
                for work_id in ids - held.keys():
                    if work_id in runtime.driven():  # still ours to drive, not our lease
                        _LOG.warning("worker %s lost its lease on work %s",
                                     worker.worker_id, work_id)
                        assert self._tg is not None
                        self._tg.start_soon(runtime.release, work_id)
                try:
                    with anyio.CancelScope(shield=True):
                        await self._record(worker, "worker.heartbeat",
                                           {"running": runtime.running, "at": time.time()})
                except Exception:  # the store is away: the next beat records again
                    _LOG.exception("worker %s could not record its heartbeat",
                                   worker.worker_id)

    async def _renew_catalog(self) -> None:
        """Keep this node's catalog live; publish it again if it went (pruned, or the
        store was replaced)."""
        try:
            with anyio.CancelScope(shield=True):  # see _schedule
                if not await published_catalog.beat(self.store, node=self.node_id,
                                                    ttl=self.lease_ttl) and not self._withdrawn:
                    await published_catalog.publish(
                        self.store, node=self.node_id,
                        descriptions=list(self.catalog.values()), ttl=self.lease_ttl)
        except Exception:  # the store is away: the next beat tries again
            _LOG.exception("node %s could not renew its catalog", self.node_id)

    def driven_state(self, work_id: str) -> WorkState | None:
        """The live state of ``work_id`` if a worker of this node drives it now."""
        for worker in self._workers.values():
            if worker.runtime is not None:
                found = worker.runtime.driven_state(work_id)
                if found is not None:
                    return found
        return None

    def mail(self, sent: Mapping[str, int] | Iterable[str],
             commands: Sequence[inbox.SentCommand] = ()) -> None:
        """Commands came to the inbox of these works: the worker that drives one takes
        them at its next step boundary (``commands``: some of them, as sent, so it need
        not read them back); a parked one was made claimable by the send. A command to
        this node itself is taken at once."""
        if inbox.NODE_PREFIX + self.node_id in sent and self._tg is not None:
            self._tg.start_soon(self._take_node_mail)
        for worker in self._workers.values():
            if worker.runtime is not None:
                worker.runtime.mail(sent, commands)
        self._kick()

    def _notified(self, payload: str) -> None:
        found = inbox.notified(payload)
        if isinstance(found, str):
            self.mail([found])
        else:
            self.mail([found.work_id], [found])

    async def _take_node_mail(self) -> None:
        """Carry out the commands sent to this node, in order, and record each outcome."""
        async with self._node_lock:
            if self._node_applied is None:
                return
            target = inbox.NODE_PREFIX + self.node_id
            try:
                found = await inbox.pending(self.store, target, self._node_applied)
            except Exception:  # the store is away: the next wake-up reads again
                _LOG.exception("node %s could not read its commands", self.node_id)
                return
            for sent in found:
                command = sent.command
                payload: dict[str, Any] = {"number": sent.number, "kind": command.kind,
                                           "by": command.by, "outcome": "applied"}
                try:
                    result = await self._node_command(command.kind, dict(command.args))
                    if result is not None:
                        payload["worker_id"] = result
                except (ValueError, KeyError, TypeError) as exc:
                    payload.update(outcome="rejected", error={
                        "type": type(exc).__name__,
                        "message": str(exc.args[0]) if isinstance(exc, KeyError) and
                        exc.args else str(exc)})
                self._node_applied = sent.number
                try:
                    await registry.record_node_command(self.store, self.node_id, payload)
                except Exception:
                    _LOG.exception("node %s could not record the outcome of command %d",
                                   self.node_id, sent.number)

    async def _node_command(self, kind: str, args: dict[str, Any]) -> str | None:
        name = args.get("name")
        if not isinstance(name, str):
            raise ValueError(f"a worker's name must be a string, got {name!r}")
        if kind == "add_worker":
            sagas = args.get("sagas")
            spec = WorkerSpec(name=name, concurrency=args.get("concurrency", 10),
                              sagas=tuple(sagas) if sagas else None)
            return await self.add_worker(spec)
        if kind == "set_concurrency":
            await self.set_concurrency(name, args.get("concurrency"))  # type: ignore[arg-type]
            return self._worker(name).worker_id
        worker = self._worker(name)  # a KeyError naming it when there is none
        assert self._tg is not None
        if kind == "remove_worker" and args.get("hard"):
            self._tg.start_soon(self.remove_worker, name)
        else:  # draining goes on after the command's outcome is recorded
            self._tg.start_soon(self.drain_worker, name)
        return worker.worker_id

    async def _watch_commands(self) -> None:
        """On SQLite: poll the inbox for commands sent by other processes (PostgreSQL
        NOTIFYs them)."""
        position: int | None = None
        while True:
            try:
                with anyio.CancelScope(shield=True):  # see _schedule
                    if position is None:
                        position = await inbox.last_position(self.store)
                    sent = await inbox.since(self.store, position)
            except Exception:  # the store is busy or gone: the next round tries again
                _LOG.exception("node %s could not read the command inbox", self.node_id)
                sent = []
            if sent:
                position = sent[-1][0]
                self.mail([work_id for _, work_id in sent])
            await anyio.sleep(self.poll_interval)

    async def _check_health(self, health: Health) -> None:
        while True:
            await anyio.sleep(health.interval)
            try:
                await health.check_all()
            except Exception:  # the store is busy or gone: the next round tries again
                _LOG.exception("node %s could not record its health checks", self.node_id)

    async def _schedule(self) -> None:
        from .schedules import Scheduler

        async with Runtime(self.sagas, store=self.store, worker=self.node_id,
                           secrets=self.secrets) as runtime:
            self.follower.attach(runtime)  # schedules of sagas given as data fire too
            scheduler = Scheduler(runtime)
            while True:
                try:
                    # shielded: a shutdown must not cut a query off mid-way (the connection
                    # would not go back to the pool, and its thread would outlive us)
                    with anyio.CancelScope(shield=True):
                        wait = await scheduler.run_due()
                except Exception:  # the store is busy or gone: try again later
                    _LOG.exception("node %s could not fire schedules", self.node_id)
                    wait = 1.0
                await anyio.sleep(wait)

    async def _listen(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """LISTEN for new works, commands and saga changes; after a reconnect (the server
        restarted), look for works and sagas at once in case a NOTIFY was missed."""
        from engine.store.listen import listen

        def connected(first: bool) -> None:
            if not first:
                self._kick()
                self.follower.wake()  # a change may have been announced meanwhile

        await listen(self.store, {
            leases.CHANNEL: lambda _: self._kick(),
            inbox.CHANNEL: self._notified,
            stored_sagas.CHANNEL: lambda _: self.follower.wake(),
        }, who=f"node {self.node_id}", on_connect=connected, task_status=task_status)
