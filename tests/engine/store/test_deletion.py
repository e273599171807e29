"""Deleting finished works (both databases): everything of the work goes in one
transaction, the audit row stays; a live or unknown work is refused with nothing
deleted; the positions of deleted events are never handed out again."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from engine import Runtime, Saga, Stage, Wait
from engine.errors import UnknownWorkError, WorkStateError
from engine.store import SqlStore
from engine.store.deletion import delete_work, deletions_of
from engine.store.schema import commands, events, leases, snapshots, stage_runs, works


async def one(ctx: Any, n: int) -> int:
    return n + 1


SAGAS = [Saga(name="s", stages=[Stage(name=f"a{i}", transaction=one) for i in range(3)]),
         Saga(name="w", stages=[Wait(name="w", signal="go")])]


async def counts(store: SqlStore, work_id: str) -> dict[str, int]:
    found = {}
    async with store.engine.connect() as conn:
        for table in (events, works, stage_runs, snapshots, commands, leases):
            found[table.name] = (await conn.execute(sa.select(sa.func.count()).select_from(
                table).where(table.c.work_id == work_id))).scalar_one()
    return found


async def test_a_finished_work_is_deleted_and_the_deletion_recorded(store_url: str) -> None:
    async with SqlStore.open(store_url) as store, Runtime(SAGAS, store=store) as rt:
        done = await rt.run("s", 1)
        kept = await rt.run("s", 2)
        last = max(e.position or 0 for e in await store.read(done.work_id))
        live = await rt.start("w", 0)
        with pytest.raises(WorkStateError, match=f"work {live} is waiting; only a finished"):
            await delete_work(store, live, by="ann")
        with pytest.raises(UnknownWorkError, match="no work has id 'nope'"):
            await delete_work(store, "nope", by="ann")
        with pytest.raises(ValueError, match="who makes it"):
            await delete_work(store, done.work_id, by="")
        assert (await counts(store, live))["events"] > 0  # nothing of the refused ones went
        audit = await delete_work(store, done.work_id, by="ann", reason="test data")
        assert audit["status"] == "completed" and audit["events"] == done.events
        assert set((await counts(store, done.work_id)).values()) == {0}
        assert (await counts(store, kept.work_id))["events"] == kept.events
        (row,) = await deletions_of(store, done.work_id)
        assert (row["deleted_by"], row["saga"], row["reason"]) == ("ann", "s", "test data")
        # the newest events deleted: the next ones never take their positions
        newest = await rt.run("s", 3)
        top = max(e.position or 0 for e in await store.read(newest.work_id))
        assert top > last
        await delete_work(store, newest.work_id, by="ann")
        later = await rt.run("s", 4)
        assert min(e.position or 0 for e in await store.read(later.work_id)) > top
