"""A process for the contention tests: takes a global lock or rate-limit tokens from
the store in a loop and records when it held or got them, in a SQLite file.

Usage: python -m tests.workers.contention_child lock|rate <store url> <record file> <n>
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time

import anyio

from engine.store import SqlStore
from workers.limits import RateLimit, take
from workers.locks import LockService


def record(db: str, kind: str, start: float, end: float) -> None:
    with sqlite3.connect(db, timeout=30) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS spans (kind TEXT, pid INT, start REAL, "
                     "end REAL)")
        conn.execute("INSERT INTO spans VALUES (?, ?, ?, ?)", (kind, os.getpid(), start, end))


async def main(mode: str, url: str, db: str, count: int) -> None:
    async with SqlStore.open(url) as store:
        if mode == "lock":
            locks = LockService(store, poll_interval=0.005)
            for i in range(count):
                async with locks.hold("L", f"{os.getpid()}/{i}", ttl=10):
                    start = time.time()
                    await anyio.sleep(0.005)
                    end = time.time()
                record(db, "lock", start, end)
        else:
            # a burst of 5: a process that wakes late (a loaded machine) finds the tokens
            # that came meanwhile instead of losing them, so the long-run rate is the
            # limit's, not the limit's less the lateness
            limit = RateLimit(rate=20, burst=5)
            deadline = time.time() + count
            while time.time() < deadline:
                wait = await take(store, "sms:all", limit)
                if wait == 0:
                    now = time.time()
                    record(db, "rate", now, now)
                else:
                    await anyio.sleep(wait)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
