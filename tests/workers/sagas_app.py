"""The app the tests of sagas given as data run in ``stepsaga worker`` processes: one
saga in code, and the functions a saga given as data may name (``--app
tests.workers.sagas_app:app``). Each function adds one to the input and counts its
calls in a SQLite ledger named by $STEPSAGA_TEST_LEDGER when set."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

import anyio

from engine import Functions, Saga, Stage
from workers.node import WorkerApp

functions = Functions()


def _count(path: str) -> None:
    db = os.environ.get("STEPSAGA_TEST_LEDGER")
    if db:
        with sqlite3.connect(db, timeout=30) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS calls (path TEXT)")
            conn.execute("INSERT INTO calls (path) VALUES (?)", (path,))


@functions.register
async def add(ctx: Any, value: int) -> int:
    await anyio.to_thread.run_sync(_count, ctx.path)
    return value + 1


@functions.register
async def undo(ctx: Any, value: Any, output: Any, reason: Any) -> None:
    return None


@functions.register
async def enough(ctx: Any, value: int) -> bool:
    return value >= 3


@functions.register(name="pairs")
async def pairs(ctx: Any, value: int) -> list[int]:
    return [value, value]


CODE = [Saga(name="code", stages=[Stage(name="a", transaction=add)])]

app = WorkerApp(sagas=CODE, functions=functions)
