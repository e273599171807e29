"""Claiming works, renewing and dropping leases: the only coordination between nodes.

Every unfinished work meant for worker nodes has a row in ``leases``: free
(``expires_at`` 0: created with ``Runtime.start(run=False)``, or handed back by a
draining node), or held by a node until ``expires_at``. A work is claimable when its
row is free or its lease expired, found through the index on ``expires_at`` (the
works being run are never scanned). On PostgreSQL a claim locks the candidate rows
``FOR UPDATE SKIP LOCKED``, so two nodes claiming at once take different works
without waiting for each other; on SQLite the claim is one write transaction, so
several processes on one file take turns. A work's last commit deletes its row.
Times are the nodes' wall clocks (kept in step by NTP across machines).

A lease row holds the hash and version of the definition its work started on. A
node that says which definitions it runs (:class:`Runs`) claims only the works they
continue (no hash recorded, the same hash, or a version its saga declares in
``continues``; the rule of :func:`engine.catalog.can_continue`), and marks the others
of its sagas as waiting, with the reason, until a node that runs their definition
takes them (:func:`hold_back_foreign`; :func:`leave` for one it refused to adopt).

The claims live here, in the store, beside the lease rows ``append`` writes: worker
nodes (:mod:`workers.node`) claim works to run; a plain :class:`engine.Runtime` with a
store leases the works it creates and claims the works :meth:`~engine.Runtime.recover`
takes over (:func:`claim_works`), so two processes never both run one work.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..lease import UNTIL_WOKEN
from .schema import leases
from .sql import WORKS_CHANNEL, SqlStore

__all__ = ["CHANNEL", "UNTIL_WOKEN", "Claimed", "HeldBack", "Runs", "check_saga_limits", "claim",
           "claim_works", "drop", "expire", "hold_back_foreign", "leave", "next_due", "notify",
           "process_owner", "release", "renew", "renew_mail"]

CHANNEL = WORKS_CHANNEL  # NOTIFY channel: claimable works appeared (new, or handed back)


@dataclass(frozen=True, slots=True)
class Claimed:
    work_id: str
    token: int  # how many times the work was claimed, this claim included
    mail: int = 0  # the number of the last command sent to it (engine.store.inbox)
    taken_over: bool = False  # its lease had expired on another holder (a node died)


@dataclass(frozen=True, slots=True)
class Runs:
    """The definition of one saga a node runs: its hash, its version and the versions
    whose works it continues (:class:`engine.Saga`'s ``version`` and ``continues``)."""

    definition: str
    version: int
    continues: tuple[int, ...] = ()

    @property
    def text(self) -> str:
        continued = ", ".join(map(str, self.continues)) or "none"
        return f"{self.definition} (version {self.version}, continuing versions: {continued})"


@dataclass(frozen=True, slots=True)
class HeldBack:
    """A work a node left for another definition of its saga."""

    work_id: str
    saga: str
    definition: str | None  # the one the work started on
    version: int | None
    reason: str


def _accepted(definitions: Mapping[str, Runs] | None) -> tuple[list[str] | None, list[str]]:
    """The hashes a claim takes, and the ``saga@version`` keys it continues (None: any)."""
    if definitions is None:
        return None, []
    return (sorted({runs.definition for runs in definitions.values()}),
            sorted({f"{saga}@{v}" for saga, runs in definitions.items() for v in runs.continues}))


_PG_CLAIM = """
WITH candidates AS (
    SELECT work_id, owner IS NOT NULL AS taken FROM leases
    WHERE expires_at < $1 AND ($5::text[] IS NULL OR saga = ANY($5::text[]))
      AND NOT (saga = ANY($7::text[]))
      AND ($8::text[] IS NULL OR definition IS NULL OR definition = ANY($8::text[])
           OR saga || '@' || definition_version::text = ANY($9::text[]))
    ORDER BY priority DESC, work_id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE leases SET owner = $3, worker = $4, token = leases.token + 1, expires_at = $6,
    claimed_at = $1, waiting = NULL
FROM candidates WHERE leases.work_id = candidates.work_id
RETURNING leases.work_id, leases.token, leases.mail, candidates.taken
"""

_SQLITE_CLAIM = """
UPDATE leases SET owner = ?, worker = ?, token = token + 1, expires_at = ?, claimed_at = ?,
    waiting = NULL
WHERE work_id IN (
    SELECT work_id FROM leases WHERE expires_at < ?{sagas}{exclude}{definitions}
    ORDER BY priority DESC, work_id LIMIT ?
)
RETURNING work_id, token, mail
"""


_EXPIRED = "SELECT work_id FROM leases WHERE owner IS NOT NULL AND expires_at < ?"

_FREE = "UPDATE leases SET owner = NULL, worker = NULL, expires_at = {}"  # 0: at once
# a saga at its concurrency limit: its claimable works say why they wait (the works
# projection shows them as waiting); once it has room again, they do not
_MARK = ("UPDATE leases SET waiting = {0} WHERE saga = {1} AND expires_at < {2} "
         "AND (waiting IS NULL OR waiting <> {0})")
_UNMARK = "UPDATE leases SET waiting = NULL WHERE saga = {0} AND waiting IS NOT NULL"


def _at_limit(saga: str, cap: int) -> str:
    return f"saga {saga} is at its concurrency limit ({cap} at once)"


def check_saga_limits(limits: Mapping[str, int]) -> dict[str, int]:
    """Refuse a per-saga concurrency limit that is not a whole number >= 1."""
    for saga, cap in limits.items():
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ValueError(f"the concurrency limit of saga {saga!r} must be a whole number "
                             f">= 1, got {cap!r}")
    return dict(limits)


def _check(owner: str, worker: str, ttl: float) -> None:
    if not owner or not worker:
        raise ValueError("a claim needs the node (owner) and the worker that claims")
    if not ttl > 0:
        raise ValueError(f"a lease's ttl must be a positive number of seconds, got {ttl!r}")


async def claim(store: SqlStore, *, owner: str, worker: str, limit: int, ttl: float,
                sagas: Sequence[str] | None = None,
                saga_limits: Mapping[str, int] | None = None,
                definitions: Mapping[str, Runs] | None = None) -> list[Claimed]:
    """Lease up to ``limit`` claimable works (of ``sagas``, or any) to ``worker`` of node
    ``owner`` for ``ttl`` seconds: higher priorities first, then the oldest (in any
    order among those: adopt them together). A saga in ``saga_limits`` never has more
    works leased at once, across all nodes, than its limit. With ``definitions`` (saga
    -> what the node runs of it), only works those definitions continue are claimed."""
    _check(owner, worker, ttl)
    limits = check_saga_limits(saga_limits or {})
    names = list(sagas) if sagas is not None else None
    limited = [s for s in limits if names is None or s in names]
    accepted = _accepted(definitions)
    got = await _claim(store, owner, worker, limit, ttl, names, limited, accepted)
    for saga in limited:
        if len(got) >= limit:
            break
        got += await _claim(store, owner, worker, limit - len(got), ttl, [saga], [], accepted,
                            cap=limits[saga])
    return got


async def _claim(store: SqlStore, owner: str, worker: str, limit: int, ttl: float,
                 names: list[str] | None, exclude: list[str],
                 accepted: tuple[list[str] | None, list[str]], cap: int | None = None,
                 ) -> list[Claimed]:
    """One claim; with ``cap`` (one saga in ``names``), in a transaction that counts the
    saga's live leases first, serialised with every other capped claim of that saga."""
    if limit <= 0:
        return []
    now = time.time()
    live = "SELECT count(*) FROM leases WHERE saga = {} AND owner IS NOT NULL AND " \
           "expires_at >= {}"
    if store.dialect == "postgresql":
        async with store.postgres_connection() as conn:
            if cap is None:
                rows = await conn.fetch(_PG_CLAIM, now, limit, owner, worker, names,
                                        now + ttl, exclude, *accepted)
            else:
                assert names is not None
                with anyio.CancelScope(shield=True):  # never leave it open, holding locks
                    rows = await _capped_pg(conn, names[0], cap, live, now, limit, owner,
                                            worker, ttl, exclude, accepted)
        return [Claimed(r["work_id"], r["token"], r["mail"], r["taken"]) for r in rows]

    hashes, keys = accepted
    marks = ", ".join("?" for _ in hashes or ())
    keyed = "" if not keys else \
        f" OR saga || '@' || definition_version IN ({', '.join('?' for _ in keys)})"
    sql = _SQLITE_CLAIM.format(
        sagas="" if names is None else f" AND saga IN ({', '.join('?' for _ in names)})",
        exclude="" if not exclude else f" AND saga NOT IN ({', '.join('?' for _ in exclude)})",
        definitions="" if hashes is None else
        f" AND (definition IS NULL OR definition IN ({marks}){keyed})")

    def run(conn: sqlite3.Connection) -> list[Claimed]:
        room = limit
        held = 0
        if cap is not None:
            assert names is not None
            (held,) = conn.execute(live.format("?", "?"), (names[0], now)).fetchone()
            room = min(limit, cap - held)
        got: list[Claimed] = []
        if room > 0:
            args = [owner, worker, now + ttl, now, now, *(names or []), *exclude,
                    *(hashes or []), *keys, room]
            # SQLite's RETURNING sees only the new row: which leases had expired on a
            # holder (rare: a node died) is read first, in the same write transaction
            expired = {w for (w,) in conn.execute(_EXPIRED, (now,))}
            got = [Claimed(w, t, m, w in expired)
                   for w, t, m in conn.execute(sql, args).fetchall()]
        if cap is not None:
            assert names is not None
            if held + len(got) >= cap:
                conn.execute(_MARK.format("?1", "?2", "?3"),
                             (_at_limit(names[0], cap), names[0], now))
            else:
                conn.execute(_UNMARK.format("?"), (names[0],))
        return got

    return await store.write_sqlite(run)


async def _capped_pg(conn: Any, saga: str, cap: int, live: str, now: float, limit: int,
                     owner: str, worker: str, ttl: float, exclude: list[str],
                     accepted: tuple[list[str] | None, list[str]]) -> list[Any]:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "saga:" + saga)
        held = await conn.fetchval(live.format("$1", "$2"), saga, now)
        room = min(limit, cap - held)
        rows = []
        if room > 0:
            rows = list(await conn.fetch(_PG_CLAIM, now, room, owner, worker, [saga],
                                         now + ttl, exclude, *accepted))
        if held + len(rows) >= cap:
            await conn.execute(_MARK.format("$1", "$2", "$3"), _at_limit(saga, cap), saga, now)
        else:
            await conn.execute(_UNMARK.format("$1"), saga)
        return rows


def _tail(owner: str, saga: str, runs: Runs) -> str:
    return (f") of saga {saga}; node {owner} runs {runs.text}, which does not continue "
            "it: it waits for a node that runs its definition, or a rewind onto one that "
            "is run")


def _reason(owner: str, saga: str, runs: Runs) -> Any:
    """Why a lease row waits, as SQL: its own definition, and what node ``owner`` runs."""
    version = sa.func.coalesce(sa.cast(leases.c.definition_version, sa.Text), "unknown")
    return (sa.literal("started on definition ") + leases.c.definition + " (version "
            + version + sa.literal(_tail(owner, saga, runs)))


async def hold_back_foreign(store: SqlStore, *, owner: str, definitions: Mapping[str, Runs],
                            sagas: Sequence[str] | None = None) -> list[HeldBack]:
    """Mark the claimable works of ``sagas`` (default: all in ``definitions``) that were
    started on a definition that node ``owner`` does not continue as waiting, with the
    reason (the works list shows them so); the works newly marked. A node that runs
    their definition claims them as usual, which clears the mark."""
    wanted = [s for s in (definitions if sagas is None else sagas) if s in definitions]
    if not wanted:
        return []
    now = time.time()

    def run(conn: Connection) -> list[HeldBack]:
        found: list[HeldBack] = []
        for saga in wanted:
            runs = definitions[saga]
            foreign = [leases.c.saga == saga, leases.c.expires_at < now,
                       leases.c.waiting.is_(None), leases.c.definition.is_not(None),
                       leases.c.definition != runs.definition]
            if runs.continues:  # a version it continues is not foreign
                foreign.append(sa.or_(leases.c.definition_version.is_(None),
                                      leases.c.definition_version.not_in(runs.continues)))
            update = (sa.update(leases).where(*foreign).values(waiting=_reason(owner, saga, runs))
                .returning(leases.c.work_id, leases.c.definition,
                           leases.c.definition_version, leases.c.waiting))
            found += [HeldBack(row.work_id, saga, row.definition, row.definition_version,
                               row.waiting) for row in conn.execute(update)]
        return found

    return await store.transaction(run)


async def leave(store: SqlStore, *, owner: str, saga: str, runs: Runs,
                works: Sequence[tuple[str, str, int | None]]) -> list[HeldBack]:
    """Hand back node ``owner``'s leases on works of ``saga`` it would not adopt
    ``(work id, definition, version)``: started on a definition that ``runs`` does not
    continue. Their rows learn that definition (so the node's claims pass them by from
    now on) and say why they wait; they are free for a node that runs it."""
    def run(conn: Connection) -> list[HeldBack]:
        found: list[HeldBack] = []
        for work_id, definition, version in works:
            reason = (f"started on definition {definition} (version "
                      f"{'unknown' if version is None else version}"
                      + _tail(owner, saga, runs))
            update = (sa.update(leases).where(leases.c.work_id == work_id,
                                              leases.c.owner == owner)
                      .values(definition=definition, definition_version=version, owner=None,
                              worker=None, expires_at=0.0, waiting=reason)
                      .returning(leases.c.work_id))
            if conn.execute(update).first() is not None:
                found.append(HeldBack(work_id, saga, definition, version, reason))
        return found

    left = await store.transaction(run)
    if left:
        await notify(store)  # a node with their definition may be idle
    return left


async def renew(store: SqlStore, *, owner: str, ttl: float,
                work_ids: Sequence[str]) -> set[str]:
    """:func:`renew_mail`, the works still held."""
    return set(await renew_mail(store, owner=owner, ttl=ttl, work_ids=work_ids))


async def renew_mail(store: SqlStore, *, owner: str, ttl: float,
                     work_ids: Sequence[str]) -> dict[str, int]:
    """Push node ``owner``'s leases on ``work_ids`` (the works it runs) ``ttl`` seconds
    ahead; the works still held (a lease that expired and was claimed by another node
    is not ours any more), each with the number of the last command sent to it (a
    holder that missed a wake-up finds its mail this way). Leases the node holds but no
    longer runs (a previous process with the same node id) are left to expire."""
    if not ttl > 0:
        raise ValueError(f"a lease's ttl must be a positive number of seconds, got {ttl!r}")
    ids = list(work_ids)
    if not ids:
        return {}
    until = time.time() + ttl
    if store.dialect == "postgresql":
        async with store.postgres_connection() as conn:
            rows = await conn.fetch("UPDATE leases SET expires_at = $2 WHERE owner = $1 AND "
                                    "work_id = ANY($3) RETURNING work_id, mail", owner, until,
                                    ids)
        return {r["work_id"]: r["mail"] for r in rows}

    def run(conn: sqlite3.Connection) -> dict[str, int]:
        held: dict[str, int] = {}
        for start in range(0, len(ids), 500):  # SQLite caps the number of parameters
            part = ids[start:start + 500]
            marks = ", ".join("?" for _ in part)
            held.update(conn.execute(
                f"UPDATE leases SET expires_at = ? WHERE owner = ? AND work_id IN ({marks}) "
                "RETURNING work_id, mail", (until, owner, *part)).fetchall())
        return held

    return await store.write_sqlite(run)


async def drop(store: SqlStore, *, owner: str, work_ids: Sequence[str]) -> int:
    """Delete node ``owner``'s lease rows of works that have ended (found so at adoption:
    a work run to its end outside the nodes), so nobody claims them again."""
    return await _owned(store, "DELETE FROM leases WHERE owner = {owner} AND work_id IN "
                        "{ids}", owner, work_ids)


async def _owned(store: SqlStore, sql: str, owner: str, work_ids: Sequence[str], *,
                 notify: bool = False) -> int:
    """Run ``sql`` (a statement over ``owner``'s lease rows among ``work_ids``, with
    ``{owner}`` and ``{ids}`` marking where they go) on either database; how many rows
    it touched. ``notify``: wake idle nodes on PostgreSQL if it touched any."""
    ids = list(work_ids)
    if not ids:
        return 0
    if store.dialect == "postgresql":
        async with store.postgres_connection() as conn:
            rows = await conn.fetch(sql.format(owner="$1", ids="(SELECT unnest($2::text[]))")
                                    + " RETURNING work_id", owner, ids)
            if rows and notify:
                await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
        return len(rows)

    def run(conn: sqlite3.Connection) -> int:
        count = 0
        for start in range(0, len(ids), 500):  # SQLite caps the number of parameters
            part = ids[start:start + 500]
            marks = "(" + ", ".join("?" for _ in part) + ")"
            count += int(conn.execute(sql.format(owner="?", ids=marks),
                                      (owner, *part)).rowcount)
        return count

    return await store.write_sqlite(run)


async def release(store: SqlStore, *, owner: str, work_ids: Sequence[str] | None = None,
                  worker: str | None = None, start_at: float | None = None,
                  applied: int | None = None) -> int:
    """Hand back node ``owner``'s leases on ``work_ids``, or all those of ``worker``: the
    works are free to claim at once, or from ``start_at`` on (a parked work;
    :data:`UNTIL_WOKEN`: when a command comes), and idle nodes on PostgreSQL are woken.
    With ``applied`` (the last command the work took), a work sent a later command
    meanwhile is free at once, so no command waits for a parked work's time."""
    if (work_ids is None) == (worker is None):
        raise ValueError("release the leases of given works or of one worker")
    ids = list(work_ids or ())
    if work_ids is not None and not ids:
        return 0
    if start_at is not None and not (isinstance(start_at, int | float)
                                     and math.isfinite(start_at)):
        raise ValueError(f"start_at must be a Unix time in seconds, got {start_at!r}")
    if applied is not None and (isinstance(applied, bool) or not isinstance(applied, int)):
        raise ValueError(f"applied must be a command number, got {applied!r}")
    due = "0" if start_at is None else repr(float(start_at))
    if start_at is not None and applied is not None:
        due = f"CASE WHEN mail > {applied} THEN 0 ELSE {due} END"
    free = _FREE.format(due)
    if store.dialect == "postgresql":
        async with store.postgres_connection() as conn:
            if worker is None:
                rows = await conn.fetch(f"{free} WHERE owner = $1 AND work_id = ANY($2) "
                                        "RETURNING work_id", owner, ids)
            else:
                rows = await conn.fetch(f"{free} WHERE owner = $1 AND worker = $2 "
                                        "RETURNING work_id", owner, worker)
            if rows:
                await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
        return len(rows)

    def run(conn: sqlite3.Connection) -> int:
        if worker is None:
            marks = ", ".join("?" for _ in ids)
            cursor = conn.execute(f"{free} WHERE owner = ? AND work_id IN ({marks})",
                                  (owner, *ids))
        else:
            cursor = conn.execute(f"{free} WHERE owner = ? AND worker = ?", (owner, worker))
        return int(cursor.rowcount)

    return await store.write_sqlite(run)


async def next_due(store: SqlStore, sagas: Sequence[str] | None = None) -> float | None:
    """When the next free work (of ``sagas``, or any) is due: the earliest start time
    of a delayed work, or None if no free work waits for its time. Read through the
    partial index of free rows, so the leases of running works are not scanned."""
    now = time.time()
    names = list(sagas) if sagas is not None else None
    if store.dialect == "postgresql":
        async with store.postgres_connection() as conn:
            due = await conn.fetchval(
                "SELECT min(expires_at) FROM leases WHERE owner IS NULL AND expires_at >= $1 "
                "AND ($2::text[] IS NULL OR saga = ANY($2::text[]))", now, names)
        return None if due is None else float(due)
    sql = ("SELECT min(expires_at) FROM leases WHERE owner IS NULL AND expires_at >= ?"
           + ("" if names is None else f" AND saga IN ({', '.join('?' for _ in names)})"))
    async with store.reader.connect() as conn:
        due = (await conn.exec_driver_sql(sql, (now, *(names or ())))).scalar()
    return None if due is None else float(due)


async def notify(store: SqlStore) -> None:
    """Wake idle worker nodes: claimable works appeared (PostgreSQL; SQLite nodes poll)."""
    if store.dialect == "postgresql":
        async with store.postgres_connection() as conn:
            await conn.execute("SELECT pg_notify($1, '')", CHANNEL)


# ------------------------------------------------------- a plain Runtime's leases

_HOST = socket.gethostname()


def process_owner(kind: str = "runtime") -> str:
    """A lease owner naming this process: ``<kind>:<host>:<pid>:<random>``. A lease held
    by an owner of this host whose process has gone may be taken over at once."""
    return f"{kind}:{_HOST}:{os.getpid()}:{secrets.token_hex(4)}"


def _gone(owner: str | None) -> bool:
    """Whether ``owner`` names a process of this host that does not exist any more."""
    if owner is None:
        return False
    parts = owner.rsplit(":", 3)
    if len(parts) != 4 or parts[1] != _HOST or not parts[2].isdigit():
        return False
    pid = int(parts[2])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, under another user
        return False
    return False


async def claim_works(store: SqlStore, *, owner: str, worker: str, ttl: float,
                      works: Sequence[tuple[str, str, int]], free: bool = False
                      ) -> list[Claimed]:
    """Lease the given unfinished works ``(work id, saga, priority)`` to ``owner`` if
    nobody else holds them: their lease expired, or ``owner`` holds it already, or its
    holder was a process of this host that has gone, or they have no lease row (a work
    created before leases, or a finished work to be moved again). Free rows (works
    queued for worker nodes, or handed back by one) are left to the nodes unless
    ``free`` (someone adopts them by name), and then only once due. The works claimed
    are returned."""
    _check(owner, worker, ttl)
    if not works:
        return []
    now = time.time()
    ids = [w for w, _, _ in works]
    if store.dialect == "postgresql":
        async with store.postgres_connection() as conn:
            with anyio.CancelScope(shield=True):  # never leave it open, holding locks
                async with conn.transaction():
                    held = await conn.fetch("SELECT work_id, owner FROM leases WHERE "
                                            "work_id = ANY($1) FOR UPDATE", ids)
                    gone = [r["work_id"] for r in held if _gone(r["owner"])]
                    rows = list(await conn.fetch(
                        "UPDATE leases SET owner = $1, worker = $2, token = token + 1, "
                        "expires_at = $3, claimed_at = $4, waiting = NULL "
                        "WHERE work_id = ANY($5) AND (owner IS NOT NULL OR $7) "
                        "AND (expires_at < $4 OR work_id = ANY($6) OR owner = $1) "
                        "RETURNING work_id, token, mail",
                        owner, worker, now + ttl, now, ids, gone, free))
                    present = {r["work_id"] for r in held}
                    for work_id, saga, priority in works:
                        if work_id not in present:
                            rows += await conn.fetch(
                                "INSERT INTO leases (work_id, saga, priority, owner, worker, "
                                "token, expires_at, claimed_at) VALUES ($1, $2, $3, $4, $5, "
                                "1, $6, $7) ON CONFLICT (work_id) DO NOTHING "
                                "RETURNING work_id, token, mail",
                                work_id, saga, priority, owner, worker, now + ttl, now)
        return [Claimed(r["work_id"], r["token"], r["mail"]) for r in rows]

    def run(conn: sqlite3.Connection) -> list[Claimed]:
        got: list[Claimed] = []
        for start in range(0, len(works), 400):
            part = works[start:start + 400]
            marks = ", ".join("?" for _ in part)
            held = dict(conn.execute(f"SELECT work_id, owner FROM leases WHERE work_id IN "
                                     f"({marks})", [w for w, _, _ in part]).fetchall())
            for work_id, saga, priority in part:
                if work_id not in held:
                    row = conn.execute(
                        "INSERT INTO leases (work_id, saga, priority, owner, worker, token, "
                        "expires_at, claimed_at) VALUES (?, ?, ?, ?, ?, 1, ?, ?) "
                        "ON CONFLICT (work_id) DO NOTHING RETURNING work_id, token, mail",
                        (work_id, saga, priority, owner, worker, now + ttl, now)).fetchone()
                else:
                    holder = held[work_id]
                    if holder is None and not free:
                        continue
                    row = conn.execute(
                        "UPDATE leases SET owner = ?, worker = ?, token = token + 1, "
                        "expires_at = ?, claimed_at = ?, waiting = NULL WHERE work_id = ? "
                        "AND (expires_at < ? OR ?) RETURNING work_id, token, mail",
                        (owner, worker, now + ttl, now, work_id, now,
                         holder == owner or _gone(holder))).fetchone()
                if row is not None:
                    got.append(Claimed(row[0], row[1], row[2]))
        return got

    return await store.write_sqlite(run)


async def expire(store: SqlStore, *, owner: str, work_ids: Sequence[str]) -> int:
    """Let ``owner``'s leases on ``work_ids`` expire now, keeping who held them: any driver
    may take the works over at once (a worker node's claim, another process's
    ``recover()``). A Runtime that closes, or gives a work up, does this."""
    return await _owned(store, "UPDATE leases SET expires_at = 0 WHERE owner = {owner} AND "
                        "work_id IN {ids}", owner, work_ids, notify=True)
