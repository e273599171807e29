"""The command inbox: how anyone steers a work that another process holds.

Only the process that holds a work's lease appends to its stream. Everyone else (an
API node, the command line, another worker) sends a command: :func:`send` writes a
row to ``commands``, numbered 1, 2, ... per work, with who sent it and, optionally, a
request id that makes a retried request idempotent. The holder takes the commands
after the last one its state records (:attr:`engine.state.WorkState.commands_applied`)
at a step boundary, turns each into events with :func:`engine.commands.command_events`
and records a ``work.command`` event (applied or rejected, and why) in the same
fenced commit, so each command takes effect exactly once, across crashes.

Sending also notes the number in the work's lease row (``leases.mail``), in the same
transaction, and wakes whoever must act:

- a work that is free to claim (parked, or handed back) becomes claimable at once;
  one that has no lease row (it has ended, or never had one) gets a free row, so a
  worker node takes it, records the command's outcome and lets it go again. A work
  delayed to a start time that has not begun takes its commands when it starts;
- on PostgreSQL the commit NOTIFYs :data:`CHANNEL` with the work id (nodes LISTEN);
  SQLite nodes poll :func:`since`; a node in the sender's process is told directly;
- a lease handed back while a command it did not take waits is free at once
  (:func:`engine.store.leases.release` compares ``mail`` with what was applied).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..commands import COMMANDS, Command, command_data, command_from_data
from ..errors import ConflictError, UnknownWorkError
from ..ids import check_work_id
from .codec import dumps
from .schema import commands, events, leases
from .sql import WORKS_CHANNEL, SqlStore

__all__ = ["CHANNEL", "NODE_PREFIX", "SentCommand", "last_position", "notified", "pending",
           "send", "send_to_node", "since"]

# NOTIFY channel: a command was sent; the payload is the command (see notified) or the
# work id
CHANNEL = "stepsaga_commands"
# a command for a worker node rather than a work (add, resize, drain, remove a worker) is
# kept in the same inbox under this prefix and the node's id; the node takes it
NODE_PREFIX = "node:"
NODE_COMMANDS = frozenset({"add_worker", "set_concurrency", "drain_worker", "remove_worker"})


@dataclass(frozen=True, slots=True, kw_only=True)
class SentCommand:
    """A command as the inbox holds it."""

    work_id: str
    number: int
    command: Command
    request_id: str | None
    sent_at: float
    position: int

    @classmethod
    def of(cls, row: Any) -> SentCommand:
        data = {"kind": row["kind"], "by": row["sender"], "reason": row["reason"],
                "args": json.loads(row["args"])}
        return cls(work_id=row["work_id"], number=int(row["number"]),
                   command=command_from_data(data), request_id=row["request_id"],
                   sent_at=float(row["sent_at"]), position=int(row["position"]))


def _check_request_id(request_id: object) -> str | None:
    if request_id is None:
        return None
    if not isinstance(request_id, str) or not 1 <= len(request_id) <= 200:
        raise ValueError(f"a request id must be a string of 1 to 200 characters, got "
                         f"{request_id!r:.80}")
    return request_id


# the statements of a send, built once (building one costs more than running it)
_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))")
_NOTIFY = sa.text("SELECT pg_notify(:channel, :payload)")
_EARLIER = sa.select(commands).where(commands.c.request_id == sa.bindparam("request_id"))
_CREATED = sa.select(events.c.payload).where(events.c.work_id == sa.bindparam("work_id"),
                                             events.c.seq == 1)
_LAST_NUMBER = sa.select(sa.func.coalesce(sa.func.max(commands.c.number), 0)).where(
    commands.c.work_id == sa.bindparam("work_id"))
_INSERT = sa.insert(commands).returning(commands.c.position)
# the lease row notes the number; a free row that was claimed before (parked, handed
# back) is claimable at once; a delayed work never claimed yet keeps its start time
_NOTE = sa.update(leases).where(leases.c.work_id == sa.bindparam("w")).values(
    mail=sa.bindparam("m"),
    expires_at=sa.case((sa.and_(leases.c.owner.is_(None), leases.c.token > 0), 0.0),
                       else_=leases.c.expires_at))
_NOTE_PRIORITY = _NOTE.values(priority=sa.bindparam("p"))


async def send(store: SqlStore, work_id: str, command: Command, *,
               request_id: str | None = None) -> SentCommand:
    """Put ``command`` in the inbox of ``work_id`` and wake its holder; the command as
    stored. A ``request_id`` sent before with the same work and command returns that
    earlier command (nothing new is stored); with anything else it is a
    :class:`~engine.errors.ConflictError`. An unknown work is an
    :class:`~engine.errors.UnknownWorkError`; nothing is stored then."""
    check_work_id(work_id)
    request_id = _check_request_id(request_id)
    if command.kind not in COMMANDS:
        raise ValueError(f"unknown command {command.kind!r}; expected one of "
                         f"{sorted(COMMANDS)}")
    data = command_data(command)  # a ValueError naming what cannot be stored
    args = dumps(data["args"])
    now = time.time()
    postgres = store.dialect == "postgresql"
    if postgres:
        fast = await _send_postgres(store, work_id, command, args, request_id, now)
        if fast is not None:
            return fast
        # a request id used before: compare with the earlier command, under the lock

    def run(conn: Connection) -> tuple[Any, bool]:
        if postgres:  # one sender of a work at a time: numbers stay contiguous
            conn.execute(_LOCK, {"key": "commands:" + work_id})
        if request_id is not None:
            earlier = conn.execute(_EARLIER, {"request_id": request_id}).mappings().first()
            if earlier is not None:
                same = (earlier["work_id"], earlier["kind"], earlier["sender"],
                        earlier["reason"], json.loads(earlier["args"])) == \
                    (work_id, command.kind, command.by, command.reason, data["args"])
                if not same:
                    raise ConflictError(
                        f"request id {request_id!r} was used before for another request "
                        f"({earlier['kind']} of work {earlier['work_id']}); use a new one")
                return earlier, False
        created = conn.execute(_CREATED, {"work_id": work_id}).scalar()
        if created is None:
            raise UnknownWorkError(f"no work has id {work_id!r}")
        number = int(conn.execute(_LAST_NUMBER, {"work_id": work_id}).scalar_one()) + 1
        values = {"work_id": work_id, "number": number, "kind": command.kind,
                  "sender": command.by, "reason": command.reason, "args": args,
                  "request_id": request_id, "sent_at": now}
        position = conn.execute(_INSERT, values).scalar_one()
        if command.kind == "update" and "priority" in command.args:
            # the claim order takes the new priority now; the holder records it
            touched = conn.execute(_NOTE_PRIORITY, {"w": work_id, "m": number,
                                                    "p": command.args["priority"]})
        else:
            touched = conn.execute(_NOTE, {"w": work_id, "m": number})
        if not touched.rowcount:  # ended, or never leased: a node takes it to record the outcome
            first = json.loads(created)
            conn.execute(sa.insert(leases).values(
                work_id=work_id, saga=str(first.get("saga", "")),
                priority=int(first.get("priority", 0)),
                owner=None, worker=None, token=0, expires_at=0.0, claimed_at=None,
                waiting=None, mail=number))
        if postgres:
            conn.execute(_NOTIFY, {"channel": CHANNEL, "payload": work_id})
            conn.execute(_NOTIFY, {"channel": WORKS_CHANNEL, "payload": ""})
        return {**values, "position": position}, True

    row, _ = await store.transaction(run)
    return SentCommand.of(row)


# One statement, so one round trip (a transaction through SQLAlchemy took nine): the
# command numbered after the work's last one, the lease row noted (made claimable at once
# if it was free after a claim) or, for a work without one, a free row for a node to
# record the outcome, and the NOTIFYs (the command itself, as JSON, when it fits in a
# notification: its holder need not read it back; see notified); no row when the work
# is unknown. Two senders of one work racing take the same number; the later fails on
# commands_work_number and sends again (the statement's snapshot predates the other's
# commit, so no lock helps).
_PG_SEND = """
WITH created AS MATERIALIZED (
    SELECT payload::jsonb AS first FROM events WHERE work_id = $1 AND seq = 1),
next AS MATERIALIZED (
    SELECT coalesce(max(number), 0) + 1 AS number FROM commands, created
    WHERE commands.work_id = $1),
sent AS (
    INSERT INTO commands (work_id, number, kind, sender, reason, args, request_id, sent_at)
    SELECT $1, next.number, $2, $3, $4, $5, $6, $7 FROM next, created
    RETURNING position, number),
noted AS (
    UPDATE leases SET mail = next.number, priority = coalesce($8::int4, leases.priority),
        expires_at = CASE WHEN leases.owner IS NULL AND leases.token > 0 THEN 0.0
                          ELSE leases.expires_at END
    FROM next, created WHERE leases.work_id = $1
    RETURNING leases.work_id),
freed AS (
    INSERT INTO leases (work_id, saga, priority, owner, worker, token, expires_at,
                        claimed_at, waiting, mail)
    SELECT $1, coalesce(first->>'saga', ''), coalesce((first->>'priority')::int4, 0),
           NULL, NULL, 0, 0.0, NULL, NULL, next.number
    FROM next, created WHERE NOT EXISTS (SELECT 1 FROM noted)),
woken AS MATERIALIZED (
    SELECT pg_notify('""" + CHANNEL + """', CASE WHEN $9::boolean THEN json_build_object(
               'work_id', $1::text, 'number', sent.number, 'position', sent.position,
               'kind', $2::text, 'sender', $3::text, 'reason', $4::text, 'args', $5::text,
               'request_id', $6::text, 'sent_at', $7::float8)::text ELSE $1 END),
           pg_notify('""" + WORKS_CHANNEL + """', '')
    FROM sent)
SELECT position, number FROM sent WHERE (SELECT count(*) FROM woken) >= 0
"""


async def _send_postgres(store: SqlStore, work_id: str, command: Command, args: str,
                         request_id: str | None, now: float) -> SentCommand | None:
    """:func:`send` on PostgreSQL in one statement; None when ``request_id`` was used
    before (the caller compares the two requests)."""
    import asyncpg

    priority = command.args.get("priority") if command.kind == "update" else None
    if isinstance(priority, bool) or not isinstance(priority, int):
        priority = None  # (the holder refuses what is not a priority)
    # a notification's payload holds 8000 bytes (of UTF-8, hence encode)
    small = len(f"{args}{command.by}{command.reason}{request_id or ''}".encode()) < 6000
    for _ in range(20):
        try:
            async with store.postgres_connection() as conn:
                with anyio.CancelScope(shield=True):
                    row = await conn.fetchrow(
                        _PG_SEND, work_id, command.kind, command.by, command.reason, args,
                        request_id, now, priority, small)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "commands_request":
                return None
            if exc.constraint_name != "commands_work_number":
                raise
            continue  # another sender took this number: the next one
        if row is None:
            raise UnknownWorkError(f"no work has id {work_id!r}")
        return SentCommand.of({"work_id": work_id, "number": row["number"],
                               "kind": command.kind, "sender": command.by,
                               "reason": command.reason, "args": args,
                               "request_id": request_id, "sent_at": now,
                               "position": row["position"]})
    raise ConflictError(f"the inbox of work {work_id} is too busy: many senders at once")


def notified(payload: str) -> SentCommand | str:
    """What a notification on :data:`CHANNEL` says: the command sent (when it fit in
    the payload), else the id of the work (or ``node:<id>``) whose inbox has mail."""
    if payload.startswith("{"):
        return SentCommand.of(json.loads(payload))
    return payload


async def pending(store: SqlStore, work_id: str, after: int = 0) -> list[SentCommand]:
    """The commands of ``work_id`` numbered above ``after``, in order."""
    query = sa.select(commands).where(commands.c.work_id == work_id,
                                      commands.c.number > after).order_by(commands.c.number)
    (rows,) = await store.rows(query)
    return [SentCommand.of(row) for row in rows]


async def since(store: SqlStore, position: int) -> list[tuple[int, str]]:
    """``(position, work id)`` of the commands sent after ``position`` (a poller's
    cursor), in order of position."""
    query = sa.select(commands.c.position, commands.c.work_id).where(
        commands.c.position > position).order_by(commands.c.position).limit(10_000)
    async with store.reader.connect() as conn:
        return [(int(p), str(w)) for p, w in (await conn.execute(query)).all()]


async def last_position(store: SqlStore) -> int:
    """The position of the last command sent (0: none yet): a poller starts there."""
    async with store.reader.connect() as conn:
        found = (await conn.execute(sa.select(sa.func.max(commands.c.position)))).scalar()
    return int(found or 0)


async def send_to_node(store: SqlStore, node_id: str, kind: str, args: dict[str, Any], *,
                       by: str = "", request_id: str | None = None) -> SentCommand:
    """A command for worker node ``node_id`` (one of ``add_worker``, ``set_concurrency``,
    ``drain_worker``, ``remove_worker``), numbered per node; the node takes it and
    records the outcome as a ``node.command`` worker event (see workers.node)."""
    target = check_work_id(NODE_PREFIX + str(node_id))
    request_id = _check_request_id(request_id)
    if kind not in NODE_COMMANDS:
        raise ValueError(f"unknown node command {kind!r}; expected one of "
                         f"{sorted(NODE_COMMANDS)}")
    text = dumps(args)
    now = time.time()
    postgres = store.dialect == "postgresql"

    def run(conn: Connection) -> Any:
        if postgres:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                         {"key": "commands:" + target})
        if request_id is not None:
            earlier = conn.execute(sa.select(commands).where(
                commands.c.request_id == request_id)).mappings().first()
            if earlier is not None:
                if (earlier["work_id"], earlier["kind"], json.loads(earlier["args"])) != \
                        (target, kind, args):
                    raise ConflictError(f"request id {request_id!r} was used before for "
                                        "another request; use a new one")
                return earlier
        number = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(commands.c.number), 0))
                                  .where(commands.c.work_id == target)).scalar_one()) + 1
        values = {"work_id": target, "number": number, "kind": kind, "sender": by,
                  "reason": "", "args": text, "request_id": request_id, "sent_at": now}
        position = conn.execute(sa.insert(commands).values(**values)
                                .returning(commands.c.position)).scalar_one()
        if postgres:
            conn.execute(sa.text("SELECT pg_notify(:channel, :target)"),
                         {"channel": CHANNEL, "target": target})
        return {**values, "position": position}

    row = await store.transaction(run)
    return SentCommand(work_id=row["work_id"], number=int(row["number"]),
                       command=Command(kind=kind, by=row["sender"], args=json.loads(row["args"])),
                       request_id=row["request_id"], sent_at=float(row["sent_at"]),
                       position=int(row["position"]))
