"""A process for the crash test: runs works of a ledger saga on a SQLite store until
they all end. The test kills it with SIGKILL at random moments and starts it again.

Usage: python -m tests.engine.crash_child <sqlite file> <works>
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any

import anyio

from engine import Runtime, Saga, Stage
from engine.store import SqlStore

STAGES = ("reserve", "charge", "ship")


def ledger_saga(db: Path) -> Saga:
    def write(key: str, work_id: str, path: str) -> None:
        # the effect of a stage: one ledger row per idempotency key, whatever the repeats
        with sqlite3.connect(db, timeout=30) as conn:
            conn.execute("INSERT OR IGNORE INTO ledger (key, work_id, path) VALUES (?, ?, ?)",
                         (key, work_id, path))

    async def effect(ctx: Any, value: int) -> int:
        await anyio.to_thread.run_sync(write, ctx.idempotency_key, ctx.work_id, ctx.path)
        await anyio.sleep(0.001)
        return value + 1

    return Saga(name="ledger", stages=[Stage(name=n, transaction=effect) for n in STAGES])


def prepare(db: Path) -> None:
    with sqlite3.connect(db, timeout=30) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS ledger (key TEXT PRIMARY KEY, work_id TEXT, "
                     "path TEXT)")


async def main(db: Path, count: int) -> None:
    prepare(db)
    async with SqlStore.open(f"sqlite+aiosqlite:///{db}") as store:
        async with Runtime([ledger_saga(db)], store=store) as rt:
            waiting = await rt.recover()
            for i in range(count):
                work_id = f"w{i:04d}"
                if await store.work(work_id) is None:
                    await rt.start("ledger", 0, work_id=work_id)
                    waiting.append(work_id)
            for work_id in waiting:
                await rt.wait(work_id)
    print("all done", flush=True)


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]), int(sys.argv[2]))
