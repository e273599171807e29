"""The SQL of a group commit, for both databases: what one append carries, the rows
it writes (events, the ``works``, ``stage_runs`` and ``snapshots`` projections,
leases), as plain SQLite statements on the writer's DBAPI connection or as one
PostgreSQL statement of data-modifying CTEs. :mod:`engine.store.sql` runs them."""

from __future__ import annotations

import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import anyio
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from ..errors import LeaseLostError
from ..events import RecordedEvent
from .codec import EVENT_ROW, encode_event, encode_event_row
from .schema import events, leases, snapshots, stage_runs, works

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


@dataclass(frozen=True, slots=True)
class Committed:
    """What one group commit on SQLite wrote: its events took the positions up to
    ``last``, one each, in (work, seq) order. ``records()`` gives them so, with their
    positions (built only when asked: the event feed asks only while someone follows)."""

    last: int
    batch: Sequence[_Append]

    def made_claimable(self) -> bool:
        """Whether it left a new work free for a worker node to claim."""
        return any(item.lease is not None and item.lease.get("owner") is None
                   for item in self.batch)

    def records(self) -> list[RecordedEvent]:
        found = sorted((r for item in self.batch for r in item.records),
                       key=lambda r: (r.work_id, r.seq))
        first = self.last - len(found) + 1
        return [replace(r, position=first + n) for n, r in enumerate(found)]


class _Flush:
    """One group commit: every append in it waits on the same event."""

    __slots__ = ("began", "done")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.began = time.perf_counter()  # its first append was queued (a metric)


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


def _postgres_batch(batch: Sequence[_Append]) -> tuple[str, list[Any]]:
    """The one statement that writes a group commit on PostgreSQL, and its arguments."""
    tables = ((events, ()), (works, ("work_id",)), (stage_runs, ("work_id", "path")),
              (snapshots, ("work_id",)), (leases, ("work_id",)))
    if not _PG_SQL:
        # $1..$4: (work, owner, worker, token) whose lease must still be held (token 0:
        # any claim of that worker); if one is not,
        # 'ok' is empty and nothing is written (the caller then raises LeaseLostError)
        parts = [f"lock AS MATERIALIZED (SELECT pg_advisory_xact_lock({APPEND_LOCK}) AS held)",
                 # FOR SHARE: no claim takes these leases over until this commit ends.
                 # The lock is a one-time filter, evaluated before anything is read,
                 # and 'fence' reads it too, so it is taken whatever the plan: with
                 # 'lock' in the join instead, a plan that joined the leases first
                 # never scanned it when no lease was to be checked (a queued work's
                 # creation), whose position then committed unlocked, out of commit
                 # order, and a feed that had read past it never delivered it
                 "held AS MATERIALIZED (SELECT l.work_id FROM leases l JOIN "
                 "unnest($1::text[], $2::text[], $3::text[], $4::int4[]) "
                 "AS f(work_id, owner, worker, token) "
                 "ON l.work_id = f.work_id AND l.owner = f.owner AND l.worker = f.worker "
                 "AND (f.token = 0 OR l.token = f.token) "
                 "WHERE (SELECT count(*) FROM lock) = 1 "
                 "FOR SHARE OF l)",
                 "fence AS MATERIALIZED (SELECT cardinality($1::text[]) - "
                 "(SELECT count(*) FROM held) AS lost FROM lock)",
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
