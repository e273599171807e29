"""The stage catalog in a real Chromium: every saga with its stages and examples; a work
started from it, paused, to be debugged from its first step, from a form built from the
saga's input schema or as JSON, bad input refused on the page with nothing created; a
dry run with a stage forced to fail shows the compensation of the stages before it and
stores nothing."""

from __future__ import annotations

import json
import re

from playwright.sync_api import Page, expect

from workers.actions import DEMO_ORDER

from .conftest import TIMEOUT_MS, Server, ask, shot

COUNT = "{ allWorks(first: 0) { totalCount } }"
STORED = "query($id: String!) { work(workId: $id) { status input } }"


def started(page: Page, server: Server) -> dict[str, object]:
    """The work the page went to once it was started, as the API has it."""
    expect(page).to_have_url(re.compile(r"\?work="), timeout=TIMEOUT_MS)
    work_id = page.url.split("work=", 1)[1]
    expect(page.locator(".summary .status")).to_have_text("paused", timeout=TIMEOUT_MS)
    return dict(ask(server, STORED, id=work_id)["work"])


def test_a_work_is_started_paused_from_the_catalog_as_json(page: Page, server: Server) -> None:
    page.goto(f"{server.origin}/?catalog")
    demo = page.locator('section[data-saga="demo"]')
    stages = [s["path"] for s in ask(server, '{ saga(name: "demo") { stages { path } } }')[
        "saga"]["stages"] if s["path"]]
    expect(demo.locator("table.stages tbody tr")).to_have_count(len(stages),
                                                                timeout=TIMEOUT_MS)
    assert demo.locator("table.stages tbody td:first-child").all_inner_texts() == stages
    # each stage's example output, which a dry run gives
    expect(demo.locator("table.stages tbody tr").nth(stages.index("pay/book"))).to_contain_text(
        '"slot-1"')
    # and its graph: a node per stage, none of them coloured (no work here)
    nodes = demo.locator("svg.graph g[data-stage]")
    expect(nodes).to_have_count(len(stages))
    assert sorted(n.get_attribute("data-stage") or "" for n in nodes.all()) == sorted(stages)
    assert {n.get_attribute("data-status") for n in nodes.all()} == {"pending"}
    shot(page, "catalog")
    before = ask(server, COUNT)["allWorks"]["totalCount"]
    demo.get_by_role("radio", name="JSON").check()
    box = page.get_by_label("input of demo")
    box.fill("{not json")
    page.get_by_role("button", name="start demo").click()
    expect(demo.locator(".problem")).to_contain_text("not JSON", timeout=TIMEOUT_MS)
    box.fill('{"items": []}')  # JSON, but not an order: the API refuses it
    page.get_by_role("button", name="start demo").click()
    expect(demo.locator(".problem")).to_contain_text(
        "does not match its schema: items: [] should be non-empty", timeout=TIMEOUT_MS)
    assert ask(server, COUNT)["allWorks"]["totalCount"] == before
    box.fill(json.dumps(DEMO_ORDER))
    page.get_by_role("button", name="start demo").click()
    assert started(page, server) == {"status": "paused", "input": DEMO_ORDER}


def test_a_work_is_started_from_the_form_of_the_input_schema(page: Page,
                                                            server: Server) -> None:
    page.goto(f"{server.origin}/?catalog")
    demo = page.locator('section[data-saga="demo"]')
    schema = ask(server, '{ saga(name: "demo") { inputSchema } }')["saga"]["inputSchema"]
    assert schema["examples"] == [DEMO_ORDER]
    expect(demo.locator(".examples pre")).to_have_text(json.dumps(DEMO_ORDER,
                                                                  separators=(",", ":")),
                                                       timeout=TIMEOUT_MS)
    page.get_by_role("button", name="use example 1 of demo").click()  # prefills the form
    expect(page.locator("#demo_items_3_sku")).to_have_value("tray", timeout=TIMEOUT_MS)
    before = ask(server, COUNT)["allWorks"]["totalCount"]
    page.locator("#demo_items_0_price").fill("-1")
    page.locator("#demo_items_1_sku").fill("")
    page.get_by_role("button", name="start demo").click()
    errors = demo.locator(".panel-danger")  # ajv's errors against the schema, on the page
    expect(errors).to_contain_text("'Price' must be >= 0", timeout=TIMEOUT_MS)
    expect(errors).to_contain_text("must have required property 'SKU'")
    shot(page, "catalog-form-errors")
    assert ask(server, COUNT)["allWorks"]["totalCount"] == before  # nothing sent
    page.locator("#demo_items_0_price").fill("5")
    page.locator("#demo_items_1_sku").fill("mugs")
    demo.get_by_title("Add", exact=True).click()  # an item more
    page.locator("#demo_items_4_sku").fill("lid")
    page.locator("#demo_items_4_price").fill("2.5")
    expect(errors).to_have_count(0, timeout=TIMEOUT_MS)  # corrected: checked as it changes
    page.get_by_role("button", name="start demo").click()
    items = [dict(item) for item in DEMO_ORDER["items"]]
    items[0]["price"], items[1]["sku"] = 5, "mugs"
    assert started(page, server) == {"status": "paused",
                                     "input": {"items": [*items, {"sku": "lid", "price": 2.5}]}}


def test_a_dry_run_rehearses_the_compensation_of_a_failed_charge(page: Page,
                                                                 server: Server) -> None:
    page.goto(f"{server.origin}/?catalog")
    demo = page.locator('section[data-saga="demo"]')
    page.get_by_role("button", name="use example 1 of demo").click()
    before = ask(server, COUNT)["allWorks"]["totalCount"]
    page.get_by_label("force pay/charge of demo to fail").check()
    page.get_by_role("button", name="dry run demo").click()
    report = demo.locator(".rehearsed")
    expect(report.locator(".outcome .status")).to_have_text("failed", timeout=TIMEOUT_MS)
    expect(report.locator(".outcome").first).to_contain_text(
        "forced failure of 'pay/charge' (dry run)")
    rows = report.locator("table.outcomes tbody tr")
    expect(rows.locator("xpath=self::*[@data-path='pay/charge']").locator("td.outcome")
           ).to_have_text("failed (forced)")
    for path in ("reserve", "pay/book"):  # what completed before it is undone
        expect(report.locator(f'tr[data-path="{path}"] td.outcome')).to_have_text("compensated")
    expect(report.locator('tr[data-path="ship"]')).to_have_count(0)  # never reached
    shown = report.locator("ol.rehearsed-events li")
    types = [t.split(" ")[1] for t in shown.all_inner_texts()]
    assert types[0] == "work.created" and types[-1] == "work.failed"
    # the same rehearsal through the API: the same stages compensated, the same events
    again = ask(server, 'mutation($input: JSON) { dryRun(saga: "demo", input: $input, fail: '
                        '["pay/charge"]) { ... on DryRunReport { compensated events '
                        '{ type } } } }', input=DEMO_ORDER)["dryRun"]
    assert report.locator(".compensated").inner_text() == (
        "compensated: " + ", ".join(again["compensated"]))
    assert sorted(types) == sorted(e["type"] for e in again["events"])
    assert again["compensated"][-1] == "reserve"
    shot(page, "catalog-dry-run")
    assert ask(server, COUNT)["allWorks"]["totalCount"] == before  # nothing was stored
    page.get_by_label("force pay/charge of demo to fail").uncheck()
    page.get_by_role("button", name="dry run demo").click()
    expect(report.locator(".outcome .status")).to_have_text("completed", timeout=TIMEOUT_MS)
    expect(report.locator(".compensated")).to_have_text("compensated: nothing")
    assert ask(server, COUNT)["allWorks"]["totalCount"] == before
