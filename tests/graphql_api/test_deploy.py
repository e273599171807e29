"""The multi-node deployment of docs/deploy.md, started as systemd would start it: the
sample units in deploy/systemd/ are read (their Environment, EnvironmentFile and
ExecStart lines, with systemd's specifiers and variables), the migration unit's command
run, then one API node and two worker nodes started from their units' ``ExecStart`` on a
real PostgreSQL with the sample settings file. A work created through the API runs on
the worker nodes; SIGTERM (the units' KillSignal) stops each within its stop timeout."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.store import SqlStore
from tests.auth import admin_token

from .wire import CREATE, TOKENS, ask, http

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
ETC = "/etc/stepsaga/"
EXECUTABLE = "/opt/stepsaga/venv/bin/stepsaga"


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file's sections: key -> its values in order (a key may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _env_file(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


class Unit:
    """One unit (an instance of a template) as systemd would run it, with /etc/stepsaga
    at ``etc`` and the installed ``stepsaga`` command this test environment's."""

    def __init__(self, name: str, etc: Path, instance: str = "") -> None:
        self.name, self.etc, self.instance = name, etc, instance
        self.service = read_unit(UNITS / name)["Service"]
        self.env: dict[str, str] = {}
        for assignment in self.service.get("Environment", []):
            for word in shlex.split(assignment):
                key, _, value = word.partition("=")
                self.env[key] = value
        for entry in self.service.get("EnvironmentFile", []):
            optional = entry.startswith("-")
            file = self._path(self._specifiers(entry.lstrip("-")))
            if file.exists():
                self.env.update(_env_file(file))
            else:
                assert optional, f"{name}: {entry} is missing"

    def _specifiers(self, text: str) -> str:
        table = {"i": self.instance, "H": socket.gethostname(), "%": "%"}
        return re.sub(r"%(.)", lambda m: table[m.group(1)], text)

    def _path(self, word: str) -> Path:
        assert word.startswith(ETC), word
        return self.etc / word[len(ETC):]

    def command(self, key: str = "ExecStart") -> list[str]:
        (line,) = self.service[key]
        words = shlex.split(self._specifiers(line))
        # ${VAR} and $VAR from the unit's environment, as systemd substitutes them
        words = [re.sub(r"\$\{(\w+)\}|\$(\w+)",
                        lambda m: self.env[m.group(1) or m.group(2)], w) for w in words]
        assert words[0] == EXECUTABLE, words
        installed = Path(sys.executable).with_name("stepsaga")
        head = [str(installed)] if installed.exists() else \
            [sys.executable, "-m", "graphql_api.cli"]
        return head + [str(self._path(w)) if w.startswith(ETC) else w for w in words[1:]]

    def start(self, work: Path) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STEPSAGA_")}
        return subprocess.Popen(self.command(), cwd=work, text=True,
                                env={**env, "PYTHONPATH": str(ROOT), **self.env},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def _ready(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise AssertionError(f"the node died: {process.communicate()[1]}")
    return dict(json.loads(line))


@pytest.mark.timeout(180)
async def test_three_nodes_started_from_the_sample_units_run_works(
        postgres_url: str, tmp_path: Path) -> None:
    etc, work = tmp_path / "etc", tmp_path / "var"
    etc.mkdir()
    work.mkdir()
    shutil.copy(ROOT / "deploy" / "stepsaga.toml", etc / "stepsaga.toml")
    hold = tmp_path / "hold"
    hold.touch()
    # the machine's own settings, as an operator writes them for these units: the store,
    # and (for this test) its sagas, ports and the held stage's marker
    (etc / "stepsaga.env").write_text(
        f"STEPSAGA_STORE_URL={postgres_url}\n"
        "STEPSAGA_SERVE_APP=tests.graphql_api.ops_app:sagas\n"
        "STEPSAGA_SERVE_HOST=127.0.0.1\n"
        "STEPSAGA_WORKER_WORKERS=main=4\n"
        f"STEPSAGA_TEST_HOLD={hold}\n")
    (etc / "api-1.env").write_text("STEPSAGA_SERVE_PORT=0\n")
    for i in (1, 2):
        (etc / f"worker-{i}.env").write_text("STEPSAGA_WORKER_HTTP=127.0.0.1:0\n")
    check = _run([sys.executable, "-m", "graphql_api.cli", "config", "check",
                  str(etc / "stepsaga.toml")], ROOT, {})
    assert check.returncode == 0, check.stderr  # the sample settings are valid

    migrate = Unit("stepsaga-migrate.service", etc)
    assert migrate.service["Type"] == ["oneshot"]
    done = _run(migrate.command(), work, migrate.env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["migrated"]

    api = Unit("stepsaga-api@.service", etc, "1")
    workers = [Unit("stepsaga-worker@.service", etc, str(i)) for i in (1, 2)]
    assert "--no-workers" in api.command()
    for unit in (api, *workers):  # stopped by SIGTERM, with time for the drain
        assert unit.service["KillSignal"] == ["SIGTERM"]
        assert float(unit.service["TimeoutStopSec"][0]) > 30  # [worker] drain_deadline
    processes: list[subprocess.Popen[str]] = []
    try:
        processes = [unit.start(work) for unit in (api, *workers)]
        served = _ready(processes[0])
        nodes = [_ready(p) for p in processes[1:]]
        host = socket.gethostname()
        assert [n["ready"] for n in nodes] == [f"{host}-worker-1", f"{host}-worker-2"]
        assert served["workers"] is False
        TOKENS[served["url"]] = admin_token(postgres_url)
        async with http(served["url"]) as client:
            made = [await ask(client, CREATE, {"saga": "held", "input": i}) for i in range(8)]
        ids = [m["createWork"]["work"]["workId"] for m in made]

        async def runners() -> dict[str, set[str]]:
            async with SqlStore.open(postgres_url, create=False) as store:
                return {i: {(r.worker or "").rsplit("/", 1)[0] for r in await store.read(i)
                            if r.event.type == "stage.transaction.started"} for i in ids}

        # four slots on each worker node, eight works held mid-stage: each node runs four
        for _ in range(600):
            if all(found for found in (await runners()).values()):
                break
            await anyio.sleep(0.1)
        by = await runners()
        assert sorted(len([w for w in ids if by[w] == {n["ready"]}]) for n in nodes) == [4, 4]
        hold.unlink()
        rows: list[Any] = []
        async with SqlStore.open(postgres_url, create=False) as store:
            for _ in range(600):
                rows = [await store.work(i) for i in ids]
                if all(r["status"] == "completed" for r in rows):
                    break
                await anyio.sleep(0.1)
        assert [r["status"] for r in rows] == ["completed"] * 8
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = []
        for process in processes:
            _, err = process.communicate(timeout=45)
            codes.append((process.returncode, err[-2000:]))
    assert [code for code, _ in codes] == [0, 0, 0], codes
