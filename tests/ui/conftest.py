"""The UI tests' fixtures: ``stepsaga serve`` as a real process (the demo saga on a
SQLite file), Debian's Chromium driven by Playwright, a page that fails its test on a
console error or an uncaught exception; and the helpers the tests share (the API asked
over HTTP, screenshots into ``SCREENSHOTS``).

Without Chromium the browser tests fail, never skip: scripts/test.sh installs it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page

from tests.auth import admin_token, bearer

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("STEPSAGA_SCREENSHOTS",
                                  Path(tempfile.gettempdir()) / "stepsaga-screenshots"))
TIMEOUT_MS = 30_000
# Playwright cannot download its own browsers here; these keep Debian's from calling
# home (updates, sync, field trials) so that every request it makes is the page's
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


class Server:
    """``python -m graphql_api.cli serve`` on a free port (with ``--app`` and ``--config``
    when given, the explorer when asked for), stopped with SIGTERM; auth on, as for
    users: ``token`` is an administrator's (made with ``stepsaga token create``), ``http``
    a client sending it, ``login_url`` the one-time sign-in link a fresh store's first
    start prints (None after)."""

    def __init__(self, store: Path, port: int = 0, app: str | None = None,
                 explorer: bool = False, config: Path | None = None) -> None:
        self.store_url = f"sqlite+aiosqlite:///{store}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "graphql_api.cli", "serve", "--store", self.store_url,
             "--port", str(port), *(["--app", app] if app else []),
             *(["--explorer"] if explorer else []),
             *(["--config", str(config)] if config else [])], cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"the server died: {self.process.communicate()[1]}")
        told = json.loads(line)
        self.url: str = told["url"]  # http://127.0.0.1:PORT/graphql
        self.origin = self.url.removesuffix("/graphql")
        self.login_url: str | None = told.get("login_url")
        self.token = admin_token(self.store_url)
        self.http = httpx.Client(headers=bearer(self.token), timeout=30)
        self._state: Any = None

    def signed_in(self, browser: Any) -> Any:
        """A browser context signed in on the login page with the token (done once per
        server: later contexts start with its cookies)."""
        if self._state is None:
            self._state = sign_in(browser, self.origin, self.token)
        return browser.new_context(storage_state=self._state)

    def stop(self) -> tuple[int, str]:
        self.http.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=60)
        return self.process.returncode, err


def sign_in(browser: Any, origin: str, token: str) -> Any:
    """The storage state (cookies) of a browser context signed in with ``token`` on the
    login page, as a person does."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{origin}/login")
        page.get_by_label("token").fill(token)
        page.get_by_role("button", name="sign in").click()
        page.wait_for_url(f"{origin}/", timeout=TIMEOUT_MS)
        return context.storage_state()
    finally:
        context.close()


@contextmanager
def serving(store: Path, **options: Any) -> Iterator[Server]:
    """A :class:`Server` for the block, which must stop cleanly after it."""
    served = Server(store, **options)
    try:
        yield served
    finally:
        code, err = served.stop()
        assert code == 0, err


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("serve") / "s.sqlite") as served:
        yield served


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():  # fail, never skip: CI installs it (scripts/test.sh)
        pytest.fail(f"the browser tests need Debian's Chromium at {CHROMIUM}: "
                    "apt-get install -y --no-install-recommends chromium", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                              args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Page]:
    """A page in a context signed in to ``server`` (the module's, or the one a module
    serves itself under that name)."""
    context = server.signed_in(browser)
    found = context.new_page()
    errors: list[str] = []
    found.on("console", lambda m: m.type == "error" and errors.append(m.text))
    found.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    try:
        yield found
        assert errors == []
    finally:
        context.close()


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def ask(server: Server, query: str, **variables: Any) -> Any:
    answer = server.http.post(server.url, json={"query": query, "variables": variables}
                              ).json()
    assert "errors" not in answer, answer
    return answer["data"]


def ended(server: Server, work_id: str) -> str:
    """The status the work ended in, as the API tells it (a look every 0.1 s, 30 s)."""
    query = "query($id: String!) { work(workId: $id) { status } }"
    for _ in range(300):
        status = str(server.http.post(server.url, json={
            "query": query, "variables": {"id": work_id}}).json()["data"]["work"]["status"])
        # paused is no end: a work just resumed may still show it for a moment
        if status not in ("pending", "running", "compensating", "waiting", "paused"):
            return status
        time.sleep(0.1)
    raise AssertionError(f"work {work_id} did not end within 30 s")


def expect_events(page: Page, count: int) -> None:
    """The work page's timeline holds ``count`` events (it says so: only the rows in
    view are in the page)."""
    from playwright.sync_api import expect

    expect(page.locator("ol.timeline")).to_have_attribute("data-count", str(count),
                                                          timeout=TIMEOUT_MS)


def timeline_rows(page: Page) -> dict[int, str]:
    """The timeline's rows in the page now, seq to event type: it is virtualised, so
    these are the rows in view and a margin around them, once read."""
    rows = page.locator("ol.timeline li[data-seq]").evaluate_all(
        "rows => rows.map(r => [Number(r.dataset.seq),"
        " r.querySelector('.type').textContent.trim()])")
    return {int(seq): str(kind) for seq, kind in rows}
