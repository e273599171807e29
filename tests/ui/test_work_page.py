"""One work's page in a real Chromium against a real ``stepsaga serve``: a work started
paused is stepped from the page (one event more, recorded by the holder), scrubbed back
with the time-travel slider (the state the API gives for that seq), and resumed to its
end, the timeline pushed live all along."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

from playwright.sync_api import Page, expect

from workers.actions import DEMO_ORDER

from .conftest import TIMEOUT_MS, Server, ask, ended, expect_events, shot, timeline_rows

CREATE = """mutation($input: JSON) {
  createWork(saga: "demo", input: $input, paused: true) { ... on WorkCreated { work { workId } } }
}"""


def events(server: Server, work_id: str) -> list[dict[str, Any]]:
    """All of a work's events, a page of 1,000 at a time."""
    found: list[dict[str, Any]] = []
    while True:
        page = ask(server, "query($id: String!, $after: Int!) { work(workId: $id) { "
                           "events(afterSeq: $after, first: 1000) { seq type path } } }",
                   id=work_id, after=len(found))["work"]["events"]
        found.extend(page)
        if len(page) < 1000:
            return found


def test_a_paused_work_is_stepped_scrubbed_and_resumed(page: Page, server: Server) -> None:
    work_id = ask(server, CREATE, input=DEMO_ORDER)["createWork"]["work"]["workId"]
    page.goto(f"{server.origin}/?work={work_id}")
    timeline = page.locator("ol.timeline li")
    expect(timeline.first).to_contain_text("work.created", timeout=TIMEOUT_MS)
    expect(page.locator(".summary .status")).to_have_text("paused", timeout=TIMEOUT_MS)
    before = len(events(server, work_id))
    expect_events(page, before)
    page.get_by_role("button", name="step", exact=True).click()
    # the holder recorded one step (and the command's outcome): the page shows them all
    expect_events(page, before + 2)
    stored = events(server, work_id)
    assert len(stored) == before + 2 and stored[-1]["type"] == "work.command"
    rows = timeline_rows(page)  # the newest in view, each as stored
    assert stored[-1]["seq"] in rows
    assert rows == {e["seq"]: e["type"] for e in stored if e["seq"] in rows}
    shot(page, "work-stepped")
    # what changed from seq 1 to now: the API's diff, row by row
    page.get_by_label("diff from seq").fill("1")
    latest = stored[-1]["seq"]
    diff = ask(server, "query($id: String!, $to: Int!) { work(workId: $id) "
                       "{ stateDiff(fromSeq: 1, toSeq: $to) } }",
               id=work_id, to=latest)["work"]["stateDiff"]
    assert diff
    expect(page.locator("table.changes tbody tr")).to_have_count(len(diff), timeout=TIMEOUT_MS)
    assert page.locator("table.changes tbody td:first-child").all_inner_texts() == [
        d["path"] for d in diff]
    shot(page, "work-diff")
    # back to seq 1: the state the API gives for it
    page.locator(".timeline-scroll").evaluate("box => { box.scrollTop = 0; }")
    page.locator("ol.timeline li[data-seq='1'] button.seq").click()
    expect(page.locator("output[name=seq]")).to_have_text("1")
    then = ask(server, "query($id: String!) { work(workId: $id) { stateAt(seq: 1) } }",
               id=work_id)["work"]["stateAt"]
    expect(page.locator("pre.state")).to_have_text(json.dumps(then, indent=2, ensure_ascii=False),
                                                   timeout=TIMEOUT_MS)
    shot(page, "work-time-travel")
    page.get_by_role("button", name="follow latest").click()
    page.get_by_role("button", name="resume", exact=True).click()
    final = ended(server, work_id)
    expect(page.locator(".summary .status")).to_have_text(final, timeout=TIMEOUT_MS)
    expect_events(page, len(events(server, work_id)))
    # the map's items are folded into their template; a click unfolds them, one per item
    packed = page.locator('svg.graph g[data-stage="pack[*]/box"]')
    expect(packed).to_contain_text(f"\N{MULTIPLICATION SIGN}{len(DEMO_ORDER['items'])}",
                                   timeout=TIMEOUT_MS)
    packed.click()
    expect(packed.locator("rect.item")).to_have_count(len(DEMO_ORDER["items"]))
    assert [r.get_attribute("data-item") for r in packed.locator("rect.item").all()] == [
        f"pack[{i}]/box" for i in range(len(DEMO_ORDER["items"]))]
    shot(page, "work-ended")
    # rewound into a fork at seq 3: the fork's page, its origin, the first difference
    page.locator(".timeline-scroll").evaluate("box => { box.scrollTop = 0; }")
    page.locator("ol.timeline li[data-seq='3'] button.seq").click()
    page.get_by_role("button", name="rewind to seq 3").click()
    expect(page).not_to_have_url(f"{server.origin}/?work={work_id}", timeout=TIMEOUT_MS)
    expect(page.locator(".fork")).to_contain_text(f"forked from {work_id} at seq 3",
                                                  timeout=TIMEOUT_MS)
    fork = page.url.split("work=", 1)[1]
    diverges = ask(server, "query($id: String!, $o: String!) { work(workId: $id) "
                           "{ compare(otherWorkId: $o) { seq } } }",
                   id=fork, o=work_id)["work"]["compare"]["seq"]
    expect(page.locator(".fork")).to_contain_text(f"the first difference is at seq {diverges}",
                                                  timeout=TIMEOUT_MS)
    mine = events(server, fork)
    assert [e["type"] for e in mine] == [e["type"] for e in events(server, work_id)[:3]]
    if diverges <= len(mine):  # the fork has an event there: it is marked
        expect(page.locator(f"ol.timeline li[data-seq='{diverges}']")).to_have_class(
            re.compile("diverges"), timeout=TIMEOUT_MS)
    else:  # the fork ends before: the origin went on from there
        assert diverges == len(mine) + 1
        expect_events(page, len(mine))
    shot(page, "work-fork")


def test_a_debugging_session_through_a_compensation(page: Page, server: Server) -> None:
    """The whole session from the page: a work started paused from the catalog (an item
    without a price: the charge will fail for good), run until the charge starts (a
    point not kept), a breakpoint before reserve's compensation set and run to, the
    state edited with a reason, the compensation stepped through one event at a time,
    then resumed."""
    page.goto(f"{server.origin}/?catalog")
    page.locator('section[data-saga="demo"]').get_by_role("radio", name="JSON").check()
    page.get_by_label("input of demo").fill('{"items": [{"sku": "tea"}]}')
    page.get_by_role("button", name="start demo").click()  # paused unless unticked
    expect(page).to_have_url(re.compile(r"/\?work="), timeout=TIMEOUT_MS)
    work_id = page.url.split("work=", 1)[1]
    expect(page.locator(".summary .status")).to_have_text("paused", timeout=TIMEOUT_MS)
    assert ask(server, "query($id: String!) { work(workId: $id) { input paused } }",
               id=work_id)["work"] == {"input": {"items": [{"sku": "tea"}]}, "paused": True}
    # run until the charge's transaction starts, once: nothing kept as a breakpoint
    page.get_by_label("when").select_option("before")
    page.get_by_label("event").fill("stage.transaction.started")
    page.get_by_label("path", exact=True).fill("pay/charge")
    page.get_by_role("button", name="run until").click()
    # it ran through reserve and into pay, and stopped before the charge began
    expect(page.locator("ol.timeline")).to_contain_text("stage.started", timeout=TIMEOUT_MS)
    expect(page.locator(".summary .status")).to_have_text("paused", timeout=TIMEOUT_MS)
    ran = [(e["type"], e.get("path")) for e in events(server, work_id)]
    assert ("stage.transaction.completed", "reserve") in ran
    assert ("stage.transaction.started", "pay/charge") not in ran
    assert ask(server, "query($id: String!) { work(workId: $id) { breakpoints } }",
               id=work_id)["work"]["breakpoints"] == []
    page.get_by_label("event").fill("stage.compensation.started")
    page.get_by_label("path", exact=True).fill("reserve")
    page.get_by_role("button", name="set breakpoint").click()
    expect(page.locator(".breakpoints li")).to_contain_text(
        "before stage.compensation.started at reserve", timeout=TIMEOUT_MS)
    page.get_by_role("button", name="run to breakpoint").click()
    # it ran forward, failed, compensated what it could and stopped before reserve's
    expect(page.locator("ol.timeline")).to_contain_text("stage.failed", timeout=TIMEOUT_MS)
    expect(page.locator(".summary .status")).to_have_text("paused", timeout=TIMEOUT_MS)
    stored = events(server, work_id)
    assert ("stage.compensation.started", "reserve") not in [
        (e["type"], e.get("path")) for e in stored]
    shot(page, "work-at-breakpoint")
    page.get_by_label("stage path").fill("reserve")
    page.get_by_label("output (JSON)").fill('{"items": [{"sku": "tea"}], "reservation": "r-x"}')
    page.get_by_label("reason", exact=True).fill("the reservation id was mistyped")
    page.get_by_role("button", name="edit", exact=True).click()
    expect(page.locator("ol.timeline")).to_contain_text("work.edited", timeout=TIMEOUT_MS)
    # through the compensation one event at a time: each step one event of the work
    # (and the step's own record), shown as stored
    for expected in ("stage.compensation.started", "stage.compensation.completed"):
        before = events(server, work_id)
        page.get_by_role("button", name="step", exact=True).click()
        expect_events(page, len(before) + 2)
        after = events(server, work_id)
        assert [e["type"] for e in after[len(before):]] == [expected, "work.command"]
        rows = timeline_rows(page)
        assert rows[after[-2]["seq"]] == expected and rows[after[-1]["seq"]] == "work.command"
    shot(page, "work-stepped-compensation")
    page.get_by_role("button", name="resume", exact=True).click()
    final = ended(server, work_id)
    expect(page.locator(".summary .status")).to_have_text(final, timeout=TIMEOUT_MS)
    found = ask(server, "query($id: String!) { work(workId: $id) { events(first: 1000) "
                        "{ type path payload } } }", id=work_id)["work"]["events"]
    edits = [e["payload"] for e in found if e["type"] == "work.edited"]
    assert len(edits) == 1 and edits[0]["reason"] == "the reservation id was mistyped"
    assert [e["type"] for e in found].count("stage.compensation.started") >= 1
    # the graph colours each stage as its run ended
    runs = ask(server, "query($id: String!) { work(workId: $id) { stageRuns { path status } } }",
               id=work_id)["work"]["stageRuns"]
    ran = {r["path"]: r["status"] for r in runs}
    assert ran["reserve"] == "compensated" and ran["pay/charge"] == "failed"
    for path in ("reserve", "pay/charge", "pay/book"):
        expect(page.locator(f'svg.graph g[data-stage="{path}"]')).to_have_attribute(
            "data-status", ran[path], timeout=TIMEOUT_MS)
    expect(page.locator('svg.graph g[data-stage="ship"]')).to_have_attribute(
        "data-status", ran.get("ship", "pending"))
    # the compensation path as it unwound: from the charge that failed, through each
    # stage undone after the work began compensating, numbered in that order
    kinds = [e["type"] for e in found]
    undone = [e["path"] for e in found[kinds.index("work.compensating"):]
              if e["type"] == "stage.compensation.started"]
    path = ["pay/charge", *[p for i, p in enumerate(undone) if i == 0 or undone[i - 1] != p]]
    assert path[-1] == "reserve"
    for step, stage in enumerate(path, 1):
        expect(page.locator(f'svg.graph g[data-stage="{stage}"] .undo-step')).to_have_attribute(
            "data-step", str(step), timeout=TIMEOUT_MS)
    arrows = page.locator("svg.graph path.compensation")
    expect(arrows).to_have_count(len(path) - 1)
    assert [(a.get_attribute("data-from"), a.get_attribute("data-to")) for a in arrows.all()] \
        == list(itertools.pairwise(path))
    # the waterfall: a bar per stage run that started
    timed = ask(server, "query($id: String!) { work(workId: $id) "
                        "{ stageRuns { path startedAt } } }", id=work_id)["work"]["stageRuns"]
    expect(page.locator("svg.waterfall g[data-run]")).to_have_count(
        len([r for r in timed if r["startedAt"] is not None]))
    shot(page, "work-debugged")


def test_a_work_whose_compensation_failed_is_retried_then_resolved_with_a_reason(
        page: Page, server: Server) -> None:
    work_id = ask(server, 'mutation { createWork(saga: "demo") { ... on WorkCreated '
                          '{ work { workId } } } }')["createWork"]["work"]["workId"]
    assert ended(server, work_id) == "compensation_failed"  # no order: nothing to undo with
    page.goto(f"{server.origin}/?work={work_id}")
    expect(page.locator(".summary .status")).to_have_text("compensation_failed",
                                                          timeout=TIMEOUT_MS)
    # retried from the page: the compensation runs again (and fails again: still no order)
    page.get_by_role("button", name="retry compensation").click()
    expect(page.locator("ol.timeline")).to_contain_text("work.compensation_retried",
                                                        timeout=TIMEOUT_MS)
    assert ended(server, work_id) == "compensation_failed"
    expect(page.locator(".summary .status")).to_have_text("compensation_failed",
                                                          timeout=TIMEOUT_MS)
    kinds = [e["type"] for e in events(server, work_id)]
    assert kinds.count("work.compensation_retried") == 1
    assert kinds.count("work.compensation_failed") == 2
    page.get_by_label("resolve reason").fill("released the reservation by hand")
    page.get_by_role("button", name="resolve", exact=True).click()
    expect(page.locator(".summary .resolved")).to_have_text("(resolved)", timeout=TIMEOUT_MS)
    expect(page.locator("ol.timeline")).to_contain_text("work.resolved")
    found = ask(server, "query($id: String!) { work(workId: $id) { events(first: 1000) "
                        "{ type payload } } }", id=work_id)["work"]["events"]
    assert [e["payload"].get("reason") for e in found if e["type"] == "work.resolved"] == [
        "released the reservation by hand"]


def test_a_running_work_is_paused_and_cancelled_from_its_page(page: Page,
                                                             server: Server) -> None:
    # a long order (a stage per item after the payment): still running when paused
    order = {"items": [{"sku": f"s{i}", "price": 1} for i in range(200)]}
    work_id = ask(server, CREATE, input=order)["createWork"]["work"]["workId"]
    page.goto(f"{server.origin}/?work={work_id}")
    expect(page.locator(".summary .status")).to_have_text("paused", timeout=TIMEOUT_MS)
    page.get_by_role("button", name="resume", exact=True).click()
    expect(page.locator(".summary .status")).to_have_text("running", timeout=TIMEOUT_MS)
    page.get_by_role("button", name="pause", exact=True).click()  # while it runs
    expect(page.locator(".summary .status")).to_have_text("paused", timeout=TIMEOUT_MS)
    assert ask(server, "query($id: String!) { work(workId: $id) { status } }",
               id=work_id)["work"]["status"] == "paused"
    page.get_by_role("button", name="cancel", exact=True).click()
    expect(page.locator(".summary .status")).to_have_text("cancelled", timeout=TIMEOUT_MS)
    assert ask(server, "query($id: String!) { work(workId: $id) { status } }",
               id=work_id)["work"]["status"] == "cancelled"
    kinds = [e["type"] for e in events(server, work_id)]
    # resumed, paused and cancelled from the page: three commands, the cancel last
    assert kinds.count("work.command") >= 3 and "work.cancelled" in kinds
    shot(page, "work-cancelled")
