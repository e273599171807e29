"""Every file operation as a saga on both repositories (a directory, a real S3 server
on loopback), with a bucket plain, encrypted (names and content), signed with
HMAC-SHA256, and encrypted and signed with Ed25519; what is stored is checked too:
no plain name or plain byte of an encrypted bucket is in the repository."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from engine import Runtime
from workers.actions.files import files_app, open_bucket, parse, stage

from .conftest import running
from .helpers import MODES, Where, section

BIG = 2 * 1024 * 1024 + 12345  # more than one signed segment and S3 part-sized chunks


async def _run(rt: Runtime, saga: str, input: dict[str, Any]) -> dict[str, Any]:
    done = await rt.run(saga, input)
    assert done.status == "completed", done.error
    output: dict[str, Any] = done.output
    return output


@pytest.mark.parametrize("mode", sorted(MODES))
async def test_every_operation(tmp_path: Path, repository: Where, mode: str) -> None:
    config = parse(section(tmp_path, repository.table, docs=MODES[mode], other=MODES[mode]))
    app = files_app(config=config, api=False)
    data = os.urandom(BIG)
    small = b"a small text file\n"
    async with running(app, str(tmp_path / "store.sqlite")) as rt:
        # upload: two files and one under another folder
        staged = stage(config, [data[:1000], data[1000:]])
        up = await _run(rt, "files.upload", {"bucket": "docs", "key": "reports/2024/q1.bin",
                                             "content_type": "application/x-report",
                                             **staged})
        assert up == {"op": "upload", "bucket": "docs", "key": "reports/2024/q1.bin",
                      "size": BIG, "sha256": hashlib.sha256(data).hexdigest(),
                      "content_type": "application/x-report", "replaced": False}
        for key in ("reports/2024/q2.txt", "reports/2023/q4.txt", "readme.txt"):
            await _run(rt, "files.upload", {"bucket": "docs", "key": key,
                                            "content_type": "text/plain",
                                            **stage(config, [small])})
        assert not list((tmp_path / "staging").iterdir())  # every staged file taken
        # download: the whole file checked; its bytes read back as they were
        down = await _run(rt, "files.download", {"bucket": "docs", "key": "reports/2024/q1.bin"})
        assert down["size"] == BIG and down["sha256"] == up["sha256"]
        assert down["content_type"] == "application/x-report"
        assert down["encrypted"] == ("encrypt_content" in MODES[mode])
        assert down["signed"] == (MODES[mode].get("sign") or None)
        header, body = open_bucket(config, "docs").open("reports/2024/q1.bin")
        assert b"".join(body) == data and header["size"] == BIG
        # list: a prefix, a page at a time
        listed = await _run(rt, "files.list", {"bucket": "docs", "prefix": "reports/"})
        assert sorted(f["key"] for f in listed["files"]) == [
            "reports/2023/q4.txt", "reports/2024/q1.bin", "reports/2024/q2.txt"]
        assert listed["next"] is None
        part = await _run(rt, "files.list", {"bucket": "docs", "prefix": "reports/2024/q"})
        assert sorted(f["key"] for f in part["files"]) == ["reports/2024/q1.bin",
                                                           "reports/2024/q2.txt"]
        seen: list[str] = []
        after = ""
        for _ in range(10):
            page = await _run(rt, "files.list", {"bucket": "docs", "limit": 1, "after": after})
            seen += [f["key"] for f in page["files"]]
            if page["next"] is None:
                break
            after = page["next"]
        assert sorted(seen) == ["readme.txt", "reports/2023/q4.txt", "reports/2024/q1.bin",
                                "reports/2024/q2.txt"]
        assert len(seen) == 4  # each once
        # copy into the other bucket, and within this one
        copied = await _run(rt, "files.copy", {"bucket": "docs", "key": "reports/2024/q1.bin",
                                               "to_bucket": "other", "to_key": "q1-copy.bin"})
        assert copied["sha256"] == up["sha256"] and copied["to_bucket"] == "other"
        _, body = open_bucket(config, "other").open("q1-copy.bin")
        assert b"".join(body) == data
        # copying onto a file that is there: refused unless replace
        refused = await rt.run("files.copy", {"bucket": "docs", "key": "readme.txt",
                                              "to_bucket": "other", "to_key": "q1-copy.bin"})
        assert refused.status == "failed"
        assert "to_key: bucket 'other' has a file 'q1-copy.bin' already; give replace: " \
            "true" in refused.error["message"]
        replaced = await _run(rt, "files.copy", {"bucket": "docs", "key": "readme.txt",
                                                 "to_bucket": "other", "to_key": "q1-copy.bin",
                                                 "replace": True})
        assert replaced["replaced"] is True
        _, body = open_bucket(config, "other").open("q1-copy.bin")
        assert b"".join(body) == small
        # move: the source goes, the target has it
        moved = await _run(rt, "files.move", {"bucket": "docs", "key": "reports/2024/q1.bin",
                                              "to_key": "archive/q1.bin"})
        assert moved["op"] == "move"
        gone = await rt.run("files.download", {"bucket": "docs", "key": "reports/2024/q1.bin"})
        assert gone.status == "failed"
        assert "bucket 'docs' has no file 'reports/2024/q1.bin'" in gone.error["message"]
        _, body = open_bucket(config, "docs").open("archive/q1.bin")
        assert hashlib.sha256(b"".join(body)).hexdigest() == up["sha256"]
        # delete
        deleted = await _run(rt, "files.delete", {"bucket": "docs", "key": "readme.txt"})
        assert deleted == {"op": "delete", "bucket": "docs", "key": "readme.txt"}
        again = await rt.run("files.delete", {"bucket": "docs", "key": "readme.txt"})
        assert again.status == "failed" and "has no file 'readme.txt'" in again.error["message"]
        left = await _run(rt, "files.list", {"bucket": "docs"})
        assert sorted(f["key"] for f in left["files"]) == [
            "archive/q1.bin", "reports/2023/q4.txt", "reports/2024/q2.txt"]
    # what the repository holds: the files, nothing set aside or partial
    stored = repository.objects()
    assert len(stored) == 4, sorted(stored)
    assert not any(".aside" in k or "partial" in k for k in stored)
    names = " ".join(stored)
    if "encrypt_names" in MODES[mode]:
        assert "archive" not in names and "reports" not in names and "q1" not in names
    else:
        assert "docs/archive/q1.bin" in stored and "other/q1-copy.bin" in stored
    joined = b"".join(stored.values())
    if "encrypt_content" in MODES[mode]:
        assert small not in joined and data[5000:5100] not in joined
    else:
        assert small in joined and data[5000:5100] in joined


async def test_an_upload_replaces_only_when_asked(tmp_path: Path, repository: Where) -> None:
    config = parse(section(tmp_path, repository.table, docs=MODES["hmac"]))
    app = files_app(config=config, api=False)
    async with running(app, str(tmp_path / "store.sqlite")) as rt:
        await _run(rt, "files.upload", {"bucket": "docs", "key": "a.txt",
                                        **stage(config, [b"one"])})
        second = await rt.run("files.upload", {"bucket": "docs", "key": "a.txt",
                                               **stage(config, [b"two"])})
        assert second.status == "failed"
        assert "bucket 'docs' has a file 'a.txt' already" in second.error["message"]
        assert not list((tmp_path / "staging").iterdir())  # the refused upload is dropped
        _, body = open_bucket(config, "docs").open("a.txt")
        assert b"".join(body) == b"one"
        third = await _run(rt, "files.upload", {"bucket": "docs", "key": "a.txt",
                                                "replace": True, **stage(config, [b"three"])})
        assert third["replaced"] is True
        _, body = open_bucket(config, "docs").open("a.txt")
        assert b"".join(body) == b"three"
    assert list(repository.objects()) == ["docs/a.txt"]


async def test_long_encrypted_names_page_through(tmp_path: Path, repository: Where) -> None:
    """Names of the longest parts an encrypted bucket takes: stored, listed a page at a
    time with the cursors the listing gives (stored names, longer than the names)."""
    config = parse(section(tmp_path, repository.table, docs=MODES["encrypted"]))
    keys = sorted(f"{'d' * 150}/{chr(97 + i) * 150}" for i in range(3))
    async with running(files_app(config=config, api=False), str(tmp_path / "s.sqlite")) as rt:
        for key in keys:
            await _run(rt, "files.upload", {"bucket": "docs", "key": key,
                                            **stage(config, [key.encode()])})
        seen: list[str] = []
        after = ""
        for _ in range(5):
            page = await _run(rt, "files.list", {"bucket": "docs", "prefix": "d" * 150 + "/",
                                                 "limit": 2, "after": after})
            seen += [f["key"] for f in page["files"]]
            if page["next"] is None:
                break
            assert len(page["next"]) > 300  # a stored name, not the plain one
            after = page["next"]
    assert sorted(seen) == keys and len(seen) == 3
    for key in keys:
        _, body = open_bucket(config, "docs").open(key)
        assert b"".join(body) == key.encode()


async def test_two_uploads_of_one_name_at_once(tmp_path: Path, repository: Where,
                                               store_url: str) -> None:
    """Each holds the file's lock while it writes (on a SQLite store and on PostgreSQL,
    with a name whose stored form is longer than a lock's name may be): one writes, the
    other then finds the file there and is refused; what is stored is the first's."""
    config = parse(section(tmp_path, repository.table, docs=MODES["encrypted"]))
    key = "/".join(["long-folder-name" * 6] * 6)  # 576 bytes, about 900 stored
    contents = [os.urandom(2_500_000), os.urandom(2_500_000)]
    async with running(files_app(config=config, api=False), store_url) as rt:
        ids = [await rt.start("files.upload", {"bucket": "docs", "key": key,
                                               **stage(config, [data])})
               for data in contents]
        done = [await rt.wait(work_id) for work_id in ids]
    assert sorted(d.status for d in done) == ["completed", "failed"], [d.error for d in done]
    (won,) = [d for d in done if d.status == "completed"]
    (lost,) = [d for d in done if d.status == "failed"]
    assert "already; give replace: true" in lost.error["message"]
    _, body = open_bucket(config, "docs").open(key)
    assert hashlib.sha256(b"".join(body)).hexdigest() == won.output["sha256"]
    (stored,) = repository.objects()
    assert len(stored) > 800 and stored == open_bucket(config, "docs").stored(key)
