"""The backups pack's failure hook sends a message through the messaging pack: a
backup that fails is told on a chat channel, once however often the hook is called."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine import Runtime
from engine.store import SqlStore
from workers.actions.backups import backups_app
from workers.actions.backups import parse as backups_config
from workers.actions.messaging import messaging_app, notifier, parse
from workers.gate import NodeGate

from .conftest import ended, nodes
from .servers import ProviderServer
from .test_delivery import config


async def test_a_failed_backup_is_told_on_a_chat_channel_once(
        providers: ProviderServer, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    section = config(http=providers)
    section["templates"]["backup_failed"] = {
        "text": "Backup {{ job }} failed at {{ stage }}: {{ error }}"}
    cfg = parse(section)
    hook = notifier(url, cfg, channel="chat", template="backup_failed", to="-100123")
    backups = backups_app(config=backups_config({
        "sources": {"db": {"kind": "sqlite", "path": str(tmp_path / "missing.sqlite")}},
        "targets": {"here": {"kind": "directory", "path": str(tmp_path / "backups")}},
        "jobs": {"nightly": {"source": "db", "target": "here"}}}), notify=hook)
    told: list[Any] = []
    async with SqlStore.open(url) as store:
        async with nodes(messaging_app(config=cfg), store):
            gate = NodeGate(store, holder="test", lock_ttl=5.0)
            async with Runtime(backups.sagas, store=store, gate=gate) as rt:
                done = await rt.run("backups.backup", {"job": "nightly"})
            assert done.status == "failed"
            # the hook again for the same failure (it is called at least once): one message
            failure = {"key": done.work_id, "job": "nightly", "stage": "transfer",
                       "error": "again"}
            first = await hook(failure)
            assert await hook(failure) == first
            rows = await ended(store, [first])
            told = [m["text"] for m in providers.state.chats]
    assert rows[first]["status"] == "completed"
    assert len(told) == 1, told
    assert told[0].startswith("Backup nightly failed at transfer: source 'db': no SQLite "
                              "database at")
