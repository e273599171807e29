"""Appending to an object of a target (what retention's archive does): a directory's
file grows in place; on a real S3 server (moto) a small object is read and sent again,
and one of a part or more is copied by the server into the new one before the data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workers.actions.backups.config import TargetSpec
from workers.actions.backups.targets import open_storage
from workers.actions.shared.storage import MIN_PART

from .conftest import s3_client


def test_a_directory_target_appends_in_place(tmp_path: Path) -> None:
    storage = open_storage(TargetSpec(name="here", kind="directory", path=str(tmp_path)))
    storage.append("day/works.jsonl", b"one\n")
    storage.append("day/works.jsonl", b"two\n")
    assert (tmp_path / "day" / "works.jsonl").read_bytes() == b"one\ntwo\n"


@pytest.mark.parametrize("first", [100, MIN_PART + 1234])
def test_an_s3_target_appends_by_replacing_the_object(
        s3_endpoint: str, s3_bucket: str, first: int) -> None:
    storage = open_storage(TargetSpec(name="there", kind="s3", bucket=s3_bucket, prefix="p/",
                                      endpoint_url=s3_endpoint, access_key_id="test",
                                      secret_access_key="test"))
    head = os.urandom(first)
    storage.append("works.jsonl.gz", head)  # made
    storage.append("works.jsonl.gz", b"tail")
    body = s3_client(s3_endpoint).get_object(Bucket=s3_bucket, Key="p/works.jsonl.gz")
    assert body["Body"].read() == head + b"tail"
    # a large object was copied by the server: the new one has its parts
    parts = s3_client(s3_endpoint).head_object(Bucket=s3_bucket, Key="p/works.jsonl.gz",
                                               PartNumber=1).get("PartsCount")
    assert parts == (2 if first >= MIN_PART else None)
