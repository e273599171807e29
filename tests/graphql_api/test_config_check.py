"""``stepsaga config check`` and ``show`` as a person runs them (the real command line,
in a process), and the documentation of every setting held to the code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from graphql_api.config import DEFAULTS, documented

ROOT = Path(__file__).resolve().parents[2]


def stepsaga(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPSAGA_")}
    return subprocess.run([sys.executable, "-m", "graphql_api.cli", *args], cwd=ROOT,
                          env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=60)


def test_every_setting_is_documented_with_its_default() -> None:
    shown = stepsaga("config", "show")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == documented().strip()
    assert tomllib.loads(shown.stdout) == DEFAULTS  # every section, key and default
    for line in shown.stdout.splitlines():  # and what each setting is for
        if "=" in line and not line.lstrip().startswith("#"):
            key = line.split("=")[0].strip()
            assert "#" in line or key in ("url",), f"{key} has no description"


def test_a_good_file_passes_the_check(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[serve]\nport = 9000\n[worker]\nworkers = ["main=4", "mail=2"]\n'
                    'http = "127.0.0.1:9100"\n')
    found = stepsaga("config", "check", str(good))
    assert found.returncode == 0, found.stderr
    settings = json.loads(found.stdout)["settings"]
    assert settings["serve"]["port"] == 9000
    assert settings["worker"]["http"] == "127.0.0.1:9100"
    assert settings["store"]["url"] == DEFAULTS["store"]["url"]


def test_a_bad_file_is_refused_naming_the_key(tmp_path: Path) -> None:
    cases = {
        '[serve]\nprot = 9000\n': "serve.prot (in '{}') is not a setting; [serve] has",
        '[worker]\nlease_ttl = -1\n': "worker.lease_ttl (in '{}'): expected a number of "
                                      "seconds > 0, got -1",
        '[worker]\nhttp = "nowhere"\n': "worker.http (in '{}'): expected HOST:PORT",
        '[sever]\nport = 1\n': "config file '{}': unknown section [sever]",
        'port = \n': "config file '{}' is not valid TOML",
        '[retention]\ndirectory = "/tmp/a"\n[retention.ages]\nsignup = -1\n':
            "config file '{}': retention.ages.signup must be a number of days > 0, got -1",
        '[retention]\ntarget = "offsite"\n': "config file '{}': retention.target: 'offsite' "
                                            "is not a target of [backups.targets] (have none)",
    }
    for i, (text, message) in enumerate(cases.items()):
        bad = tmp_path / f"bad{i}.toml"
        bad.write_text(text)
        found = stepsaga("config", "check", str(bad))
        assert found.returncode == 2, found
        assert found.stdout == ""
        assert message.format(bad) in found.stderr, found.stderr
    missing = stepsaga("config", "check", str(tmp_path / "none.toml"))
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
