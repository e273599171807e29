"""The configuration: a TOML file, STEPSAGA_* variables over it, flags over both; every
bad setting named with its value and what was expected, before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from graphql_api.config import DEFAULTS, ConfigError, load

ROOT = Path(__file__).resolve().parents[2]


def test_file_then_environment_then_defaults(tmp_path: Path) -> None:
    path = tmp_path / "stepsaga.toml"
    path.write_text('[store]\nurl = "sqlite+aiosqlite:///x.sqlite"\n'
                    '[serve]\nport = 9001\nno_workers = true\n'
                    '[worker]\nworkers = ["main=3", "mail=2:welcome"]\npark_after = 5\n')
    settings = load(path, {"STEPSAGA_SERVE_PORT": "9002", "STEPSAGA_TEST_LEDGER": "x"})
    assert settings["store"]["url"] == "sqlite+aiosqlite:///x.sqlite"
    assert settings["serve"]["port"] == 9002  # the variable wins over the file
    assert settings["serve"]["no_workers"] is True
    assert settings["worker"]["workers"] == ["main=3", "mail=2:welcome"]
    assert settings["worker"]["park_after"] == 5.0
    assert settings["worker"]["lease_ttl"] == DEFAULTS["worker"]["lease_ttl"]
    assert load(None, {}) == DEFAULTS


@pytest.mark.parametrize(("text", "environ", "message"), [
    ("[serve]\nport = 70000\n", {}, "serve.port (in '{path}'): expected a whole number from "
                                    "0 to 65535, got 70000"),
    ("[serve]\nprot = 1\n", {}, "serve.prot (in '{path}') is not a setting"),
    ("[serv]\nport = 1\n", {}, "unknown section [serv]"),
    ("[worker]\nworkers = ['main=x']\n", {}, "concurrency 'x' is not a whole number"),
    ("[worker]\nlease_ttl = 0\n", {}, "expected a number of seconds > 0"),
    ("port = [\n", {}, "is not valid TOML"),
    ("", {"STEPSAGA_SERVE_NO_WORKERS": "maybe"}, "serve.no_workers (from "
                                                 "STEPSAGA_SERVE_NO_WORKERS): expected true"),
    ("", {"STEPSAGA_STORE_URI": "x"}, "store.uri (from STEPSAGA_STORE_URI) is not a setting"),
])
def test_a_bad_setting_is_named(tmp_path: Path, text: str, environ: dict[str, str],
                                message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(path, environ)
    assert message.format(path=path) in str(caught.value)
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "missing.toml", {})


def test_the_command_line_refuses_a_bad_config_before_starting(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[serve]\nport = -1\n")
    for command in ("serve", "worker"):
        done = subprocess.run([sys.executable, "-m", "graphql_api.cli", command, "--config",
                               str(path)], cwd=tmp_path, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60,
                              check=False)
        assert done.returncode == 2, done.stderr
        assert "serve.port" in done.stderr and "got -1" in done.stderr
        assert not list(tmp_path.glob("*.sqlite"))  # nothing was created
