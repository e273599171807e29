"""A stage reaches the store its work is kept in (``ctx.store``), for a pack's own tables;
without a store it is None."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine import Runtime, Saga, Stage
from engine.store import SqlStore


async def test_a_stage_sees_the_store_of_its_work(tmp_path: Path) -> None:
    seen: list[Any] = []

    async def look(ctx: Any, data: Any) -> str:
        seen.append(ctx.store)
        found = await ctx.store.work(ctx.work_id) if ctx.store is not None else None
        return "none" if found is None else found["saga"]

    saga = Saga(name="look", stages=[Stage(name="s", transaction=look)])
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        async with Runtime([saga], store=store) as rt:
            assert (await rt.run("look")).output == "look"
    async with Runtime([saga]) as rt:
        assert (await rt.run("look")).output == "none"
    assert seen == [store, None]
