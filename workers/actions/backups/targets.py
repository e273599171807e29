"""Where backups are kept: a directory or an S3-compatible object store (the storages
of :mod:`workers.actions.shared.storage`, raising :class:`.errors.TargetError`).

A backup is two objects under ``<prefix><job>/<backup id>/``: ``data`` (the stream
after every step, never seen in part under its name) and ``manifest.json``, written
last with :meth:`Storage.put_new`, so a manifest written once is never replaced.
"""

from __future__ import annotations

from ..shared.storage import DirectoryStorage, S3Storage, Storage, StorageSpec, Writer
from ..shared.storage import open_storage as _open
from .errors import TargetError

__all__ = ["DirectoryStorage", "S3Storage", "Storage", "Writer", "open_storage"]


def open_storage(spec: StorageSpec) -> Storage:
    """A backup target's storage (its errors are :class:`TargetError`)."""
    return _open(spec, TargetError, "target")
