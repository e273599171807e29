"""A process for tests/engine/test_processes.py: drives works on a store, while the test
process looks at the same store, takes works over, SIGKILLs it or presses Ctrl-C.

Every call of user code writes to a ledger, a SQLite file of its own (plain sqlite3):
``calls`` gets a row per call, repeats included; ``effects`` gets a row per idempotency
key (``INSERT OR IGNORE``), the effect a key-aware service would keep.

Usage: python -m tests.engine.process_child <mode> <store url> <ledger file> [options]

- ``hold --gate FILE [--ttl S]``: start one work of saga ``hold``, whose stage waits
  (at an await, bounded) until FILE exists; print ``result <status>`` when it ends.
- ``undo --works N [--new M] [--block END]``: recover, start (up to M of) the works
  ``w0000``... that the store does not have, and wait for them all (saga ``undo``:
  compensated); ``all done`` at the end. The first call whose idempotency key ends
  with END blocks (the test kills the process there).

Lines on stdout: ``engine <path of the engine package imported>``, ``work <id>``,
``stage <work id> <key>`` (a stage's call is under way), ``call <key>``,
``blocked <key>``, ``result <status>``, ``all done``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import tenacity

import engine
from engine import RetryPolicy, Runtime, Saga, Stage, StageFailure
from engine.store import SqlStore

GATE_DEADLINE = 30.0  # a stage never waits longer for its gate: the test has failed then
UNDO_STAGES = ("a", "b", "c", "d")  # b fails twice (retryably), d for good


def say(line: str) -> None:
    print(line, flush=True)


def prepare(ledger: Path) -> None:
    with closing(sqlite3.connect(ledger, timeout=30)) as conn, conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS calls (n INTEGER PRIMARY KEY AUTOINCREMENT, "
                     "key TEXT, work_id TEXT, path TEXT, kind TEXT, pid INTEGER)")
        conn.execute("CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, work_id TEXT, "
                     "path TEXT, kind TEXT)")


def _write(ledger: Path, ctx: Any) -> None:
    # closed, not only committed: the tests run this too, where a connection left to the
    # garbage collector is a ResourceWarning (an error, with filterwarnings=error)
    with closing(sqlite3.connect(ledger, timeout=30)) as conn, conn:
        row = (ctx.idempotency_key, ctx.work_id, ctx.path, ctx.kind)
        conn.execute("INSERT INTO calls (key, work_id, path, kind, pid) VALUES (?, ?, ?, ?, ?)",
                     (*row, os.getpid()))
        conn.execute("INSERT OR IGNORE INTO effects (key, work_id, path, kind) "
                     "VALUES (?, ?, ?, ?)", row)


async def effect(ledger: Path, ctx: Any) -> None:
    """A call's effect, deduplicated by its idempotency key."""
    await anyio.to_thread.run_sync(_write, ledger, ctx)


def hold_saga(ledger: Path, gate: Path) -> Saga:
    """One stage that records its call, then waits until ``gate`` exists."""

    async def hold(ctx: Any, value: int) -> int:
        await effect(ledger, ctx)
        say(f"stage {ctx.work_id} {ctx.idempotency_key}")
        opened = anyio.Path(gate)
        with anyio.move_on_after(GATE_DEADLINE):
            while not await opened.exists():  # noqa: ASYNC110 -- a file opens the gate
                await anyio.sleep(0.02)
            return value + 1
        raise RuntimeError(f"the gate {gate} did not open within {GATE_DEADLINE}s")

    return Saga(name="hold", stages=[Stage(name="hold", transaction=hold)])


def undo_saga(ledger: Path, block: str | None = None) -> Saga:
    """Stages a, b, c with compensations, then d, which fails for good: c, b and a are
    rolled back. b's transaction fails (retryably) on its first two attempts, each time
    cleaned up by its compensation, and works on the third."""
    blocked: list[str] = []

    async def call(ctx: Any) -> None:
        await effect(ledger, ctx)
        say(f"call {ctx.idempotency_key}")
        key = ctx.idempotency_key
        if block is not None and key.endswith(block) and not blocked:
            blocked.append(key)
            say(f"blocked {key}")
            await anyio.sleep(60)  # killed here by the test
        await anyio.sleep(0.005)  # so that a kill lands inside calls too

    async def transaction(ctx: Any, value: int) -> int:
        await call(ctx)
        if ctx.path == "b" and ctx.attempt <= 2:
            raise RuntimeError(f"b failed on attempt {ctx.attempt}")
        if ctx.path == "d":
            raise StageFailure("d refused", retryable=False)
        return value + 1

    async def compensation(ctx: Any, value: Any, output: Any, reason: Any) -> None:
        await call(ctx)

    return Saga(name="undo", stages=[
        Stage(name=name, transaction=transaction,
              compensation=None if name == "d" else compensation,
              retry=RetryPolicy(attempts=3, wait=tenacity.wait_fixed(0)))
        for name in UNDO_STAGES])


async def hold(url: str, ledger: Path, gate: Path, ttl: float | None) -> None:
    options: dict[str, Any] = {} if ttl is None else {"lease_ttl": ttl}
    async with SqlStore.open(url) as store, \
            Runtime([hold_saga(ledger, gate)], store=store, **options) as rt:
        work_id = await rt.start("hold", 0)
        say(f"work {work_id}")
        result = await rt.wait(work_id)
        say(f"result {result.status}")


async def undo(url: str, ledger: Path, works: int, new: int, block: str | None) -> None:
    async with SqlStore.open(url) as store, \
            Runtime([undo_saga(ledger, block)], store=store) as rt:
        waiting = await rt.recover()
        for i in range(works):
            work_id = f"w{i:04d}"
            if new > 0 and await store.work(work_id) is None:
                new -= 1
                await rt.start("undo", 0, work_id=work_id)
                waiting.append(work_id)
        for work_id in waiting:
            await rt.wait(work_id)
    say("all done")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["hold", "undo"])
    parser.add_argument("url")
    parser.add_argument("ledger", type=Path)
    parser.add_argument("--gate", type=Path)
    parser.add_argument("--ttl", type=float)
    parser.add_argument("--works", type=int, default=20)
    parser.add_argument("--new", type=int)
    parser.add_argument("--block")
    args = parser.parse_args()
    say(f"engine {Path(engine.__file__).resolve()}")
    prepare(args.ledger)
    if args.mode == "hold":
        # a plain program: a Ctrl-C reaches anyio.run as it would in any user's script
        anyio.run(hold, args.url, args.ledger, args.gate, args.ttl)
    else:
        new = args.works if args.new is None else args.new
        anyio.run(undo, args.url, args.ledger, args.works, new, args.block)


if __name__ == "__main__":
    main()
