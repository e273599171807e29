"""``stepsaga run``: the real command in a child process."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path


def stepsaga(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "graphql_api.cli", *args],
                          capture_output=True, text=True, timeout=60)


def test_run_demo_completes_with_a_progress_bar() -> None:
    done = stepsaga("run", "demo", "--delay", "0")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "completed"
    assert result["output"] == {"shipped": ["box:tea", "box:cups", "box:kettle", "box:tray"]}
    bar = done.stderr.splitlines()
    assert bar[-1].startswith("[" + "#" * 30 + "] 4/4 stages  completed")


def test_run_demo_with_a_failing_stage_compensates() -> None:
    done = stepsaga("run", "demo", "--delay", "0", "--fail", "pay/book")
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert result["status"] == "failed"
    assert result["failure"]["path"] == "pay/book"
    assert "reserve" in result["compensated"] and result["compensated"][-1] == "reserve"
    assert "compensating" in done.stderr


def test_bad_input_is_a_clear_error() -> None:
    done = stepsaga("run", "nope")
    assert done.returncode == 2 and "unknown saga 'nope'" in done.stderr
    done = stepsaga("run", "demo", "--input", "{not json")
    assert done.returncode == 2 and "--input is not valid JSON" in done.stderr
    done = stepsaga("run", "demo", "--delay", "-1")
    assert done.returncode == 2 and "--delay must be >= 0" in done.stderr


def test_run_demo_on_a_durable_store(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/demo.sqlite"
    done = stepsaga("run", "demo", "--delay", "0", "--store", url)
    assert done.returncode == 0, done.stderr
    work_id = json.loads(done.stdout)["work_id"]
    with sqlite3.connect(tmp_path / "demo.sqlite") as conn:
        status = conn.execute("SELECT status FROM works WHERE work_id = ?", (work_id,)).fetchone()
        kinds = [r[0] for r in conn.execute(
            "SELECT type FROM events WHERE work_id = ? ORDER BY seq", (work_id,))]
    assert status == ("completed",)
    assert kinds[0] == "work.created" and kinds[-1] == "work.completed"


def test_migrate_with_a_bad_store_url_is_a_clear_error(tmp_path: Path) -> None:
    done = stepsaga("migrate", "--url", f"sqlite+aiosqlite:///{tmp_path}/no/such/dir/x.sqlite")
    assert done.returncode == 2 and "unable to open database file" in done.stderr
    done = stepsaga("migrate", "--url", "sqlite+aiosqlite:///:memory:")
    assert done.returncode == 2 and "needs a file" in done.stderr
    url = f"sqlite+aiosqlite:///{tmp_path}/ok.sqlite"
    done = stepsaga("migrate", "--url", url)
    assert done.returncode == 0 and json.loads(done.stdout) == {"migrated": url}


def test_worker_with_bad_settings_is_a_clear_error(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/w.sqlite"
    done = stepsaga("worker", "--store", url, "--worker", "main=-3")
    assert done.returncode == 2
    assert "worker 'main': concurrency must be a whole number >= 1, got -3" in done.stderr
    done = stepsaga("worker", "--store", url, "--lease-ttl", "0")
    assert done.returncode == 2 and "--lease-ttl must be > 0 seconds, got 0.0" in done.stderr
    done = stepsaga("worker", "--store", url, "--app", "no_such_module:sagas")
    assert done.returncode == 2 and "--app 'no_such_module:sagas'" in done.stderr
    done = stepsaga("worker", "--store", url, "--app", "json")
    assert done.returncode == 2 and "use module:attribute" in done.stderr
    done = stepsaga("worker", "--store", url, "--park-after", "-1")
    assert done.returncode == 2 and "--park-after must be >= 0 seconds, got -1.0" in done.stderr
    done = stepsaga("worker", "--store", url, "--worker", "mail=2:nope")
    assert done.returncode == 2 and "serves sagas that are not registered: nope" in done.stderr
    assert not (tmp_path / "w.sqlite").exists()  # nothing was created for bad settings


def test_worker_runs_an_app_with_its_limits(tmp_path: Path) -> None:
    """`--app` may name a WorkerApp: its saga limit holds in a real worker process."""
    import signal

    from tests.workers.app import prepare

    ledger = tmp_path / "ledger.sqlite"
    prepare(ledger)
    url = f"sqlite+aiosqlite:///{tmp_path}/w.sqlite"
    submit = (
        "import anyio\nfrom engine import Runtime\nfrom engine.store import SqlStore\n"
        "from tests.workers.app import sagas\n"
        "async def main():\n"
        f"    async with SqlStore.open({url!r}) as store, Runtime(sagas(), store=store) as rt:\n"
        "        for _ in range(9): await rt.start('ledger', 0, run=False)\n"
        "anyio.run(main)\n")
    done = subprocess.run([sys.executable, "-c", submit], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    node = subprocess.Popen(
        [sys.executable, "-m", "graphql_api.cli", "worker", "--store", url,
         "--app", "tests.workers.app:limited", "--worker", "main=10"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "STEPSAGA_TEST_LEDGER": str(ledger)},
        cwd=Path(__file__).resolve().parents[2])
    try:
        assert node.stdout is not None and node.stdout.readline()
        for _ in range(300):  # at most 30 s
            with sqlite3.connect(tmp_path / "w.sqlite") as conn:
                statuses = [r[0] for r in conn.execute("SELECT status FROM works")]
            if statuses == ["completed"] * 9:
                break
            time.sleep(0.1)
    finally:
        node.send_signal(signal.SIGTERM)
        node.communicate(timeout=30)
    assert statuses == ["completed"] * 9
    with sqlite3.connect(tmp_path / "w.sqlite") as conn:
        spans = conn.execute("SELECT min(time), max(time) FROM events WHERE worker IS NOT NULL "
                             "GROUP BY work_id").fetchall()
    # never more than three works of the saga at once (its limit)
    most = max(sum(1 for a, b in spans if a <= t <= b) for t, _ in spans)
    assert most <= 3
