"""Parts of a file read by their segments (what a Range request gets): every span
across the cipher's and the signature's segment edges gives the file's bytes, with
every way of keeping files, on both repositories; a damaged segment inside the span
is refused, one outside it is not read; ``files.download`` with a range."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workers.actions.files import TamperedError, files_app, open_bucket, parse, stage
from workers.actions.files.buckets import byte_range
from workers.actions.files.sealing import ENCRYPTED, SIGNED

from .conftest import running
from .helpers import MODES, Where, section

SIZES = [0, 1, ENCRYPTED, SIGNED, 2 * SIGNED + ENCRYPTED + 17]


def _spans(size: int) -> list[tuple[int, int]]:
    edges = {0, 1, size - 1, size, ENCRYPTED - 1, ENCRYPTED, ENCRYPTED + 1, SIGNED - 1,
             SIGNED, SIGNED + 1, 2 * SIGNED - 5, 2 * SIGNED + 3, 3 * ENCRYPTED}
    points = sorted(p for p in edges if 0 <= p <= size)
    return [*[(a, b) for a in points for b in points if a < b][::3], (0, size)]


@pytest.mark.parametrize("mode", sorted(MODES))
async def test_every_span_reads_the_files_bytes(tmp_path: Path, repository: Where,
                                                mode: str) -> None:
    config = parse(section(tmp_path, repository.table, docs=MODES[mode]))
    files = {size: os.urandom(size) for size in SIZES}
    async with running(files_app(config=config, api=False), str(tmp_path / "s.sqlite")) as rt:
        for size, data in files.items():
            done = await rt.run("files.upload", {"bucket": "docs", "key": f"f{size}",
                                                 **stage(config, [data])})
            assert done.status == "completed", done.error
        bucket = open_bucket(config, "docs")
        for size, data in files.items():
            for first, stop in _spans(size):
                _, body = bucket.open_part(f"f{size}", first, stop)
                assert b"".join(body) == data[first:stop], (size, first, stop)
            _, body = bucket.open_part(f"f{size}", 0, size + 100)  # past the end: to it
            assert b"".join(body) == data
        big = max(SIZES)
        done = await rt.run("files.download", {"bucket": "docs", "key": f"f{big}",
                                               "range": "bytes=1048570-1048600"})
        assert done.status == "completed", done.error
        assert done.output["range"] == [1048570, 1048600] and done.output["size"] == big
        outside = await rt.run("files.download", {"bucket": "docs", "key": f"f{big}",
                                                  "range": f"bytes={big}-"})
        assert outside.output["range"] is None
        bad = await rt.run("files.download", {"bucket": "docs", "key": f"f{big}",
                                              "range": "bytes=a-b"})
        assert bad.status == "failed" and "range: expected bytes=FIRST-LAST" in \
            bad.error["message"]


@pytest.mark.parametrize("mode", ["encrypted", "hmac", "ed25519"])
async def test_a_damaged_segment_is_refused_only_where_it_is_read(
        tmp_path: Path, repository: Where, mode: str) -> None:
    config = parse(section(tmp_path, repository.table, docs=MODES[mode]))
    size = 2 * SIGNED + ENCRYPTED + 17
    data = os.urandom(size)
    async with running(files_app(config=config, api=False), str(tmp_path / "s.sqlite")) as rt:
        done = await rt.run("files.upload", {"bucket": "docs", "key": "f",
                                             **stage(config, [data])})
        assert done.status == "completed"
        bucket = open_bucket(config, "docs")
        stored = bucket.stored("f")
        original = repository.objects()[stored]
        damaged = bytearray(original)
        damaged[-1000] ^= 0x10  # in the last segment of every layout
        repository.put(stored, bytes(damaged))
        _, body = bucket.open_part("f", 10, 1000)  # the start: not damaged
        assert b"".join(body) == data[10:1000]
        with pytest.raises(TamperedError, match=r"refused|altered"):
            _, body = bucket.open_part("f", size - 2000, size)
            b"".join(body)
        refused = await rt.run("files.download", {"bucket": "docs", "key": "f",
                                                  "range": "bytes=-500"})
        assert refused.status == "failed"
        assert "file 'f' of bucket 'docs'" in refused.error["message"]
        if mode == "ed25519":  # encrypted and signed: the first segment is read for the
            return             # cipher's prefix, so a damage there is refused anywhere
        # damaged near the start: the end is read without it
        damaged = bytearray(original)
        damaged[5000] ^= 0x10
        repository.put(stored, bytes(damaged))
        _, body = bucket.open_part("f", size - 100, size)
        assert b"".join(body) == data[-100:]
        with pytest.raises(TamperedError):
            _, body = bucket.open_part("f", 0, 100)
            b"".join(body)


def test_byte_ranges() -> None:
    assert byte_range("bytes=5-", 10) == (5, 9)
    assert byte_range("bytes=5-100", 10) == (5, 9)
    assert byte_range("bytes=-100", 10) == (0, 9)
    assert byte_range("bytes=-0", 10) is None
    assert byte_range("bytes=9-3", 10) is None
    assert byte_range("bytes=0-", 0) is None
    with pytest.raises(ValueError, match="range: expected bytes=FIRST-LAST"):
        byte_range("bytes=0-1,4-5", 10)
