"""The worker nodes' gate (:class:`engine.gate.Gate`): service health, rate limits and
locks, checked in that order before a stage's transaction runs.

- A stage's ``services`` that have a health check must be available; while one is
  not, the call waits (the work shows ``waiting`` and which service) and goes on
  when it is back, without spending a retry.
- A ``rate_limit_key`` with a limit (its own or its prefix's) takes a token first.
- A ``lock_key`` is held for the transaction's duration; its limit of holders
  (default 1) comes from ``lock_limits``, by key or prefix: a concurrency limit
  per key, for example two works per customer at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

import anyio

from engine.gate import Admission
from engine.store import SqlStore

from .health import Health
from .limits import RateLimit, limit_for, take
from .locks import LockService

__all__ = ["NodeGate"]


class NodeGate:
    def __init__(self, store: SqlStore, *, holder: str, health: Health | None = None,
                 rate_limits: Mapping[str, RateLimit] | None = None,
                 lock_limits: Mapping[str, int] | None = None, lock_ttl: float = 30.0,
                 lock_timeout: float | None = None) -> None:
        self.store = store
        self.holder = holder  # the node: lock holders are '<node>/<work>/<path>'
        self.health = health
        self.rate_limits = dict(rate_limits or {})
        self.lock_limits = dict(lock_limits or {})
        for key, limit in self.lock_limits.items():
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ValueError(f"lock limit of {key!r} must be a whole number >= 1, "
                                 f"got {limit!r}")
        self.locks = LockService(store)
        self.lock_ttl = lock_ttl
        self.lock_timeout = lock_timeout

    @asynccontextmanager
    async def admit(self, request: Admission, waiting: Callable[[str], Awaitable[None]]
                    ) -> AsyncIterator[None]:
        if self.health is not None:
            for name in request.stage.services:
                while True:
                    ok, why = self.health.available(name)
                    if ok:
                        break
                    await waiting(f"service {name} unavailable: {why}")
                    with anyio.move_on_after(self.health.interval):
                        await self.health.changed()
        key = request.rate_limit_key
        limit = limit_for(self.rate_limits, key) if key else None
        if key and limit is not None:
            while (wait := await take(self.store, key, limit)) > 0:
                await waiting(f"rate limit {key}")
                await anyio.sleep(wait)
        if request.lock_key:
            name = request.lock_key
            count = self.lock_limits.get(name) or self.lock_limits.get(name.split(":", 1)[0], 1)

            async def on_wait() -> None:
                await waiting(f"lock {name}")

            holder = f"{self.holder}/{request.work_id}/{request.path}"
            async with self.locks.hold(name, holder, ttl=self.lock_ttl, limit=count,
                                       max_wait=self.lock_timeout, on_wait=on_wait):
                yield
        else:
            yield
