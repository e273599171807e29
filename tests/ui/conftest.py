"""The UI tests' fixtures: ``stepsaga serve`` as a real process (the demo saga on a
SQLite file) and Debian's Chromium driven by Playwright.

Without Chromium the browser tests fail, never skip: scripts/test.sh installs it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# Playwright cannot download its own browsers here; these keep Debian's from calling
# home (updates, sync, field trials) so that every request it makes is the page's
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


class Server:
    """``python -m graphql_api.cli serve`` on a free port, stopped with SIGTERM."""

    def __init__(self, store: Path, port: int = 0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "graphql_api.cli", "serve", "--store",
             f"sqlite+aiosqlite:///{store}", "--port", str(port)], cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"the server died: {self.process.communicate()[1]}")
        self.url: str = json.loads(line)["url"]  # http://127.0.0.1:PORT/graphql
        self.origin = self.url.removesuffix("/graphql")

    def stop(self) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=60)
        return self.process.returncode, err


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    served = Server(tmp_path_factory.mktemp("serve") / "s.sqlite")
    try:
        yield served
    finally:
        code, err = served.stop()
        assert code == 0, err


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
