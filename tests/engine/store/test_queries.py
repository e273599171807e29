"""Works lists of the query module: keyset pages in every order, on both stores."""

from __future__ import annotations

from typing import Any

import pytest

from engine import Runtime, Saga, Stage
from engine.store import SqlStore, queries


async def _one(ctx: Any, value: int) -> int:
    return value + 1


SAGA = Saga(name="q", stages=[Stage(name="a", transaction=_one)])


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
