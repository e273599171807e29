"""Workers as records, followed from a cursor (both databases)."""

from __future__ import annotations

import time
from typing import Any

import anyio

from engine.store import SqlStore
from workers import registry


def row(running: int = 0, concurrency: int = 2) -> dict[str, Any]:
    return {"node": "n1", "name": "w", "concurrency": concurrency, "sagas": None,
            "host": "h", "pid": 1, "running": running}


def shown(lost_after: float) -> Any:
    def show(found: dict[str, Any]) -> dict[str, Any]:
        found = dict(found)
        if found["status"] != "removed" and found["heartbeat_at"] < time.time() - lost_after:
            found["status"] = "lost"
        return found
    return show


async def take(stream: Any, count: int) -> list[tuple[int, str, dict[str, Any]]]:
    got = []
    with anyio.fail_after(10):
        async for item in stream:
            got.append(item)
            if len(got) == count:
                return got
    return got


async def test_changes_come_from_a_cursor_and_beats_alone_do_not(store_url: str) -> None:
    async with SqlStore.open(store_url) as store:
        await registry.record(store, "n1/w", "worker.registered", {}, row())
        live = registry.follow(store, after=None, interval=0.02, shown=shown(60))
        (start,) = await take(live, 1)
        assert start[1] == "worker.current" and start[2]["status"] == "active"
        await registry.record(store, "n1/w", "worker.heartbeat", {"running": 0}, row())
        await registry.record(store, "n1/w", "worker.heartbeat", {"running": 1}, row(1))
        await registry.record(store, "n1/w", "worker.updated", {"concurrency": 5},
                              row(1, 5))
        changes = await take(live, 1)  # one batch: the worker's latest change only
        if changes[0][1] == "worker.heartbeat":  # or the beat came alone in a batch
            changes += await take(live, 1)
        assert changes[-1][1] == "worker.updated" and changes[-1][2]["concurrency"] == 5
        assert all(c[1] != "worker.current" for c in changes)
        cursors = [c[0] for c in changes]
        assert cursors == sorted(cursors) and cursors[0] > start[0]
        await live.aclose()
        # resumed from the first cursor: what came after it, nothing before
        resumed = registry.follow(store, after=start[0], interval=0.02, shown=shown(60))
        again = await take(resumed, 1)
        assert again[-1][2]["concurrency"] == 5 and again[-1][0] <= cursors[-1]
        await resumed.aclose()
        # a worker whose beats stop turns lost, said once, at the cursor reached
        watching = registry.follow(store, after=cursors[-1], interval=0.02,
                                   shown=shown(0.2))
        (gone,) = await take(watching, 1)
        assert gone[1] == "worker.lost" and gone[2]["status"] == "lost"
        assert gone[0] == cursors[-1]
        await registry.record(store, "n1/w", "worker.heartbeat", {"running": 1}, row(1, 5))
        (back,) = await take(watching, 1)  # a beat that brings it back is a change
        assert back[1] == "worker.heartbeat" and back[2]["status"] == "active"
        await watching.aclose()


async def test_a_workers_load_over_time_comes_from_its_events(store_url: str) -> None:
    async with SqlStore.open(store_url) as store:
        assert await registry.load_of(store, "n1/w") == []
        await registry.record(store, "n1/w", "worker.registered", {"concurrency": 2}, row())
        await registry.record(store, "n1/w", "worker.heartbeat", {"running": 1}, row(1))
        await registry.record(store, "n1/w", "worker.updated", {"concurrency": 5}, row(1, 5))
        await registry.record(store, "other/w", "worker.heartbeat", {"running": 9}, row(9))
        await registry.record(store, "n1/w", "worker.heartbeat", {"running": 4}, row(4, 5))
        await registry.record(store, "n1/w", "worker.draining", {}, row(4, 5))
        await registry.record(store, "n1/w", "worker.heartbeat", {"running": 3}, row(3, 5))
        points = await registry.load_of(store, "n1/w")
        assert [(p["running"], p["concurrency"]) for p in points] == [
            (0, 2), (1, 2), (1, 5), (4, 5), (3, 5)]
        times = [p["time"] for p in points]
        assert times == sorted(times)
        # from a moment on: the figures in force then come from the events before it
        later = await registry.load_of(store, "n1/w", since=times[3])
        assert [(p["running"], p["concurrency"]) for p in later] == [(4, 5), (3, 5)]
        assert [p["time"] for p in later] == times[3:]
        assert [(p["running"], p["concurrency"]) for p in await registry.load_of(
            store, "n1/w", since=times[2], first=2)] == [(1, 5), (4, 5)]
        assert await registry.load_of(store, "n1/w", since=times[-1] + 1) == []
