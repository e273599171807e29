"""Applying the schema migrations, and moving every event stream to another store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from .sql import SqlStore

__all__ = ["copy_store", "migrate_engine"]

_SCRIPTS = Path(__file__).with_name("migrations")


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    config.attributes["connection"] = connection
    return config


# taken by whoever migrates a PostgreSQL database, so processes starting together on a
# new database migrate it one after the other (the later ones find it up to date)
MIGRATE_LOCK = 0x5A6A_0002


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATE_LOCK})")
    else:  # SQLite: the write lock first, so nobody migrates between our look and our DDL
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    command.upgrade(_config(connection), "head")


async def migrate_engine(engine: AsyncEngine) -> None:
    """Bring the database's schema up to the newest migration."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)


async def copy_store(source: SqlStore, target: SqlStore, *, chunk: int = 500) -> dict[str, Any]:
    """Copy every event stream of ``source`` into ``target`` (which must hold none of
    those works), then rebuild ``target``'s projections from the events alone."""
    ids = await source.work_ids()
    copied = 0
    for work_id in ids:
        stream = await source.read(work_id)
        for start in range(0, len(stream), chunk):
            await target.append(work_id, stream[start:start + chunk], None)
        copied += len(stream)
    works = await target.rebuild_projections()
    return {"works": works, "events": copied}
