"""A stored file altered behind the pack's back (a byte flipped, cut short, its header
edited, another file's bytes put under its name, written unsigned) or read with
another key is refused with a clear error, and none of what does not check is ever
given: a reader gets at most the segments before the damage, as they were."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workers.actions.files import TamperedError, WrongKeyError, files_app, open_bucket, parse
from workers.actions.files import stage as staged_upload

from .conftest import running
from .helpers import MODES, OTHER_HEX, Where, section

SIZE = 3 * 1024 * 1024 + 777
CHECKED = ["encrypted", "hmac", "ed25519"]


async def _two_files(tmp_path: Path, repository: Where, mode: str
                     ) -> tuple[dict[str, object], bytes]:
    table = section(tmp_path, repository.table, docs=MODES[mode])
    config = parse(table)
    data = os.urandom(SIZE)
    async with running(files_app(config=config, api=False), str(tmp_path / "s.sqlite")) as rt:
        for key, content in (("a.bin", data), ("b.bin", b"another file")):
            done = await rt.run("files.upload", {"bucket": "docs", "key": key,
                                                 **staged_upload(config, [content])})
            assert done.status == "completed", done.error
    return table, data


def _refused(config_table: dict[str, object], key: str, expected: str, data: bytes,
             error: type[Exception] = TamperedError) -> None:
    """Reading ``key`` fails with ``expected`` in the message; what came before is a
    prefix of ``data``, short of the whole."""
    got = bytearray()
    with pytest.raises(error, match=expected):
        _, body = open_bucket(parse(config_table), "docs").open(key)
        for chunk in body:
            got += chunk
    assert bytes(got) == data[:len(got)] and len(got) < len(data)


@pytest.mark.parametrize("mode", CHECKED)
async def test_a_flipped_byte_or_a_cut_is_refused(tmp_path: Path, repository: Where,
                                                  mode: str) -> None:
    table, data = await _two_files(tmp_path, repository, mode)
    stored = open_bucket(parse(table), "docs").stored("a.bin")
    original = repository.objects()[stored]
    # a byte in the middle (in the second MiB): what comes before it checks
    flipped = bytearray(original)
    flipped[len(original) // 2] ^= 0x01
    repository.put(stored, bytes(flipped))
    expected = "does not verify at segment 1" if "sign" in MODES[mode] else \
        "fails its authentication"
    _refused(table, "a.bin", expected, data)
    # the download saga refuses it too, naming the file
    async with running(files_app(config=parse(table), api=False),
                       str(tmp_path / "s.sqlite")) as rt:
        done = await rt.run("files.download", {"bucket": "docs", "key": "a.bin"})
    assert done.status == "failed"
    assert "file 'a.bin' of bucket 'docs'" in done.error["message"] and \
        expected in done.error["message"]
    # cut short: the last segment is missing
    repository.put(stored, original[:-100])
    _refused(table, "a.bin", "truncated|does not verify|fails its authentication", data)
    # whole segments dropped from the end
    repository.put(stored, original[:len(original) // 3])
    _refused(table, "a.bin", "truncated", data)


@pytest.mark.parametrize("mode", CHECKED)
async def test_an_edited_header_or_a_swapped_file_is_refused(
        tmp_path: Path, repository: Where, mode: str) -> None:
    table, data = await _two_files(tmp_path, repository, mode)
    bucket = open_bucket(parse(table), "docs")
    a, b = bucket.stored("a.bin"), bucket.stored("b.bin")
    original = repository.objects()[a]
    # the header says another content type (same length): every check binds it
    edited = original.replace(b"application/octet-stream", b"application/octet-streaX", 1)
    assert edited != original
    repository.put(a, edited)
    expected = "does not verify at segment 0" if "sign" in MODES[mode] else \
        "does not decrypt"
    _refused(table, "a.bin", expected, data, TamperedError)
    # another file's bytes under this name: bound to its own name, refused
    repository.put(a, repository.objects()[b])
    _refused(table, "a.bin", expected, data, TamperedError)
    # an unsigned, unencrypted object put under the name
    plain = parse(section(tmp_path, repository.table, docs={}))
    writer = open_bucket(plain, "docs")
    writer.write("a.bin", a, [b"forged"], {"content_type": "text/plain", "size": 6})
    _refused(table, "a.bin", "the bucket (signs|encrypts) its files", data)


@pytest.mark.parametrize("mode", CHECKED)
async def test_another_key_is_refused(tmp_path: Path, repository: Where, mode: str) -> None:
    table, data = await _two_files(tmp_path, repository, mode)
    other = dict(table)
    other["keys"] = {**table["keys"], "main": {"key": OTHER_HEX}}  # type: ignore[dict-item]
    if mode == "ed25519":  # another signing key as well
        other["keys"]["signer"] = {"kind": "ed25519",  # type: ignore[index]
                                   "key": "55" * 32}
    if mode == "encrypted":
        # names encrypted with another key are other names: the file is not found
        with pytest.raises(LookupError, match=r"has no file 'a\.bin'"):
            open_bucket(parse(other), "docs").open("a.bin")
        other["buckets"] = {"docs": {"repository": "repo", "encrypt_content": "main"}}
        stored = open_bucket(parse(table), "docs").stored("a.bin")
        _, body = open_bucket(parse(other), "docs").open("a.bin", stored)
        with pytest.raises(WrongKeyError, match="does not decrypt with key 'main'"):
            b"".join(body)
        _, body = open_bucket(parse(table), "docs").open("a.bin")
        assert b"".join(body) == data
        return
    stored = open_bucket(parse(table), "docs").stored("a.bin")
    _, body = open_bucket(parse(other), "docs").open("a.bin", stored)
    with pytest.raises(TamperedError, match=r"signature .* does not verify at segment 0"):
        b"".join(body)
    _, body = open_bucket(parse(table), "docs").open("a.bin")  # the right keys still read it
    assert b"".join(body) == data
