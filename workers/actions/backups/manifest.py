"""A backup's manifest: what was written, checked on every read.

Written last, once the data object is complete, by
:meth:`workers.actions.backups.targets.Storage.put_new` (atomic and never replaced).
It holds its own sha256 over the rest (``digest``), so a manifest altered afterwards
is refused on read, as is one of another format or version.

>>> m = seal({"id": "x", "job": "j", "created_at": 1.0, "completed_at": 2.0,
...           "object": "j/x/data", "steps": [], "final": {"size": 0}, "tools": {}})
>>> read(encode(m))["id"]
'x'
>>> read(encode({**m, "job": "k"}))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
workers.actions.backups.errors.IntegrityError: manifest of backup 'x': its digest does not ...
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from .errors import IntegrityError

if TYPE_CHECKING:
    from .targets import Storage

__all__ = ["FORMAT", "VERSION", "encode", "manifest_key", "object_key", "present", "read",
           "seal"]

FORMAT = "stepsaga.backup.manifest"
VERSION = 1
_REQUIRED = {"id": str, "job": str, "created_at": float, "completed_at": float,
             "object": str, "steps": list, "final": dict, "tools": dict}


def object_key(job: str, backup_id: str) -> str:
    return f"{job}/{backup_id}/data"


def manifest_key(job: str, backup_id: str) -> str:
    return f"{job}/{backup_id}/manifest.json"


def present(storage: Storage, manifest: dict[str, Any]) -> bool:
    """Whether a backup whose manifest read is whole on its target: its object is there
    at the size the manifest gives (what retention counts as a verified backup, what
    ``latest`` picks from and the API's ``verified``; the integrity check recomputes
    every checksum besides)."""
    return bool(storage.size(manifest["object"]) == manifest["final"]["size"])


def _digest(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def seal(body: dict[str, Any]) -> dict[str, Any]:
    """The manifest with its format, version and digest."""
    found = {k: v for k, v in body.items() if k != "digest"}
    found.update(format=FORMAT, version=VERSION)
    return {**found, "digest": _digest(found)}


def encode(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, indent=1).encode()


def read(data: bytes, *, where: str = "") -> dict[str, Any]:
    """A manifest's content, checked: its format, fields and digest."""
    label = f"manifest {where}".strip()
    try:
        found = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise IntegrityError(f"{label}: not JSON (the manifest was altered)") from None
    if not isinstance(found, dict) or found.get("format") != FORMAT:
        raise IntegrityError(f"{label}: not a stepsaga backup manifest")
    if found.get("version") != VERSION:
        raise IntegrityError(f"{label}: version {found.get('version')!r} is not one this "
                             f"stepsaga reads (it reads {VERSION})")
    label = f"manifest of backup {found.get('id')!r}"
    body = {k: v for k, v in found.items() if k != "digest"}
    if found.get("digest") != _digest(body):
        raise IntegrityError(f"{label}: its digest does not match its content (the "
                             "manifest was altered)")
    for key, kind in _REQUIRED.items():
        value = found.get(key)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            continue
        if not isinstance(value, kind):
            raise IntegrityError(f"{label}: field {key!r} is missing or not a "
                                 f"{kind.__name__}")
    return found
