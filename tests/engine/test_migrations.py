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
from engine.store.leases import claim
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


async def test_migrate_command_copies_every_stream_to_postgresql(
        tmp_path: Path, postgres_url: str) -> None:
    await _copy_and_check(tmp_path, postgres_url)


async def test_migrate_command_copies_every_stream_to_another_sqlite_file(
        tmp_path: Path) -> None:
    await _copy_and_check(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/to.sqlite")


async def _copy_and_check(tmp_path: Path, target_url: str) -> None:
    source_url = f"sqlite+aiosqlite:///{tmp_path}/from.sqlite"
    ledger = Ledger()
    ledger.fail("b")
    saga = Saga(name="s", stages=[Stage(name="a", transaction=ledger.tx(),
                                        compensation=ledger.comp()),
                                  Stage(name="b", transaction=ledger.tx())])
    ok = Saga(name="ok", stages=[Stage(name="a", transaction=ledger.tx())])
    async with SqlStore.open(source_url) as store, Runtime([saga, ok], store=store) as rt:
        ids = [(await rt.run("ok", i)).work_id for i in range(4)]
        ids.append((await rt.run("s", 1)).work_id)  # a failed, compensated one too
        ids.append(await rt.start("ok", 9, paused=True))  # and one not finished
        queued = await rt.start("ok", 5, run=False)  # and one queued for worker nodes
        ids.append(queued)
        runs_before = {wid: await store.stage_runs(wid) for wid in ids}
        before = {wid: await store.read(wid) for wid in ids}
        rows_before = {wid: await store.work(wid) for wid in ids}
    done = await anyio.to_thread.run_sync(stepsaga_migrate, source_url, target_url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["works"] == 7
    async with SqlStore.open(target_url) as store:
        assert sorted(await store.work_ids()) == sorted(ids)
        for wid in ids:
            assert await store.read(wid) == before[wid]
            assert await store.work(wid) == rows_before[wid]
            assert await store.stage_runs(wid) == runs_before[wid]
        # the leases came along: the unfinished work is a recover()'s to take there (its
        # lease in the source was handed back), the queued one a worker node's to claim
        async with Runtime([saga, ok], store=store) as rt:
            assert await rt.recover() == [ids[5]]
            claimed = await claim(store, owner="node", worker="w", limit=10, ttl=5)
            assert [c.work_id for c in claimed] == [queued]
    again = await anyio.to_thread.run_sync(stepsaga_migrate, source_url, target_url)
    # run again (after an interruption, say): everything is there, nothing is copied
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["events"] == 0
