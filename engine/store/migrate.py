"""Applying the schema migrations, and moving every event stream to another store."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from ..errors import SchemaTooNewError
from ..events import RecordedEvent
from .schema import leases, sagas
from .sql import SqlStore

__all__ = ["copy_store", "head_revision", "is_newer", "migrate_engine", "schema_revision"]

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
    found = _revision(connection)
    head, _ = _known()
    if found is not None and is_newer(found):
        # a newer stepsaga migrated the store: running on tables this code does not know
        # could write what the newer nodes misread (older nodes already running carry on:
        # migrations within a minor version only add)
        raise SchemaTooNewError(found, head)
    command.upgrade(_config(connection), "head")


@functools.cache
def _known() -> tuple[str, frozenset[str]]:
    """The newest migration this code has, and every one it has."""
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    scripts = ScriptDirectory.from_config(config)
    (head,) = scripts.get_heads()  # one line of migrations: a fork would be a mistake
    return head, frozenset(r.revision for r in scripts.walk_revisions())


def head_revision() -> str:
    """The schema revision this version of stepsaga needs (its newest migration)."""
    return _known()[0]


def is_newer(revision: str | None) -> bool:
    """Whether a store at ``revision`` was migrated by a newer stepsaga (a revision this
    code does not know): a node already running carries on there (migrations within a
    minor version only add), a node starting refuses (:class:`SchemaTooNewError`)."""
    return revision is not None and revision not in _known()[1]


def _revision(connection: Connection) -> str | None:
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    return connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


async def schema_revision(store: SqlStore) -> str | None:
    """The schema revision the store is at (None: a store not migrated yet)."""
    async with store.reader.connect() as conn:
        return await conn.run_sync(_revision)


async def migrate_engine(engine: AsyncEngine) -> None:
    """Bring the database's schema up to the newest migration."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)


async def copy_store(source: SqlStore, target: SqlStore, *, chunk: int = 500) -> dict[str, Any]:
    """Copy every event stream of ``source`` into ``target``, then rebuild ``target``'s
    projections from the events alone and copy the unfinished works' leases.

    Resumable: a copy that was interrupted is finished by running it again. A stream
    ``target`` already holds completely is skipped; one it holds in part (each append
    of ``chunk`` events commits as a whole, so a part is always the stream's start) is
    completed from ``target``'s last seq. A ``ValueError`` naming the work and what
    differs, raised before anything is written, refuses a ``target`` that holds works
    ``source`` lacks or events ``source`` does not have: that is not a copy of it.

    The sagas given as data and the disabled ones are copied too (a saga the target holds
    already is left as it is there).

    Returns the works in ``target`` (``works``), the events appended (``events``) and
    the streams copied whole (``copied``), completed (``completed``) and skipped
    (``skipped``)::

        async with SqlStore.open(old) as source, SqlStore.open(new) as target:
            await copy_store(source, target)   # again after an interruption: goes on
    """
    if not chunk >= 1:
        raise ValueError(f"chunk must be a whole number >= 1, got {chunk!r}")
    ids = await source.work_ids()
    present = set(await target.work_ids())
    strays = sorted(present.difference(ids))
    if strays:
        more = f" (and {len(strays) - 1} more)" if len(strays) > 1 else ""
        raise ValueError(f"the target holds work {strays[0]!r}{more}, which the source does "
                         "not: copy into an empty store, or into one that an interrupted copy "
                         "of this same source left")
    # every stream the target holds is checked before anything is written
    todo: list[tuple[str, list[RecordedEvent], int]] = []
    skipped = 0
    for work_id in ids:
        if work_id not in present:
            todo.append((work_id, [], 0))
            continue
        stream = await source.read(work_id)
        held = await target.read(work_id)
        problem = _difference(work_id, stream, held)
        if problem is not None:
            raise ValueError(f"{problem}; the target is not a copy of this source: copy into "
                             "an empty store, or remove this work from the target")
        if len(held) == len(stream):
            skipped += 1
        else:
            todo.append((work_id, stream, len(held)))
    copied = completed = appended = 0
    for work_id, stream, done in todo:
        if not stream:
            stream = await source.read(work_id)
        rest = stream[done:]  # after the target's last seq
        for start in range(0, len(rest), chunk):
            await target.append(work_id, rest[start:start + chunk], None)
        appended += len(rest)
        if done:
            completed += 1
        else:
            copied += 1
    works = await target.rebuild_projections()
    await _copy_leases(source, target)
    await _copy_sagas(source, target)
    return {"works": works, "events": appended, "copied": copied, "completed": completed,
            "skipped": skipped}


async def _copy_leases(source: SqlStore, target: SqlStore) -> None:
    """The unfinished works' lease rows, so works queued for worker nodes stay claimable
    there; a lease held in the source is copied expired (its holder runs against the
    source), so a node or a recover() on the target takes the work over at once."""
    async with source.reader.connect() as conn:
        rows = [dict(row) for row in (await conn.execute(sa.select(leases))).mappings()]
    if not rows:
        return
    for row in rows:
        if row["owner"] is not None:
            row["expires_at"] = 0.0
    insert = (postgresql.insert if target.dialect == "postgresql" else sqlite.insert)(leases)
    async with target.engine.begin() as conn:
        await conn.execute(insert.on_conflict_do_nothing(index_elements=["work_id"]), rows)


async def _copy_sagas(source: SqlStore, target: SqlStore) -> None:
    """The sagas given as data and the disabled ones (a row the target has stays)."""
    async with source.reader.connect() as conn:
        rows = [dict(row) for row in (await conn.execute(sa.select(sagas))).mappings()]
    if not rows:
        return
    insert = (postgresql.insert if target.dialect == "postgresql" else sqlite.insert)(sagas)
    async with target.engine.begin() as conn:
        await conn.execute(insert.on_conflict_do_nothing(index_elements=["name"]), rows)


_ENVELOPE = ("seq", "time", "worker")
_EVENT = ("type", "path", "attempt", "payload", "version")


def _difference(work_id: str, source: Sequence[RecordedEvent],
                target: Sequence[RecordedEvent]) -> str | None:
    """How ``target`` fails to be the start of ``source`` (the same work's streams in two
    stores), or None."""
    if len(target) > len(source):
        return (f"work {work_id!r}: the target holds {len(target)} events, the source only "
                f"{len(source)}")
    for number, (ours, theirs) in enumerate(zip(source, target, strict=False), 1):
        if ours == theirs:
            continue
        fields = [name for name in _ENVELOPE if getattr(ours, name) != getattr(theirs, name)]
        fields += [name for name in _EVENT
                   if getattr(ours.event, name) != getattr(theirs.event, name)]
        return (f"work {work_id!r}: event {number} of the target (seq {theirs.seq}, "
                f"{theirs.event.type!r} at {theirs.event.path!r}) "
                f"differs from the source's (seq {ours.seq}, {ours.event.type!r} at "
                f"{ours.event.path!r}) in its {', '.join(fields) or 'content'}")
    return None
