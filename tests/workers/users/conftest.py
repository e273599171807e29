"""The users pack's fixtures: the messaging pack's real SMTP server and SMS provider on
loopback, a store on a SQLite file, the pack's worker node and a runtime on it, and
helpers reading the token or code a mail or SMS carried."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from engine import Runtime
from engine.secrets import Secrets
from engine.store import SqlStore
from tests.workers.messaging.servers import MailServer, ProviderServer
from workers.actions.messaging import MessagingPack
from workers.actions.messaging import parse as messaging_parse
from workers.actions.users import UsersPack, parse, users_app

KEY_HEX = "7f" * 32
KEY = Secrets(bytes.fromhex(KEY_HEX))
# argon2 made cheap for the tests that do not measure it (production: the defaults)
CHEAP = {"hash_time_cost": 1, "hash_memory_cost": 1024, "hash_parallelism": 1}
TEMPLATES = {
    "users_confirm": {"subject": "Confirm your account",
                      "text": "Confirm {{ email }} with {{ link }} (token {{ token }})"},
    "users_reset": {"subject": "Reset your password",
                    "text": "Reset with {{ link }} (token {{ token }})"},
    "users_reset_sms": {"text": "Your reset code: {{ code }}"},
    "users_phone": {"text": "Your code: {{ code }}"},
}


@pytest.fixture
def mail_server() -> Iterator[MailServer]:
    server = MailServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def providers() -> Iterator[ProviderServer]:
    server = ProviderServer().start()
    try:
        yield server
    finally:
        server.stop()


def messaging_section(mail: MailServer, sms: ProviderServer) -> dict[str, Any]:
    sms.state.accounts["AC1"] = "secret1"
    return {"attempts": 1, "backoff": 0.01, "templates": TEMPLATES,
            "senders": {"mail": {"kind": "smtp", "host": "127.0.0.1", "port": mail.port,
                                 "from": "noreply@example.com", "linger": 0},
                        "sms1": {"kind": "twilio", "url": sms.url, "account_sid": "AC1",
                                 "auth_token": "secret1", "from": "+15550000001"}},
            "channels": {"email": {"kind": "email", "senders": ["mail"]},
                         "sms": {"kind": "sms", "senders": ["sms1"]}}}


@dataclass
class Env:
    store: SqlStore
    runtime: Runtime
    pack: UsersPack
    mail: MailServer
    sms: ProviderServer


@asynccontextmanager
async def running(url: str, mail: MailServer, sms: ProviderServer,
                  **users: Any) -> AsyncIterator[Env]:
    """The pack's node (and a runtime) on the store at ``url`` with ``[users]``
    settings ``users`` (cheap argon2 unless given)."""
    pack = UsersPack(parse({**CHEAP, **users}),
                     MessagingPack(messaging_parse(messaging_section(mail, sms))))
    app = users_app(pack=pack)
    async with SqlStore.open(url) as store:
        async with nodes_with_key(app, store), \
                Runtime(app.sagas, store=store, secrets=KEY) as runtime:
            yield Env(store=store, runtime=runtime, pack=pack, mail=mail, sms=sms)


@asynccontextmanager
async def nodes_with_key(app: Any, store: SqlStore) -> AsyncIterator[None]:
    from workers.node import WorkerSpec

    node = app.node(store, [WorkerSpec(name="main", concurrency=10)], node_id="users0",
                    poll_interval=0.05, lease_ttl=5.0, park_after=0.2, secrets=KEY)
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        try:
            yield
        finally:
            await node.drain(2.0)


_TOKEN = re.compile(r"token (ss1\.[A-Za-z0-9_.-]+)\)")
_CODE = re.compile(r"code: ([0-9]{6})")


async def mailed_token(mail: MailServer, to: str, count: int = 1,
                       seconds: float = 20.0) -> str:
    """The token of the ``count``-th mail to ``to`` (a bounded wait for it)."""
    with anyio.fail_after(seconds):
        while True:
            with mail.lock:
                mine = [m for m in mail.mails if to in m.to]
            if len(mine) >= count:
                body = mine[count - 1].message.get_body(("plain",))
                assert body is not None
                found = _TOKEN.search(body.get_content())
                assert found is not None, body.get_content()
                return found.group(1)
            await anyio.sleep(0.05)


async def texted_code(sms: ProviderServer, to: str, count: int = 1,
                      seconds: float = 20.0) -> str:
    with anyio.fail_after(seconds):
        while True:
            with sms.state.lock:
                mine = [m for m in sms.state.sms if m["to"] == to]
            if len(mine) >= count:
                found = _CODE.search(mine[count - 1]["body"])
                assert found is not None, mine[count - 1]["body"]
                return found.group(1)
            await anyio.sleep(0.05)


async def status_of(store: SqlStore, work_id: str, wanted: tuple[str, ...],
                    seconds: float = 20.0, stage: str | None = None) -> dict[str, Any]:
    """The work's row once its status is one of ``wanted`` (and it is at ``stage``)."""
    row: dict[str, Any] = {}
    with anyio.fail_after(seconds):
        while True:
            row = dict(await store.work(work_id) or {})
            if row.get("status") in wanted and (stage is None or
                                                row.get("current_stage") == stage):
                return row
            await anyio.sleep(0.05)


__all__ = ["KEY", "KEY_HEX", "Env", "mailed_token", "messaging_section",
           "running", "status_of", "texted_code"]
