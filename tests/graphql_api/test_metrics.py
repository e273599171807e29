"""/metrics scraped over HTTP from real processes on one SQLite file (``stepsaga serve``
and worker-only ``stepsaga worker --http`` nodes, one taking over the works of a killed
one), compared with the stored events."""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine import Runtime
from engine.store import SqlStore
from tests.auth import bearer

from .ops_app import sagas as ops_sagas
from .wire import CREATE, TOKENS, Served, ask, http

OPS_APP = "tests.graphql_api.ops_app:sagas"


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of one /metrics page: (name, sorted labels) -> value. An API node's
    asks for a token (a worker node's own HTTP server serves health and metrics only)."""
    token = TOKENS.get(url.removesuffix("/metrics") + "/graphql")
    response = httpx.get(url, timeout=10, headers=bearer(token) if token else {})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def total(samples: list[dict[Any, float]], name: str, **labels: str) -> float:
    """The sum over processes of the samples ``name`` with these labels (others any)."""
    return sum(value for page in samples for (n, found), value in page.items()
               if n == name and all((k, v) in found for k, v in labels.items()))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[dict[str, Any], dict[str, Any], Path]]:
    store = tmp_path / "store.sqlite"
    url = f"sqlite+aiosqlite:///{store}"
    api = Served("serve", "--store", url, "--port", "0", "--app", OPS_APP,
                 "--worker", "main=4")
    worker = None
    try:
        api_ready = api.ready()
        worker = Served("worker", "--store", url, "--app", OPS_APP, "--worker", "w=4",
                        "--http", "127.0.0.1:0")
        yield api_ready, worker.ready(), store
    finally:
        for process in (worker, api):
            if process is not None:
                code, _, err = process.stop()
                assert code == 0, err


async def test_metrics_of_two_processes_add_up_to_the_stored_events(
        cluster: tuple[dict[str, Any], dict[str, Any], Path]) -> None:
    api, worker, store = cluster
    assert worker["http"].startswith("http://127.0.0.1:")
    pages = [api["url"].removesuffix("/graphql") + "/metrics", worker["http"] + "/metrics"]
    async with http(api["url"]) as client:
        for i in range(12):
            for saga in ("quick", "flaky", "doomed"):
                made = await ask(client, CREATE, {"saga": saga, "input": i})
                assert made["createWork"]["__typename"] == "WorkCreated"

    def unfinished() -> int:
        with sqlite3.connect(store) as conn:
            return int(conn.execute("SELECT count(*) FROM works WHERE status NOT IN "
                                    "('completed', 'failed')").fetchone()[0])

    for _ in range(1500):
        if unfinished() == 0:
            break
        await anyio.sleep(0.02)
    assert unfinished() == 0
    with sqlite3.connect(store) as conn:
        stored = dict(conn.execute("SELECT type, count(*) FROM events GROUP BY type"))
    samples = [scrape(page) for page in pages]
    assert stored["work.created"] == 36
    assert total(samples, "stepsaga_works_created_total") == 36
    assert total(samples, "stepsaga_works_created_total", saga="doomed") == 12
    assert total(samples, "stepsaga_works_finished_total", status="completed") == \
        stored["work.completed"] == 24
    assert total(samples, "stepsaga_works_finished_total", saga="doomed",
                 status="failed") == stored["work.failed"] == 12
    assert total(samples, "stepsaga_retries_total", saga="flaky", stage="a",
                 what="transaction") == 12
    assert total(samples, "stepsaga_retries_total", what="compensation") == 12
    assert total(samples, "stepsaga_retries_total") == stored["stage.retry.scheduled"]
    assert total(samples, "stepsaga_compensations_total", saga="doomed", stage="a") == \
        stored["stage.compensation.completed"] == 12
    assert total(samples, "stepsaga_compensation_failures_total") == \
        stored["stage.compensation.failed"] == 12
    assert total(samples, "stepsaga_stage_duration_seconds_count", saga="quick",
                 stage="b", outcome="completed") == 12
    assert total(samples, "stepsaga_stage_duration_seconds_count", saga="doomed",
                 stage="b", outcome="failed") == 12
    # the store's gauges are the same on both nodes
    for page in samples:
        assert page[("stepsaga_works", (("saga", "quick"), ("status", "completed")))] == 12
        assert total([page], "stepsaga_queue_depth") == 0
    # both nodes ran works, each exporting its own: the worker its slots
    assert total(samples[1:], "stepsaga_worker_slots") == 4
    assert total(samples[1:], "stepsaga_worker_slots_used") == 0
    assert total(samples, "stepsaga_queue_wait_seconds_count") == 36
    assert total(samples, "stepsaga_event_append_seconds_count") > 0
    # every stored event went through one group commit of one of them
    assert total(samples, "stepsaga_group_commit_events_sum") == sum(stored.values())
    assert total(samples[:1], "stepsaga_api_request_seconds_count", type="mutation") == 36
    assert total(samples, "stepsaga_db_query_seconds_count", operation="select") > 0
    assert total(samples, "process_resident_memory_bytes") > 0
    assert total(samples, "python_gc_collections_total") >= 0
    assert ("python_gc_collections_total", (("generation", "0"),)) in samples[1]


async def test_a_node_counts_the_works_it_took_over_from_a_killed_one(tmp_path: Path) -> None:
    """A worker killed while it holds works; another takes them over once their leases
    expire: its stepsaga_lease_takeovers_total is the number of works whose stored
    events were written by both."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite'}"
    held = tmp_path / "hold"
    held.touch()
    async with SqlStore.open(url) as store, Runtime(ops_sagas(), store=store) as rt:
        ids = [await rt.start("held", i, run=False) for i in range(4)]
    common = ("worker", "--store", url, "--app", OPS_APP, "--worker", "w=4",
              "--lease-ttl", "1")
    victim = Served(*common, "--node-id", "victim", env={"STEPSAGA_TEST_HOLD": str(held)})
    heir = None
    try:
        victim.ready()

        async def started_by(prefix: str) -> set[str]:
            async with SqlStore.open(url, create=False) as store:
                return {work_id for work_id in ids for r in await store.read(work_id)
                        if r.event.type == "stage.transaction.started"
                        and (r.worker or "").startswith(prefix)}

        for _ in range(1200):  # a minute at most
            if await started_by("victim/") == set(ids):  # it holds all four, mid-stage
                break
            await anyio.sleep(0.05)
        assert await started_by("victim/") == set(ids)
        victim.process.send_signal(signal.SIGKILL)
        victim.process.communicate(timeout=30)
        held.unlink()
        heir = Served(*common, "--node-id", "heir", "--http", "127.0.0.1:0")
        page = heir.ready()["http"] + "/metrics"
        works: dict[str, str] = {}
        for _ in range(1200):
            async with SqlStore.open(url, create=False) as store:
                works = {w["work_id"]: w["status"] for w in await store.works(limit=10)}
            if all(works.get(i) == "completed" for i in ids):
                break
            await anyio.sleep(0.05)
        assert [works.get(i) for i in ids] == ["completed"] * 4
        async with SqlStore.open(url, create=False) as store:
            streams = {i: await store.read(i) for i in ids}
        changed_hands = sum(
            {(r.worker or "").split("/")[0] for r in stream} >= {"victim", "heir"}
            for stream in streams.values())
        samples = scrape(page)
        assert changed_hands == 4
        assert total([samples], "stepsaga_lease_takeovers_total", saga="held") == \
            changed_hands
        assert total([samples], "stepsaga_lease_takeovers_total") == changed_hands
    finally:
        for process in (heir, victim):
            if process is not None and process.process.poll() is None:
                code, _, err = process.stop()
                assert code == 0, err
