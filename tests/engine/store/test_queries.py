"""Works lists of the query module: keyset pages in every order, on both stores."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from engine import Runtime, Saga, Stage
from engine.store import SqlStore, queries


async def _one(ctx: Any, value: int) -> int:
    return value + 1


SAGA = Saga(name="q", stages=[Stage(name="a", transaction=_one)])


async def run_until_completed(store: SqlStore, work_id: str) -> None:
    """A worker node on ``store`` until ``work_id`` completed (20 s at most)."""
    from workers.node import WorkerNode, WorkerSpec

    node = WorkerNode(store, [SAGA], [WorkerSpec(name="w", concurrency=2)], node_id="n",
                      poll_interval=0.05)
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        for _ in range(400):  # bounded: 20 s at most
            if (await store.work(work_id) or {}).get("status") == "completed":
                break
            await anyio.sleep(0.05)
        node.stop()
        tg.cancel_scope.cancel()
    assert (await store.work(work_id) or {}).get("status") == "completed"


async def _every_page(store: SqlStore, order: str, descending: bool, size: int
                      ) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        rows, more = await queries.works_page(store, first=size, after=after, order=order,
                                              descending=descending)
        seen += [r["work_id"] for r in rows]
        if not more:
            return seen
        after = queries.encode_cursor(rows[-1], order)


@pytest.mark.parametrize("order", sorted(queries.WORK_ORDERS))
async def test_pages_in_every_order_list_each_work_once_in_order(store_url: str,
                                                                  order: str) -> None:
    async with SqlStore.open(store_url) as store:
        async with Runtime([SAGA], store=store) as runtime:
            for n in range(5):  # finished works, and queued ones never started
                await runtime.run("q", n)
                await runtime.start("q", n, run=False, priority=n % 3)
        rows = {r["work_id"]: r for r in (await queries.works_page(store, first=100))[0]}
        assert len(rows) == 10

        def key(row: dict[str, Any]) -> tuple[Any, str]:
            value = row[order]
            return (float("inf") if value is None else value), row["work_id"]

        for descending in (True, False):
            expected = sorted(rows, key=lambda w: key(rows[w]), reverse=descending)
            for size in (1, 3, 10):
                assert await _every_page(store, order, descending, size) == expected, \
                    (order, descending, size)


async def test_a_cursor_of_another_order_or_made_up_is_refused(tmp_path: Any) -> None:
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        async with Runtime([SAGA], store=store) as runtime:
            for n in range(3):
                await runtime.run("q", n)
        rows, _ = await queries.works_page(store, first=1)
        cursor = queries.encode_cursor(rows[0], "created_at")
        with pytest.raises(ValueError, match="ordered by 'created_at', not by 'priority'"):
            await queries.works_page(store, first=1, after=cursor, order="priority")
        with pytest.raises(ValueError, match="is not a cursor of this list"):
            await queries.works_page(store, first=1, after="bm90IGEgY3Vyc29y")
        with pytest.raises(ValueError, match="ordered by one of"):
            await queries.works_page(store, first=1, order="input")


async def test_pending_commands_of_many_works_are_those_above_each_ones_last_taken(
        store_url: str) -> None:
    from engine import Command

    async with SqlStore.open(store_url) as store:
        async with Runtime([SAGA], store=store) as runtime:
            queued = await runtime.start("q", 1, run=False, start_at=4e9)  # not before 2096
            paused = await runtime.start("q", 2, run=False, paused=True)
            done = (await runtime.run("q", 3)).work_id
        await store.send_command(queued, Command(kind="pause", by="ann"))
        await store.send_command(queued, Command(kind="resume", by="ann"))
        await store.send_command(paused, Command(kind="resume", by="bob"))
        found = await queries.pending_commands_of(store, [queued, paused, done, queued])
        assert [c.number for c in found[queued]] == [1, 2]
        assert [c.command.kind for c in found[paused]] == ["resume"] and found[done] == []
        # a worker takes the paused one's command: nothing of it is pending any more
        await run_until_completed(store, paused)
        found = await queries.pending_commands_of(store, [queued, paused])
        assert found[paused] == [] and [c.number for c in found[queued]] == [1, 2]


async def test_migration_0011_gives_existing_works_their_last_command_taken(
        tmp_path: Any) -> None:
    """Down to 0010 (the column goes) and up again: each work's number comes back from
    its work.command events."""
    import sqlalchemy as sa
    from alembic import command as alembic

    from engine import Command
    from engine.store.migrate import _config
    from engine.store.schema import works

    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    async with SqlStore.open(url) as store:
        async with Runtime([SAGA], store=store) as runtime:
            paused = await runtime.start("q", 2, run=False, paused=True)
            queued = await runtime.start("q", 1, run=False, start_at=4e9)
        await store.send_command(paused, Command(kind="resume", by="bob"))
        await store.send_command(queued, Command(kind="pause", by="ann"))
        await run_until_completed(store, paused)

        def applied(conn: Any) -> dict[str, int]:
            return dict(conn.execute(sa.select(works.c.work_id, works.c.commands_applied)).all())

        async with store.engine.begin() as conn:
            before = await conn.run_sync(applied)
            await conn.run_sync(lambda c: alembic.downgrade(_config(c), "0010"))
            await conn.run_sync(lambda c: alembic.upgrade(_config(c), "head"))
            after = await conn.run_sync(applied)
    assert before == {paused: 1, queued: 0} and after == before
