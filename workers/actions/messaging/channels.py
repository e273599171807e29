"""Channels in the store (table ``messaging_channels``): created, paused, resumed,
deleted and purged from Python and the API alike, and the counter that hands a
channel's messages to its senders in turn.

- A channel declared in ``[messaging.channels]`` exists from the first use on; its
  kind and senders are always the config's. Others are created here, naming senders
  of the config (never their credentials).
- :meth:`Channels.take_turn` adds one to the channel's counter in one SQL statement
  (``UPDATE ... SET turns = turns + 1 ... RETURNING``), atomic on SQLite and
  PostgreSQL alike, so messages go to each sender after the other across every node;
  ``if_active``: only while the channel is active (a message's check takes its turn
  and reads the channel's state in that one statement).
- A paused channel holds its messages: a message's ``hold`` stage waits for the signal
  ``messaging.resume``, which :meth:`Channels.resume` sends to every message queued
  for the channel (its payload is the message, which goes on to be delivered).
- :meth:`Channels.purge` cancels every message queued for the channel (created, held
  or being retried); :meth:`Channels.delete` marks the channel deleted (a row kept, so
  a declared channel does not come back) and purges it.

>>> # Channels(store, config) in an async function:
>>> # await channels.pause("email", by="ops"); await channels.resume("email", by="ops")
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from engine import Command
from engine.errors import UnknownWorkError, WorkStateError
from engine.store import SqlStore, inbox
from engine.store.schema import messaging_channels as table
from engine.store.schema import works

from .config import CHANNEL_KINDS, MessagingConfig, check_name, senders_of
from .errors import ChannelError, MessagingConfigError

__all__ = ["RESUME_SIGNAL", "SEND_SAGA", "STATES", "Channel", "Channels"]

SEND_SAGA = "messaging.send"
RESUME_SIGNAL = "messaging.resume"
STATES = ("active", "paused", "deleted")
_ENDED = ("completed", "failed", "cancelled", "compensation_failed")


@dataclass(frozen=True, slots=True, kw_only=True)
class Channel:
    name: str
    kind: str
    senders: tuple[str, ...]
    state: str  # active, paused (holds its messages), deleted
    turns: int  # messages handed to a sender so far
    declared: bool  # in [messaging.channels]: its kind and senders are the config's
    changed_by: str
    created_at: float
    updated_at: float


class Channels:
    """The channels of one store under one config (see the module docstring)."""

    def __init__(self, store: SqlStore, config: MessagingConfig) -> None:
        self.store = store
        self.config = config
        self._seeded = False
        # (channel, if_active) -> turns asked
        self._asking: dict[tuple[str, bool], builtins.list[_Turn]] = {}

    # ------------------------------------------------------------ reading

    def _shown(self, row: Any) -> Channel:
        row = getattr(row, "_mapping", row)  # a Row of RETURNING, or a mapping of rows()
        spec = self.config.channels.get(row["name"])
        declared = spec is not None and row["state"] != "deleted"
        return Channel(name=row["name"],
                       kind=spec.kind if declared and spec else row["kind"],
                       senders=spec.senders if declared and spec else
                       tuple(json.loads(row["senders"])),
                       state=row["state"], turns=int(row["turns"]), declared=declared,
                       changed_by=row["changed_by"], created_at=row["created_at"],
                       updated_at=row["updated_at"])

    async def _seed(self) -> None:
        """The declared channels get their rows (once per process; kept when there)."""
        if self._seeded or not self.config.channels:
            self._seeded = True
            return
        now = time.time()

        def seed(conn: Connection) -> None:
            insert = (postgresql.insert if conn.dialect.name == "postgresql"
                      else sqlite.insert)(table)
            conn.execute(insert.on_conflict_do_nothing(index_elements=["name"]), [
                {"name": c.name, "kind": c.kind, "senders": json.dumps(list(c.senders)),
                 "state": "active", "turns": 0, "changed_by": "config",
                 "created_at": now, "updated_at": now}
                for c in self.config.channels.values()])

        await self.store.transaction(seed)
        self._seeded = True

    async def list(self, *, deleted: bool = False) -> list[Channel]:
        """Every channel by name (the deleted ones too when asked)."""
        await self._seed()
        query = sa.select(table).order_by(table.c.name)
        if not deleted:
            query = query.where(table.c.state != "deleted")
        [rows] = await self.store.rows(query)
        return [self._shown(r) for r in rows]

    async def find(self, name: str) -> Channel | None:
        """The channel ``name`` (deleted or not), or None."""
        await self._seed()
        [rows] = await self.store.rows(sa.select(table).where(table.c.name == name))
        return self._shown(rows[0]) if rows else None

    async def get(self, name: object, field: str = "channel") -> Channel:
        """The channel ``name``; a :class:`ChannelError` if there is none (or deleted)."""
        if not isinstance(name, str):
            raise ChannelError(f"{field}: expected a channel's name, got {name!r:.60}",
                               field=field)
        found = await self.find(name)
        if found is None or found.state == "deleted":
            names = [c.name for c in await self.list()]
            what = "was deleted" if found is not None else "does not exist"
            raise ChannelError(f"{field}: channel {name!r:.64} {what} (the channels are: "
                               f"{', '.join(names) or 'none'})", kind="not_found",
                               field=field)
        return found

    async def queued(self, name: str) -> builtins.list[dict[str, Any]]:
        """The messages of channel ``name`` not ended yet: work id, status and input."""
        if self.store.dialect == "postgresql":
            channel = sa.cast(works.c.input, postgresql.JSONB)["channel"].astext
        else:
            channel = sa.func.json_extract(works.c.input, "$.channel")
        query = sa.select(works.c.work_id, works.c.status, works.c.input).where(
            works.c.saga == SEND_SAGA, works.c.status.not_in(_ENDED),
            channel == name).order_by(works.c.created_at, works.c.work_id)
        async with self.store.reader.connect() as conn:  # a scan: not on the event loop
            rows = (await conn.execute(query)).all()
        return [{"work_id": row.work_id, "status": row.status, "input": json.loads(row.input)}
                for row in rows]

    # ------------------------------------------------------------ changing

    async def create(self, name: object, kind: object, senders: Sequence[str], *,
                     by: str = "") -> Channel:
        """A new channel of ``kind`` (email, sms or chat) sending through ``senders``
        (names in ``[messaging.senders]`` of providers for that kind), active."""
        field = "name"
        try:
            name = check_name(name, "name")
            field = "kind"
            if kind not in CHANNEL_KINDS:
                raise MessagingConfigError(f"kind: expected one of {', '.join(CHANNEL_KINDS)}"
                                           f", got {kind!r:.60}")
            kind = str(kind)
            field = "senders"
            names = senders_of(kind, list(senders) if isinstance(senders, list | tuple)
                               else senders, self.config.senders, "senders")
        except MessagingConfigError as exc:
            raise ChannelError(str(exc), field=field) from None
        await self._seed()
        now = time.time()

        def make(conn: Connection) -> bool:
            row = conn.execute(sa.select(table.c.state).where(table.c.name == name)).first()
            values = {"kind": kind, "senders": json.dumps(list(names)), "state": "active",
                      "turns": 0, "changed_by": by, "created_at": now, "updated_at": now}
            if row is None:
                conn.execute(table.insert().values(name=name, **values))
            elif row.state == "deleted":  # a deleted channel's name is free again
                conn.execute(table.update().where(table.c.name == name).values(**values))
            else:
                return False
            return True

        if not await self.store.transaction(make):
            raise ChannelError(f"name: channel {name!r} exists already", kind="conflict",
                               field="name")
        return await self.get(name, "name")

    async def _set_state(self, name: object, state: str, by: str) -> Channel:
        channel = await self.get(name, "name")
        if channel.state != state:
            def change(conn: Connection) -> None:
                conn.execute(table.update().where(table.c.name == channel.name,
                                                  table.c.state != "deleted")
                             .values(state=state, changed_by=by, updated_at=time.time()))

            await self.store.transaction(change)
        return await self.get(channel.name, "name")

    async def pause(self, name: object, *, by: str = "") -> Channel:
        """Hold the channel's messages from now on (those being delivered go on)."""
        return await self._set_state(name, "paused", by)

    async def resume(self, name: object, *, by: str = "") -> tuple[Channel, int]:
        """Deliver again: the channel active, and every message it holds told to go on
        (the signal goes to each queued one: a message not held yet does not wait for
        it; one held again later finds the channel paused and waits again). The
        channel and the number of messages told."""
        channel = await self._set_state(name, "active", by)
        told = 0
        for message in await self.queued(channel.name):
            if await self._command(message["work_id"], Command(
                    kind="signal", by=by or "messaging", reason=f"channel {channel.name} "
                    "resumed", args={"name": RESUME_SIGNAL, "payload": message["input"]})):
                told += 1
        return channel, told

    async def purge(self, name: object, *, by: str = "") -> int:
        """Cancel every message queued for the channel; how many were told to."""
        channel = await self.find(name) if isinstance(name, str) else None
        if channel is None:  # a deleted one is purged still: what it had queued goes
            channel = await self.get(name, "name")  # the error naming it
        cancelled = 0
        for message in await self.queued(channel.name):
            if await self._command(message["work_id"], Command(
                    kind="cancel", by=by or "messaging",
                    reason=f"channel {channel.name} purged")):
                cancelled += 1
        return cancelled

    async def delete(self, name: object, *, by: str = "") -> int:
        """Delete the channel and cancel what it has queued; how many were cancelled."""
        channel = await self.get(name, "name")

        def drop(conn: Connection) -> None:
            conn.execute(table.update().where(table.c.name == channel.name)
                         .values(state="deleted", changed_by=by, updated_at=time.time()))

        await self.store.transaction(drop)
        return await self.purge(channel.name, by=by)

    async def _command(self, work_id: str, command: Command) -> bool:
        try:
            await inbox.send(self.store, work_id, command)
        except (UnknownWorkError, WorkStateError):
            return False  # it ended meanwhile, or was removed
        return True

    async def take_turn(self, name: str, *, if_active: bool = False) -> tuple[int, Channel]:
        """One more message for channel ``name``: its number (1, 2, ...), unique across
        every node, and the channel as it is; ``if_active``: no number (0) when the
        channel is not active (the channel says how it is).

        The messages of this process that ask together share one statement, ``UPDATE
        ... SET turns = turns + k ... RETURNING``, and take the k numbers it reserved in
        the order they asked: atomic on SQLite and PostgreSQL alike, no number given
        twice nor skipped, and one write however many ask at once (on SQLite a write
        transaction each would queue on the write lock)."""
        await self._seed()
        turn = _Turn()
        asking = (name, if_active)
        waiting = self._asking.setdefault(asking, [])
        waiting.append(turn)
        if len(waiting) == 1:  # nobody takes turns for this channel now: this one does
            with anyio.CancelScope(shield=True):  # the others wait on it
                while waiting:
                    batch = waiting[:]
                    await self._reserve(name, batch, if_active)
                    del waiting[:len(batch)]
                    for one in batch:
                        one.done.set()
                del self._asking[asking]
        else:
            await turn.done.wait()
        if turn.error is not None:
            raise turn.error
        assert turn.channel is not None
        return turn.number, turn.channel

    async def _reserve(self, name: str, batch: builtins.list[_Turn], if_active: bool
                       ) -> None:
        statement = _TAKE_IF_ACTIVE if if_active else _TAKE
        values = {"channel": name, "more": len(batch)}

        def take(conn: Connection) -> Any:
            return conn.execute(statement, values).first()

        try:
            row = await self.store.transaction(take)
            if row is None:
                await self.get(name)  # raises, naming it
                raise ChannelError(f"channel {name!r} was deleted", kind="not_found",
                                   field="channel")  # between the two reads
        except Exception as exc:
            for one in batch:
                one.error = exc
            return
        channel, last = self._shown(row), int(row.turns)
        taken = not if_active or channel.state == "active"
        for i, one in enumerate(batch):
            one.number, one.channel = (last - len(batch) + 1 + i) if taken else 0, channel


def _take(more: Any) -> Any:
    return (table.update()
            .where(table.c.name == sa.bindparam("channel"), table.c.state != "deleted")
            .values(turns=table.c.turns + more).returning(*table.c))


# built once: a message's turn is taken on the hot path
_TAKE = _take(sa.bindparam("more"))
_TAKE_IF_ACTIVE = _take(sa.case((table.c.state == "active", sa.bindparam("more")), else_=0))


class _Turn:
    """One message asking for its turn (see :meth:`Channels.take_turn`)."""

    __slots__ = ("channel", "done", "error", "number")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.number = 0
        self.channel: Channel | None = None
        self.error: Exception | None = None
