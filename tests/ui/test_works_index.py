"""The works index in a real Chromium against a real ``stepsaga serve``: rows pushed by
the ``works`` subscription (a work created by another client shows up without a
reload), the view (filters, order) kept in the URL, the bundle's files cached for good
and the page itself never. A screenshot of each state goes to ``SCREENSHOTS``."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect

from .conftest import TIMEOUT_MS, Server, ended, serving, shot

CREATE = 'mutation { createWork(saga: "demo") { ... on WorkCreated { work { workId } } } }'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("index") / "s.sqlite",
                 app="tests.ui.index_app:app") as served:
        yield served


def create(server: Server) -> str:
    answer = server.http.post(server.url, json={"query": CREATE}, timeout=30).json()
    return str(answer["data"]["createWork"]["work"]["workId"])


def test_a_work_created_elsewhere_appears_live(page: Page, server: Server) -> None:
    before = create(server)
    page.goto(server.origin + "/")
    expect(page.locator(f'tr[data-work="{before}"]')).to_be_visible(timeout=TIMEOUT_MS)
    shot(page, "works-index")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    later = create(server)  # another client: the page hears of it, nothing polls
    row = page.locator(f'tr[data-work="{later}"]')
    expect(row).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator("table.works tbody tr").first).to_have_attribute("data-work", later)
    final = ended(server, later)
    expect(row.locator(".status")).to_have_text(final, timeout=TIMEOUT_MS)
    assert requests == []  # pushed over the open WebSocket, not fetched
    count = server.http.post(server.url, json={"query": "{ allWorks(first: 0) { totalCount } }"},
                       timeout=30).json()["data"]["allWorks"]["totalCount"]
    expect(page.locator(".count")).to_have_text(f"{count} works match", timeout=TIMEOUT_MS)
    shot(page, "works-index-live")


def test_the_view_is_kept_in_the_url(page: Page, server: Server) -> None:
    done = create(server)
    final = ended(server, done)
    page.goto(server.origin + f"/?status={final}&order=finished_at")
    expect(page.locator(f'tr[data-work="{done}"]')).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator('input[name="status"]')).to_have_value(final)
    expect(page.locator('select[name="order"]')).to_have_value("FINISHED_AT")
    statuses = page.locator("tbody .status").all_inner_texts()
    assert statuses and set(statuses) == {final}
    # in this order a new work's place is the server's: the page reads the list again
    later = create(server)
    assert ended(server, later) == final
    expect(page.locator("table.works tbody tr").first).to_have_attribute("data-work", later,
                                                             timeout=TIMEOUT_MS)
    page.locator('input[name="saga"]').fill("no-such-saga")
    page.get_by_role("button", name="apply").click()
    expect(page).to_have_url(re.compile(r"saga=no-such-saga"), timeout=TIMEOUT_MS)
    expect(page.locator("table.works tbody tr")).to_have_count(0, timeout=TIMEOUT_MS)
    expect(page.locator(".count")).to_have_text("0 works match", timeout=TIMEOUT_MS)
    shot(page, "works-index-filtered")


def test_the_page_is_never_cached_and_its_files_for_good(server: Server) -> None:
    page = server.http.get(server.origin + "/")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-cache"
    assets = re.findall(r'"/ui/(assets/[^"]+)"', page.text)
    assert assets, page.text
    for asset in assets:
        found = httpx.get(f"{server.origin}/ui/{asset}", timeout=30)
        assert found.status_code == 200
        assert found.headers["cache-control"] == "public, max-age=31536000, immutable"


def test_works_are_grouped_and_folded_by_the_server(page: Page, server: Server) -> None:
    for _ in range(2):
        ended(server, create(server))
    query = ("query($r: String!, $e: String) { aggregate(over: \"works\", groupBy: "
             "[\"status\"], reducer: $r, expression: $e) { group value count } }")

    def server_says(reducer: str, expression: str | None = None) -> list[list[str]]:
        rows = server.http.post(server.url, json={"query": query, "variables": {
            "r": reducer, "e": expression}}, timeout=30).json()["data"]["aggregate"]
        return [[str(r["group"]["status"]), f"{round(r['value'], 3):g}", str(r["count"])]
                for r in rows]

    page.goto(server.origin + "/?group=status")
    table = page.locator("table.aggregate tbody tr")
    expected = server_says("count")
    expect(table).to_have_count(len(expected), timeout=TIMEOUT_MS)
    assert [row.locator("td").all_inner_texts() for row in table.all()] == expected
    page.get_by_label("reducer").select_option("sum")
    page.get_by_label("expression").fill("work.stages_total * 2")
    page.get_by_role("button", name="fold").click()
    expect(page).to_have_url(re.compile(r"expr=work\.stages_total"), timeout=TIMEOUT_MS)
    folded = server_says("sum", "work.stages_total * 2")
    expect(table.first.locator(".value")).to_have_text(folded[0][1], timeout=TIMEOUT_MS)
    assert [row.locator("td").all_inner_texts() for row in table.all()] == folded
    shot(page, "works-grouped")


def test_groups_by_fields_and_time_with_a_reducer_registered_in_python(page: Page,
                                                                      server: Server) -> None:
    for _ in range(2):
        ended(server, create(server))
    query = ("query($g: [String!], $r: String!, $f: String, $b: Float) { aggregate("
             "groupBy: $g, reducer: $r, field: $f, bucketSeconds: $b) { group value count } }")

    def server_says(**variables: object) -> list[list[str]]:
        rows = server.http.post(server.url, json={"query": query, "variables": variables},
                          timeout=30).json()["data"]["aggregate"]
        return [[str(r["group"][k]) for k in ("saga", "status")]
                + [f"{round(r['value'], 3):g}", str(r["count"])] for r in rows]

    page.goto(server.origin + "/")
    # the reducers the server offers, its own among them
    expect(page.get_by_label("reducer").locator("option")).to_have_text(
        ["count", "sum", "avg", "min", "max", "p95", "spread"], timeout=TIMEOUT_MS)
    page.locator("fieldset.group-by input[value=saga]").check()
    page.locator("fieldset.group-by input[value=status]").check()
    page.get_by_label("reducer").select_option("spread")
    page.get_by_label("field").select_option("duration")
    expect(page).to_have_url(re.compile(r"group=saga%2Cstatus.*reducer=spread"),
                             timeout=TIMEOUT_MS)
    table = page.locator("table.aggregate tbody tr")
    expected = server_says(g=["saga", "status"], r="spread", f="duration")
    expect(table.first.locator(".value")).to_have_text(expected[0][2], timeout=TIMEOUT_MS)
    assert [row.locator("td").all_inner_texts() for row in table.all()] == expected
    # split by the hour too: a bucket column, the rows the server gives
    page.get_by_label("time bucket").select_option("3600")
    expect(page.locator("table.aggregate thead th")).to_have_text(
        ["saga", "status", "bucket", "spread", "works"], timeout=TIMEOUT_MS)
    hourly = server.http.post(server.url, json={"query": query, "variables": {
        "g": ["saga", "status"], "r": "spread", "f": "duration", "b": 3600}},
        timeout=30).json()["data"]["aggregate"]
    expect(table).to_have_count(len(hourly))
    shot(page, "works-grouped-hourly")
    # the charts of the last hour count what the server counts
    since = time.time() - 3600
    count = server.http.post(server.url, json={"query": "query($s: Float) { aggregate(since: $s) "
                                                  "{ count } }", "variables": {"s": since}},
                       timeout=30).json()["data"]["aggregate"]
    activity = page.locator("section.activity")
    expect(activity).to_have_attribute("data-created", str(sum(r["count"] for r in count)),
                                       timeout=TIMEOUT_MS)
    expect(activity.locator(".chart canvas")).to_have_count(2)
    # columns: the view shows those chosen, in the URL too
    page.locator("fieldset.columns input[value=progress]").uncheck()
    page.locator("fieldset.columns input[value=error]").uncheck()
    expect(page.locator("table.works thead th")).to_have_text(
        ["work", "saga", "status", "stage", "created", "duration"])
    expect(page).to_have_url(re.compile(r"cols=work%2Csaga%2Cstatus%2Cstage%2Ccreated%2Cduration"))
    page.reload()
    expect(page.locator("table.works thead th")).to_have_count(6, timeout=TIMEOUT_MS)
    shot(page, "works-columns")
