"""Secrets: the fields a saga's input schema or a stage's output schema marks
``"secret": true`` are stored encrypted, never in the clear, and shown redacted.

    Saga(name="pay", input_schema={"type": "object", "properties": {
        "card": {"type": "string", "secret": True}, "amount": {"type": "number"}}}, ...)

Such a value is replaced, before it is recorded in any event or row, by an envelope
``{"$secret": "v1.<key id>.<nonce and AES-256-GCM ciphertext, base64url>"}``, with the
deployment's key (``[secrets] key`` or ``key_file`` in the config: 32 bytes, as 64 hex
digits). Stage code gets the clear value: the engine opens the envelopes of a call's
input (and of what a compensation is given) just before calling it, so a transaction
never sees one. Everything else (the API, subscriptions, the UI, the logs) sees the
envelope, shown as :data:`REDACTED` unless its client may read secrets
(graphql_api.access). A schema that marks secrets on a runtime without a key is refused
when a work starts, saying so; an envelope of another key fails its call, naming the
key id it needs.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import StageFailure

__all__ = ["ENVELOPE", "REDACTED", "SecretError", "Secrets", "has_secrets", "holds_secrets",
           "open_with", "redact", "secret_paths"]

ENVELOPE = "$secret"
REDACTED = "[secret]"
_VERSION = "v1"


class SecretError(StageFailure):
    """A secret cannot be opened here: no key, another key, or a damaged envelope.
    Never retried (the same key fails the same way)."""

    retryable_default = False


def _envelope(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get(ENVELOPE), str):
        return str(value[ENVELOPE])
    return None


def secret_paths(schema: Mapping[str, Any] | None, at: str = "") -> list[str]:
    """Where a JSON schema marks secrets: ``card``, ``items[].token``, ``""`` (the whole
    value)."""
    if not isinstance(schema, Mapping):
        return []
    if schema.get("secret") is True:
        return [at]
    found: list[str] = []
    for name, sub in (schema.get("properties") or {}).items():
        found += secret_paths(sub, f"{at}.{name}" if at else str(name))
    if isinstance(schema.get("items"), Mapping):
        found += secret_paths(schema["items"], f"{at}[]")
    return found


def has_secrets(schema: Mapping[str, Any] | None) -> bool:
    return bool(secret_paths(schema))


def redact(value: Any) -> Any:
    """``value`` with every envelope shown as :data:`REDACTED` (what a client that may
    not read secrets gets)."""
    if _envelope(value) is not None:
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


class Secrets:
    """The deployment's key: seals the fields a schema marks secret, opens envelopes."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError(f"a secrets key is 32 bytes (64 hex digits), got {len(key)}")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"stepsaga secrets " + key).hexdigest()[:8]

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> Secrets | None:
        """From ``[secrets]``: ``key`` (64 hex digits) or ``key_file`` (a file holding
        them); None when neither is set. ``ValueError`` naming the key otherwise."""
        key, key_file = section.get("key", ""), section.get("key_file", "")
        if key and key_file:
            raise ValueError("secrets: give key or key_file, not both")
        where = "secrets.key"
        if key_file:
            where = f"secrets.key_file ({key_file})"
            try:
                key = Path(key_file).read_text().strip()
            except OSError as exc:
                raise ValueError(f"{where}: cannot be read: {exc.strerror}") from None
        if not key:
            return None
        try:
            raw = bytes.fromhex(key)
        except ValueError:
            raise ValueError(f"{where}: expected 64 hex digits (32 bytes; make one with "
                             f"'openssl rand -hex 32')") from None
        try:
            return cls(raw)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    def seal_value(self, value: Any) -> dict[str, str]:
        from .store.codec import dumps

        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, dumps(value).encode(), self.key_id.encode())
        text = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return {ENVELOPE: f"{_VERSION}.{self.key_id}.{text}"}

    def seal(self, value: Any, schema: Mapping[str, Any] | None) -> Any:
        """``value`` with the fields ``schema`` marks secret sealed (the rest as is)."""
        paths = secret_paths(schema)
        if not paths:
            return value
        for path in paths:
            value = self._seal_at(value, path.replace("[]", ".[]").split(".") if path else [])
        return value

    def _seal_at(self, value: Any, parts: list[str]) -> Any:
        if not parts:
            return value if _envelope(value) is not None else self.seal_value(value)
        head, rest = parts[0], parts[1:]
        if head == "":
            return self._seal_at(value, rest)
        if head == "[]":
            return [self._seal_at(v, rest) for v in value] if isinstance(value, list) \
                else value
        if isinstance(value, dict) and head in value:
            return {**value, head: self._seal_at(value[head], rest)}
        return value

    def open(self, value: Any) -> Any:
        """``value`` with every envelope opened (``SecretError`` when one cannot be)."""
        text = _envelope(value)
        if text is not None:
            version, _, rest = text.partition(".")
            key_id, _, data = rest.partition(".")
            if version != _VERSION:
                raise SecretError(f"a secret sealed as {version!r}, not {_VERSION!r}")
            if key_id != self.key_id:
                raise SecretError(f"a secret sealed with key {key_id}, not this node's "
                                  f"{self.key_id} ([secrets] key)")
            import json

            try:
                raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
                clear = self._aead.decrypt(raw[:12], raw[12:], key_id.encode())
            except Exception:
                raise SecretError(f"a secret sealed with key {key_id} is damaged: it "
                                  "does not open") from None
            return json.loads(clear)
        if isinstance(value, dict):
            return {k: self.open(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.open(v) for v in value]
        return value


def holds_secrets(value: Any) -> bool:
    """Whether ``value`` holds an envelope anywhere (no copy made)."""
    if isinstance(value, dict):
        return _envelope(value) is not None or any(holds_secrets(v) for v in value.values())
    if isinstance(value, list):
        return any(holds_secrets(v) for v in value)
    return False


def open_with(secrets: Secrets | None, value: Any) -> Any:
    """What user code is given: ``value`` with its envelopes opened (itself when it
    holds none); without a key, a value holding one fails its call saying why."""
    if not holds_secrets(value):
        return value
    if secrets is None:
        raise SecretError("the input holds a secret but this node has no key to open it: "
                          "set [secrets] key (the one the API nodes use)")
    return secrets.open(value)
