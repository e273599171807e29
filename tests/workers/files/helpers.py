"""Building configs for the files tests, and looking into a repository as it is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from ..packs import s3_client

SECRET_HEX = "33" * 32
OTHER_HEX = "44" * 32

# the ways a bucket keeps its files, as the tests run them
MODES: dict[str, dict[str, str]] = {
    "plain": {},
    "encrypted": {"encrypt_names": "main", "encrypt_content": "main"},
    "hmac": {"sign": "hmac-sha256", "sign_key": "main"},
    "ed25519": {"encrypt_names": "main", "encrypt_content": "main", "sign": "ed25519",
                "sign_key": "signer"},
}


@dataclass
class Where:
    """A repository: its kind, its config table, and where its objects are."""

    kind: str
    table: dict[str, Any]
    root: Path | None = None
    endpoint: str = ""
    bucket: str = ""

    def objects(self) -> dict[str, bytes]:
        """Every object in the repository (and every partial file or unfinished
        upload, as ``<key> (partial)``), by key."""
        if self.kind == "directory":
            assert self.root is not None
            if not self.root.exists():
                return {}
            return {p.relative_to(self.root).as_posix(): p.read_bytes()
                    for p in self.root.rglob("*") if p.is_file()}
        client = s3_client(self.endpoint)
        found: dict[str, bytes] = {}
        for item in client.list_objects_v2(Bucket=self.bucket).get("Contents", []):
            key = item["Key"].removeprefix("team/")
            found[key] = client.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read()
        for upload in client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []):
            found[upload["Key"] + " (partial)"] = b""
        return found

    def put(self, key: str, data: bytes) -> None:
        """Write an object behind the pack's back (as someone tampering would)."""
        if self.kind == "directory":
            assert self.root is not None
            path = self.root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            s3_client(self.endpoint).put_object(Bucket=self.bucket, Key="team/" + key,
                                                Body=data)


def repository_table(kind: str, tmp_path: Path, endpoint: str = "", bucket: str = ""
                     ) -> dict[str, Any]:
    if kind == "directory":
        return {"kind": "directory", "path": str(tmp_path / "repo")}
    return {"kind": "s3", "bucket": bucket, "prefix": "team/", "endpoint_url": endpoint,
            "access_key_id": "test", "secret_access_key": "test",
            "part_size": 5 * 1024 * 1024}


def signer_pem(tmp_path: Path) -> Path:
    path = tmp_path / "signer.pem"
    if not path.exists():
        path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return path


def section(tmp_path: Path, repository: dict[str, Any], **buckets: dict[str, Any]
            ) -> dict[str, Any]:
    """A ``[files]`` section: keys ``main`` (a secret) and ``signer`` (Ed25519, from a
    PEM file), repository ``repo``, and the buckets given (each on ``repo``)."""
    return {"staging": str(tmp_path / "staging"),
            "keys": {"main": {"key": SECRET_HEX},
                     "signer": {"kind": "ed25519", "key_file": str(signer_pem(tmp_path))}},
            "repositories": {"repo": repository},
            "buckets": {name: {"repository": "repo", **spec}
                        for name, spec in buckets.items()}}
