"""Failed operations compensate: a move that cannot write its copy, or whose source
changed while it ran, leaves the source and no copy; an upload failing midway leaves
no partial object or multipart upload, and one that was to replace a file puts the
old one back; the staged upload is dropped either way."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio

from engine import Breakpoint, RecordedEvent, Runtime
from workers.actions.files import files_app, open_bucket, parse, stage

from .conftest import running
from .helpers import MODES, Where, section


def _far(table: dict[str, Any], endpoint: str) -> dict[str, Any]:
    """A second repository: an S3 bucket that does not exist (every write refused)."""
    table["repositories"]["far"] = {"kind": "s3", "bucket": "no-such-bucket-here",
                                    "endpoint_url": endpoint, "access_key_id": "test",
                                    "secret_access_key": "test"}
    table["buckets"]["away"] = {"repository": "far", **MODES["hmac"]}
    return table


def _read(config: Any, key: str) -> bytes:
    _, body = open_bucket(config, "docs").open(key)
    return b"".join(body)


class _Paused:
    """An on_event hook that tells when a work paused at a breakpoint."""

    def __init__(self) -> None:
        self.event = anyio.Event()

    def __call__(self, recorded: RecordedEvent) -> None:
        if recorded.type == "work.paused":
            self.event.set()

    async def wait(self) -> None:
        with anyio.fail_after(30):
            await self.event.wait()
        self.event = anyio.Event()


async def _upload(rt: Runtime, config: Any, key: str, data: bytes, **extra: Any) -> None:
    done = await rt.run("files.upload", {"bucket": "docs", "key": key,
                                         **stage(config, [data]), **extra})
    assert done.status == "completed", done.error


async def test_a_move_that_cannot_write_leaves_its_source(
        tmp_path: Path, repository: Where, s3_endpoint: str) -> None:
    config = parse(_far(section(tmp_path, repository.table, docs=MODES["ed25519"]),
                        s3_endpoint))
    data = os.urandom(300_000)
    async with running(files_app(config=config, api=False), str(tmp_path / "s.sqlite")) as rt:
        await _upload(rt, config, "a.bin", data)
        before = repository.objects()
        done = await rt.run("files.move", {"bucket": "docs", "key": "a.bin",
                                           "to_bucket": "away", "to_key": "a.bin"})
    assert done.status == "failed"
    assert "repository 'far'" in done.error["message"]
    assert "NoSuchBucket" in done.error["message"]
    assert repository.objects() == before  # the source as it was, nothing else
    assert _read(config, "a.bin") == data


async def test_a_move_whose_source_changed_is_undone(tmp_path: Path,
                                                     repository: Where) -> None:
    """Paused before the source is removed, the source is replaced by a new upload:
    the move fails, its copy is removed, and the new source stays."""
    config = parse(section(tmp_path, repository.table, docs=MODES["encrypted"]))
    paused = _Paused()
    async with running(files_app(config=config, api=False), str(tmp_path / "s.sqlite"),
                       on_event=paused) as rt:
        await _upload(rt, config, "a.txt", b"first version")
        work_id = await rt.start("files.move", {"bucket": "docs", "key": "a.txt",
                                                "to_key": "b.txt"}, breakpoints=[
            Breakpoint(event="stage.transaction.started", path="remove", when="before")])
        await paused.wait()
        assert _read(config, "b.txt") == b"first version"  # the copy is written
        await _upload(rt, config, "a.txt", b"second version", replace=True)
        await rt.resume(work_id)
        done = await rt.wait(work_id)
    assert done.status == "failed"
    assert "changed (or went) while it was moved" in done.error["message"]
    assert "write" in done.compensated
    assert _read(config, "a.txt") == b"second version"
    assert [k for k in repository.objects()] == [open_bucket(config, "docs").stored("a.txt")]


async def test_an_upload_failing_midway_leaves_nothing_partial(
        tmp_path: Path, repository: Where) -> None:
    """The staged file is cut while the upload is paused before ``store``: ``store``
    writes (S3: parts of a multipart upload are sent), finds fewer bytes than were
    announced, and aborts; the file it was to replace is put back."""
    config = parse(section(tmp_path, repository.table, docs=MODES["hmac"]))
    paused = _Paused()
    async with running(files_app(config=config, api=False), str(tmp_path / "s.sqlite"),
                       on_event=paused) as rt:
        for replace in (False, True):
            if replace:
                await _upload(rt, config, "big.bin", b"the old file")
            staged = stage(config, [os.urandom(12 * 1024 * 1024)])
            work_id = await rt.start("files.upload", {
                "bucket": "docs", "key": "big.bin", "replace": replace, **staged},
                breakpoints=[Breakpoint(event="stage.transaction.started", path="store",
                                        when="before")])
            await paused.wait()
            path = tmp_path / "staging" / staged["staged"]
            os.truncate(path, 11 * 1024 * 1024)
            await rt.resume(work_id)
            done = await rt.wait(work_id)
            assert done.status == "failed"
            assert "11534336 bytes came, 12582912 were announced" in done.error["message"]
            assert not path.exists()  # the staged upload is dropped
            left = repository.objects()
            if replace:
                assert list(left) == [open_bucket(config, "docs").stored("big.bin")]
                assert _read(config, "big.bin") == b"the old file"
            else:
                assert left == {}


async def test_an_upload_to_a_repository_that_refuses_leaves_nothing(
        tmp_path: Path, s3_endpoint: str) -> None:
    table = _far(section(tmp_path, {"kind": "directory", "path": str(tmp_path / "repo")}),
                 s3_endpoint)
    config = parse(table)
    async with running(files_app(config=config, api=False), str(tmp_path / "s.sqlite")) as rt:
        staged = stage(config, [b"x" * 1000])
        done = await rt.run("files.upload", {"bucket": "away", "key": "a.bin", **staged})
    assert done.status == "failed" and "repository 'far'" in done.error["message"]
    assert not list((tmp_path / "staging").iterdir())
