"""The stage catalog in a real Chromium: every saga with its stages, and a work started
from it, paused, to be debugged from its first step; bad input is refused on the page
with nothing created."""

from __future__ import annotations

import json
import re

from playwright.sync_api import Page, expect

from workers.actions import DEMO_ORDER

from .conftest import TIMEOUT_MS, Server, ask, shot

COUNT = "{ allWorks(first: 0) { totalCount } }"


def test_a_work_is_started_paused_from_the_catalog(page: Page, server: Server) -> None:
    page.goto(f"{server.origin}/?catalog")
    demo = page.locator('section[data-saga="demo"]')
    stages = [s["path"] for s in ask(server, '{ saga(name: "demo") { stages { path } } }')[
        "saga"]["stages"] if s["path"]]
    expect(demo.locator("table.stages tbody tr")).to_have_count(len(stages),
                                                                timeout=TIMEOUT_MS)
    assert demo.locator("table.stages tbody td:first-child").all_inner_texts() == stages
    shot(page, "catalog")
    before = ask(server, COUNT)["allWorks"]["totalCount"]
    box = page.get_by_label("input of demo")
    box.fill("{not json")
    page.get_by_role("button", name="start demo").click()
    expect(demo.locator(".problem")).to_contain_text("not JSON", timeout=TIMEOUT_MS)
    assert ask(server, COUNT)["allWorks"]["totalCount"] == before
    box.fill(json.dumps(DEMO_ORDER))
    page.get_by_role("button", name="start demo").click()
    expect(page).to_have_url(re.compile(r"\?work="), timeout=TIMEOUT_MS)
    work_id = page.url.split("work=", 1)[1]
    expect(page.locator(".summary .status")).to_have_text("paused", timeout=TIMEOUT_MS)
    found = ask(server, "query($id: String!) { work(workId: $id) { status input } }",
                id=work_id)["work"]
    assert found == {"status": "paused", "input": DEMO_ORDER}
