"""Uploads on their way in: a file's plain bytes written to the staging directory
(``files.staging``) under a random id, which ``files.upload`` takes from there into
its bucket and then removes. The asset routes stream a request's body here; from
Python, :func:`stage` does the same with any chunks.

>>> import tempfile
>>> from .config import FilesConfig
>>> config = FilesConfig(staging=tempfile.mkdtemp())
>>> staged = stage(config, [b"hello ", b"world"])
>>> staged["size"], staged_path(config, staged["staged"]).read_bytes()
(11, b'hello world')
>>> discard(config, staged["staged"])
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from .config import FilesConfig
from .errors import FilesConfigError

__all__ = ["Staged", "discard", "stage", "staged_path", "sweep"]

_ID = re.compile(r"^[0-9a-f]{32}$")


class Staged:
    """A staged file being written: ``write`` its chunks, then ``done()`` (its id and
    size) or ``abort()``."""

    def __init__(self, config: FilesConfig) -> None:
        self.root = config.staging_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        self.id = uuid.uuid4().hex
        self.partial = self.root / f"{self.id}.partial"
        self.file: BinaryIO = open(self.partial, "wb")
        self.size = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.size += len(data)

    def done(self) -> dict[str, Any]:
        self.file.close()
        os.replace(self.partial, self.root / self.id)
        return {"staged": self.id, "size": self.size}

    def abort(self) -> None:
        self.file.close()
        self.partial.unlink(missing_ok=True)


def stage(config: FilesConfig, chunks: Iterable[bytes]) -> dict[str, Any]:
    """Write ``chunks`` to the staging directory: ``{"staged": id, "size": n}``, what
    ``files.upload`` takes as ``staged``."""
    staged = Staged(config)
    try:
        for chunk in chunks:
            staged.write(chunk)
    except BaseException:
        staged.abort()
        raise
    return staged.done()


def staged_path(config: FilesConfig, staged: Any, field: str = "staged") -> Path:
    """Where a staged file is (FilesConfigError naming ``field`` when it is not one)."""
    if not isinstance(staged, str) or not _ID.match(staged):
        raise FilesConfigError(f"{field}: expected the id of a staged upload (32 hex "
                               f"digits), got {staged!r:.60}")
    path = config.staging_dir() / staged
    if not path.is_file():
        raise FilesConfigError(f"{field}: no staged upload {staged!r} (taken already, or "
                               f"staged on another node than {config.staging_dir()})")
    return path


def discard(config: FilesConfig, staged: Any) -> None:
    """Remove a staged file (nothing when it is gone or not an id)."""
    if isinstance(staged, str) and _ID.match(staged):
        (config.staging_dir() / staged).unlink(missing_ok=True)


def sweep(config: FilesConfig, now: float) -> list[str]:
    """Remove the staged files (and the ones half written) last written more than
    ``config.staging_ttl`` seconds before ``now``: their uploads will never be taken.
    The names removed."""
    root = config.staging_dir()
    if not root.is_dir():
        return []
    removed: list[str] = []
    for path in sorted(root.iterdir()):
        name = path.name.removesuffix(".partial")
        if not _ID.match(name) or not path.is_file():
            continue  # not ours
        try:
            if path.stat().st_mtime < now - config.staging_ttl:
                path.unlink()
                removed.append(path.name)
        except FileNotFoundError:  # taken meanwhile
            continue
    return removed
