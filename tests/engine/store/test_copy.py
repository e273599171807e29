"""Copying a store to another (``copy_store``, ``stepsaga migrate --to``): from a SQLite
file to a SQLite file and to a real PostgreSQL (``store_url``); an interrupted copy goes
on where it stopped, and a target that is not a copy of the source is refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from engine import RecordedEvent, Runtime
from engine.store import SqlStore
from engine.store.migrate import copy_store
from workers.actions import DEMO_ORDER, demo_saga

Streams = dict[str, list[RecordedEvent]]


async def _source(url: str) -> Streams:
    """A SQLite store with real works: completed, compensated (the second item's box
    fails), and one still queued; their streams."""
    saga = demo_saga(delay=0, fail=("pack[1]/box",))
    async with SqlStore.open(url) as store, Runtime([saga], store=store) as runtime:
        for items in (1, 2, 4):
            await runtime.run("demo", {"items": DEMO_ORDER["items"][:items]})
        await runtime.start("demo", DEMO_ORDER, run=False)
        return {w: await store.read(w) for w in await store.work_ids()}


async def _streams(store: SqlStore) -> Streams:
    return {w: await store.read(w) for w in await store.work_ids()}


async def test_an_interrupted_copy_goes_on_where_it_stopped(tmp_path: Path,
                                                            store_url: str) -> None:
    source_url = f"sqlite+aiosqlite:///{tmp_path}/source.sqlite"
    streams = await _source(source_url)
    first, second, *rest = sorted(streams, key=lambda w: -len(streams[w]))
    assert len(streams[second]) > 6 and len(rest) == 2
    async with SqlStore.open(source_url) as source, SqlStore.open(store_url) as target:
        # what an interrupted copy leaves: one stream whole, the next one's first appends
        await target.append(first, streams[first], None)
        await target.append(second, streams[second][:6], None)

        summary = await copy_store(source, target, chunk=4)
        assert summary == {"works": 4, "events": sum(map(len, streams.values()))
                           - len(streams[first]) - 6,
                           "copied": 2, "completed": 1, "skipped": 1}
        assert await _streams(target) == streams  # every event, envelope and payload
        for work_id in streams:  # the projections rebuilt from the events
            row, was = await target.work(work_id), await source.work(work_id)
            assert row is not None and was is not None
            assert (row["status"], row["saga"]) == (was["status"], was["saga"])
        assert {r["status"] for r in await target.works()} == {
            "completed", "failed", "pending"}

        # run again: nothing to copy
        again = await copy_store(source, target)
        assert again == {"works": 4, "events": 0, "copied": 0, "completed": 0, "skipped": 4}
        assert await _streams(target) == streams


async def test_a_target_that_is_not_a_copy_is_refused_naming_the_work(
        tmp_path: Path, store_url: str) -> None:
    source_url = f"sqlite+aiosqlite:///{tmp_path}/source.sqlite"
    streams = await _source(source_url)
    work_id = max(streams, key=lambda w: len(streams[w]))
    stream = streams[work_id]
    async with SqlStore.open(source_url) as source, SqlStore.open(store_url) as target:
        # its own version of the work: the third event's payload differs
        third = stream[2]
        changed = dataclasses.replace(third, event=dataclasses.replace(
            third.event, payload={**third.event.payload, "edited": True}))
        await target.append(work_id, [*stream[:2], changed], None)
        with pytest.raises(ValueError, match=(
                f"work '{work_id}': event 3 of the target \\(seq 3, '{third.event.type}' at "
                f"'{third.event.path}'\\) differs from the source's .* in its payload; the "
                "target is not a copy of this source")):
            await copy_store(source, target)
        assert await _streams(target) == {work_id: [*stream[:2], changed]}  # nothing written

    # more of a work's events than the source holds, then a work the source lacks
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/small.sqlite") as small, \
            SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/big.sqlite") as big:
        await small.append(work_id, stream[:2], None)
        await big.append(work_id, stream, None)
        with pytest.raises(ValueError, match=f"work '{work_id}': the target holds "
                                             f"{len(stream)} events, the source only 2"):
            await copy_store(small, big)
        stray = next(w for w in streams if w != work_id)
        await big.append(stray, streams[stray], None)
        with pytest.raises(ValueError, match=f"the target holds work '{stray}', which the "
                                             "source does not"):
            await copy_store(small, big)
        assert await _streams(big) == {work_id: stream, stray: streams[stray]}
