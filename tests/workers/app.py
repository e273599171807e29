"""The sagas the worker tests run in ``stepsaga worker`` processes: each stage writes
one row to a ledger (a SQLite file named by $STEPSAGA_TEST_LEDGER), keyed by its
idempotency key, and counts every execution, repeats included."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import anyio

from engine import Saga, Stage
from workers.limits import RateLimit
from workers.node import WorkerApp

STAGES = ("reserve", "charge", "ship")


def prepare(db: Path) -> None:
    with sqlite3.connect(db, timeout=30) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS ledger (key TEXT PRIMARY KEY, work_id TEXT, "
                     "path TEXT)")
        conn.execute("CREATE TABLE IF NOT EXISTS runs (key TEXT)")


def _write(db: str, key: str, work_id: str, path: str) -> None:
    with sqlite3.connect(db, timeout=30) as conn:
        conn.execute("INSERT OR IGNORE INTO ledger (key, work_id, path) VALUES (?, ?, ?)",
                     (key, work_id, path))
        conn.execute("INSERT INTO runs (key) VALUES (?)", (key,))


async def _effect(ctx: Any, value: int) -> int:
    db = os.environ["STEPSAGA_TEST_LEDGER"]
    await anyio.to_thread.run_sync(_write, db, ctx.idempotency_key, ctx.work_id, ctx.path)
    await anyio.sleep(0.02)  # long enough for the test to kill a node mid-run
    return value + 1


def sagas() -> list[Saga]:
    return [Saga(name="ledger", stages=[Stage(name=n, transaction=_effect) for n in STAGES])]


def limited() -> WorkerApp:
    """The same sagas with their node's settings: `--app tests.workers.app:limited`."""
    return WorkerApp(sagas=sagas(), rate_limits={"ledger": RateLimit(rate=50, burst=1)},
                     saga_limits={"ledger": 3})
