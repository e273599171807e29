"""Bad settings and bad inputs are refused with an error naming the field, before
anything is dumped or written; the [backups] section of a config file reaches the
app that ``--app workers.actions.backups:app`` loads."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from graphql_api.cli import load_app
from graphql_api.config import ConfigError, load
from workers.actions.backups import BackupConfigError, backups_app, parse
from workers.actions.backups.config import load_key

from .conftest import running
from .helpers import KEY_HEX, make_sqlite, section, sqlite_rows

ROOT = Path(__file__).resolve().parents[3]


def _base(tmp_path: Path) -> dict[str, Any]:
    return section({"kind": "sqlite", "path": str(tmp_path / "a.sqlite")},
                   {"kind": "directory", "path": str(tmp_path / "out")})


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s["jobs"]["job"].update(source="nope"),
     "backups.jobs.job.source: unknown source 'nope' (the sources are: src)"),
    (lambda s: s["jobs"]["job"].update(target="elsewhere"),
     "backups.jobs.job.target: unknown target 'elsewhere' (the targets are: dst)"),
    (lambda s: s["sources"]["src"].update(kind="oracle"),
     "backups.sources.src.kind: expected one of sqlite, postgres, mariadb, directory, "
     "got 'oracle'"),
    (lambda s: s["targets"]["dst"].update(kind="ftp"),
     "backups.targets.dst.kind: expected one of directory, s3, got 'ftp'"),
    (lambda s: s["jobs"]["job"].update(steps=[{"kind": "aes-gcm", "key": "lost"}]),
     "backups.jobs.job.steps[0].key: unknown key 'lost' (the keys in [backups.keys] "
     "are: main)"),
    (lambda s: s["jobs"]["job"].update(steps=["rar"]),
     "backups.jobs.job.steps[0].kind: expected one of gzip, zstd, aes-gcm, gpg"),
    (lambda s: s["jobs"]["job"].update(keep_last="7"),
     "backups.jobs.job.keep_last: expected a whole number >= 0, got '7'"),
    (lambda s: s["jobs"]["job"].update(schedule="every day"),
     "backups.jobs.job.schedule: invalid cron expression 'every day'"),
    (lambda s: s["jobs"]["job"].update(retention=3),
     "backups.jobs.job.retention is not a setting"),
    (lambda s: s["sources"]["src"].update(path="/tmp/a\nb"),
     "backups.sources.src.path: control characters are not allowed"),
    (lambda s: s["targets"].update(dst={"kind": "s3", "bucket": "ok-bucket",
                                        "prefix": "a/../../b"}),
     "backups.targets.dst.prefix: must not start with '/' nor hold '..'"),
    (lambda s: s["targets"].update(dst={"kind": "s3", "bucket": "B"}),
     "backups.targets.dst.bucket: expected an S3 bucket name"),
    (lambda s: s["targets"].update(dst={"kind": "s3", "bucket": "bucket", "part_size": 1}),
     "backups.targets.dst.part_size: expected a whole number >= 5242880, got 1"),
    (lambda s: s["keys"].update(main={"key": "short"}),
     "backups.keys.main.key: expected an AES-256 key (32 bytes, 64 hex digits"),
    (lambda s: s["keys"].update(main={}),
     "backups.keys.main: give exactly one of key and key_file"),
    (lambda s: s["sources"].update({"bad name": {"kind": "sqlite", "path": "x"}}),
     "backups.sources.bad name: the name 'bad name' must be 1 to 64 letters"),
    (lambda s: s.update(jobs=[]), "backups.jobs: expected a table, got []"),
])
def test_a_bad_setting_is_refused_naming_the_field(tmp_path: Path, change: Any,
                                                   message: str) -> None:
    settings = _base(tmp_path)
    change(settings)
    with pytest.raises(BackupConfigError, match=re.escape(message)):
        parse(settings)
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    settings = _base(tmp_path)
    settings["keys"]["main"] = {"key_file": str(tmp_path / "none.key")}
    spec = parse(settings).keys["main"]
    with pytest.raises(BackupConfigError, match=r"backups.keys.main.key_file: cannot read .*"
                                                r"none.key.*No such file"):
        load_key(spec)
    (tmp_path / "raw.key").write_bytes(bytes(range(32)))
    (tmp_path / "hex.key").write_text(KEY_HEX + "\n")
    for name, expected in (("raw.key", bytes(range(32))), ("hex.key", bytes.fromhex(KEY_HEX))):
        settings["keys"]["main"] = {"key_file": str(tmp_path / name)}
        assert load_key(parse(settings).keys["main"]) == expected


async def test_bad_inputs_fail_the_work_naming_the_field(tmp_path: Path) -> None:
    make_sqlite(tmp_path / "a.sqlite", rows=10)
    app = backups_app(config=parse(_base(tmp_path)))
    async with running(app, str(tmp_path / "store.sqlite")) as rt:
        with pytest.raises(ValueError, match="job"):  # off the input schema: not started
            await rt.run("backups.backup", {"job": "other"})
        done = await rt.run("backups.backup", {"job": "job"})
        assert done.status == "completed"
        for backup in ("../../etc", "a/b"):
            bad = await rt.run("backups.restore", {"job": "job", "backup": backup})
            assert bad.status == "failed"
            assert "backup: expected a backup id or 'latest'" in bad.error["message"]
        bad = await rt.run("backups.restore", {"job": "job", "into": {"kind": "sqlite"}})
        assert "a sqlite source needs a path" in bad.error["message"]
        with pytest.raises(ValueError, match="replace: 'yes' is not of type 'boolean'"):
            await rt.run("backups.restore", {"job": "job", "replace": "yes"})
    _nothing_restored(tmp_path)


def _nothing_restored(tmp_path: Path) -> None:
    made = {p.name for p in tmp_path.iterdir()} - {"store.sqlite", "store.sqlite-wal",
                                                    "store.sqlite-shm"}
    assert made <= {"a.sqlite", "a.sqlite-wal", "a.sqlite-shm", "out"}
    assert len(sqlite_rows(tmp_path / "a.sqlite")) == 10


def test_the_config_file_section_reaches_the_app(tmp_path: Path) -> None:
    config = tmp_path / "stepsaga.toml"
    config.write_text(f"""
[backups.keys.main]
key = "{KEY_HEX}"
[backups.sources.db]
kind = "sqlite"
path = "{tmp_path}/a.sqlite"
[backups.targets.here]
kind = "directory"
path = "{tmp_path}/out"
[backups.jobs.nightly]
source = "db"
target = "here"
steps = ["gzip", {{kind = "aes-gcm", key = "main"}}]
schedule = "0 3 * * *"
""")
    settings = load(config, {})
    app = load_app("workers.actions.backups:app", settings)
    assert {s.name for s in app.sagas} == {"backups.backup", "backups.verify",
                                           "backups.restore", "backups.rollback",
                                           "backups.retention"}
    assert [(s.name, s.cron, s.input) for s in app.schedules] == [
        ("backups.nightly", "0 3 * * *", {"job": "nightly"})]
    config.write_text(config.read_text().replace('target = "here"', 'target = 3'))
    with pytest.raises(ConfigError, match=re.escape(
            "backups.jobs.nightly.target: expected a string, got 3")):
        load(config, {})


def test_the_command_line_refuses_a_bad_section_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "stepsaga.toml"
    config.write_text('[backups.jobs.nightly]\nsource = "db"\ntarget = "here"\n')
    done = subprocess.run([sys.executable, "-m", "graphql_api.cli", "worker", "--store",
                           f"sqlite+aiosqlite:///{tmp_path}/s.sqlite", "--app",
                           "workers.actions.backups:app", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2
    assert "backups.jobs.nightly.source: unknown source 'db'" in done.stderr


def test_the_readme_example_section_is_valid() -> None:
    import tomllib

    text = (ROOT / "README.md").read_text().split("## Backups", 1)[1]
    block = re.search(r"```toml\n(.*?)```", text, re.S)
    assert block is not None
    config = parse(tomllib.loads(block.group(1))["backups"])
    assert config.jobs["nightly"].steps[1].key == "main"
    assert [s.name for s in backups_app(config=config).schedules] == ["backups.nightly"]


async def test_a_restore_writes_only_where_it_may(tmp_path: Path) -> None:
    """A path given to a restore must be a source's own or under restore_paths; one that
    climbs out of them (``..``, a symbolic link) is refused naming into.path."""
    make_sqlite(tmp_path / "a.sqlite", rows=10)
    settings = _base(tmp_path)
    settings["restore_paths"] = [str(tmp_path / "restores")]
    (tmp_path / "restores").mkdir()
    os.symlink(tmp_path, tmp_path / "restores" / "up")
    async with running(backups_app(config=parse(settings)), str(tmp_path / "s.sqlite")) as rt:
        assert (await rt.run("backups.backup", {"job": "job"})).status == "completed"
        for path in ("restores/../x.sqlite", "restores/up/x.sqlite", "elsewhere.sqlite"):
            bad = await rt.run("backups.restore", {"job": "job", "into": {
                "kind": "sqlite", "path": str(tmp_path / path)}})
            assert bad.status == "failed" and bad.failure["path"] == "fetch"
            assert "into.path:" in bad.error["message"]
            assert "is neither a source's path nor under backups.restore_paths" in \
                bad.error["message"]
        bad = await rt.run("backups.restore", {"job": "job", "into": {"source": "nope"}})
        assert "into.source: unknown source 'nope' (the sources are: src)" in \
            bad.error["message"]
        bad = await rt.run("backups.restore", {"job": "job", "into": {"source": "src",
                                                                     "host": "x"}})
        assert "into.host: not a field" in bad.error["message"]
        ok = await rt.run("backups.restore", {"job": "job", "into": {
            "source": "src", "path": str(tmp_path / "restores" / "ok.sqlite")}})
        assert ok.status == "completed", ok.error
    _nothing_restored_outside(tmp_path)


def _nothing_restored_outside(tmp_path: Path) -> None:
    assert not (tmp_path / "x.sqlite").exists() and not (tmp_path / "elsewhere.sqlite").exists()
    assert len(sqlite_rows(tmp_path / "restores" / "ok.sqlite")) == 10
