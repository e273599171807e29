"""``stepsaga run``: the real command in a child process."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest


def stepsaga(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "graphql_api.cli", *args],
                          capture_output=True, text=True, timeout=60)


def stepsaga_each(*runs: Sequence[str]) -> list[subprocess.CompletedProcess[str]]:
    """Several ``stepsaga`` commands at once (each is a process start-up, about 0.5 s);
    a run starting with ``unshare`` runs the command under it."""
    children: list[tuple[list[str], subprocess.Popen[str]]] = []
    done = []
    try:
        for run in runs:
            prefix = list(run[:2]) if run[0] == "unshare" else []
            argv = [*prefix, sys.executable, "-m", "graphql_api.cli", *run[len(prefix):]]
            children.append((argv, subprocess.Popen(argv, stdout=subprocess.PIPE,
                                                    stderr=subprocess.PIPE, text=True)))
        for argv, child in children:
            out, err = child.communicate(timeout=60)
            done.append(subprocess.CompletedProcess(argv, child.returncode, out, err))
    finally:
        for _, child in children:
            if child.returncode is None:
                child.kill()
                child.communicate()
    return done


def one_clear_line(done: subprocess.CompletedProcess[str], status: int = 2) -> str:
    """The one line a refused command printed on stderr (no traceback, nothing run)."""
    assert (done.returncode, done.stdout) == (status, ""), done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("stepsaga: "), done.stderr
    return lines[0]


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
    nope, not_json, negative, nan, inf, digits, constant, deep = stepsaga_each(
        ("run", "nope"), ("run", "demo", "--input", "{not json"),
        ("run", "demo", "--delay", "-1"), ("run", "demo", "--delay", "nan"),
        ("run", "demo", "--delay", "inf"), ("run", "demo", "--input", "9" * 5000),
        ("run", "demo", "--input", '{"items": NaN}'),
        ("run", "demo", "--input", "[" * 5000 + "]" * 5000))
    assert "unknown saga 'nope'" in one_clear_line(nope)
    assert "--input is not valid JSON" in one_clear_line(not_json)
    assert one_clear_line(negative).endswith(
        "--delay must be >= 0 and finite (seconds each demo stage takes), got -1.0")
    assert one_clear_line(nan).endswith("--delay must be >= 0 and finite (seconds each demo "
                                        "stage takes), got nan")
    assert one_clear_line(inf).endswith("got inf")
    assert one_clear_line(digits) == (
        "stepsaga: --input holds an integer longer than 4300 digits; expected shorter "
        "integers (pass a longer number as a JSON string)")
    assert one_clear_line(constant) == (
        "stepsaga: --input holds NaN, which is not JSON; expected a JSON value (numbers "
        "must be finite)")
    assert "--input is nested too deeply" in one_clear_line(deep)


def test_fail_naming_no_stage_is_an_error_listing_the_stage_paths() -> None:
    """Outside --dry-run a --fail that names no stage was ignored: the work completed."""
    nope, composite, glob, compensation, dry = stepsaga_each(
        ("run", "demo", "--delay", "0", "--fail", "nope"),
        ("run", "demo", "--delay", "0", "--fail", "pay"),
        ("run", "demo", "--delay", "0", "--fail", "pay/*"),
        ("run", "demo", "--delay", "0", "--fail", "pay/book", "--fail-compensation", "ship"),
        ("run", "demo", "--dry-run", "--fail", "nope*"))
    paths = "reserve, pay/charge, pay/book, pack[i]/box, ship (i: an item's index)"
    assert one_clear_line(nope) == (
        "stepsaga: --fail 'nope' names no stage of saga 'demo'; expected a stage path (globs "
        f"only with --dry-run): {paths}")
    assert one_clear_line(composite).startswith("stepsaga: --fail 'pay' names no stage")
    assert one_clear_line(glob).startswith("stepsaga: --fail 'pay/*' names no stage")
    assert one_clear_line(compensation) == (
        "stepsaga: --fail-compensation 'ship' names no stage of saga 'demo' with a "
        "compensation; expected one of: reserve, pay/charge, pay/book")
    assert one_clear_line(dry) == (
        "stepsaga: --fail 'nope*' names no stage of saga 'demo'; expected a stage path: "
        f"{paths}")


def test_fail_in_a_dry_run_takes_a_map_item_path_or_a_glob() -> None:
    # 'pack[0]/box' as a glob matches 'pack0/box' only: the literal path is meant (a dry
    # run packs one item, the one of the charge stage's example output); 'pack[*]/box'
    # as the catalog shows it is every item
    item, every, glob, template = stepsaga_each(
        ("run", "demo", "--dry-run", "--fail", "pack[0]/box"),
        ("run", "demo", "--dry-run", "--fail", "pack[*]/box"),
        ("run", "demo", "--dry-run", "--fail", "pay/b*"),
        ("run", "demo", "--dry-run", "--fail", "pack/box"))  # a template: no run's path
    for ran in (item, every):
        assert ran.returncode == 1, ran.stderr
        assert json.loads(ran.stdout)["failure"]["path"] == "pack[0]/box"
    assert glob.returncode == 1, glob.stderr
    assert json.loads(glob.stdout)["failure"]["path"] == "pay/book"
    assert one_clear_line(template).startswith(
        "stepsaga: --fail 'pack/box' names no stage of saga 'demo'; expected a stage path: ")


def test_a_failed_compensation_shows_why() -> None:
    """compensation_failed prints the compensation's error and the original failure."""
    cleanup, rollback = stepsaga_each(
        ("run", "demo", "--delay", "0", "--fail", "pay/book", "--fail-compensation",
         "pay/book"),
        ("run", "demo", "--delay", "0", "--fail", "pay/book", "--fail-compensation",
         "reserve"))
    for done, stage in ((cleanup, "pay/book"), (rollback, "reserve")):
        assert done.returncode == 1, done.stderr
        result = json.loads(done.stdout)
        assert result["status"] == "compensation_failed"
        assert result["error"]["message"] == (
            f"compensation of {stage} failed (asked with --fail-compensation)")
        assert result["failure"]["path"] == "pay/book"
        assert result["failure"]["error"]["message"] == "pay/book failed (asked with --fail)"
        assert "traceback" not in result["error"] and "traceback" not in result["failure"]
        assert "Traceback" not in done.stderr
    assert "reserve" not in json.loads(rollback.stdout)["compensated"]


def test_run_with_a_bad_store_is_one_clear_line(tmp_path: Path) -> None:
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    # root writes anywhere; in a user namespace of its own it is held to the mode bits
    as_user = ("unshare", "--user") if os.geteuid() == 0 else ()
    (tmp_path / "text.sqlite").write_text("not a database " * 100)
    garbage, sync, postgres, missing, not_writable, not_sqlite = stepsaga_each(
        ("run", "demo", "--store", "garbage://"),
        ("run", "demo", "--store", f"sqlite:///{tmp_path}/s.sqlite"),
        ("run", "demo", "--store", "postgresql://app:secret@db/stepsaga"),
        ("run", "demo", "--store", f"sqlite+aiosqlite:///{tmp_path}/no/such/s.sqlite"),
        (*as_user, "run", "demo", "--store", f"sqlite+aiosqlite:///{read_only}/s.sqlite"),
        ("run", "demo", "--store", f"sqlite+aiosqlite:///{tmp_path}/text.sqlite"))
    assert one_clear_line(garbage) == (
        "stepsaga: --store: store URL 'garbage://': the store runs on SQLite or PostgreSQL, "
        "not 'garbage'; expected e.g. sqlite+aiosqlite:///stepsaga.sqlite or "
        "postgresql+asyncpg://user@host/db")
    assert one_clear_line(sync) == (
        f"stepsaga: --store: store URL 'sqlite:///{tmp_path}/s.sqlite': the store needs the "
        "aiosqlite driver, not the default synchronous one; use "
        f"'sqlite+aiosqlite:///{tmp_path}/s.sqlite'")
    assert one_clear_line(postgres).endswith(  # the password is not printed
        "use 'postgresql+asyncpg://app:***@db/stepsaga'")
    assert one_clear_line(missing) == (
        f"stepsaga: --store: store URL 'sqlite+aiosqlite:///{tmp_path}/no/such/s.sqlite': "
        f"directory '{tmp_path}/no/such' does not exist; create it or put the database file "
        "in an existing directory")
    assert one_clear_line(not_writable) == (
        f"stepsaga: --store: store URL 'sqlite+aiosqlite:///{read_only}/s.sqlite': directory "
        f"'{read_only}' is not writable; the store creates the database file and its -wal "
        "and -shm files there, so choose a directory you may write to")
    assert one_clear_line(not_sqlite, status=1) == (
        f"stepsaga: cannot open the store 'sqlite+aiosqlite:///{tmp_path}/text.sqlite': file "
        "is not a database")
    assert sorted(tmp_path.iterdir()) == [read_only, tmp_path / "text.sqlite"]
    assert not list(read_only.iterdir())


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


async def test_store_open_names_the_url_and_the_directory(tmp_path: Path) -> None:
    """The messages above are SqlStore.open's own (engine.store.urls): Python users get
    them too, before anything connects (it was 'unable to open database file', then a
    stray 'Event loop is closed' traceback)."""
    from engine.store import SqlStore

    url = f"sqlite+aiosqlite:///{tmp_path}/gone/s.sqlite"
    with pytest.raises(ValueError, match=re.escape(
            f"store URL '{url}': directory '{tmp_path}/gone' does not exist")):
        async with SqlStore.open(url):
            pass
    with pytest.raises(ValueError, match=re.escape("use 'sqlite+aiosqlite:///s.sqlite'")):
        async with SqlStore.open("sqlite:///s.sqlite"):
            pass
    assert [p async for p in anyio.Path(tmp_path).iterdir()] == []


def test_migrate_with_a_bad_store_url_is_a_clear_error(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/ok.sqlite"
    missing, memory, same, ok = stepsaga_each(
        ("migrate", "--url", f"sqlite+aiosqlite:///{tmp_path}/no/such/dir/x.sqlite"),
        ("migrate", "--url", "sqlite+aiosqlite:///:memory:"),
        ("migrate", "--url", url, "--to", url),
        ("migrate", "--url", url))
    assert f"directory '{tmp_path}/no/such/dir' does not exist" in one_clear_line(missing)
    assert "needs a file" in one_clear_line(memory)
    assert one_clear_line(same) == (f"stepsaga: --to names the store --url names ({url!r}); "
                                    "expected another store to copy it to")
    assert ok.returncode == 0 and json.loads(ok.stdout) == {"migrated": url}


def test_migrate_to_runs_again_after_an_interruption(tmp_path: Path) -> None:
    """A second copy into the same target goes on (here: has nothing left to copy) instead
    of refusing because the target already holds works."""
    source = f"sqlite+aiosqlite:///{tmp_path}/source.sqlite"
    target = f"sqlite+aiosqlite:///{tmp_path}/target.sqlite"
    made = stepsaga_each(("run", "demo", "--delay", "0", "--store", source))[0]
    assert made.returncode == 0, made.stderr
    events = json.loads(made.stdout)["events"]
    first = stepsaga("migrate", "--url", source, "--to", target)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"from": source, "to": target, "works": 1,
                                        "events": events, "copied": 1, "completed": 0,
                                        "skipped": 0}
    with sqlite3.connect(tmp_path / "target.sqlite") as conn:  # as if cut off part way
        conn.execute("DELETE FROM events WHERE seq > 5")
    second, third = (stepsaga("migrate", "--url", source, "--to", target) for _ in range(2))
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["events"] == events - 5
    assert json.loads(second.stdout)["completed"] == 1
    assert third.returncode == 0, third.stderr
    assert json.loads(third.stdout) == {"from": source, "to": target, "works": 1,
                                        "events": 0, "copied": 0, "completed": 0,
                                        "skipped": 1}
    tables = {}
    for name in ("source", "target"):
        with sqlite3.connect(tmp_path / f"{name}.sqlite") as conn:
            tables[name] = (conn.execute("SELECT work_id, seq, type, path, payload FROM events "
                                         "ORDER BY work_id, seq").fetchall(),
                            conn.execute("SELECT work_id, status FROM works").fetchall())
    assert tables["target"] == tables["source"]


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
    done = stepsaga("worker", "--store", f"sqlite+aiosqlite:///{tmp_path}/no/such/w.sqlite")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"--store: store URL 'sqlite+aiosqlite:///{tmp_path}/no/such/w.sqlite': directory" \
        in done.stderr
    done = stepsaga("worker", "--store", "garbage://")
    assert done.returncode == 2 and "not 'garbage'" in done.stderr
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
