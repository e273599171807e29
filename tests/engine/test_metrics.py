"""The engine's metrics on real stores: a lease taken over is told apart from a free
work claimed, and the figures of works run in this process match their events."""

from __future__ import annotations

from typing import Any

import anyio
from prometheus_client import REGISTRY

from engine import Runtime, Saga, Stage
from engine.store import SqlStore, StoreConfig
from workers import leases


async def _inc(ctx: Any, value: int) -> int:
    return value + 1


ONE = Saga(name="metered", stages=[Stage(name="a", transaction=_inc),
                                   Stage(name="b", transaction=_inc)])


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_claim_tells_a_takeover_from_a_free_work(store_url: str) -> None:
    async with SqlStore.open(store_url) as store, Runtime([ONE], store=store) as rt:
        first, second = [await rt.start("metered", i, run=False) for i in range(2)]
        got = await leases.claim(store, owner="n1", worker="n1/w", limit=1, ttl=0.05)
        assert [(c.work_id, c.taken_over) for c in got] == [(first, False)]
        await anyio.sleep(0.1)  # n1's lease expires: n1 is gone
        again = await leases.claim(store, owner="n2", worker="n2/w", limit=5, ttl=30)
        assert sorted((c.work_id, c.taken_over) for c in again) == \
            [(first, True), (second, False)]


async def test_works_run_here_are_counted_from_their_events(tmp_path: Any) -> None:
    before = {name: sample(name, saga="metered") for name in (
        "stepsaga_works_created_total",)}
    done = sample("stepsaga_works_finished_total", saga="metered", status="completed")
    stages = sample("stepsaga_stage_duration_seconds_count", saga="metered", stage="b",
                    outcome="completed")
    commits = sample("stepsaga_group_commit_events_sum")
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store, \
            Runtime([ONE], store=store) as rt:
        for i in range(5):
            assert (await rt.run("metered", i)).status == "completed"
        events = len(await store.read_all())
        await rt.dry_run("metered", 1)  # a rehearsal counts for nothing
    assert sample("stepsaga_works_created_total", saga="metered") == \
        before["stepsaga_works_created_total"] + 5
    assert sample("stepsaga_works_finished_total", saga="metered",
                  status="completed") == done + 5
    assert sample("stepsaga_stage_duration_seconds_count", saga="metered", stage="b",
                  outcome="completed") == stages + 5
    assert sample("stepsaga_group_commit_events_sum") == commits + events


async def test_a_runtime_and_a_store_with_metrics_off_count_nothing(tmp_path: Any) -> None:
    names = [("stepsaga_works_created_total", {"saga": "metered"}),
             ("stepsaga_works_finished_total", {"saga": "metered", "status": "completed"}),
             ("stepsaga_group_commit_events_count", {}),
             ("stepsaga_event_append_seconds_count", {}),
             ("stepsaga_db_query_seconds_count", {"operation": "select"})]
    before = [sample(name, **labels) for name, labels in names]
    config = StoreConfig(url=f"sqlite+aiosqlite:///{tmp_path}/s.sqlite", metrics=False)
    async with SqlStore.open(config=config) as store, \
            Runtime([ONE], store=store, metrics=False) as rt:
        for i in range(3):
            assert (await rt.run("metered", i)).status == "completed"
        assert len(await store.read_all()) > 0  # a select, not timed
    assert [sample(name, **labels) for name, labels in names] == before
