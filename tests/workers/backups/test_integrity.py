"""What a restore refuses (a corrupted object, a wrong key, an altered manifest, an
existing destination) with a clear error and nothing written; replace and rollback;
gzip and GnuPG steps; memory bounded whatever the size."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workers.actions.backups import IntegrityError, backups_app, jobs, list_backups, parse
from workers.actions.backups.config import StepSpec
from workers.actions.backups.streams import Digest, make_decoder, make_encoder, pull, push

from .conftest import running
from .helpers import KEY_HEX, OTHER_KEY_HEX, make_sqlite, make_tree, section, sqlite_rows, tree_of


def _sqlite_job(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    settings = section({"kind": "sqlite", "path": str(tmp_path / "a.sqlite")},
                       {"kind": "directory", "path": str(tmp_path / "backups")})
    settings["jobs"]["job"].update(changes)
    return settings


async def _backed_up(tmp_path: Path, settings: dict[str, Any]) -> str:
    make_sqlite(tmp_path / "a.sqlite", rows=500)
    async with running(backups_app(config=parse(settings)), str(tmp_path / "s.sqlite")) as rt:
        done = await rt.run("backups.backup", {"job": "job"})
    assert done.status == "completed", done.error
    return str(done.output["id"])


async def _restore(tmp_path: Path, settings: dict[str, Any], **input: Any) -> Any:
    async with running(backups_app(config=parse(settings)), str(tmp_path / "s.sqlite")) as rt:
        return await rt.run("backups.restore", {"job": "job", **input})


def _named(folder: Path, part: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if part in p.name)


async def test_a_corrupted_object_is_refused_at_restore(tmp_path: Path) -> None:
    settings = _sqlite_job(tmp_path)
    backup_id = await _backed_up(tmp_path, settings)
    data = tmp_path / "backups" / "job" / backup_id / "data"
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    data.write_bytes(bytes(blob))
    into = {"kind": "sqlite", "path": str(tmp_path / "restored.sqlite")}
    done = await _restore(tmp_path, settings, into=into)
    assert done.status == "failed"
    assert done.failure["path"] == "verify"
    (listed,) = list_backups(parse(settings), "job")  # the manifest still reads
    assert listed["id"] == backup_id and listed["object_present"]
    assert f"backup {backup_id!r}: the object's sha256 is" in done.error["message"]
    assert "the object was altered or truncated" in done.error["message"]
    assert not (tmp_path / "restored.sqlite").exists()
    async with running(backups_app(config=parse(settings)), str(tmp_path / "s.sqlite")) as rt:
        check = await rt.run("backups.verify", {"job": "job", "backup": backup_id})
    assert check.status == "failed" and "sha256" in check.error["message"]


async def test_the_inventory_lists_jobs_and_backups_with_sizes_and_checksums(
        tmp_path: Path) -> None:
    settings = _sqlite_job(tmp_path, schedule="0 3 * * *", keep_last=3)
    first = await _backed_up(tmp_path, settings)
    async with running(backups_app(config=parse(settings)), str(tmp_path / "s.sqlite")) as rt:
        second = (await rt.run("backups.backup", {"job": "job"})).output
    (job,) = jobs(parse(settings))
    assert job["source"] == {"name": "src", "kind": "sqlite"}
    assert (job["schedule"], job["schedule_name"]) == ("0 3 * * *", "backups.job")
    assert job["retention"]["keep_last"] == 3 and "main" in str(job["steps"])
    assert KEY_HEX not in str(job)  # no key material
    listed = list_backups(parse(settings), "job")
    assert [b["id"] for b in listed] == [second["id"], first]
    assert listed[0]["sha256"] == second["sha256"] and listed[0]["size"] == second["size"]
    assert all(b["object_present"] and len(b["md5"]) == 32 for b in listed)
    assert [s["step"] for s in listed[0]["steps"]] == ["source", "zstd", "aes-gcm"]


async def test_a_wrong_key_is_refused_at_restore(tmp_path: Path) -> None:
    settings = _sqlite_job(tmp_path)
    await _backed_up(tmp_path, settings)
    settings["keys"]["main"] = {"key": OTHER_KEY_HEX}
    into = {"kind": "sqlite", "path": str(tmp_path / "restored.sqlite")}
    done = await _restore(tmp_path, settings, into=into)
    assert done.status == "failed"
    assert done.failure["path"] == "load"
    assert done.error["type"].endswith("WrongKeyError")
    assert "does not decrypt with key 'main' (a wrong key" in done.error["message"]
    assert _named(tmp_path, "restored") == []


async def test_an_altered_manifest_is_refused(tmp_path: Path) -> None:
    settings = _sqlite_job(tmp_path)
    backup_id = await _backed_up(tmp_path, settings)
    path = tmp_path / "backups" / "job" / backup_id / "manifest.json"
    path.chmod(0o644)
    path.write_text(path.read_text().replace('"job": "job"', '"job": "job", "x": 1'))
    done = await _restore(tmp_path, settings, backup=backup_id,
                          into={"kind": "sqlite", "path": str(tmp_path / "r.sqlite")})
    assert done.status == "failed" and done.failure["path"] == "fetch"
    assert "its digest does not match its content (the manifest was altered)" in \
        done.error["message"]
    listed = list_backups(parse(settings), "job")
    assert [(b["id"], "digest does not match" in b["error"]) for b in listed] == [
        (backup_id, True)]
    latest = await _restore(tmp_path, settings,
                            into={"kind": "sqlite", "path": str(tmp_path / "r.sqlite")})
    assert "has no backup with a valid manifest and its object" in latest.error["message"]


async def test_a_restore_into_an_existing_target_is_refused_unless_asked(
        tmp_path: Path) -> None:
    settings = _sqlite_job(tmp_path)
    await _backed_up(tmp_path, settings)
    original = sqlite_rows(tmp_path / "a.sqlite")
    make_sqlite(tmp_path / "other.sqlite", rows=3)
    into = {"kind": "sqlite", "path": str(tmp_path / "other.sqlite")}
    refused = await _restore(tmp_path, settings, into=into)
    assert refused.status == "failed"
    assert refused.error["type"].endswith("TargetExistsError")
    assert "sqlite destination" in refused.error["message"]
    assert "exists (ask for replace to move it aside)" in refused.error["message"]
    assert len(sqlite_rows(tmp_path / "other.sqlite")) == 3  # untouched

    app = backups_app(config=parse(settings))
    async with running(app, str(tmp_path / "s.sqlite")) as rt:
        replaced = await rt.run("backups.restore", {"job": "job", "into": into,
                                                     "replace": True})
        assert replaced.status == "completed", replaced.error
        assert sqlite_rows(tmp_path / "other.sqlite") == original
        assert len(sqlite_rows(Path(replaced.output["aside"]))) == 3  # kept aside
        forged = await rt.run("backups.rollback", {**replaced.output,
                                                    "aside": str(tmp_path / "a.sqlite")})
        assert forged.status == "failed"
        assert "is not where a restore moved" in forged.error["message"]
        undone = await rt.run("backups.rollback", replaced.output)
        assert undone.status == "completed", undone.error
    assert len(sqlite_rows(tmp_path / "other.sqlite")) == 3  # the one before the restore
    assert _named(tmp_path, ".before-") == []  # put back where it was


async def test_a_directory_restore_replaces_and_rolls_back(tmp_path: Path) -> None:
    make_tree(tmp_path / "tree")
    expected = tree_of(tmp_path / "tree")
    settings = section({"kind": "directory", "path": str(tmp_path / "tree")},
                       {"kind": "directory", "path": str(tmp_path / "backups")},
                       steps=[{"kind": "gzip", "level": 1}])
    async with running(backups_app(config=parse(settings)), str(tmp_path / "s.sqlite")) as rt:
        assert (await rt.run("backups.backup", {"job": "job"})).status == "completed"
        (tmp_path / "tree" / "top.json").write_text("changed")
        (tmp_path / "tree" / "new.txt").write_text("new")
        changed = tree_of(tmp_path / "tree")
        done = await rt.run("backups.restore", {"job": "job", "replace": True})
        assert done.status == "completed", done.error
        assert tree_of(tmp_path / "tree") == expected
        assert (await rt.run("backups.rollback", done.output)).status == "completed"
    assert tree_of(tmp_path / "tree") == changed


@pytest.fixture
def gpg_home() -> Iterator[str]:
    home = tempfile.mkdtemp(prefix="gpg-", dir="/tmp")  # short: gpg-agent's socket
    os.chmod(home, 0o700)
    subprocess.run(["gpg", "--homedir", home, "--batch", "--passphrase", "",
                    "--quick-gen-key", "backups@example.com", "future-default", "default",
                    "never"], check=True, capture_output=True, timeout=60)
    try:
        yield home
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"],
                       check=False, capture_output=True, timeout=30)
        shutil.rmtree(home, ignore_errors=True)


async def test_gnupg_and_gzip_steps_round_trip(tmp_path: Path, gpg_home: str) -> None:
    steps = ["gzip", {"kind": "gpg", "recipient": "backups@example.com", "homedir": gpg_home}]
    settings = _sqlite_job(tmp_path, steps=steps)
    backup_id = await _backed_up(tmp_path, settings)
    data = (tmp_path / "backups" / "job" / backup_id / "data").read_bytes()
    assert data[:1] in (b"\x84", b"\x85", b"\xc1")  # an OpenPGP public-key encrypted packet
    into = {"kind": "sqlite", "path": str(tmp_path / "restored.sqlite")}
    done = await _restore(tmp_path, settings, into=into)
    assert done.status == "completed", done.error
    assert sqlite_rows(tmp_path / "restored.sqlite") == sqlite_rows(tmp_path / "a.sqlite")
    settings["jobs"]["job"]["steps"][1]["homedir"] = str(tmp_path / "empty-gpg")
    (tmp_path / "empty-gpg").mkdir(mode=0o700)
    os.remove(tmp_path / "restored.sqlite")
    # the job's gpg home now holds no secret key: the restore says so, writes nothing
    done = await _restore(tmp_path, settings, into=into)
    assert done.status == "failed" and done.failure["path"] == "load"
    assert "the gpg step (decrypt) failed" in done.error["message"]
    assert "No secret key" in done.error["message"]
    assert _named(tmp_path, "restored") == []


def _blocks(total: int) -> Iterator[bytes]:
    seed = os.urandom(1 << 16)
    for i in range(total // (1 << 20)):
        yield (seed[i % 7:] + seed[:i % 7]) * 8 + bytes(1 << 19)  # half compressible


def test_the_chain_streams_in_bounded_memory() -> None:
    """128 MiB through zstd and AES-GCM and back: Python's allocations stay under
    8 MiB above where they started (chunks of 1 MiB, a part or two in flight)."""
    key = {"k": bytes(32)}
    specs = [StepSpec(kind="zstd", level=1), StepSpec(kind="aes-gcm", key="k")]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        digests = [Digest("a"), Digest("b"), Digest("c")]
        packed = push([make_encoder(s, key) for s in specs], _blocks(128 << 20), digests)
        back = Digest("plain")
        for chunk in pull(packed, [make_decoder(s, key) for s in reversed(specs)]):
            back.update(chunk)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert back.size == 128 << 20 == digests[0].size
    assert back.sha256.hexdigest() == digests[0].sha256.hexdigest()
    assert digests[1].size < digests[0].size  # compressed
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB"


def test_a_truncated_encrypted_stream_is_refused() -> None:
    key = {"k": bytes(32)}
    spec = StepSpec(kind="aes-gcm", key="k")
    sealed = b"".join(push([make_encoder(spec, key)], [os.urandom(200_000)]))
    with pytest.raises(IntegrityError, match="ends before its last segment"):
        b"".join(pull(iter([sealed[:-70_000]]), [make_decoder(spec, key)]))
