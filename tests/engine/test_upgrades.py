"""Upgrades with live nodes, on a SQLite file and a real PostgreSQL: a node of the
version before the newest migration (a real process knowing one revision less) runs
works while a node of this version migrates the store under it, and goes on running
works after, still ready (its /readyz says the schema is newer than it knows); started
again on the migrated store, it refuses, naming both revisions.

The store is taken back to the revision before the newest by that migration's own
downgrade, so each new migration is tested here as it comes (it must be additive, and
have a downgrade)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from engine import Runtime
from engine.store import SqlStore
from engine.store.migrate import head_revision, schema_revision
from tests.graphql_api.ops_app import sagas

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = ROOT / "engine" / "store" / "migrations"
APP = "tests.graphql_api.ops_app:sagas"


def _previous() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    down = ScriptDirectory.from_config(config).get_revision(head_revision()).down_revision
    assert isinstance(down, str)
    return down


def _older_scripts(into: Path) -> Path:
    """The migrations without the newest: what the release before it shipped."""
    target = into / "migrations"
    shutil.copytree(MIGRATIONS, target, ignore=shutil.ignore_patterns("__pycache__"))
    (newest,) = (target / "versions").glob(f"{head_revision()}_*.py")
    newest.unlink()
    return target


class Node:
    def __init__(self, *args: str, older: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        prefix = ["-m", "tests.engine.older_node", str(older)] if older else \
            ["-m", "graphql_api.cli"]
        self.process = subprocess.Popen(
            [sys.executable, *prefix, *args], cwd=ROOT, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def ready(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"the node died: {self.process.communicate()[1]}")
        return line

    def stop(self) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=60)
        return self.process.returncode, err


async def _by(url: str, ids: list[str], *, started: bool = False) -> dict[str, set[str]]:
    """Node names that wrote each work's events (``started``: its stage's start only)."""
    found: dict[str, set[str]] = {}
    async with SqlStore.open(url, create=False) as store:
        for work_id in ids:
            found[work_id] = {(r.worker or "").split("/")[0] for r in await store.read(work_id)
                              if r.worker and (not started or
                                               r.event.type == "stage.transaction.started")}
    return found


async def _statuses(url: str, ids: list[str], want: str) -> list[Any]:
    rows: list[Any] = []
    async with SqlStore.open(url, create=False) as store:
        for _ in range(600):  # a minute at most
            rows = [await store.work(i) for i in ids]
            if all(r is not None and r["status"] == want for r in rows):
                break
            await anyio.sleep(0.1)
    return [r and r["status"] for r in rows]


@pytest.mark.timeout(180)
async def test_an_older_node_runs_on_while_a_newer_one_migrates(store_url: str,
                                                               tmp_path: Path) -> None:
    previous = _previous()
    async with SqlStore.open(store_url) as store:  # then back to the release before
        async with store.engine.begin() as conn:
            def down(connection: Any) -> None:
                config = Config()
                config.set_main_option("script_location", str(MIGRATIONS))
                config.attributes["connection"] = connection
                command.downgrade(config, previous)

            await conn.run_sync(down)
        assert await schema_revision(store) == previous
    older = _older_scripts(tmp_path)
    hold = tmp_path / "hold"
    hold.touch()
    common = ("worker", "--store", store_url, "--app", APP, "--worker", "w=4",
              "--lease-ttl", "2")
    old = Node(*common, "--node-id", "old", "--http", "127.0.0.1:0", older=older,
               env={"STEPSAGA_TEST_HOLD": str(hold)})
    new = None
    try:
        readyz = json.loads(old.ready())["http"] + "/readyz"
        async with SqlStore.open(store_url, create=False) as store:
            assert await schema_revision(store) == previous  # it migrated nothing
            async with Runtime(sagas(), store=store) as client:
                held = [await client.start("held", i, run=False) for i in range(4)]
        for _ in range(600):  # the old node holds all four, mid-stage
            if all(found == {"old"} for found in (await _by(store_url, held,
                                                            started=True)).values()):
                break
            await anyio.sleep(0.1)
        assert await _by(store_url, held, started=True) == {w: {"old"} for w in held}

        new = Node(*common, "--node-id", "new")  # this version: migrates, under the old
        new.ready()
        async with SqlStore.open(store_url, create=False) as store:
            assert await schema_revision(store) == head_revision()
        code, err = new.stop()
        assert code == 0, err
        async with httpx.AsyncClient(timeout=10) as client:
            ready = await client.get(readyz)
        assert ready.status_code == 200, ready.text  # it runs on, and says why
        assert ready.json()["checks"]["migrations"] == {"ok": True, "detail": (
            f"the store's schema is at revision {head_revision()}, newer than this node's "
            f"{previous}: it runs on (migrations only add), but would not start again; "
            "upgrade it")}

        hold.unlink()  # the old node's works go on, on the migrated store
        assert await _statuses(store_url, held, "completed") == ["completed"] * 4
        async with SqlStore.open(store_url, create=False) as store, \
                Runtime(sagas(), store=store) as client:
            later = [await client.start("quick", i, run=False) for i in range(10)]
        assert await _statuses(store_url, later, "completed") == ["completed"] * 10
        assert await _by(store_url, [*held, *later]) == {w: {"old"} for w in [*held, *later]}

        again = Node(*common, "--node-id", "old2", older=older)  # a restart is refused
        again.process.wait(timeout=60)
        code, err = again.stop()
        assert code == 3, err
        assert f"at revision {head_revision()}, newer than this version of stepsaga " \
               f"knows: it needs revision {previous}" in err
        assert "Traceback" not in err
    finally:
        for node in (new, old):
            if node is not None and node.process.poll() is None:
                node.stop()
    code, err = old.stop()
    assert code == 0, err
