"""The explorer in a real Chromium against a real ``stepsaga serve``: the page loads, the
schema is fetched (the docs show it), a query runs over HTTP and a subscription over a
WebSocket (graphql-transport-ws), with no console error and no request to another host."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from .conftest import Server, serving

CREATE = 'mutation { createWork(saga: "demo") { ... on WorkCreated { work { workId } } } }'
TIMEOUT_MS = 30_000  # generous: the page loads in about a second

@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with its explorer on (it is off by default)."""
    with serving(tmp_path_factory.mktemp("explorer") / "s.sqlite", explorer=True) as served:
        yield served



class Visit:
    """A page of the explorer with everything it logged, requested and connected to."""

    def __init__(self, page: Page, server: Server) -> None:
        self.page = page
        self.server = server
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.sockets: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("websocket", lambda s: self.sockets.append(s.url))

    def open(self) -> None:
        self.page.goto(self.server.url)
        expect(self.page.locator(".graphiql-query-editor .view-lines")).to_be_visible(
            timeout=TIMEOUT_MS)

    def run(self, name: str, operation: str) -> Any:
        """Replaces the editor's text with ``operation`` (named ``name``), runs it;
        returns the response pane."""
        self.page.locator(".graphiql-query-editor .view-lines").click()
        self.page.keyboard.press("ControlOrMeta+A")
        # inserted whole, not typed: the editor would add its own closing braces
        self.page.keyboard.insert_text(operation)
        # GraphiQL parses the text a moment after the last edit, and runs what it last
        # parsed (over HTTP or the WebSocket by its kind): the tab shows the name then
        expect(self.page.locator(".graphiql-tab")).to_have_text(name, timeout=TIMEOUT_MS)
        self.page.locator(".graphiql-execute-button").click()
        return self.page.locator(".graphiql-response")

    def assert_clean(self) -> None:
        assert self.errors == []
        here = (self.server.origin + "/", self.server.origin.replace("http", "ws", 1) + "/")
        assert [url for url in self.requests if not url.startswith(here)] == []
        assert [url for url in self.sockets if not url.startswith(here)] == []


@pytest.fixture
def visit(browser: Any, server: Server) -> Iterator[Visit]:
    context = server.signed_in(browser)
    try:
        yield Visit(context.new_page(), server)
    finally:
        context.close()


def test_the_page_loads_and_shows_the_schema(visit: Visit) -> None:
    visit.open()
    # a new browser context: nothing stored from earlier visits, the docs are closed
    visit.page.get_by_role("button", name="Show Documentation Explorer").click()
    explorer = visit.page.locator(".graphiql-doc-explorer")
    # the root types come from the schema the page asked the server for
    expect(explorer).to_contain_text("query: Query", timeout=TIMEOUT_MS)
    expect(explorer).to_contain_text("subscription: Subscription")
    visit.page.get_by_text("Query", exact=True).click()
    expect(explorer).to_contain_text("allSagas", timeout=TIMEOUT_MS)
    assert any(url == visit.server.url for url in visit.requests)  # the introspection
    visit.assert_clean()


def test_a_query_typed_in_the_editor_runs(visit: Visit) -> None:
    visit.open()
    response = visit.run("Sagas", "query Sagas { allSagas { name } }")
    expect(response).to_contain_text('"name": "demo"', timeout=TIMEOUT_MS)
    visit.assert_clean()


def test_a_subscription_runs_over_a_websocket(visit: Visit) -> None:
    created = visit.server.http.post(visit.server.url, json={"query": CREATE})
    work_id = created.json()["data"]["createWork"]["work"]["workId"]
    visit.open()
    # from the first event on: the work's events were recorded before the page asked
    response = visit.run("Events", f'subscription Events {{ workEvents(workId: "{work_id}", '
                                   'after: "0") { type workId } }')
    expect(response).to_contain_text(work_id, timeout=TIMEOUT_MS)
    assert visit.sockets == [visit.server.url.replace("http", "ws", 1)]
    visit.assert_clean()
