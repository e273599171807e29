"""The event feed: every event committed to the store, by any process, in commit order,
read once per process and fanned out in memory to its subscribers.

An event's ``position`` is its place in commit order: positions grow with every
commit (PostgreSQL takes them under the append lock; SQLite has one writer at a
time), with holes allowed, so "every event after cursor C" is ``position > C``. One
:class:`Feed` per process reads past its position when woken: on PostgreSQL by a
NOTIFY each group commit sends on :data:`CHANNEL` (the reader LISTENs, and reads
again after a reconnect), on SQLite by a poll every few milliseconds, and in either
case at once by a commit of its own process. A SQLite commit of its own process whose
events take the positions right after the feed's is handed over with them, unread.

A :class:`Subscription` resumes from a cursor: it reads what it missed from the store
first, then takes the live events, so it gets every later event once, with no gap and
no duplicate. A subscriber that falls behind (its buffer fills) is not waited for: it
drops back to reading from the store from its last position, then goes live again.
While nobody subscribes, the reader reads nothing.

>>> import anyio, tempfile
>>> from engine import Runtime, Saga, Stage
>>> async def one(ctx, n): return n + 1
>>> saga = Saga(name="s", stages=[Stage(name="a", transaction=one)])
>>> async def main(url):
...     async with SqlStore.open(url) as store, Feed.running(store) as feed:
...         async with Runtime([saga], store=store) as rt:
...             async with feed.subscribe(after=0) as events:
...                 done = await rt.run("s", 1)
...                 seen = []
...                 async for recorded in events:
...                     seen.append(recorded.type)
...                     if recorded.type == "work.completed":
...                         return seen[0], seen[-1], done.events == len(seen)
>>> with tempfile.TemporaryDirectory() as tmp:
...     anyio.run(main, f"sqlite+aiosqlite:///{tmp}/s.sqlite")
('work.created', 'work.completed', True)
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import sqlalchemy as sa

from .. import metrics
from ..events import RecordedEvent
from ..ids import check_work_id
from .batch import EVENTS_CHANNEL, Committed
from .codec import decode_event
from .schema import events
from .sql import SqlStore

__all__ = ["CHANNEL", "Feed", "Subscription"]

_LOG = logging.getLogger("stepsaga.feed")

CHANNEL = EVENTS_CHANNEL  # NOTIFY channel: a group commit wrote events
_BATCH = 2000  # events read per query
_FANOUT = metrics.FANOUT_SECONDS


class Subscription:
    """The events after a cursor that pass a filter (one work's, some types'), in
    position order; iterate it, and leave the feed's ``subscribe`` block to end it."""

    def __init__(self, feed: Feed, after: int, work_id: str | None,
                 types: Collection[str] | None, buffer: int) -> None:
        self._feed = feed
        self.position = after  # the position of the last event delivered
        self.work_id = work_id
        self.types = frozenset(types) if types is not None else None
        self._live: deque[RecordedEvent] = deque()
        self._buffer = buffer
        # read from the store until caught up with the feed (from the feed's position on,
        # the reader offers every event)
        self._behind = after < feed.position
        self._wake = anyio.Event()
        self.closed = False

    def wants(self, recorded: RecordedEvent) -> bool:
        return (self.work_id is None or recorded.work_id == self.work_id) and \
            (self.types is None or recorded.type in self.types)

    def _offer(self, found: list[RecordedEvent]) -> None:
        if self._behind:
            return
        for recorded in found:
            if self.wants(recorded):
                if len(self._live) >= self._buffer:  # too slow: read from the store
                    self._live.clear()
                    self._behind = True
                    break
                self._live.append(recorded)
        self._wake.set()

    def __aiter__(self) -> AsyncIterator[RecordedEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[RecordedEvent]:
        while not self.closed:
            if self._behind:
                async for recorded in self._catch_up():
                    yield recorded
                continue
            while self._live:
                recorded = self._live.popleft()
                if recorded.position is not None and recorded.position > self.position:
                    self.position = recorded.position
                    _FANOUT.observe(max(0.0, time.time() - recorded.time))
                    yield recorded
            if self._behind or self.closed:
                continue
            self._wake = anyio.Event()
            if not self._live:
                await self._wake.wait()

    async def _catch_up(self) -> AsyncIterator[RecordedEvent]:
        """Read from the store up to the feed's position, then go live (events the
        feed reads from then on are buffered, so nothing falls between)."""
        while True:
            target = self._feed.position
            found = await self._feed.read_after(self.position, work_id=self.work_id,
                                                until=target)
            for recorded in found:
                assert recorded.position is not None
                self.position = recorded.position
                if self.types is None or recorded.type in self.types:
                    yield recorded
            if len(found) < _BATCH and self._feed.position == target:
                self.position = max(self.position, target)
                self._live.clear()
                self._behind = False  # from here on the reader offers what it reads
                return


class Feed:
    """One reader of the store's events per process (see the module docstring)."""

    def __init__(self, store: SqlStore, *, poll_interval: float | None = None,
                 buffer: int = 10_000) -> None:
        if poll_interval is not None and not (math.isfinite(poll_interval)
                                              and poll_interval > 0):
            raise ValueError(f"poll_interval must be a number of seconds > 0, got "
                             f"{poll_interval!r}")
        self.store = store
        postgres = store.dialect == "postgresql"
        # PostgreSQL wakes the reader by NOTIFY: its poll only covers a lost notification
        self.poll_interval = poll_interval or (1.0 if postgres else 0.005)
        self.buffer = buffer
        self.position = 0  # every event up to here has been read (or was before anyone
        self._tracking = False  # subscribed: then the reader jumps to the newest)
        # in the order they came: the longest-standing subscriber hears first
        self._subscriptions: dict[Subscription, None] = {}
        self._wake = anyio.Event()
        self.reads = 0  # queries that found events: a measure for benchmarks
        self.handed = 0  # commits of this process handed over unread
        self._reading = False

    @classmethod
    @asynccontextmanager
    async def running(cls, store: SqlStore, **options: Any) -> AsyncIterator[Feed]:
        """A feed whose reader runs for the block."""
        feed = cls(store, **options)
        async with anyio.create_task_group() as tg:
            await tg.start(feed.run)
            try:
                yield feed
            finally:
                tg.cancel_scope.cancel()

    def wake(self) -> None:
        """Read now: something was committed (the store calls this for its own
        commits; an API node may call it when told of others)."""
        self._wake.set()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
                  ) -> None:
        """The reader; runs until cancelled."""
        remove = self.store.add_commit_listener(self._committed)
        try:
            async with anyio.create_task_group() as tg:
                if self.store.dialect == "postgresql":
                    await tg.start(self._listen)
                task_status.started()
                while True:
                    with anyio.move_on_after(self.poll_interval):
                        await self._wake.wait()
                    self._wake = anyio.Event()
                    if not self._subscriptions:
                        self._tracking = False
                        continue
                    self._reading = True
                    try:
                        await self._read()
                    except Exception:  # the database is away: read again next time
                        _LOG.exception("the event feed could not read the store")
                        await anyio.sleep(self.poll_interval)
                    finally:
                        self._reading = False
        finally:
            remove()

    def _committed(self, committed: Committed | None) -> None:
        """A group commit of this process. Its events go to the subscribers at once,
        unread, when they follow on from what the reader has read (their positions
        are the next ones: nothing another process committed fell between); else,
        or while the reader reads, the reader reads."""
        if committed is not None and self._subscriptions and self._tracking \
                and not self._reading:
            found = committed.records()
            if not found:
                return
            if found[0].position == self.position + 1:
                self.position = committed.last
                self.handed += 1
                for subscription in list(self._subscriptions):
                    subscription._offer(found)
                return
        self.wake()

    async def _read(self) -> None:
        if not self._tracking:  # nobody followed: start from the newest event
            self.position = max(self.position, await self.last_position())
            self._tracking = True
        while True:
            found = await self.read_after(self.position)
            if not found:
                return
            self.reads += 1
            last = found[-1].position
            assert last is not None
            self.position = max(self.position, last)
            for subscription in list(self._subscriptions):
                subscription._offer(found)
            if len(found) < _BATCH:
                return

    async def read_after(self, position: int, *, work_id: str | None = None,
                         until: int | None = None) -> list[RecordedEvent]:
        """Up to a batch of events after ``position`` (of one work, up to ``until``)."""
        query = sa.select(events).where(events.c.position > position)
        if work_id is not None:
            query = query.where(events.c.work_id == check_work_id(work_id))
            order = events.c.seq  # a work's positions grow with its seqs: its index
        else:
            order = events.c.position
        if until is not None:
            query = query.where(events.c.position <= until)
        (rows,) = await self.store.rows(query.order_by(order).limit(_BATCH))
        return [decode_event(dict(row)) for row in rows]

    async def last_position(self) -> int:
        async with self.store.reader.connect() as conn:
            found = (await conn.execute(sa.select(sa.func.max(events.c.position)))).scalar()
        return int(found or 0)

    @asynccontextmanager
    async def subscribe(self, *, after: int | None = None, work_id: str | None = None,
                        types: Collection[str] | None = None) -> AsyncIterator[Subscription]:
        """Follow the events after cursor ``after`` (None: from now on), of one work or
        all, of some types or all."""
        if after is not None and (isinstance(after, bool) or not isinstance(after, int)
                                  or after < 0):
            raise ValueError(f"a cursor is a position >= 0, got {after!r}")
        if work_id is not None:
            check_work_id(work_id)
        started = not self._tracking
        if started:
            self.position = max(self.position, await self.last_position())
            self._tracking = True
        if after is None:  # from what the reader has read: every later event reaches it
            after = self.position
        subscription = Subscription(self, after, work_id, types, self.buffer)
        self._subscriptions[subscription] = None
        metrics.SUBSCRIPTIONS.inc()
        if started:
            # a commit's wake-up that came while the position was read found nobody to
            # read for and was dropped: read once now, or its events would wait for the
            # next commit or poll (up to a second on PostgreSQL)
            self.wake()
        try:
            yield subscription
        finally:
            subscription.closed = True
            subscription._wake.set()
            self._subscriptions.pop(subscription, None)
            metrics.SUBSCRIPTIONS.dec()

    async def _listen(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """LISTEN for group commits (PostgreSQL); read again after each (re)connect:
        anything committed while the connection was down."""
        from .listen import listen

        await listen(self.store, {CHANNEL: lambda _: self.wake()}, who="the event feed",
                     on_connect=lambda first: self.wake(), task_status=task_status)
