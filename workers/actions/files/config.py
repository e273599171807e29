"""The ``[files]`` section: repositories, keys and buckets, checked as a whole.

Every error names the field at fault (``files.buckets.avatars.repository``) and what
was expected, before anything is written. The section, as TOML::

    [files]
    staging = ""                            # where uploads wait for their saga (default:
                                            # <temp>/stepsaga-files); the API node and
                                            # the workers running files.upload share it
    staging_ttl = 86400                     # seconds: staged uploads older than this
                                            # (never taken: a client gone, a crash) are
                                            # removed by files.sweep, hourly; 0: never

    [files.keys.main]                       # a secret: 32 bytes (AES-256, HMAC)
    key_file = "/etc/stepsaga/files.key"    # raw 32 bytes, or 64 hex digits, or base64
    # key = "64 hex digits or base64"       # or inline

    [files.keys.signer]                     # an Ed25519 signing key
    kind = "ed25519"                        # secret (the default) | ed25519
    key_file = "/etc/stepsaga/signer.pem"   # PEM (PKCS8, unencrypted), or a 32-byte seed
                                            # as a secret's

    [files.repositories.local]              # kind: directory | s3
    kind = "directory"
    path = "/var/lib/stepsaga/files"

    [files.repositories.cloud]
    kind = "s3"
    bucket = "assets"
    prefix = "files/"                       # every object of this repository is under it
    endpoint_url = ""                       # empty: AWS; else any S3-compatible store
    region = "us-east-1"
    access_key_id = ""                      # empty: boto3's own lookup
    secret_access_key = ""
    part_size = 8388608                     # multipart part size, >= 5 MiB

    [files.buckets.avatars]                 # a bucket: its files under <bucket>/ of
    repository = "local"                    # its repository
    encrypt_names = ""                      # a secret of [files.keys]: names encrypted
                                            # (deterministically: lookups and listings
                                            # work; one path segment at a time)
    encrypt_content = ""                    # a secret: content AES-256-GCM
    sign = ""                               # "" | "hmac-sha256" | "ed25519": verified on
    sign_key = ""                           # every read; a secret for hmac-sha256, an
                                            # ed25519 key for ed25519

One secret may serve several purposes and buckets: each gets a key of its own derived
from it (HKDF-SHA256 with the purpose and the bucket's name).

>>> cfg = parse({"repositories": {"here": {"kind": "directory", "path": "/tmp/f"}},
...              "buckets": {"docs": {"repository": "here"}}})
>>> cfg.buckets["docs"].repository
'here'
>>> parse({"buckets": {"docs": {"repository": "nope"}}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
workers.actions.files.errors.FilesConfigError: files.buckets.docs.repository: unknown ...
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..shared.checks import Checks, decode_key
from ..shared.storage import StorageSpec
from .errors import FilesConfigError

__all__ = ["SIGN_KINDS", "BucketSpec", "FilesConfig", "KeySpec", "load_key", "parse"]

SIGN_KINDS = ("hmac-sha256", "ed25519")
KEY_KINDS = ("secret", "ed25519")
_CHECKS = Checks(FilesConfigError, "files")


@dataclass(frozen=True, slots=True, kw_only=True)
class KeySpec:
    name: str
    kind: str = "secret"
    key: str = ""
    key_file: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class BucketSpec:
    name: str
    repository: str
    encrypt_names: str = ""
    encrypt_content: str = ""
    sign: str = ""
    sign_key: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class FilesConfig:
    """The checked ``[files]`` section (see the module docstring)."""

    repositories: Mapping[str, StorageSpec] = field(default_factory=dict)
    keys: Mapping[str, KeySpec] = field(default_factory=dict)
    buckets: Mapping[str, BucketSpec] = field(default_factory=dict)
    staging: str = ""
    staging_ttl: float = 86400.0

    def bucket(self, name: object, where: str = "bucket") -> BucketSpec:
        if not isinstance(name, str) or name not in self.buckets:
            raise FilesConfigError(f"{where}: unknown bucket {name!r} (the buckets are: "
                                   f"{', '.join(sorted(self.buckets)) or 'none'})")
        return self.buckets[name]

    def staging_dir(self) -> Path:
        return Path(self.staging or os.path.join(tempfile.gettempdir(), "stepsaga-files"))


def _key(name: str, value: Any) -> KeySpec:
    where = _CHECKS.where("keys", name)
    data = _CHECKS.table(value, where)
    kind = data.pop("kind", "secret")
    if kind not in KEY_KINDS:
        raise FilesConfigError(f"{where}.kind: expected one of {', '.join(KEY_KINDS)}, "
                               f"got {kind!r}")
    spec = KeySpec(name=name, kind=kind, key=_CHECKS.text(data, "key", where),
                   key_file=_CHECKS.text(data, "key_file", where))
    _CHECKS.done(data, where, "kind, key or key_file")
    if bool(spec.key) == bool(spec.key_file):
        raise FilesConfigError(f"{where}: give exactly one of key and key_file")
    if spec.key:
        load_key(spec)
    return spec


def _bucket(name: str, value: Any, config: FilesConfig) -> BucketSpec:
    where = _CHECKS.where("buckets", name)
    data = _CHECKS.table(value, where)
    repository = _CHECKS.text(data, "repository", where)
    if repository not in config.repositories:
        raise FilesConfigError(f"{where}.repository: unknown repository {repository!r} (the "
                               f"repositories are: "
                               f"{', '.join(sorted(config.repositories)) or 'none'})")
    spec = BucketSpec(name=name, repository=repository,
                      encrypt_names=_CHECKS.text(data, "encrypt_names", where),
                      encrypt_content=_CHECKS.text(data, "encrypt_content", where),
                      sign=_CHECKS.text(data, "sign", where),
                      sign_key=_CHECKS.text(data, "sign_key", where))
    _CHECKS.done(data, where, "repository, encrypt_names, encrypt_content, sign and "
                              "sign_key")
    for purpose in ("encrypt_names", "encrypt_content"):
        _needs(config, getattr(spec, purpose), "secret", f"{where}.{purpose}")
    if spec.sign not in ("", *SIGN_KINDS):
        raise FilesConfigError(f"{where}.sign: expected \"\" or one of "
                               f"{', '.join(SIGN_KINDS)}, got {spec.sign!r}")
    if spec.sign and not spec.sign_key:
        raise FilesConfigError(f"{where}.sign_key: signing with {spec.sign} needs a key of "
                               "[files.keys]")
    if spec.sign_key and not spec.sign:
        raise FilesConfigError(f"{where}.sign: a sign_key is given, but no way to sign "
                               f"(one of {', '.join(SIGN_KINDS)})")
    if spec.sign:
        _needs(config, spec.sign_key, "ed25519" if spec.sign == "ed25519" else "secret",
               f"{where}.sign_key")
    return spec


def _needs(config: FilesConfig, name: str, kind: str, where: str) -> None:
    if not name:
        return
    if name not in config.keys:
        raise FilesConfigError(f"{where}: unknown key {name!r} (the keys in [files.keys] "
                               f"are: {', '.join(sorted(config.keys)) or 'none'})")
    if config.keys[name].kind != kind:
        raise FilesConfigError(f"{where}: key {name!r} is an {config.keys[name].kind} key; "
                               f"this needs a {kind} key")


def load_key(spec: KeySpec) -> Any:
    """A key's material, read now (a rotated key file is picked up): 32 bytes for a
    secret, an ``Ed25519PrivateKey`` for an ed25519 key."""
    where = _CHECKS.where("keys", spec.name, "key" if spec.key else "key_file")
    if spec.key:
        raw = spec.key.encode()
    else:
        try:
            raw = Path(spec.key_file).read_bytes()
        except OSError as exc:
            raise FilesConfigError(f"{where}: cannot read {spec.key_file!r}: "
                                   f"{exc.strerror}") from None
    if spec.kind == "secret":
        return decode_key(raw, where, FilesConfigError)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if raw.lstrip().startswith(b"-----BEGIN"):
        try:
            found = load_pem_private_key(raw, password=None)
        except (ValueError, TypeError) as exc:
            raise FilesConfigError(f"{where}: not an unencrypted PEM private key: "
                                   f"{exc}") from None
        if not isinstance(found, Ed25519PrivateKey):
            raise FilesConfigError(f"{where}: the PEM holds a {type(found).__name__}, not an "
                                   "Ed25519 private key")
        return found
    try:
        seed = decode_key(raw, where, FilesConfigError)
    except FilesConfigError:
        raise FilesConfigError(f"{where}: expected an Ed25519 private key (PEM, or a "
                               "32-byte seed: raw, hex or base64)") from None
    return Ed25519PrivateKey.from_private_bytes(seed)


def parse(section: Mapping[str, Any] | None) -> FilesConfig:
    """Check a ``[files]`` section (a mapping as TOML reads it) into a FilesConfig."""
    data = _CHECKS.table(section or {}, "files")
    tables: dict[str, dict[str, Any]] = {}
    for part in ("repositories", "keys", "buckets"):
        tables[part] = _CHECKS.table(data.pop(part, {}), _CHECKS.where(part))
        for name in tables[part]:
            _CHECKS.named(name, _CHECKS.where(part, str(name)))
    staging = _CHECKS.text(data, "staging", "files")
    if staging and not staging.startswith("/"):
        raise FilesConfigError(f"files.staging: expected an absolute directory, got "
                               f"{staging!r}")
    ttl = data.pop("staging_ttl", 86400.0)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl >= 0:
        raise FilesConfigError(f"files.staging_ttl: expected a number of seconds >= 0, got "
                               f"{ttl!r:.60}")
    _CHECKS.done(data, "files", "repositories, keys, buckets, staging and staging_ttl")
    config = FilesConfig(
        repositories={n: _CHECKS.storage(n, v, _CHECKS.where("repositories", n), "repository")
                      for n, v in tables["repositories"].items()},
        keys={n: _key(n, v) for n, v in tables["keys"].items()}, staging=staging)
    buckets = {n: _bucket(n, v, config) for n, v in tables["buckets"].items()}
    return FilesConfig(repositories=config.repositories, keys=config.keys, buckets=buckets,
                       staging=staging, staging_ttl=float(ttl))
