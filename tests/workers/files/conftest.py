"""The files pack's fixtures: a repository of each kind (a directory, a bucket on a
real S3 server on loopback: tests/workers/packs.py) and the config around it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..packs import running, s3_client
from .helpers import Where, repository_table

__all__ = ["repository", "running", "s3_client"]


@pytest.fixture(params=["directory", "s3"])
def repository(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    """A repository of each kind, empty: its table in the config and what is in it."""
    if request.param == "directory":
        return Where(kind="directory", table=repository_table("directory", tmp_path),
                     root=tmp_path / "repo")
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return Where(kind="s3", table=repository_table("s3", tmp_path, endpoint, bucket),
                 endpoint=endpoint, bucket=bucket)
