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

import operator
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.abc
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ..errors import ConflictError, EngineError, LeaseLostError, StoreError
from ..events import RecordedEvent
from ..ids import check_work_id
from ..lease import Lease
from ..state import TERMINAL, WorkState
from .codec import (
    EVENT_ROW,
    STATE_VERSION,
    decode_event,
    decode_state,
    dumps,
    encode_event,
    encode_event_row,
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


# On PostgreSQL every append transaction takes this advisory lock first, so positions
# (from a sequence, taken at insert time) follow commit order: a reader tailing events
# by position never skips one that commits later with an earlier position.
APPEND_LOCK = 0x5A6A_0001
# On PostgreSQL a commit that leaves new works free to claim NOTIFYs this channel (at
# its commit), waking idle worker nodes (workers.leases).
WORKS_CHANNEL = "stepsaga_works"
# On PostgreSQL every group commit NOTIFYs this channel (at its commit): the event feed
# of each process (engine.store.feed) reads what was committed.
EVENTS_CHANNEL = "stepsaga_events"


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreConfig:
    """How the store talks to its database."""

    url: str = "sqlite+aiosqlite:///stepsaga.sqlite"
    sqlite_synchronous: str = "FULL"  # durable commits: fsync at every commit
    busy_timeout_ms: int = 10_000
    snapshot_every: int = 200  # events between snapshots of a work's state
    max_batch: int = 256  # appends per group commit at most: smaller batches let the
    # event loop prepare the next one while the last one is being written


@dataclass(frozen=True, slots=True)
class Committed:
    """What one group commit on SQLite wrote: its events took the positions up to
    ``last``, one each, in (work, seq) order. ``records()`` gives them so, with their
    positions (built only when asked: the event feed asks only while someone follows)."""

    last: int
    batch: Sequence[_Append]

    def records(self) -> list[RecordedEvent]:
        found = sorted((r for item in self.batch for r in item.records),
                       key=lambda r: (r.work_id, r.seq))
        first = self.last - len(found) + 1
        return [replace(r, position=first + n) for n, r in enumerate(found)]


class _Flush:
    """One group commit: every append in it waits on the same event."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = anyio.Event()


@dataclass(slots=True)
class _Append:
    work_id: str
    records: list[RecordedEvent]
    flush: _Flush
    work_row: dict[str, Any] | None = None
    stage_rows: list[dict[str, Any]] = field(default_factory=list)
    snapshot: dict[str, Any] | None = None
    lease: dict[str, Any] | None = None  # a leases row taken with the work's creation
    release: str | None = None  # the lease owner whose lease ends with this append
    applied: int = 0  # the last inbox command the work took: a later one frees the lease
    # (owner, worker, token) that must hold the lease; token 0: whichever claim it is
    fence: tuple[str, str, int] | None = None
    error: BaseException | None = None


_UPSERTS: dict[tuple[str, str, tuple[str, ...]], Any] = {}
# columns a row keeps from its insert: an upsert leaves them out of its SET, so SQLite
# does not rewrite the index entries made of them at every commit of a work
_FIXED = {"works": frozenset({"saga", "created_at"}),
          "stage_runs": frozenset({"saga", "template"})}


def _updated(table: sa.Table, keys: Sequence[str]) -> list[str]:
    """The columns an upsert of ``table`` on conflict with ``keys`` sets: all but the
    keys, the position and the columns fixed at insert (every upsert builder uses it)."""
    fixed = _FIXED.get(table.name, frozenset())
    return [c.name for c in table.columns
            if c.name not in keys and c.name != "position" and c.name not in fixed]

_SQLITE_SQL: dict[tuple[str, tuple[str, ...]], tuple[str, tuple[str, ...]]] = {}


def _sqlite_sql(table: sa.Table, keys: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """Plain SQLite SQL for an insert (no keys) or an upsert, and its column order.

    The group commit runs these on the writer's DBAPI connection, and a rebuild through
    ``exec_driver_sql``: on SQLite, SQLAlchemy's per-row parameter processing costs more
    than the write itself.
    The autoincrementing ``position`` is left to SQLite.
    """
    found = _SQLITE_SQL.get((table.name, keys))
    if found is None:
        columns = tuple(c.name for c in table.columns if c.name != "position")
        sql = (f"INSERT INTO {table.name} ({', '.join(columns)}) "
               f"VALUES ({', '.join('?' for _ in columns)})")
        if keys:
            updates = ", ".join(f"{c} = excluded.{c}" for c in _updated(table, keys))
            sql += f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
        found = _SQLITE_SQL[(table.name, keys)] = (sql, columns)
    return found


def _upsert(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]],
            keys: Sequence[str]) -> None:
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect == "sqlite":
        sql, columns = _sqlite_sql(table, tuple(keys))
        conn.exec_driver_sql(sql, [tuple(row[c] for c in columns) for row in rows])
        return
    cache_key = (dialect, table.name, tuple(keys))
    stmt = _UPSERTS.get(cache_key)
    if stmt is None:  # built once: building one costs more than running it
        base = postgresql.insert(table)
        updates = {name: base.excluded[name] for name in _updated(table, keys)}
        stmt = _UPSERTS[cache_key] = base.on_conflict_do_update(index_elements=list(keys),
                                                                set_=updates)
    conn.execute(stmt, rows)


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
            self._written = _commit_or_roll_back(dbapi, lambda: _write_sqlite(dbapi, batch))
        finally:
            self._commit_cost = 0.8 * self._commit_cost + 0.2 * (time.perf_counter() - start)
        return True

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
        dbapi.execute("BEGIN IMMEDIATE")  # the write lock first: the lease check holds
        self._written = _commit_or_roll_back(dbapi, lambda: _write_sqlite(dbapi, batch))

    async def _commit(self, batch: list[_Append]) -> None:
        self._written = None
        committed = None
        try:
            await self._write(batch)
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
        for flush in {id(item.flush): item.flush for item in batch}.values():
            flush.done.set()
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


def _pg_type(column: sa.Column[Any]) -> str:
    """The PostgreSQL array element type for a column of the schema."""
    kind = column.type
    if isinstance(kind, sa.Boolean):
        return "bool"
    if isinstance(kind, sa.Float):
        return "float8"
    if isinstance(kind, sa.Integer):
        return "int8" if isinstance(kind, sa.BigInteger) else "int4"
    return "text"


_PG_SQL: list[str] = []

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


def _postgres_batch(batch: Sequence[_Append]) -> tuple[str, list[Any]]:
    """The one statement that writes a group commit on PostgreSQL, and its arguments."""
    tables = ((events, ()), (works, ("work_id",)), (stage_runs, ("work_id", "path")),
              (snapshots, ("work_id",)), (leases, ("work_id",)))
    if not _PG_SQL:
        # $1..$4: (work, owner, worker, token) whose lease must still be held (token 0:
        # any claim of that worker); if one is not,
        # 'ok' is empty and nothing is written (the caller then raises LeaseLostError)
        parts = [f"lock AS MATERIALIZED (SELECT pg_advisory_xact_lock({APPEND_LOCK}) AS held)",
                 # FOR SHARE: no claim takes these leases over until this commit ends
                 "held AS MATERIALIZED (SELECT l.work_id FROM lock, leases l JOIN "
                 "unnest($1::text[], $2::text[], $3::text[], $4::int4[]) "
                 "AS f(work_id, owner, worker, token) "
                 "ON l.work_id = f.work_id AND l.owner = f.owner AND l.worker = f.worker "
                 "AND (f.token = 0 OR l.token = f.token) "
                 "FOR SHARE OF l)",
                 "fence AS MATERIALIZED (SELECT cardinality($1::text[]) - "
                 "(SELECT count(*) FROM held) AS lost)",
                 "ok AS MATERIALIZED (SELECT lost FROM fence WHERE lost = 0)"]
        number = 5
        for index, (table, keys) in enumerate(tables):
            columns = [c for c in table.columns if c.name != "position"]
            names = ", ".join(c.name for c in columns)
            arrays = ", ".join(f"${number + i}::{_pg_type(c)}[]" for i, c in enumerate(columns))
            number += len(columns)
            source = f"SELECT {names} FROM ok, unnest({arrays}) AS u({names})"
            if table is events:  # positions are taken under the lock, in (work, seq) order
                source += " ORDER BY work_id, seq"
            conflict = ""
            if keys:
                updates = ", ".join(f"{name} = excluded.{name}"
                                    for name in _updated(table, keys))
                conflict = f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
            parts.append(f"t{index} AS (INSERT INTO {table.name} ({names}) {source}{conflict})")
        # a work that ended drops its lease, unless a command it did not take came: then
        # the row is free at once, for a node to record that command's outcome
        ended = (f"unnest(${number}::text[], ${number + 1}::text[], ${number + 3}::int4[]) "
                 "AS r(work_id, owner, applied)")
        parts.append(f"released AS (DELETE FROM leases USING ok, {ended} "
                     "WHERE leases.work_id = r.work_id AND leases.mail <= r.applied "
                     "AND (leases.owner = r.owner OR leases.owner IS NULL))")
        parts.append(f"freed AS (UPDATE leases SET owner = NULL, worker = NULL, expires_at = 0 "
                     f"FROM ok, {ended} WHERE leases.work_id = r.work_id "
                     "AND leases.owner = r.owner AND leases.mail > r.applied "
                     "RETURNING leases.work_id)")
        # new works free to claim wake idle nodes when this commits
        # (and a freed lease of a work that ended with a command it did not take)
        parts.append(f"woken AS MATERIALIZED (SELECT pg_notify('{WORKS_CHANNEL}', '') "
                     f"FROM ok WHERE ${number + 2}::boolean OR EXISTS (SELECT 1 FROM freed))")
        # every process's event feed reads what this commit wrote
        parts.append(f"announced AS MATERIALIZED (SELECT pg_notify('{EVENTS_CHANNEL}', '') "
                     "FROM ok)")
        _PG_SQL.append("WITH " + ",\n".join(parts) +
                       "\nSELECT lost FROM fence WHERE (SELECT count(*) FROM woken) >= 0 "
                       "AND (SELECT count(*) FROM announced) >= 0")
    event_rows = [encode_event(r) for item in batch for r in item.records]
    work_rows, stage_rows, snaps = _projection_rows(batch)
    taken, released = _lease_rows(batch)
    fenced = [(item.work_id, *item.fence) for item in batch if item.fence is not None]
    args: list[Any] = [[f[0] for f in fenced], [f[1] for f in fenced], [f[2] for f in fenced],
                       [f[3] for f in fenced]]
    for (table, _), rows in zip(tables, (event_rows, work_rows, stage_rows, snaps, taken),
                                strict=True):
        fields = [c.name for c in table.columns if c.name != "position"]
        if rows:  # rows to columns: itemgetter and zip run in C
            args.extend(list(column) for column in zip(
                *map(operator.itemgetter(*fields), rows), strict=True))
        else:
            args.extend([] for _ in fields)
    args.append([work_id for work_id, _, _ in released])
    args.append([owner for _, owner, _ in released])
    args.append(any(row["owner"] is None for row in taken))
    args.append([applied for _, _, applied in released])
    return _PG_SQL[0], args


def _projection_rows(batch: Sequence[_Append]) -> tuple[list[dict[str, Any]], ...]:
    work_rows: dict[str, dict[str, Any]] = {}
    stage_rows: dict[tuple[str, str], dict[str, Any]] = {}
    snaps: dict[str, dict[str, Any]] = {}
    for item in batch:  # in append order: the last row of a work wins
        if item.work_row is not None:
            work_rows[item.work_id] = item.work_row
        for row in item.stage_rows:
            stage_rows[(item.work_id, row["path"])] = row
        if item.snapshot is not None:
            snaps[item.work_id] = item.snapshot
    return list(work_rows.values()), list(stage_rows.values()), list(snaps.values())


def _commit_or_roll_back(dbapi: Any, work: Callable[[], _T]) -> _T:
    """Do ``work`` in the transaction the caller began on ``dbapi``, then commit it; roll
    it back if ``work`` (or the commit) fails."""
    try:
        result = work()
        dbapi.commit()
    except BaseException:
        dbapi.rollback()
        raise
    return result


def _write_sqlite(dbapi: Any, batch: Sequence[_Append]) -> int:
    """A group commit on SQLite, on a plain DBAPI connection in a write transaction
    (the caller began it with BEGIN IMMEDIATE and commits); the position of its last
    event (they took contiguous positions: the write lock is held)."""
    fenced = [(item.work_id, *item.fence) for item in batch if item.fence is not None]
    if fenced:
        marks = ", ".join("?" for _ in fenced)
        held = {w: (o, k, t) for w, o, k, t in dbapi.execute(
            f"SELECT work_id, owner, worker, token FROM leases WHERE work_id IN ({marks})",
            [w for w, _, _, _ in fenced]).fetchall()}
        lost = [work_id for work_id, owner, worker, token in fenced
                if held.get(work_id, (None, None, -1))[:2] != (owner, worker)
                or token not in (0, held[work_id][2])]
        if lost:
            raise LeaseLostError(f"the lease on work {lost[0]} is not held by this worker "
                                 "any more; another worker runs it")
    sql, columns = _sqlite_sql(events, ())
    assert columns == EVENT_ROW
    # in (work, seq) order: each work's index entries go in as one run
    dbapi.executemany(sql, sorted(encode_event_row(r) for item in batch for r in item.records))
    (last,) = dbapi.execute("SELECT last_insert_rowid()").fetchone()
    work_rows, stage_rows, snaps = _projection_rows(batch)
    for table, keys, table_rows in ((works, ("work_id",), work_rows),
                                    (stage_runs, ("work_id", "path"), stage_rows),
                                    (snapshots, ("work_id",), snaps)):
        if table_rows:
            sql, columns = _sqlite_sql(table, keys)
            values = operator.itemgetter(*columns)  # a tuple of them, at C speed
            dbapi.executemany(sql, [values(row) for row in table_rows])
    taken, released = _lease_rows(batch)
    if taken:
        sql, columns = _sqlite_sql(leases, ("work_id",))
        dbapi.executemany(sql, [tuple(row[c] for c in columns) for row in taken])
    if released:  # see _postgres_batch
        dbapi.executemany("DELETE FROM leases WHERE work_id = ?1 AND mail <= ?3 "
                          "AND (owner = ?2 OR owner IS NULL)", released)
        dbapi.executemany("UPDATE leases SET owner = NULL, worker = NULL, expires_at = 0 "
                          "WHERE work_id = ? AND owner = ? AND mail > ?", released)
    return int(last)


def _lease_rows(batch: Sequence[_Append]
                ) -> tuple[list[dict[str, Any]], list[tuple[str, str, int]]]:
    """The leases a group commit takes (new works) and drops (works that ended); a work
    that starts and ends in one commit needs neither."""
    released = [(item.work_id, item.release, item.applied) for item in batch
                if item.release is not None]
    ended = {work_id for work_id, _, _ in released}
    taken = [item.lease for item in batch
             if item.lease is not None and item.work_id not in ended]
    return taken, released
