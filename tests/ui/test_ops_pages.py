"""The operations pages in a real Chromium against ``stepsaga serve`` (the demo saga and
the services of tests/ui/ops_app.py, two workers): the workers, live and resized from
the page; one worker's load chart from the API, drained and removed from its page;
schedules paused, resumed and triggered; the services' health graph and strips, the
checks pushed live; the locks held and waited for. Each page is checked against what
the API says."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from playwright.sync_api import Page, expect

from engine.store import SqlStore
from workers.actions import DEMO_ORDER
from workers.locks import LockService

from .conftest import TIMEOUT_MS, Server, ask, ended, shot

NODE = "ops-node"
WORKERS = "{ allWorkers { workerId node name status concurrency running } }"
ONE = "query($id: String!) { worker(workerId: $id) { status concurrency } }"
LOAD = ("query($id: String!, $since: Float) { worker(workerId: $id) { "
        "load(since: $since, first: 10000) { time running concurrency } } }")
CHANGED = ("__typename ... on WorkerChanged { outcome } ... on NotFound { message } "
           "... on InvalidInput { message }")
SCHEDULE = "query { schedules { name paused fired lastWorkId } }"
SERVICES = ("{ services(history: 2000) { service available dependsOn "
            "history { cursor ok available detail node time } } }")
LOCKS = "{ locks { held { name holder } waiting { name holder } } }"


@pytest.fixture(scope="module")
def store_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ops") / "s.sqlite"


@pytest.fixture(scope="module")
def server(store_file: Path) -> Iterator[Server]:
    # the settings serve reads from its environment (graphql_api.config): this app, two
    # workers of a node with a known id, heartbeats every second
    settings = {"STEPSAGA_SERVE_APP": "tests.ui.ops_app:app", "STEPSAGA_WORKER_NODE_ID": NODE,
                "STEPSAGA_WORKER_WORKERS": "main=4 batch=2:demo",
                "STEPSAGA_WORKER_LEASE_TTL": "3"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in settings.items():
            patch.setenv(key, value)
        served = Server(store_file)
    try:
        yield served
    finally:
        code, err = served.stop()
        assert code == 0, err


def until(check: Callable[[], Any], what: str, seconds: float = 30) -> Any:
    """``check()``'s first true answer, looked at every 0.1 s for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not within {seconds} s: {what}")


def off_thread(function: Callable[..., Any], *args: Any) -> Any:
    """``anyio.run(function, *args)`` in a thread of its own: Playwright's sync API runs
    an event loop in this one."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(anyio.run(function, *args)))
    thread.start()
    thread.join(timeout=60)
    assert result, f"{function.__name__}{args} did not finish"
    return result[0]


def test_the_workers_page_shows_the_nodes_workers_live_and_resizes_one(
        page: Page, server: Server) -> None:
    def both() -> list[dict[str, Any]] | None:
        found: list[dict[str, Any]] = ask(server, WORKERS)["allWorkers"]
        return found if len(found) == 2 else None

    listed = until(both, "the node's two workers registered")
    page.goto(f"{server.origin}/?workers")
    rows = page.locator("table.workers tbody tr")
    expect(rows).to_have_count(2, timeout=TIMEOUT_MS)
    for worker in listed:
        row = page.locator(f'tr[data-worker="{worker["workerId"]}"]')
        expect(row.locator(".status")).to_have_text(worker["status"])
        expect(row.locator(".concurrency")).to_have_text(str(worker["concurrency"]))
        expect(row.locator(".running")).to_have_text(str(worker["running"]))
        assert row.locator("td").nth(1).inner_text() == NODE
        assert row.locator(".progress.load").count() == 1
    assert {w["workerId"] for w in listed} == {f"{NODE}/main", f"{NODE}/batch"}
    # resized from the page: the node applies it, the store has it
    main = page.locator(f'tr[data-worker="{NODE}/main"]')
    main.get_by_label(f"concurrency of {NODE}/main").fill("7")
    main.get_by_role("button", name="resize").click()
    expect(main.locator(".concurrency")).to_have_text("7", timeout=TIMEOUT_MS)
    assert ask(server, ONE, id=f"{NODE}/main")["worker"] == {"status": "active",
                                                            "concurrency": 7}
    # a change from another client reaches the page through the subscription
    other = ask(server, f'mutation {{ updateWorkers(workerId: "{NODE}/batch", '
                        f'concurrency: 3) {{ {CHANGED} }} }}')["updateWorkers"]
    assert other == {"__typename": "WorkerChanged", "outcome": "applied"}
    batch = page.locator(f'tr[data-worker="{NODE}/batch"]')
    expect(batch.locator(".concurrency")).to_have_text("3", timeout=TIMEOUT_MS)
    # a bad size is refused with the node's message, and nothing changes
    batch.get_by_label(f"concurrency of {NODE}/batch").fill("0")
    batch.get_by_role("button", name="resize").click()
    expect(batch.locator(".problem")).to_contain_text(">= 1", timeout=TIMEOUT_MS)
    assert ask(server, ONE, id=f"{NODE}/batch")["worker"]["concurrency"] == 3
    shot(page, "workers")


def test_a_worker_page_charts_its_load_from_the_api_and_drains_or_removes(
        page: Page, server: Server) -> None:
    worker_id = f"{NODE}/main"
    since = ask(server, "query($id: String!) { worker(workerId: $id) { registeredAt } }",
                id=worker_id)["worker"]["registeredAt"] - 1
    # works run meanwhile, so the heartbeats have something to count
    for _ in range(3):
        ask(server, "mutation($i: JSON) { createWork(saga: \"demo\", input: $i) "
                    "{ __typename } }", i=DEMO_ORDER)
    before = ask(server, LOAD, id=worker_id, since=since)["worker"]["load"]
    assert before and before[0]["concurrency"] == 4  # registered with 4 (main=4)
    page.goto(f"{server.origin}/?worker={worker_id}&since={since}")
    chart = page.locator("figure.load-chart")
    expect(chart.locator("canvas").first).to_be_attached(timeout=TIMEOUT_MS)
    expect(page.locator(".figures .status")).to_have_text("active", timeout=TIMEOUT_MS)
    expect(chart).not_to_have_attribute("data-points", "0", timeout=TIMEOUT_MS)
    drawn = int(chart.get_attribute("data-points") or 0)
    after = ask(server, LOAD, id=worker_id, since=since)["worker"]["load"]
    # what the subscription added since is a stored event too, so a point of the API's
    assert len(before) <= drawn <= len(after)
    expect(chart.locator(".u-legend")).to_contain_text("running")
    expect(chart.locator(".u-legend")).to_contain_text("concurrency")
    # resized here: a point of the new size comes live, and it is the API's latest
    page.get_by_label(f"concurrency of {worker_id}").fill("5")
    page.get_by_role("button", name="resize").click()
    expect(chart.locator("figcaption")).to_contain_text("of 5 slots", timeout=TIMEOUT_MS)
    assert int(chart.get_attribute("data-points") or 0) > drawn
    assert ask(server, LOAD, id=worker_id, since=since)["worker"]["load"][-1][
        "concurrency"] == 5
    expect(page.locator(".figures .concurrency")).to_have_text("5")
    shot(page, "worker")
    # drain and remove: two spare workers of the node, one each way
    for name in ("spare1", "spare2"):
        made = ask(server, f'mutation {{ addWorkers(node: "{NODE}", name: "{name}", '
                           f'concurrency: 1) {{ {CHANGED} }} }}')["addWorkers"]
        assert made["outcome"] == "applied"
    page.goto(f"{server.origin}/?worker={NODE}/spare1")
    expect(page.locator(".figures .status")).to_have_text("active", timeout=TIMEOUT_MS)
    page.get_by_role("button", name="drain").click()
    expect(page.locator(".note")).to_contain_text("draining", timeout=TIMEOUT_MS)
    expect(page.locator(".figures .status")).to_have_text("removed", timeout=TIMEOUT_MS)
    assert ask(server, ONE, id=f"{NODE}/spare1")["worker"]["status"] == "removed"
    page.goto(f"{server.origin}/?worker={NODE}/spare2")
    expect(page.locator(".figures .status")).to_have_text("active", timeout=TIMEOUT_MS)
    page.get_by_role("button", name="remove now").click()
    expect(page.locator(".figures .status")).to_have_text("removed", timeout=TIMEOUT_MS)
    assert ask(server, ONE, id=f"{NODE}/spare2")["worker"]["status"] == "removed"
    expect(page.get_by_role("button", name="drain")).to_have_count(0)


def test_a_schedule_is_paused_resumed_and_triggered_from_its_page(
        page: Page, server: Server) -> None:
    shape = ("{ __typename ... on ScheduleChanged { schedule { name } } "
             "... on InvalidInput { message } ... on Conflict { message } }")
    made = ask(server, f'mutation($i: JSON) {{ createSchedule(name: "nightly", saga: "demo", '
                       f'cron: "0 3 * * *", input: $i) {shape} }}', i=DEMO_ORDER)
    assert made["createSchedule"]["__typename"] == "ScheduleChanged"

    def nightly() -> dict[str, Any]:
        return next(s for s in ask(server, SCHEDULE)["schedules"] if s["name"] == "nightly")

    page.goto(f"{server.origin}/?schedules")
    row = page.locator('tr[data-schedule="nightly"]')
    expect(row.locator(".cron")).to_contain_text("0 3 * * *", timeout=TIMEOUT_MS)
    expect(row.locator(".fired")).to_have_text("0")
    expect(row.locator("td.paused")).to_have_text("no")
    row.get_by_role("button", name="pause").click()
    expect(row.locator("td.paused")).to_have_text("paused", timeout=TIMEOUT_MS)
    assert nightly()["paused"] is True
    row.get_by_role("button", name="resume").click()
    expect(row.locator("td.paused")).to_have_text("no", timeout=TIMEOUT_MS)
    assert nightly()["paused"] is False
    row.get_by_role("button", name="trigger").click()
    expect(row.locator(".fired")).to_have_text("1", timeout=TIMEOUT_MS)
    started = row.locator(".note a")
    expect(started).to_be_visible()
    work_id = started.inner_text()
    found = nightly()
    assert found["fired"] == 1 and found["lastWorkId"] == work_id
    assert ask(server, "query($id: String!) { work(workId: $id) { saga input } }",
               id=work_id)["work"] == {"saga": "demo", "input": DEMO_ORDER}
    assert ended(server, work_id) == "completed"
    shot(page, "schedules")
    # deleted meanwhile by another client: the page says what the API answered
    ask(server, f'mutation {{ deleteSchedule(name: "nightly") {shape} }}')
    row.get_by_role("button", name="pause").click()
    expect(page.locator(".problem.gone")).to_contain_text("nightly: no schedule",
                                                          timeout=TIMEOUT_MS)
    expect(row).to_have_count(0)  # and the list read again has it no more


def test_the_services_page_draws_the_health_graph_and_each_checks_history(
        page: Page, server: Server) -> None:
    def enough() -> list[dict[str, Any]] | None:
        found: list[dict[str, Any]] = ask(server, SERVICES)["services"]
        return found if len(found) == 4 and all(len(s["history"]) >= 3 for s in found) \
            else None

    before = {s["service"]: s for s in until(enough, "three rounds of health checks")}
    assert {n: (s["available"], s["dependsOn"]) for n, s in before.items()} == {
        "database": (True, []), "vault": (True, ["database"]),
        "mailer": (False, []), "notifier": (False, ["mailer"])}
    page.goto(f"{server.origin}/?services")
    graph = page.locator("svg.services")
    expect(graph.locator("g[data-service]")).to_have_count(4, timeout=TIMEOUT_MS)
    for name, service in before.items():
        state = "available" if service["available"] else "unavailable"
        expect(graph.locator(f'g[data-service="{name}"]')).to_have_class(state)
    assert graph.locator("polyline").count() == sum(len(s["dependsOn"])
                                                    for s in before.values())
    for name in before:
        cells = page.locator(f'tr[data-service="{name}"] ol.strip li')
        assert cells.count() >= len(before[name]["history"])
        kinds = set(cells.evaluate_all("cells => cells.map(c => c.className)"))
        assert kinds == {{"database": "cell ok", "vault": "cell ok", "mailer": "cell failed",
                          "notifier": "cell blocked"}[name]}
        last = cells.last.get_attribute("title") or ""
        assert f"on {NODE}:" in last
    # the checks come live: each strip grows, cell for cell the API's runs, in order
    shown = {n: page.locator(f'tr[data-service="{n}"] ol.strip li').count() for n in before}
    for name, count in shown.items():
        expect(page.locator(f'tr[data-service="{name}"] ol.strip li')).not_to_have_count(
            count, timeout=TIMEOUT_MS)
    drawn = {n: page.locator(f'tr[data-service="{n}"] ol.strip li').evaluate_all(
        "cells => cells.map(c => c.dataset.cursor)") for n in before}
    after = {s["service"]: s for s in ask(server, SERVICES)["services"]}  # read after
    for name, cursors in drawn.items():
        stored = [r["cursor"] for r in reversed(after[name]["history"])]
        assert cursors == stored[stored.index(cursors[0]):][:len(cursors)]
        assert len(cursors) > shown[name]
    mailer = page.locator('tr[data-service="mailer"] ol.strip li').last.get_attribute("title")
    assert "ConnectionRefusedError: smtp 127.0.0.1:2525 refused" in (mailer or "")
    notifier = page.locator('tr[data-service="notifier"] ol.strip li').last
    assert "notifier needs mailer" in (notifier.get_attribute("title") or "")
    shot(page, "services")


def test_the_locks_page_shows_who_holds_a_lock_and_who_waits_in_order(
        page: Page, server: Server, store_file: Path) -> None:
    url = f"sqlite+aiosqlite:///{store_file}"

    async def take(holder: str, wait: float | None) -> None:
        async with SqlStore.open(url) as store:
            await LockService(store).acquire("customer:7", holder, ttl=60, max_wait=wait)

    async def give(holder: str) -> bool:
        async with SqlStore.open(url) as store:
            return await LockService(store).release("customer:7", holder)

    off_thread(take, "test/holder", 0)
    waiters = []
    for holder in ("test/first", "test/second"):  # in line, one after the other
        thread = threading.Thread(target=anyio.run, args=(take, holder, 60))
        thread.start()
        waiters.append(thread)
        until(lambda h=holder: any(w["holder"] == h
                                   for w in ask(server, LOCKS)["locks"]["waiting"]),
              f"{holder} waiting")
    try:
        shown = ask(server, LOCKS)["locks"]
        assert shown == {"held": [{"name": "customer:7", "holder": "test/holder"}],
                         "waiting": [{"name": "customer:7", "holder": "test/first"},
                                     {"name": "customer:7", "holder": "test/second"}]}
        page.goto(f"{server.origin}/?locks")
        held = page.locator("table.held tbody tr")
        expect(held).to_have_count(1, timeout=TIMEOUT_MS)
        assert held.locator("td").all_inner_texts()[:2] == ["customer:7", "test/holder"]
        waiting = page.locator("table.waiting tbody tr")
        expect(waiting).to_have_count(2)
        assert [r.locator("td").all_inner_texts()[:3] for r in waiting.all()] == [
            ["customer:7", "1", "test/first"], ["customer:7", "2", "test/second"]]
        shot(page, "locks")
        # handed on: the first in line holds it, the page read again says so
        assert off_thread(give, "test/holder")
        waiters[0].join(timeout=30)
        page.get_by_role("button", name="read again").click()
        expect(held.locator("td.holder")).to_have_text("test/first", timeout=TIMEOUT_MS)
        expect(waiting).to_have_count(1)
    finally:  # each in line takes it in turn, and gives it back
        off_thread(give, "test/holder")
        for holder, thread in zip(("test/first", "test/second"), waiters, strict=True):
            thread.join(timeout=60)
            off_thread(give, holder)
