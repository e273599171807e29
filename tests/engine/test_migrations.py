"""Schema migrations match the tables the code uses; ``stepsaga migrate`` works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from engine import Runtime, Saga, Stage
from engine.store import SqlStore
from engine.store.schema import metadata

from .helpers import Ledger


def stepsaga_migrate(source: str, target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "graphql_api.cli", "migrate", "--url", source,
                           "--to", target], capture_output=True, text=True, timeout=60)


def _diff(conn: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


async def test_migrated_schema_matches_the_tables_in_code(tmp_path: Path) -> None:
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/m.sqlite") as store:
        async with store.engine.connect() as conn:
            assert await conn.run_sync(_diff) == []


async def test_migrate_command_copies_every_stream(tmp_path: Path) -> None:
    source_url = f"sqlite+aiosqlite:///{tmp_path}/from.sqlite"
    target_url = f"sqlite+aiosqlite:///{tmp_path}/to.sqlite"
    ledger = Ledger()
    saga = Saga(name="s", stages=[Stage(name="a", transaction=ledger.tx())])
    async with SqlStore.open(source_url) as store, Runtime([saga], store=store) as rt:
        ids = [(await rt.run("s", i)).work_id for i in range(5)]
        before = {wid: await store.read(wid) for wid in ids}
        rows_before = {wid: await store.work(wid) for wid in ids}
    done = await anyio.to_thread.run_sync(stepsaga_migrate, source_url, target_url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["works"] == 5
    async with SqlStore.open(target_url) as store:
        for wid in ids:
            assert await store.read(wid) == before[wid]
            assert await store.work(wid) == rows_before[wid]
    again = await anyio.to_thread.run_sync(stepsaga_migrate, source_url, target_url)
    assert again.returncode == 2 and "already holds works" in again.stderr
