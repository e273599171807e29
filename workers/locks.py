"""Global locks on the store: named, fair, visible, and freed when their holder dies.

A lock has a limit of holders at once (1: a mutex; more: a concurrency limit, for
example at most two works per customer). A holder takes it for a time to live and
renews it while it holds it (:meth:`LockService.hold` does); a holder that dies
stops renewing and the lock frees itself when the time runs out. Waiters queue in
``lock_waiters`` and are served first come, first served: a waiter takes the lock
only when fewer than the limit hold it counting the waiters ahead of it. A waiter
renews its place too, so a dead waiter does not block the queue.

Every step is one short write transaction (on PostgreSQL serialised per lock name by
an advisory lock), so processes on any machine share the locks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.store import SqlStore
from engine.store.schema import lock_holders, lock_waiters

from .errors import LockTimeoutError

__all__ = ["LockService", "LockTimeoutError"]

_LOG = logging.getLogger("stepsaga.locks")


def _check(ttl: float, limit: int, max_wait: float | None) -> None:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
        raise ValueError(f"a lock's time to live must be > 0 seconds, got {ttl!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"a lock's limit of holders must be a whole number >= 1, "
                         f"got {limit!r}")
    if max_wait is not None and not max_wait >= 0:
        raise ValueError(f"a lock's wait limit must be >= 0 seconds, got {max_wait!r}")


def _serialise(conn: Connection, name: str) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:n))"), {"n": "lock:" + name})


class LockService:
    def __init__(self, store: SqlStore, *, poll_interval: float = 0.05) -> None:
        self.store = store
        self.poll_interval = poll_interval

    async def acquire(self, name: str, holder: str, *, ttl: float, max_wait: float | None = None,
                      limit: int = 1, on_wait: Callable[[], Awaitable[None]] | None = None,
                      ) -> None:
        """Take lock ``name`` for ``holder`` (waiting in line up to ``max_wait`` seconds,
        None: for ever); it lasts ``ttl`` seconds unless renewed."""
        _check(ttl, limit, max_wait)
        if not name or not holder:
            raise ValueError("a lock needs a name and a holder")
        deadline = None if max_wait is None else time.monotonic() + max_wait

        def enqueue(conn: Connection) -> int:
            _serialise(conn, name)
            now = time.time()
            held = conn.execute(sa.select(lock_holders.c.holder).where(
                lock_holders.c.name == name, lock_holders.c.holder == holder,
                lock_holders.c.expires_at >= now)).first()
            if held is not None:
                raise ValueError(f"{holder!r} holds lock {name!r} already")
            result = conn.execute(lock_waiters.insert().values(
                name=name, holder=holder, since=now, expires_at=now + ttl))
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

        position = await self.store.transaction(enqueue)

        def take(conn: Connection) -> bool:
            _serialise(conn, name)
            now = time.time()
            conn.execute(lock_holders.delete().where(lock_holders.c.name == name,
                                                     lock_holders.c.expires_at < now))
            conn.execute(lock_waiters.delete().where(lock_waiters.c.name == name,
                                                     lock_waiters.c.expires_at < now,
                                                     lock_waiters.c.position != position))
            conn.execute(lock_waiters.update().where(lock_waiters.c.position == position)
                         .values(expires_at=now + ttl))  # still here: keep my place
            holders = conn.execute(sa.select(sa.func.count()).select_from(lock_holders).where(
                lock_holders.c.name == name)).scalar_one()
            ahead = conn.execute(sa.select(sa.func.count()).select_from(lock_waiters).where(
                lock_waiters.c.name == name, lock_waiters.c.position < position)).scalar_one()
            if holders + ahead >= limit:
                return False
            conn.execute(lock_waiters.delete().where(lock_waiters.c.position == position))
            conn.execute(lock_holders.insert().values(name=name, holder=holder,
                                                      acquired_at=now, expires_at=now + ttl))
            return True

        told = False
        try:
            while not await self.store.transaction(take):
                if deadline is not None and time.monotonic() >= deadline:
                    holders = [h["holder"] for h in await self.holders(name)]
                    raise LockTimeoutError(f"lock {name!r} not acquired within {max_wait} s; "
                                           f"held by {', '.join(holders) or 'nobody'}")
                if not told and on_wait is not None:
                    told = True
                    await on_wait()
                await anyio.sleep(self.poll_interval)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._leave(position)
            raise

    async def _leave(self, position: int) -> None:
        def leave(conn: Connection) -> None:
            conn.execute(lock_waiters.delete().where(lock_waiters.c.position == position))

        await self.store.transaction(leave)

    async def release(self, name: str, holder: str) -> bool:
        """Give lock ``name`` back; False if ``holder`` did not hold it (any more)."""
        def release(conn: Connection) -> bool:
            result = conn.execute(lock_holders.delete().where(
                lock_holders.c.name == name, lock_holders.c.holder == holder))
            return bool(result.rowcount)

        return await self.store.transaction(release)

    async def renew(self, name: str, holder: str, *, ttl: float) -> bool:
        """Push the lock's expiry ``ttl`` seconds ahead; False if it was lost meanwhile."""
        _check(ttl, 1, None)

        def renew(conn: Connection) -> bool:
            now = time.time()
            result = conn.execute(lock_holders.update().where(
                lock_holders.c.name == name, lock_holders.c.holder == holder,
                lock_holders.c.expires_at >= now).values(expires_at=now + ttl))
            return bool(result.rowcount)

        return await self.store.transaction(renew)

    @asynccontextmanager
    async def hold(self, name: str, holder: str, *, ttl: float, max_wait: float | None = None,
                   limit: int = 1, on_wait: Callable[[], Awaitable[None]] | None = None,
                   ) -> AsyncIterator[None]:
        """Hold the lock for the ``async with`` body, renewing it every third of ``ttl``."""
        await self.acquire(name, holder, ttl=ttl, max_wait=max_wait, limit=limit,
                           on_wait=on_wait)
        try:
            async with anyio.create_task_group() as tg:
                async def keep() -> None:
                    while True:
                        await anyio.sleep(ttl / 3)
                        try:
                            if not await self.renew(name, holder, ttl=ttl):
                                _LOG.error("lock %r of %s expired while held (the store was "
                                           "out of reach for longer than its ttl)", name,
                                           holder)
                        except Exception:  # the next round tries again
                            _LOG.exception("lock %r of %s could not be renewed", name, holder)

                tg.start_soon(keep)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self.release(name, holder)
                except Exception:  # not the stage's failure: the lock expires by itself
                    _LOG.exception("lock %r of %s could not be released", name, holder)

    async def holders(self, name: str | None = None) -> list[dict[str, Any]]:
        """Who holds which lock, since when, until when (live holders only)."""
        query = sa.select(lock_holders).where(lock_holders.c.expires_at >= time.time())
        if name is not None:
            query = query.where(lock_holders.c.name == name)
        async with self.store.reader.connect() as conn:
            rows = (await conn.execute(query.order_by(lock_holders.c.name,
                                                      lock_holders.c.acquired_at))).mappings()
            return [dict(r) for r in rows]

    async def waiters(self, name: str | None = None) -> list[dict[str, Any]]:
        """Who waits for which lock, in the order they will get it."""
        query = sa.select(lock_waiters).where(lock_waiters.c.expires_at >= time.time())
        if name is not None:
            query = query.where(lock_waiters.c.name == name)
        async with self.store.reader.connect() as conn:
            rows = (await conn.execute(query.order_by(lock_waiters.c.position))).mappings()
            return [dict(r) for r in rows]
