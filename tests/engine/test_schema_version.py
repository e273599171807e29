"""A node on a store whose schema is newer than it knows refuses to start, saying which
revision it found and which it needs; a store it knows, migrated to its newest, starts."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from engine import SchemaTooNewError
from engine.store import SqlStore
from engine.store.migrate import head_revision, schema_revision

ROOT = Path(__file__).resolve().parents[2]


async def test_a_newer_schema_is_refused_naming_both_revisions(store_url: str) -> None:
    async with SqlStore.open(store_url) as store:
        assert await schema_revision(store) == head_revision()
        async with store.engine.begin() as conn:  # as a newer stepsaga would leave it
            await conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(SchemaTooNewError) as refused:
        async with SqlStore.open(store_url):
            pass
    assert (refused.value.found, refused.value.needed) == ("0099", head_revision())
    assert f"at revision 0099, newer than this version of stepsaga knows: it needs " \
           f"revision {head_revision()}" in str(refused.value)


async def test_an_older_schema_is_brought_up_to_date(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    async with SqlStore.open(url) as store:
        async with store.engine.begin() as conn:  # as the version before left it
            await conn.exec_driver_sql("DROP TABLE work_logs")
            await conn.exec_driver_sql("DROP TABLE audit")
            await conn.exec_driver_sql("DROP TABLE quota_charges")
            for table in ("order_refunds", "order_reservations", "orders",
                          "order_cart_lines", "order_carts", "order_keys", "order_stock"):
                await conn.exec_driver_sql(f"DROP TABLE {table}")
            await conn.exec_driver_sql("DROP TABLE messaging_channels")
            for column in ("phone", "password_hash", "state", "updated_at", "confirmed_at",
                           "phone_confirmed_at"):  # the users pack's, on principals
                await conn.exec_driver_sql(f"ALTER TABLE principals DROP COLUMN {column}")
            await conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0013'")
    async with SqlStore.open(url) as store:
        assert await schema_revision(store) == head_revision()


def test_stepsaga_worker_and_migrate_refuse_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def stepsaga(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "graphql_api.cli", *args], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=60)

    made = stepsaga("migrate", "--url", f"sqlite+aiosqlite:///{path}")
    assert made.returncode == 0, made.stderr
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099'")
    for args in (("worker", "--store", f"sqlite+aiosqlite:///{path}"),
                 ("migrate", "--url", f"sqlite+aiosqlite:///{path}")):
        found = stepsaga(*args)
        assert found.returncode == 3, found
        assert "revision 0099, newer than this version of stepsaga knows: it needs " \
               f"revision {head_revision()}" in found.stderr
        assert "Traceback" not in found.stderr
