"""The event store on SQL: a SQLite file (aiosqlite, WAL) or PostgreSQL (asyncpg).

Appends are group-committed: a single writer task takes every append waiting at
that moment and commits them in one transaction, in one hand-off to the database
driver (``run_sync``), so throughput is not one fsync per event. Each caller
awaits the commit of its own append before it goes on, so no work sees its next
step before its previous event is durable.

Optimistic concurrency: events are keyed by ``(work_id, seq)``; an append whose
seq is taken fails with :class:`ConflictError` and writes nothing.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.abc
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .. import metrics
from ..errors import ConflictError, EngineError, LeaseLostError, StoreError
from ..events import RecordedEvent
from ..ids import check_work_id
from ..lease import Lease
from ..state import TERMINAL, WorkState
from .batch import (
    APPEND_LOCK,
    EVENTS_CHANNEL,
    WORKS_CHANNEL,
    Committed,
    _Append,
    _commit_or_roll_back,
    _Flush,
    _postgres_batch,
    _upsert,
    _write_sqlite,
)
from .codec import (
    STATE_VERSION,
    decode_event,
    decode_state,
    dumps,
    encode_state,
)
from .projection import stage_row, work_row
from .schema import events, leases, snapshots, stage_runs, works

__all__ = ["APPEND_LOCK", "EVENTS_CHANNEL", "HELD_BACK_STATUSES", "WORKS_CHANNEL",
           "ConflictError", "LeaseLostError", "SqlStore", "StoreConfig", "StoreError"]

if TYPE_CHECKING:
    from ..commands import Command
    from .inbox import SentCommand

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreConfig:
    """How the store talks to its database."""

    url: str = "sqlite+aiosqlite:///stepsaga.sqlite"
    sqlite_synchronous: str = "FULL"  # durable commits: fsync at every commit
    busy_timeout_ms: int = 10_000
    snapshot_every: int = 200  # events between snapshots of a work's state
    max_batch: int = 256  # appends per group commit at most: smaller batches let the
    # event loop prepare the next one while the last one is being written
    metrics: bool = True  # time statements and group commits (engine.metrics); off, the
    # store measures nothing (benchmarks/durable.py --observability compares the two)


_GROUP_COMMIT_SECONDS = metrics.DB_SECONDS.labels("group_commit")
_APPEND_SECONDS = metrics.APPEND_SECONDS


def _time_statements(engine: sa.Engine) -> None:
    """Time every statement SQLAlchemy sends on ``engine`` (stepsaga_db_query_seconds;
    group commits, sent straight to the driver, are timed by the writer)."""
    children = {name: metrics.DB_SECONDS.labels(name)
                for name in ("select", "insert", "update", "delete", "other")}

    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        conn.info.setdefault("stepsaga_began", []).append(time.perf_counter())

    def after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        began = conn.info.get("stepsaga_began")
        if began:
            children[metrics.db_operation(statement)].observe(
                time.perf_counter() - began.pop())

    def failed(context: Any) -> None:  # no after_cursor_execute comes for it
        began = context.connection.info.get("stepsaga_began") \
            if context.connection is not None else None
        if began:
            began.pop()

    sa_event.listen(engine, "before_cursor_execute", before)
    sa_event.listen(engine, "after_cursor_execute", after)
    sa_event.listen(engine, "handle_error", failed)


_INLINE_BATCH = 4  # at most this many appends ...
_INLINE_COST = 0.0005  # ... on a SQLite disk whose small commits take under 0.5 ms on average


class SqlStore:
    """An event store on a SQLite file or a PostgreSQL database.

    Use :meth:`open`: it creates the schema when asked and runs the group-commit
    writer for as long as the store is open.
    """

    def __init__(self, engine: AsyncEngine, config: StoreConfig,
                 sync_engine: sa.Engine | None = None) -> None:
        self.engine = engine
        self.config = config
        self.dialect = engine.dialect.name
        # For reads: on PostgreSQL the same pool in autocommit, so a query is one round
        # trip, not three (SQLAlchemy wraps each checkout in BEGIN ... ROLLBACK; at READ
        # COMMITTED each statement had its own snapshot anyway). SQLite's driver opens no
        # transaction for a SELECT.
        self.reader: AsyncEngine = (engine.execution_options(isolation_level="AUTOCOMMIT")
                                    if self.dialect == "postgresql" else engine)
        # SQLite commits go through a synchronous engine in a worker thread: one thread
        # hand-off per group commit instead of one per statement (see NOTES.md)
        self._sync_engine = sync_engine
        self._writer_connection: Any = None
        # SQLite: this process's write transactions take turns here, so that one waits
        # for another of the same process by a lock handed over at once, not by SQLite's
        # busy handler, which sleeps up to 100 ms between its tries (other processes'
        # still meet that). Taken without waiting on the event loop, waiting in threads.
        self._write_turn = threading.Lock()
        # what a small SQLite commit took lately (seconds, moving average): see _write
        self._commit_cost = 0.0
        self.commits = 0  # group commits written: a measure for benchmarks and metrics
        self._queue: list[_Append] = []
        self._inputs: dict[str, tuple[Any, str]] = {}  # work id -> (input, its JSON)
        self._next = _Flush()  # the flush that takes the appends queued now
        self._wake = anyio.Event()
        self._closed = False
        self._commit_listeners: list[Callable[[Committed | None], None]] = []
        self._written: int | None = None  # the position of the last event written (SQLite)

    def add_commit_listener(self, listener: Callable[[Committed | None], None]
                            ) -> Callable[[], None]:
        """Call ``listener`` after each group commit of this process (the event feed
        reads at once) with what it wrote (a :class:`Committed`; None when that is not
        known: on PostgreSQL, or when a batch had to be written one by one); returns
        what removes it."""
        self._commit_listeners.append(listener)
        return lambda: self._commit_listeners.remove(listener)

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str | None = None, *, config: StoreConfig | None = None,
                   create: bool = True) -> AsyncIterator[SqlStore]:
        config = config or StoreConfig()
        if url is not None:
            config = StoreConfig(**{**_fields(config), "url": url})
        engine = _make_engine(config)
        sync_engine = _make_sync_engine(config) if engine.dialect.name == "sqlite" else None
        store = cls(engine, config, sync_engine)
        if config.metrics:
            _time_statements(engine.sync_engine)
            if sync_engine is not None:
                _time_statements(sync_engine)
        try:
            if create:
                await store.create_schema()
            try:
                async with anyio.create_task_group() as tg:
                    await tg.start(store._writer)
                    try:
                        yield store
                    finally:
                        store._closed = True
                        store._wake.set()
            except BaseExceptionGroup as group:
                # an error of the 'async with' body comes out as itself, not in a group
                if len(group.exceptions) == 1:
                    raise group.exceptions[0] from None
                raise
        finally:
            await engine.dispose()
            if store._writer_connection is not None:
                store._writer_connection.close()
            if sync_engine is not None:
                sync_engine.dispose()

    async def create_schema(self) -> None:
        """Apply the schema migrations the database lacks (alembic)."""
        from .migrate import migrate_engine  # alembic is loaded only when migrating

        await migrate_engine(self.engine)

    # ------------------------------------------------------------ for worker nodes

    async def write_sqlite(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` on a SQLite connection in one write transaction (BEGIN IMMEDIATE:
        the write lock first, waiting up to the busy timeout), in a worker thread."""
        engine = self._sync_engine
        if engine is None:
            raise EngineError("write_sqlite() is for a store on SQLite")

        def run() -> _T:
            raw = engine.raw_connection()
            try:
                dbapi: Any = raw.driver_connection
                with self._write_turn:
                    dbapi.execute("BEGIN IMMEDIATE")
                    return _commit_or_roll_back(dbapi, lambda: fn(dbapi))
            finally:
                raw.close()

        return await anyio.to_thread.run_sync(run)

    async def transaction(self, fn: Callable[[Connection], _T]) -> _T:
        """Run ``fn`` (SQLAlchemy Core, synchronous) in one write transaction: on SQLite
        in a thread with the write lock taken first (BEGIN IMMEDIATE), on PostgreSQL
        through the async engine. For short read-modify-write steps (locks, buckets)."""
        engine = self._sync_engine
        if engine is None:
            # shielded: a cancel landing mid-transaction could leave it open on the server,
            # holding its locks, while the connection goes back to the pool
            with anyio.CancelScope(shield=True):
                async with self.engine.begin() as conn:
                    result: _T = await conn.run_sync(fn)
            return result

        def run(wait: bool = True) -> tuple[bool, _T | None]:
            if not self._write_turn.acquire(blocking=wait):
                return False, None  # this process's writer has the lock
            try:
                return locked(wait)
            finally:
                self._write_turn.release()

        def locked(wait: bool) -> tuple[bool, _T | None]:
            with engine.connect() as conn:
                if not wait:
                    conn.exec_driver_sql("PRAGMA busy_timeout=0")
                try:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                except sa.exc.OperationalError:
                    if wait:
                        raise
                    return False, None  # SQLITE_BUSY: another writer has the lock
                finally:
                    if not wait:
                        conn.exec_driver_sql(
                            f"PRAGMA busy_timeout={int(self.config.busy_timeout_ms)}")
                try:
                    result = fn(conn)
                    conn.commit()
                except BaseException:
                    conn.rollback()
                    raise
                return True, result

        # like a small group commit (see _write_now): right here if the write lock is
        # free and small commits are fast, which saves the thread hand-off and SQLite's
        # busy-wait sleeps behind this process's own writer; else in a thread
        if self._commit_cost < _INLINE_COST:
            done, found = run(wait=False)
            if done:
                return found  # type: ignore[return-value]
        return (await anyio.to_thread.run_sync(run))[1]  # type: ignore[return-value]

    @asynccontextmanager
    async def postgres_connection(self) -> AsyncIterator[Any]:
        """A plain asyncpg connection from the pool (each statement its own transaction;
        callers that open a transaction on it shield it from cancellation)."""
        if self.dialect != "postgresql":
            raise EngineError("postgres_connection() is for a store on PostgreSQL")
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            yield raw.driver_connection

    # ------------------------------------------------------------ writing

    async def append(self, work_id: str, records: list[RecordedEvent],
                     state: WorkState | None = None, *, lease: Lease | None = None,
                     queue: bool = False, fenced: bool = True, token: int = 0) -> None:
        """Append ``records`` (consecutive seqs of one work) and update the projections
        from ``state``, the work's state after them; return once it is durable.

        With ``lease``, the appender runs the work under that lease: the work's first
        append takes it (in the same commit, so no other node can claim the new work in
        between), later ones are written only while it is still held, and an append
        that ends the work drops it. With ``queue``, the work's first append leaves it
        free for worker nodes to claim. ``token``: the claim of the lease the appender
        holds (a claim returns it): an append of an older claim by the same worker (a
        driver that stalled past its lease while the work was claimed again) is refused.
        ``fenced=False``: what trails a work's end
        (observers, the outcomes of commands), written whoever holds the lease row now.
        """
        if self._closed:
            raise EngineError("the store is closed")
        check_work_id(work_id)
        if not self._queue:
            self._next = _Flush()
        item = _Append(work_id, records, self._next)
        if state is not None and records:
            # rows are computed now, from this state: the writer may flush later
            cached = self._inputs.get(work_id)
            if cached is None or cached[0] is not state.input:
                cached = self._inputs[work_id] = (state.input, dumps(state.input))
            item.work_row = work_row(state, records[-1].event.path, cached[1])
            if state.status in TERMINAL:
                self._inputs.pop(work_id, None)
            stages = state.stages
            paths = {r.event.path for r in records} if len(records) > 1 else \
                (records[0].event.path,)
            item.stage_rows = [stage_row(work_id, stages[p], state.saga) for p in paths
                               if p and p in stages]
            every = self.config.snapshot_every
            first, last = records[0].seq, records[-1].seq
            if every and last // every > (first - 1) // every:
                item.snapshot = {"work_id": work_id, "seq": state.seq,
                                 "state": encode_state(state), "version": STATE_VERSION}
        if (lease is not None or queue) and records:
            ended = state is not None and state.status in TERMINAL
            if records[0].seq > 1:
                if lease is not None and fenced:  # written only while the lease is ours
                    item.fence = (lease.owner, lease.worker, token)
            elif not ended:
                if state is None:
                    raise ValueError("a work's first append with a lease needs its state")
                now = time.time()
                item.lease = {"work_id": work_id, "saga": state.saga,
                              "priority": state.priority, "owner": None, "worker": None,
                              "token": 0, "expires_at": state.start_at or 0.0,
                              "claimed_at": None, "waiting": None, "mail": 0,
                              "definition": state.definition,
                              "definition_version": state.definition_version}
                if lease is not None:
                    item.lease.update(owner=lease.owner, worker=lease.worker, token=1,
                                      expires_at=now + lease.ttl, claimed_at=now)
            if ended and lease is not None:
                item.release = lease.owner
                assert state is not None
                item.applied = state.commands_applied
        self._queue.append(item)
        if len(self._queue) >= self.config.max_batch:
            self._next = _Flush()  # the writer takes at most max_batch at once
        self._wake.set()
        await item.flush.done.wait()
        error = item.error
        if error is not None:
            if isinstance(error, EngineError):
                raise error
            raise StoreError(f"the store could not write the events of work {work_id}: "
                             f"{error!r:.300}", transient=transient(error)) from error

    async def _writer(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            while self._queue:
                batch = self._queue[: self.config.max_batch]
                del self._queue[: len(batch)]
                await self._commit(batch)
            if self._closed and not self._queue:
                return

    async def _write(self, batch: list[_Append]) -> None:
        with anyio.CancelScope(shield=True):
            if self._sync_engine is None:
                await self._write_postgres(batch)
            elif not (len(batch) <= _INLINE_BATCH and self._commit_cost < _INLINE_COST
                      and self._write_now(batch)):
                await anyio.to_thread.run_sync(self._write_sync, batch)
                if len(batch) <= _INLINE_BATCH:  # a slow disk may have become fast again
                    self._commit_cost *= 0.9
        self.commits += 1

    async def _write_postgres(self, batch: list[_Append]) -> None:
        # One statement, hence one round trip and its own transaction: the append lock,
        # the events and the projections' upserts as data-modifying CTEs over unnest()ed
        # arrays. Through SQLAlchemy a group commit took six round trips (BEGIN, lock,
        # three statements, COMMIT), which was most of a sequential saga's latency.
        sql, args = _postgres_batch(batch)
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            lost = await raw.driver_connection.fetchval(sql, *args)  # type: ignore[union-attr]
        if lost:
            ids = [item.work_id for item in batch if item.fence is not None]
            which = f"work {ids[0]}" if len(ids) == 1 else f"one of the works {ids[:5]}"
            raise LeaseLostError(f"the lease on {which} is not held by this worker any more; "
                                 "another worker runs it")

    def _write_now(self, batch: list[_Append]) -> bool:
        """Commit a few appends right here, on the event loop, if SQLite's write lock is
        free now; False (nothing written) if another connection holds it.

        The hand-off to a thread and back costs more than a small commit on a fast disk
        (a sequential saga: 2.6 ms -> 1.7 ms). The loop must never wait here, so the lock
        is taken without waiting, and a disk whose small commits average more than
        _INLINE_COST gets the thread.
        """
        if not self._write_turn.acquire(blocking=False):
            return False  # another write of this process is under way (in a thread)
        try:
            dbapi = self._dbapi()
            dbapi.execute("PRAGMA busy_timeout=0")
            try:
                dbapi.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # SQLITE_BUSY: another writer has the lock
                return False
            finally:
                dbapi.execute(f"PRAGMA busy_timeout={int(self.config.busy_timeout_ms)}")
            start = time.perf_counter()
            try:
                self._written = _commit_or_roll_back(dbapi,
                                                     lambda: _write_sqlite(dbapi, batch))
            finally:
                self._commit_cost = 0.8 * self._commit_cost + 0.2 * (
                    time.perf_counter() - start)
            return True
        finally:
            self._write_turn.release()

    def _dbapi(self) -> Any:
        assert self._sync_engine is not None
        if self._writer_connection is None:
            self._writer_connection = self._sync_engine.raw_connection()
        return self._writer_connection.driver_connection

    def _write_sync(self, batch: list[_Append]) -> None:
        # The writer keeps one DBAPI connection for the store's life: checking one out of
        # the pool and opening a SQLAlchemy transaction per group commit cost about as much
        # as the commit itself. Only the writer (one task, so one thread at a time) uses it.
        dbapi = self._dbapi()
        with self._write_turn:
            dbapi.execute("BEGIN IMMEDIATE")  # the write lock first: the lease check holds
            self._written = _commit_or_roll_back(dbapi, lambda: _write_sqlite(dbapi, batch))

    async def _commit(self, batch: list[_Append]) -> None:
        self._written = None
        committed = None
        measured = self.config.metrics
        began = time.perf_counter()
        try:
            await self._write(batch)
            if measured:
                _GROUP_COMMIT_SECONDS.observe(time.perf_counter() - began)
                metrics.GROUP_COMMIT_EVENTS.observe(sum(len(item.records) for item in batch))
            if self._written is not None:
                committed = Committed(self._written, batch)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = _append_error(batch[0], exc)
            else:
                # someone else took a seq (or the database aborted us to break a deadlock
                # with another writer): try the appends one by one, so only those fail
                for item in batch:
                    try:
                        await self._write([item])
                    except Exception as alone:
                        item.error = _append_error(item, alone)
        now = time.perf_counter()
        for flush in {id(item.flush): item.flush for item in batch}.values():
            flush.done.set()
            # the longest an append of it waited: one figure per group commit, not per
            # append (a histogram's observe is a measurable part of an append's cost)
            if measured:
                _APPEND_SECONDS.observe(now - flush.began)
        for listener in self._commit_listeners:
            listener(committed)

    # ------------------------------------------------------------ reading

    async def read(self, work_id: str, *, after: int = 0, until: int | None = None,
                   limit: int | None = None) -> list[RecordedEvent]:
        """The events of a work with ``after < seq <= until``, in order; at most
        ``limit`` of them (a page)."""
        check_work_id(work_id)
        query = sa.select(events).where(events.c.work_id == work_id, events.c.seq > after)
        if until is not None:
            query = query.where(events.c.seq <= until)
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise ValueError(f"limit must be a whole number >= 0, got {limit!r}")
            query = query.limit(limit)
        (rows,) = await self.rows(query.order_by(events.c.seq))
        return [decode_event(dict(row)) for row in rows]

    async def rows(self, *queries: Any) -> list[Sequence[Any]]:
        """The rows (mappings) of a few short reads, each query's in turn. On SQLite
        they run here on the event loop: a WAL reader never waits for a writer, and the
        async driver's thread hand-offs (several per query) cost more than such a read
        and kept steering waiting behind the loop's other tasks. Long scans (lists,
        aggregates) go through :attr:`reader` instead."""
        found: list[Sequence[Any]] = []
        if self._sync_engine is not None:
            with self._sync_engine.connect() as conn:
                for query in queries:
                    found.append(conn.execute(query).mappings().all())
        else:
            async with self.reader.connect() as conn:
                for query in queries:
                    found.append((await conn.execute(query)).mappings().all())
        return found

    async def read_all(self, *, after_position: int = 0,
                       limit: int = 10_000) -> list[RecordedEvent]:
        """Events of every work in global order."""
        query = (sa.select(events).where(events.c.position > after_position)
                 .order_by(events.c.position).limit(limit))
        async with self.reader.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [decode_event(dict(row)) for row in rows]

    async def load(self, work_id: str) -> tuple[WorkState | None, list[RecordedEvent]]:
        """The latest snapshot of a work (or None) and the events after it."""
        check_work_id(work_id)
        # a snapshot of an older state's shape is not used: replay from the start
        snapped = sa.select(snapshots).where(snapshots.c.work_id == work_id,
                                             snapshots.c.version == STATE_VERSION)
        after = sa.func.coalesce(snapped.with_only_columns(snapshots.c.seq)
                                 .scalar_subquery(), 0)
        snaps, rows = await self.rows(snapped, sa.select(events).where(
            events.c.work_id == work_id, events.c.seq > after).order_by(events.c.seq))
        stream = [decode_event(dict(r)) for r in rows]
        return (decode_state(snaps[0]["state"]) if snaps else None), stream

    async def load_many(self, work_ids: Sequence[str]
                        ) -> dict[str, tuple[WorkState | None, list[RecordedEvent]]]:
        """:meth:`load` for many works in two queries (a worker adopting claimed works)."""
        ids = [check_work_id(w) for w in dict.fromkeys(work_ids)]
        found: dict[str, tuple[WorkState | None, list[RecordedEvent]]] = {}
        if not ids:
            return found
        async with self.reader.connect() as conn:
            snaps = {row["work_id"]: row for row in (await conn.execute(
                sa.select(snapshots).where(snapshots.c.work_id.in_(ids)))).mappings()}
            after = {w: (r["seq"] if r["version"] == STATE_VERSION else 0)
                     for w, r in snaps.items()}
            if self.dialect == "postgresql":
                # one index lookup per work, whatever the planner's statistics say (a
                # table that grew fast since its last ANALYZE got a full scan for IN)
                rows = (await conn.execute(_PG_STREAMS, {"ids": ids})).mappings()
            else:
                rows = (await conn.execute(sa.select(events).where(events.c.work_id.in_(ids))
                                           .order_by(events.c.work_id, events.c.seq))
                        ).mappings()
            streams: dict[str, list[RecordedEvent]] = {w: [] for w in ids}
            for row in rows:
                if row["seq"] > after.get(row["work_id"], 0):
                    streams[row["work_id"]].append(decode_event(dict(row)))
        for work_id in ids:
            snap = snaps.get(work_id)
            state = (decode_state(snap["state"])
                     if snap is not None and snap["version"] == STATE_VERSION else None)
            found[work_id] = (state, streams[work_id])
        return found

    async def leased(self, work_ids: Sequence[str]) -> set[str]:
        """Which of ``work_ids`` belong to worker nodes (a row in ``leases``: queued, or
        claimed by a node)."""
        ids = list(work_ids)
        found: set[str] = set()
        async with self.reader.connect() as conn:
            for start in range(0, len(ids), 500):
                rows = await conn.execute(sa.select(leases.c.work_id).where(
                    leases.c.work_id.in_(ids[start:start + 500])))
                found.update(r[0] for r in rows)
        return found

    async def claim_works(self, *, owner: str, worker: str, ttl: float,
                          works: Sequence[tuple[str, str, int]], free: bool = False
                          ) -> dict[str, int]:
        """Lease these unfinished works to ``owner`` unless someone else holds them
        (see :func:`engine.store.leases.claim_works`); the ids claimed, each with the
        token of its claim."""
        from . import leases as lease_rows

        claimed = await lease_rows.claim_works(self, owner=owner, worker=worker, ttl=ttl,
                                               works=works, free=free)
        return {c.work_id: c.token for c in claimed}

    async def renew_leases(self, *, owner: str, ttl: float,
                           work_ids: Sequence[str]) -> dict[str, int]:
        """Push ``owner``'s leases on ``work_ids`` ahead; the ids still held, each with
        the number of the last command sent to it."""
        from . import leases as lease_rows

        return await lease_rows.renew_mail(self, owner=owner, ttl=ttl, work_ids=work_ids)

    async def send_command(self, work_id: str, command: Command, *,
                           request_id: str | None = None) -> SentCommand:
        """Put a steering command in the work's inbox (see :mod:`engine.store.inbox`)."""
        from . import inbox

        return await inbox.send(self, work_id, command, request_id=request_id)

    async def pending_commands(self, work_id: str, after: int = 0) -> list[SentCommand]:
        """The commands of ``work_id`` numbered above ``after``, in order."""
        from . import inbox

        return await inbox.pending(self, work_id, after)

    async def expire_leases(self, *, owner: str, work_ids: Sequence[str]) -> int:
        """Let ``owner``'s leases on ``work_ids`` expire now: anyone may take them over."""
        from . import leases as lease_rows

        return await lease_rows.expire(self, owner=owner, work_ids=work_ids)

    async def work(self, work_id: str) -> dict[str, Any] | None:
        """A work's projection row; a pending or running work that worker nodes hold back
        (its saga is at its concurrency limit, or no live node runs its definition) shows
        as ``waiting``, the reason under path ''."""
        check_work_id(work_id)
        async with self.reader.connect() as conn:
            row = (await conn.execute(_WORKS.where(
                works.c.work_id == work_id))).mappings().first()
        return _shown(row) if row is not None else None

    async def works(self, *, status: Sequence[str] | None = None, saga: str | None = None,
                    limit: int = 1000) -> list[dict[str, Any]]:
        """Projection rows as :meth:`work` shows them, oldest first."""
        query = _WORKS
        if status is not None:
            query = query.where(_STATUS.in_(list(status)))
        if saga is not None:
            query = query.where(works.c.saga == saga)
        query = query.order_by(works.c.created_at, works.c.work_id).limit(limit)
        async with self.reader.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_shown(r) for r in rows]

    async def stage_runs(self, work_id: str) -> list[dict[str, Any]]:
        query = sa.select(stage_runs).where(stage_runs.c.work_id == work_id).order_by(
            stage_runs.c.path)
        async with self.reader.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [dict(r) for r in rows]

    async def work_ids(self) -> list[str]:
        async with self.reader.connect() as conn:
            rows = await conn.execute(sa.select(events.c.work_id).distinct())
            return sorted(r[0] for r in rows)

    async def rebuild_projections(self) -> int:
        """Rebuild ``works`` and ``stage_runs`` from the events alone, in one transaction
        that holds the append lock, so no append interleaves; returns the works."""
        if self._sync_engine is not None:
            return await anyio.to_thread.run_sync(self._rebuild_sync)
        async with self.engine.begin() as conn:
            return await conn.run_sync(_rebuild)

    def _rebuild_sync(self) -> int:
        assert self._sync_engine is not None
        with self._sync_engine.begin() as conn:
            return _rebuild(conn)


def _rebuild(conn: Connection) -> int:
    from ..state import replay

    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({APPEND_LOCK})"))
    # on SQLite the first delete takes the write lock: no append slips in before the read
    conn.execute(sa.delete(stage_runs))
    conn.execute(sa.delete(works))
    rows = conn.execute(sa.select(events).order_by(events.c.work_id, events.c.seq)).mappings()
    count = 0
    stream: list[RecordedEvent] = []
    for row in rows:
        recorded = decode_event(dict(row))
        if stream and recorded.work_id != stream[0].work_id:
            _write_projection(conn, replay(stream), stream[-1].event.path)
            count += 1
            stream = []
        stream.append(recorded)
    if stream:
        _write_projection(conn, replay(stream), stream[-1].event.path)
        count += 1
    return count


def _fields(config: StoreConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in StoreConfig.__slots__}


def _sqlite_pragmas(engine: sa.Engine, config: StoreConfig) -> None:
    @sa_event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(config.busy_timeout_ms)}")
        # switching to WAL takes an exclusive lock, and SQLite may refuse it at once while
        # other processes open the same new file: switch only a file not in WAL mode yet
        cursor.execute("PRAGMA journal_mode")  # (the aiosqlite adapter's execute
        (mode,) = cursor.fetchone()  # returns no cursor: fetch from this one)
        if str(mode).lower() != "wal":
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={config.sqlite_synchronous}")
        cursor.close()


def _sqlite_file(config: StoreConfig) -> sa.URL:
    url = sa.make_url(config.url)
    if url.database in (None, "", ":memory:") or url.query.get("mode") == "memory":
        raise ValueError("the SQLite store needs a file: concurrent sessions on an in-memory "
                         f"database silently share one connection (got {config.url!r})")
    return url


def _make_engine(config: StoreConfig) -> AsyncEngine:
    from .urls import check_store_url  # a bad URL, driver or directory: a clear ValueError

    url = check_store_url(config.url)
    if url.get_backend_name() == "sqlite":
        _sqlite_file(config)
        engine = create_async_engine(url, connect_args={"timeout": config.busy_timeout_ms / 1000})
        _sqlite_pragmas(engine.sync_engine, config)
        return engine
    if url.get_backend_name() != "postgresql":
        raise ValueError(f"the store runs on SQLite or PostgreSQL, not {url.get_backend_name()!r} "
                         f"(got {config.url!r})")
    return create_async_engine(url, pool_size=10, max_overflow=10)


def _make_sync_engine(config: StoreConfig) -> sa.Engine:
    url = _sqlite_file(config).set(drivername="sqlite+pysqlite")
    engine = sa.create_engine(url,
                              connect_args={"timeout": config.busy_timeout_ms / 1000,
                                            "check_same_thread": False})
    _sqlite_pragmas(engine, config)
    return engine


def _write_projection(conn: Connection, state: WorkState, current: str) -> None:
    _upsert(conn, works, [work_row(state, current)], ["work_id"])
    rows = [stage_row(state.work_id, st, state.saga) for p, st in state.stages.items() if p]
    _upsert(conn, stage_runs, rows, ["work_id", "path"])


def _append_error(item: _Append, exc: Exception) -> Exception:
    """What the caller of an append that failed gets: a conflict, or the database's error."""
    if not _unique_violation(exc):
        return exc
    return ConflictError(f"work {item.work_id}: seq {item.records[0].seq} is taken; another "
                         "writer appended to this work first")


_TRANSIENT_PG = {"ConnectionDoesNotExistError", "CannotConnectNowError", "AdminShutdownError",
                 "CrashShutdownError", "ConnectionFailureError", "TooManyConnectionsError",
                 "PostgresConnectionError", "SerializationError", "DeadlockDetectedError",
                 "InterfaceError", "ConnectionRejectionError"}


def transient(exc: BaseException) -> bool:
    """Whether a database error may go away if the same write is tried again later: a
    SQLite lock held past the busy timeout, a connection lost or refused, a deadlock."""
    seen: BaseException | None = exc
    for _ in range(8):  # the error and what caused it
        if seen is None:
            return False
        if isinstance(seen, sqlite3.OperationalError):
            text = str(seen).lower()
            return "locked" in text or "busy" in text
        if isinstance(seen, ConnectionError | TimeoutError):
            return True
        if isinstance(seen, sa.exc.DBAPIError) and seen.connection_invalidated:
            return True
        if any(kind.__name__ in _TRANSIENT_PG for kind in type(seen).__mro__):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _unique_violation(exc: BaseException) -> bool:
    """Whether the database refused a row because its key is taken (SQLSTATE 23505)."""
    if isinstance(exc, IntegrityError):
        return True
    if isinstance(exc, sqlite3.IntegrityError):  # the SQLite writer's plain connection
        return "UNIQUE constraint failed" in str(exc)
    return getattr(exc, "sqlstate", None) == "23505"


_PG_STREAMS = sa.text(
    "SELECT e.* FROM unnest(:ids) AS w(work_id) CROSS JOIN LATERAL "
    "(SELECT * FROM events WHERE events.work_id = w.work_id ORDER BY seq) AS e"
).bindparams(sa.bindparam("ids", type_=postgresql.ARRAY(sa.Text)))


# A work's status as shown: the projection's, except that a pending or running work held
# back by worker nodes (leases.waiting: its saga is at its concurrency limit, or no live
# node runs the definition it started on) is waiting.
HELD_BACK_STATUSES = ("pending", "running")
_HELD_BACK = sa.and_(works.c.status.in_(HELD_BACK_STATUSES), leases.c.waiting.is_not(None))
_STATUS = sa.case((_HELD_BACK, sa.literal("waiting")), else_=works.c.status)
_WORKS = sa.select(works, leases.c.waiting.label("held_back")).select_from(
    works.outerjoin(leases, leases.c.work_id == works.c.work_id))


def _shown(row: Any) -> dict[str, Any]:
    shown = dict(row)
    held_back = shown.pop("held_back")
    if held_back is not None and shown["status"] in HELD_BACK_STATUSES:
        shown["status"] = "waiting"
        shown["waiting"] = dumps({"": held_back})
    return shown

