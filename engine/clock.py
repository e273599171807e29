"""Clocks: the only source of time for the engine, injected so tests never sleep.

:class:`SystemClock` is wall time. :class:`ManualClock` moves only when told to
(``advance``), or, with ``autojump=True``, jumps straight to whatever time the
engine waits for, so durable timers and retry backoffs cost no real time.
"""

from __future__ import annotations

import time
from typing import Protocol

import anyio

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once ``now() >= deadline``."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - time.time()
        if delay > 0:
            await anyio.sleep(delay)


class ManualClock:
    """Time that moves when the test says so.

    >>> clock = ManualClock(start=100.0)
    >>> clock.advance(5)
    >>> clock.now()
    105.0
    """

    def __init__(self, start: float = 1_700_000_000.0, *, autojump: bool = False) -> None:
        self._now = start
        self.autojump = autojump
        self._changed = anyio.Event()

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a clock cannot go back: advance({seconds})")
        self._now += seconds
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def sleep_until(self, deadline: float) -> None:
        while self._now < deadline:
            if self.autojump:
                self.advance(deadline - self._now)
                await anyio.lowlevel.checkpoint()
                return
            await self._changed.wait()
