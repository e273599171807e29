"""Secrets on a real SQLite store: the fields a schema marks secret (a saga's input, a
stage's output) are sealed before anything is recorded, so no byte of the store holds
them in the clear, while stage code is given them opened; a runtime without a key
refuses such a saga, a node with another key fails the call naming the key it needs,
and a damaged envelope is refused, never opened wrong."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import pytest

from engine import Runtime
from engine.secrets import REDACTED, SecretError, Secrets, open_with, redact, secret_paths
from engine.store import SqlStore
from tests.graphql_api.secret_app import CARD, SCHEMA, TOKEN, sagas
from workers.node import WorkerNode, WorkerSpec

KEY = Secrets(bytes(range(32)))


def _bytes_of(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())


async def test_secrets_are_sealed_in_the_store_and_opened_for_stage_code(
        tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    async with SqlStore.open(url) as store, \
            Runtime(sagas(), store=store, secrets=KEY) as runtime:
        work_id = await runtime.start("pay", {"card": CARD, "amount": 5})
        row = await runtime.wait(work_id)
        assert row.status == "completed", row
        assert row.output == "charged 4242"  # the stages got the card and token opened
        stored = await store.read(work_id)
        created = stored[0].event.payload["input"]
        assert created["amount"] == 5 and created["card"].keys() == {"$secret"}
        assert created["card"]["$secret"].startswith(f"v1.{KEY.key_id}.")
        assert KEY.open(created) == {"card": CARD, "amount": 5}
        outputs = [r.event.payload["output"] for r in stored
                   if r.event.type == "stage.transaction.completed"]
        assert redact(outputs[0]) == {"token": REDACTED, "last4": "4242"}
    raw = _bytes_of(tmp_path)
    assert CARD.encode() not in raw and TOKEN.encode() not in raw
    assert b"4242" in raw  # what is not secret is stored as it is


async def test_no_key_another_key_and_a_damaged_envelope_are_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    async with SqlStore.open(url) as store, Runtime(sagas(), store=store) as runtime:
        with pytest.raises(ValueError) as refused:
            await runtime.start("pay", {"card": CARD, "amount": 5})
        assert "saga 'pay''s input schema marks secret fields (card): they are stored " \
               "encrypted, and this runtime has no key ([secrets] key)" in str(refused.value)
    other = Secrets(os.urandom(32))
    sealed = KEY.seal({"card": CARD, "amount": 1}, SCHEMA)
    with pytest.raises(SecretError, match=f"sealed with key {KEY.key_id}, not this node's "
                                          f"{other.key_id}"):
        other.open(sealed)
    with pytest.raises(SecretError, match="this node has no key to open it"):
        open_with(None, sealed)
    damaged = {"card": {"$secret": sealed["card"]["$secret"][:-4] + "AAAA"}}
    with pytest.raises(SecretError, match="is damaged: it does not open"):
        KEY.open(damaged)
    # a node with another key fails the stage's call, saying which key it needs
    async with SqlStore.open(url) as store, \
            Runtime(sagas(), store=store, secrets=KEY) as runtime:
        work_id = await runtime.start("pay", {"card": CARD, "amount": 5}, run=False)
    async with SqlStore.open(url) as store, anyio.create_task_group() as tg:
        node = WorkerNode(store, sagas(), [WorkerSpec("main", 2)], node_id="n1",
                          poll_interval=0.05, secrets=other)
        await tg.start(node.run)
        for _ in range(400):  # bounded: 20 s
            row = await store.work(work_id)
            if row is not None and row["status"] == "failed":
                break
            await anyio.sleep(0.05)
        assert row is not None and row["status"] == "failed", row
        error = json.loads(row["error"])
        assert error["type"] == "engine.secrets.SecretError", error
        assert f"sealed with key {KEY.key_id}, not this node's {other.key_id}" in \
            error["message"]
        tg.cancel_scope.cancel()


def test_secret_paths_and_keys_from_the_config(tmp_path: Path) -> None:
    assert secret_paths({"type": "object", "properties": {
        "a": {"secret": True}, "b": {"type": "array", "items": {
            "properties": {"c": {"secret": True}}}}}}) == ["a", "b[].c"]
    sealed = KEY.seal({"b": [{"c": 1, "d": 2}, {"c": 3}]}, {"properties": {"b": {
        "items": {"properties": {"c": {"secret": True}}}}}})
    assert redact(sealed) == {"b": [{"c": REDACTED, "d": 2}, {"c": REDACTED}]}
    assert KEY.open(sealed) == {"b": [{"c": 1, "d": 2}, {"c": 3}]}
    assert Secrets.from_config({"key": "", "key_file": ""}) is None
    file = tmp_path / "key"
    file.write_text(bytes(range(32)).hex() + "\n")
    assert Secrets.from_config({"key_file": str(file)}).key_id == KEY.key_id  # type: ignore[union-attr]
    for section, message in [({"key": "zz"}, "secrets.key: expected 64 hex digits"),
                             ({"key": "ab" * 16}, "secrets.key: a secrets key is 32 bytes"),
                             ({"key_file": str(tmp_path / "none")},
                              "secrets.key_file"),
                             ({"key": "ab" * 32, "key_file": str(file)}, "not both")]:
        with pytest.raises(ValueError, match=message):
            Secrets.from_config(section)
