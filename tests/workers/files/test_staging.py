"""Staged uploads never taken (a client gone, a server that crashed while a body came
in) are removed by ``files.sweep`` once older than ``files.staging_ttl``; fresh ones,
and files that are not staged uploads, stay. The app's schedule runs it hourly."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from workers.actions.files import FilesConfigError, files_app, parse, stage

from .conftest import running
from .helpers import section


async def test_the_sweep_removes_only_stale_staged_uploads(tmp_path: Path) -> None:
    table = section(tmp_path, {"kind": "directory", "path": str(tmp_path / "repo")},
                    docs={})
    table["staging_ttl"] = 3600
    config = parse(table)
    staging = tmp_path / "staging"
    now = time.time()
    stale = stage(config, [b"old"])["staged"]
    fresh = stage(config, [b"new"])["staged"]
    half = staging / ("ab" * 16 + ".partial")  # a body that stopped coming in
    half.write_bytes(b"half")
    foreign = staging / "notes.txt"
    foreign.write_bytes(b"not ours")
    for path in (staging / stale, half, foreign):
        os.utime(path, (now - 7200, now - 7200))
    app = files_app(config=config, api=False)
    assert [(s.name, s.saga, s.cron) for s in app.schedules] == [
        ("files.sweep", "files.sweep", "17 * * * *")]
    async with running(app, str(tmp_path / "s.sqlite")) as rt:
        done = await rt.run("files.sweep", {"now": now})
        assert done.status == "completed", done.error
        assert sorted(done.output["removed"]) == sorted([stale, half.name])
        assert sorted(p.name for p in staging.iterdir()) == sorted([fresh, "notes.txt"])
        # the fresh one is still taken by its upload
        taken = await rt.run("files.upload", {"bucket": "docs", "key": "a", "staged": fresh})
        assert taken.status == "completed"
        gone = await rt.run("files.upload", {"bucket": "docs", "key": "b", "staged": stale})
        assert gone.status == "failed"
        assert f"staged: no staged upload {stale!r}" in gone.error["message"]
        later = await rt.run("files.sweep", None)  # as its schedule starts it: now
        assert later.status == "completed" and later.output["removed"] == []


def test_a_ttl_of_zero_never_sweeps(tmp_path: Path) -> None:
    table = section(tmp_path, {"kind": "directory", "path": str(tmp_path / "repo")})
    table["staging_ttl"] = 0
    assert files_app(config=parse(table), api=False).schedules == []
    table["staging_ttl"] = "a day"
    with pytest.raises(FilesConfigError, match=r"files\.staging_ttl: expected a number"):
        parse(table)
