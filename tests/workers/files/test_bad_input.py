"""Bad input is refused with a clear error naming the field, and nothing is written:
a config with an unknown repository or key, a wrong type, a missing key file; a work
naming an unknown bucket, no key, a key that climbs out of its bucket or holds
control characters; ``stepsaga serve``'s config check refuses a bad ``[files]``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from graphql_api.config import ConfigError, load
from workers.actions.files import FilesConfigError, files_app, parse, stage

from ...graphql_api.wire import ROOT
from .conftest import running
from .helpers import Where, section

REPO = {"kind": "directory", "path": "/tmp/x"}


def _staged(tmp_path: Path) -> list[Path]:
    staging = tmp_path / "staging"
    return list(staging.iterdir()) if staging.exists() else []


@pytest.mark.parametrize(("change", "message"), [
    ({"buckets": {"b": {"repository": "nope"}}},
     "files.buckets.b.repository: unknown repository 'nope' (the repositories are: r)"),
    ({"buckets": {"b": {"repository": "r", "encrypt_content": "k9"}}},
     "files.buckets.b.encrypt_content: unknown key 'k9' (the keys in [files.keys] are: "
     "main, signer)"),
    ({"buckets": {"b": {"repository": "r", "sign": "md5", "sign_key": "main"}}},
     "files.buckets.b.sign: expected \"\" or one of hmac-sha256, ed25519, got 'md5'"),
    ({"buckets": {"b": {"repository": "r", "sign": "hmac-sha256"}}},
     "files.buckets.b.sign_key: signing with hmac-sha256 needs a key"),
    ({"buckets": {"b": {"repository": "r", "sign": "ed25519", "sign_key": "main"}}},
     "files.buckets.b.sign_key: key 'main' is an secret key; this needs a ed25519 key"),
    ({"buckets": {"b": {"repository": "r", "encrypt_names": "signer"}}},
     "files.buckets.b.encrypt_names: key 'signer' is an ed25519 key; this needs a secret"),
    ({"buckets": {"b": {"repository": "r", "encrypt_names": True}}},
     "files.buckets.b.encrypt_names: expected a string, got True"),
    ({"buckets": {"b": {"repository": "r", "colour": "red"}}},
     "files.buckets.b.colour is not a setting"),
    ({"buckets": {"../b": {"repository": "r"}}},
     "files.buckets.../b: the name '../b' must be 1 to 64 letters"),
    ({"repositories": {"r": {"kind": "ftp"}}},
     "files.repositories.r.kind: expected one of directory, s3, got 'ftp'"),
    ({"repositories": {"r": {"kind": "s3", "bucket": "ok-bucket", "part_size": "big"}}},
     "files.repositories.r.part_size: expected a whole number >= 5242880, got 'big'"),
    ({"repositories": {"r": {"kind": "directory", "path": "/tmp/a\nb"}}},
     "files.repositories.r.path: control characters are not allowed"),
    ({"keys": {"main": {"key": "short"}}},
     "files.keys.main.key: expected an AES-256 key"),
    ({"keys": {"main": {"kind": "rsa", "key": "11" * 32}}},
     "files.keys.main.kind: expected one of secret, ed25519, got 'rsa'"),
    ({"staging": 7}, "files.staging: expected a string, got 7"),
    ({"staging": "relative/dir"}, "files.staging: expected an absolute directory"),
    ({"buckets": []}, "files.buckets: expected a table, got []"),
])
def test_a_bad_config_names_the_field(tmp_path: Path, change: dict[str, Any],
                                      message: str) -> None:
    table = section(tmp_path, REPO)
    table["repositories"] = {"r": REPO}
    table.update(change)
    with pytest.raises(FilesConfigError) as caught:
        parse(table)
    assert message in str(caught.value)


def test_the_config_file_is_checked_at_load(tmp_path: Path) -> None:
    config = tmp_path / "stepsaga.toml"
    config.write_text('[files.repositories.r]\nkind = "directory"\npath = "/tmp/r"\n'
                      '[files.buckets.b]\nrepository = "elsewhere"\n')
    with pytest.raises(ConfigError, match=r"files\.buckets\.b\.repository: unknown repository"):
        load(config, {})
    config.write_text('[files.repositories.r]\nkind = "directory"\npath = "/tmp/r"\n'
                      '[files.buckets.b]\nrepository = "r"\n')
    assert load(config, {})["files"]["buckets"] == {"b": {"repository": "r"}}
    checked = subprocess.run(
        [sys.executable, "-m", "graphql_api.cli", "config", "check", str(config)], cwd=ROOT,
        capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    config.write_text('[files.buckets.b]\nrepository = 3\n')
    refused = subprocess.run(
        [sys.executable, "-m", "graphql_api.cli", "config", "check", str(config)], cwd=ROOT,
        capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "files.buckets.b.repository: expected a string, got 3" in refused.stderr


async def test_a_missing_key_file_fails_before_anything_is_written(
        tmp_path: Path, repository: Where) -> None:
    table = section(tmp_path, repository.table, docs={"encrypt_content": "filed"})
    table["keys"]["filed"] = {"key_file": str(tmp_path / "gone.key")}
    config = parse(table)  # the file is read when used (a rotated key is picked up)
    async with running(files_app(config=config, api=False), str(tmp_path / "s.sqlite")) as rt:
        done = await rt.run("files.upload", {"bucket": "docs", "key": "a",
                                             **stage(config, [b"x"])})
    assert done.status == "failed"
    assert f"files.keys.filed.key_file: cannot read '{tmp_path}/gone.key'" in \
        done.error["message"]
    assert repository.objects() == {}
    assert _staged(tmp_path) == []


@pytest.mark.parametrize(("saga", "input", "message"), [
    ("files.upload", {"bucket": "nope", "key": "a"},
     "bucket: 'nope' is not one of ['docs', 'secret']"),
    ("files.download", {"bucket": "docs"}, "(root): 'key' is a required property"),
    ("files.download", {"bucket": "docs", "key": ""}, "key: expected a file's name"),
    ("files.upload", {"bucket": "docs", "key": "../outside"},
     "key: '../outside' climbs out of its bucket"),
    ("files.upload", {"bucket": "docs", "key": "a/../../outside"},
     "key: 'a/../../outside' climbs out of its bucket"),
    ("files.upload", {"bucket": "secret", "key": "/etc/passwd"},
     "key: '/etc/passwd' climbs out of its bucket"),
    ("files.upload", {"bucket": "docs", "key": "bad\x00name"},
     "key: control characters are not allowed in a name"),
    ("files.upload", {"bucket": "secret", "key": "new\nline"},
     "key: control characters are not allowed in a name"),
    ("files.upload", {"bucket": "docs", "key": "a\\b"}, "key: use '/' between"),
    ("files.upload", {"bucket": "docs", "key": "a//b"}, "key: 'a//b' has an empty part"),
    ("files.upload", {"bucket": "secret", "key": "x" * 151},
     "key: a part of a name is at most 150 bytes (names are encrypted)"),
    ("files.upload", {"bucket": "secret", "key": "/".join(["y" * 100] * 7)},
     "key: a name is at most 640 bytes (names are encrypted), got 706"),
    ("files.upload", {"bucket": "docs", "key": "z" * 201},
     "key: a part of a name is at most 200 bytes, got"),
    ("files.upload", {"bucket": "docs", "key": "a.partial"},
     "key: names ending in '.partial' are kept for objects being written"),
    ("files.upload", {"bucket": "docs", "key": 7}, "key: 7 is not of type 'string'"),
    ("files.upload", {"bucket": "docs", "key": "a", "staged": "../../etc/passwd"},
     "staged: expected the id of a staged upload"),
    ("files.upload", {"bucket": "docs", "key": "a", "content_type": "text"},
     "content_type: expected a media type"),
    ("files.upload", {"bucket": "docs", "key": "a", "replace": "yes"},
     "replace: 'yes' is not of type 'boolean'"),
    ("files.copy", {"bucket": "docs", "key": "a", "to_bucket": "nope", "to_key": "b"},
     "to_bucket: unknown bucket 'nope'"),
    ("files.move", {"bucket": "docs", "key": "a", "to_key": "../b"},
     "to_key: '../b' climbs out of its bucket"),
    ("files.list", {"bucket": "docs", "prefix": "../"}, "prefix: '..' climbs out"),
    ("files.list", {"bucket": "docs", "limit": 0}, "limit: 0 is less than the minimum of 1"),
    ("files.list", {"bucket": "docs", "after": "../x"}, "after: '../x' climbs out"),
    ("files.delete", {"bucket": "docs", "key": "never-was"},
     "key: bucket 'docs' has no file 'never-was'"),
])
async def test_a_bad_input_names_the_field_and_writes_nothing(
        tmp_path: Path, saga: str, input: dict[str, Any], message: str) -> None:
    where = Where(kind="directory", table={"kind": "directory", "path": str(tmp_path / "repo")},
                  root=tmp_path / "repo")
    config = parse(section(tmp_path, where.table, docs={},
                           secret={"encrypt_names": "main", "encrypt_content": "main"}))
    if saga == "files.upload" and "staged" not in input:
        input = {**input, **stage(config, [b"some bytes"])}
    async with running(files_app(config=config, api=False), str(tmp_path / "s.sqlite")) as rt:
        try:
            done = await rt.run(saga, input)
        except ValueError as exc:  # refused by the saga's input schema: no work made
            assert message in str(exc)
            assert where.objects() == {}
            return
    assert done.status == "failed"
    assert message in done.error["message"]
    assert done.error.get("retryable") is False
    assert where.objects() == {}
    assert _staged(tmp_path) == []  # a refused upload's bytes dropped
