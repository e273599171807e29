"""/healthz and /readyz of a worker-only node (``stepsaga worker --http``) over HTTP:
readiness false while its PostgreSQL is down and true again once it is back; the
migrations and workers checks; the health history pruned."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from engine.store import SqlStore
from engine.store.migrate import head_revision
from engine.store.schema import health_checks
from tests.pg import PostgresCluster
from workers.health import Health, HealthCheck, readiness

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.graphql_api.ops_app:sagas"


def ready_of(url: str) -> tuple[int, dict[str, Any]]:
    # 30 s: during an outage a request has taken over 10 s here (cause not found yet)
    response = httpx.get(url + "/readyz", timeout=30)
    return response.status_code, response.json()


def becomes(url: str, status: int, seconds: float = 30.0) -> dict[str, Any]:
    """/readyz's answer once its status is ``status`` (polled, with a deadline)."""
    found: tuple[int, dict[str, Any]] = (0, {})
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = ready_of(url)
        if found[0] == status:
            return found[1]
        time.sleep(0.1)
    raise AssertionError(f"/readyz never answered {status}; last {found}")


@pytest.mark.timeout(120)
def test_readiness_follows_postgresql_going_away_and_coming_back() -> None:
    cluster = PostgresCluster()
    cluster.start()
    process = None
    try:
        store = cluster.create_database("ready")
        process = subprocess.Popen(
            [sys.executable, "-m", "graphql_api.cli", "worker", "--store", store, "--app",
             APP, "--worker", "w=2", "--http", "127.0.0.1:0", "--lease-ttl", "2"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, process.communicate()[1]
        url = json.loads(line)["http"]
        assert httpx.get(url + "/healthz", timeout=10).json() == {"ok": True}
        found = becomes(url, 200)
        assert found["ready"] is True
        assert found["checks"]["migrations"] == {"ok": True, "detail": ""}
        assert found["checks"]["workers"]["ok"] is True
        cluster.halt()
        down = becomes(url, 503)
        assert down["ready"] is False
        assert down["checks"]["store"]["ok"] is False
        assert "unreachable" in down["checks"]["store"]["detail"]
        assert httpx.get(url + "/healthz", timeout=10).status_code == 200  # it lives
        cluster.resume()
        back = becomes(url, 200)
        assert back["checks"]["store"] == {"ok": True, "detail": ""}
    finally:
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=60)
            assert process.returncode == 0, err
        cluster.stop()


async def test_readiness_names_an_old_schema_and_missing_workers(tmp_path: Path) -> None:
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        found = await readiness(store)  # an API-only node: no live worker node
        assert found["ready"] is False
        assert found["checks"]["store"]["ok"] and found["checks"]["migrations"]["ok"]
        assert found["checks"]["workers"] == {
            "ok": False, "detail": "no worker node is live on this store"}
        async with store.engine.begin() as conn:
            await conn.execute(sa.text("UPDATE alembic_version SET version_num = '0011'"))
        old = await readiness(store)
        assert old["checks"]["migrations"] == {
            "ok": False, "detail": "the store's schema is at revision 0011; this node needs "
                                   f"{head_revision()} (run stepsaga migrate)"}


async def test_the_health_history_is_pruned_to_what_is_kept(tmp_path: Path) -> None:
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        old = time.time() - 3600
        async with store.engine.begin() as conn:
            await conn.execute(health_checks.insert(), [
                {"service": "smtp", "ok": True, "available": True, "detail": "", "node": node,
                 "time": old, "depends_on": "[]"} for node in ("n1", "n2")])
        health = Health(store, [HealthCheck("smtp", lambda: None)], node="n1", keep=60)
        assert await health.check_all() == {"smtp": (True, "")}
        async with store.reader.connect() as conn:
            rows = (await conn.execute(sa.select(health_checks.c.node, health_checks.c.time)
                                       .order_by(health_checks.c.position))).all()
        # n1's old row went, n2's is n2's to prune; the new round is kept
        assert [(n, t == old) for n, t in rows] == [("n2", True), ("n1", False)]
        with pytest.raises(ValueError, match="keep must be a number of seconds > 0"):
            Health(store, [], node="n1", keep=0)
