"""The UI while the server restarts: the page says the server is away, reconnects by
itself when it is back (same port, same store) and goes on from the last event it had:
what came meanwhile arrives, nothing twice."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from workers.actions import DEMO_ORDER

from .conftest import TIMEOUT_MS, Server, ask, expect_events, shot, timeline_rows
from .test_work_page import CREATE, events


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_work_page_survives_a_restart_of_the_server(browser: Any, tmp_path: Path) -> None:
    port, store = free_port(), tmp_path / "s.sqlite"
    server = Server(store, port)
    context = server.signed_in(browser)  # its session outlives the restart
    try:
        page = context.new_page()
        work_id = ask(server, CREATE, input=DEMO_ORDER)["createWork"]["work"]["workId"]
        page.goto(f"{server.origin}/?work={work_id}")
        before = len(events(server, work_id))
        expect_events(page, before)
        code, err = server.stop()
        assert code == 0, err
        expect(page.locator(".away")).to_be_visible(timeout=TIMEOUT_MS)
        shot(page, "server-away")
        server = Server(store, port)  # back: same address, same store
        expect(page.locator(".away")).to_have_count(0, timeout=TIMEOUT_MS)
        ask(server, 'mutation($id: String!) { stepWork(workId: $id) { __typename } }',
            id=work_id)
        stored = events(server, work_id)
        assert len(stored) > before
        expect_events(page, len(stored))  # each once
        # a few events: all in view, each as stored
        assert timeline_rows(page) == {e["seq"]: e["type"] for e in stored}
    finally:
        context.close()
        code, err = server.stop()
        assert code == 0, err
