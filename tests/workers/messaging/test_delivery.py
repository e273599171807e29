"""Messages delivered through real protocol servers: email to an SMTP server (text and
HTML from templates), SMS to an HTTP API in Twilio's shape, chat to a bot API in
Telegram's; the senders of a channel used in turn, counted exactly, across two nodes;
failover to the next sender; a message whose senders all fail is a failed work that
is sent again once they are back; bad input fails at once with nothing sent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from engine import Runtime
from engine.store import SqlStore
from workers.actions.messaging import Channels, messaging_app, parse, retry_message, send_message

from .conftest import ended, nodes
from .servers import MailServer, ProviderServer

ROOT = Path(__file__).resolve().parents[3]

TEMPLATES = {"welcome": {"subject": "Welcome, {{ name }}",
                         "text": "Hello {{ name }}, your code is {{ code }}.",
                         "html": "<p>Hello <b>{{ name }}</b></p>"},
             "code": {"text": "Your code: {{ code }}"}}


def config(mail: MailServer | None = None, http: ProviderServer | None = None,
           **section: Any) -> dict[str, Any]:
    senders: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    if mail is not None:
        for i in range(3):
            senders[f"mail{i}"] = {"kind": "smtp", "port": mail.port,
                                   "from": f"sender{i}@example.com"}
        channels["email"] = {"kind": "email", "senders": ["mail0", "mail1", "mail2"]}
    if http is not None:
        for i in range(3):
            sid, token = f"AC{i}", f"secret{i}"
            http.state.accounts[sid] = token
            senders[f"sms{i}"] = {"kind": "twilio", "url": http.url, "account_sid": sid,
                                  "auth_token": token, "from": f"+1555000000{i}"}
            http.state.bots.add(f"{i}:bot")
            senders[f"bot{i}"] = {"kind": "telegram", "url": http.url, "token": f"{i}:bot"}
        channels["sms"] = {"kind": "sms", "senders": ["sms0", "sms1", "sms2"]}
        channels["chat"] = {"kind": "chat", "senders": ["bot0"]}
    return {"senders": senders, "channels": channels, "templates": TEMPLATES,
            "backoff": 0.01, "max_backoff": 0.05, **section}


async def test_an_email_from_its_template_reaches_the_smtp_server(
        mail_server: MailServer, tmp_path: Any) -> None:
    app = messaging_app(config=parse(config(mail_server)))
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        async with nodes(app, store), Runtime(app.sagas, store=store) as rt:
            work_id = await send_message(rt, "email", "welcome", "ada@example.com",
                                         {"name": "<Ada>", "code": 1234})
            row = (await ended(store, [work_id]))[work_id]
    assert row["status"] == "completed", row
    output = json.loads(row["output"])
    [mail] = mail_server.mails
    assert mail.to == ["ada@example.com"]
    assert mail.mail_from == "sender0@example.com" and output["sender"] == "mail0"
    assert mail.message["Subject"] == "Welcome, <Ada>"
    assert mail.message["Message-ID"] == f"<{work_id}@example.com>" == output["provider_id"]
    text = mail.message.get_body(("plain",))
    html = mail.message.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content().strip() == "Hello <Ada>, your code is 1234."
    assert html.get_content().strip() == "<p>Hello <b>&lt;Ada&gt;</b></p>"  # autoescaped


async def test_a_sender_with_a_name_and_text_beyond_ascii_arrive_as_written(
        mail_server: MailServer, tmp_path: Any) -> None:
    section = config(mail_server)
    section["senders"]["mail0"]["from"] = "Läden Grün <laden@example.com>"
    app = messaging_app(config=parse(section))
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        async with nodes(app, store), Runtime(app.sagas, store=store) as rt:
            long = "straße " * 30  # a body line beyond 76 characters, a subject folded
            work_id = await send_message(rt, "email", "welcome", "ada@example.com",
                                         {"name": "Zoë " + long, "code": "ünf"})
            row = (await ended(store, [work_id]))[work_id]
    assert row["status"] == "completed", row
    [mail] = mail_server.mails
    assert mail.mail_from == "laden@example.com"
    assert str(mail.message["From"]) == "Läden Grün <laden@example.com>"
    assert str(mail.message["Subject"]) == f"Welcome, Zoë {long}".strip()
    text = mail.message.get_body(("plain",))
    assert text is not None
    assert text.get_content().strip() == f"Hello Zoë {long}, your code is ünf."


def toml(section: dict[str, Any]) -> str:
    """A [messaging] section as a config file holds it."""
    lines = ["[messaging]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in section.items() if not isinstance(v, dict)]
    for part in ("senders", "channels", "templates"):
        for name, table in section[part].items():
            lines.append(f"[messaging.{part}.{name}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


class WorkerProcess:
    """``stepsaga worker --app workers.actions.messaging:app --config ...``."""

    def __init__(self, url: str, config: Path, name: str) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, "-m", "graphql_api.cli", "worker", "--store", url,
             "--config", str(config), "--app", "workers.actions.messaging:app",
             "--worker", "main=2", "--drain-deadline", "5", "--node-id", name],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def ready(self) -> None:
        assert self.process.stdout is not None
        if not self.process.stdout.readline():  # one line once registered
            raise AssertionError(f"{self.name} died: {self.process.communicate()[1]}")

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.communicate(timeout=60)[1]


async def test_three_senders_take_the_messages_in_turn_across_two_worker_processes(
        providers: ProviderServer, store_url: str, tmp_path: Path) -> None:
    section = config(http=providers)
    cfg = parse(section)
    file = tmp_path / "stepsaga.toml"
    file.write_text(toml(section))
    app = messaging_app(config=cfg)
    count = 30
    async with SqlStore.open(store_url) as store:  # the schema, before the nodes start
        nodes_ = [WorkerProcess(store_url, file, f"node{i}") for i in range(2)]
        try:
            for node in nodes_:
                node.ready()
            async with Runtime(app.sagas, store=store) as rt:
                ids = [await send_message(rt, "sms", "code", "+441632960961", {"code": i})
                       for i in range(count)]
            rows = await ended(store, ids, 60)
            channel = await Channels(store, cfg).get("sms")
            events = {w: await store.read(w) for w in ids}
        finally:
            errors = [node.stop() for node in nodes_]
    assert {r["status"] for r in rows.values()} == {"completed"}, errors
    # one message to each sender after the other: exactly a third each
    assert Counter(m["account_sid"] for m in providers.state.sms) == {
        "AC0": count // 3, "AC1": count // 3, "AC2": count // 3}
    turns = sorted(json.loads(r["output"])["turn"] for r in rows.values())
    assert turns == list(range(1, count + 1)) and channel.turns == count
    assert sorted(m["body"] for m in providers.state.sms) == sorted(
        f"Your code: {i}" for i in range(count))
    # both processes delivered some
    delivered_by = {e.worker.split("/")[0] for stream in events.values() for e in stream
                    if e.event.path == "deliver" and e.worker}
    assert delivered_by == {"node0", "node1"}


async def test_a_failing_sender_hands_its_messages_to_the_next(
        providers: ProviderServer, tmp_path: Any) -> None:
    providers.state.fail["AC1"] = 500  # the second sender's provider is down
    app = messaging_app(config=parse(config(http=providers)))
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        async with nodes(app, store), Runtime(app.sagas, store=store) as rt:
            ids = [await send_message(rt, "sms", "code", "+441632960961", {"code": i})
                   for i in range(6)]
            rows = await ended(store, ids)
    assert {r["status"] for r in rows.values()} == {"completed"}
    outputs = [json.loads(r["output"]) for r in rows.values()]
    # the turns of sms1 went to sms2, saying why; nothing was lost or sent twice
    assert Counter(o["sender"] for o in outputs) == {"sms0": 2, "sms2": 4}
    over = [o for o in outputs if o["failed_over"]]
    assert len(over) == 2 and all(o["failed_over"][0]["sender"] == "sms1" and
                                  "500" in o["failed_over"][0]["error"] for o in over)
    assert Counter(m["account_sid"] for m in providers.state.sms) == {"AC0": 2, "AC2": 4}


async def test_a_message_every_sender_refuses_fails_and_is_sent_again_later(
        providers: ProviderServer, tmp_path: Any) -> None:
    providers.state.fail["0:bot"] = 503
    app = messaging_app(config=parse(config(http=providers, attempts=3)))
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        async with nodes(app, store), Runtime(app.sagas, store=store) as rt:
            first = await send_message(rt, "chat", "code", "-100123", {"code": 7})
            row = (await ended(store, [first]))[first]
            runs = {r["path"]: r for r in await store.stage_runs(first)}
            assert row["status"] == "failed"
            assert runs["deliver"]["attempts"] == 3  # retried with backoff, then given up
            error = json.loads(row["error"])
            assert "every sender failed" in error["message"] and "503" in error["message"]
            assert providers.state.chats == []
            providers.state.fail.clear()  # the provider is back
            again = await retry_message(rt, first)
            row = (await ended(store, [again]))[again]
    assert row["status"] == "completed"
    assert [(m["chat_id"], m["text"]) for m in providers.state.chats] == [
        ("-100123", "Your code: 7")]


@pytest.mark.parametrize(("message", "expected"), [
    (("email", "welcome", "not-an-address", {"name": "A", "code": 1}),
     "to: expected an e-mail address"),
    (("sms", "code", "0044 1632", {"code": 1}), "to: expected a phone number in E.164"),
    (("email", "welcome", "ada@example.com", {"name": "Ada"}), "'code' is undefined"),
    (("email", "nope", "ada@example.com", {}), "unknown template 'nope'"),
    (("fax", "code", "ada@example.com", {}), "channel 'fax' does not exist"),
])
async def test_bad_input_fails_at_once_and_sends_nothing(
        mail_server: MailServer, providers: ProviderServer, tmp_path: Any,
        message: tuple[str, str, str, dict[str, Any]], expected: str) -> None:
    app = messaging_app(config=parse(config(mail_server, providers)))
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        async with nodes(app, store), Runtime(app.sagas, store=store) as rt:
            work_id = await send_message(rt, *message)
            row = (await ended(store, [work_id]))[work_id]
            runs = {r["path"]: r for r in await store.stage_runs(work_id)}
    assert row["status"] == "failed"
    assert expected in json.loads(row["error"])["message"]
    assert runs["check"]["attempts"] == 1 and "deliver" not in runs  # never retried
    assert mail_server.mails == [] and providers.state.sms == []


async def test_another_saga_sends_through_the_pack_and_a_repeat_sends_once(
        providers: ProviderServer, tmp_path: Any) -> None:
    from engine import Saga, SagaRef, Stage
    from workers.actions.messaging import message
    from workers.node import WorkerApp

    async def confirm(ctx: Any, order: dict[str, Any]) -> dict[str, Any]:
        return message("sms", "code", order["phone"], {"code": order["number"]})

    pack = messaging_app(config=parse(config(http=providers)))
    orders = Saga(name="orders.confirm", stages=[
        Stage(name="compose", transaction=confirm),
        SagaRef(name="notify", saga="messaging.send")])
    app = WorkerApp.combine([pack, WorkerApp(sagas=[orders])])
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        async with nodes(app, store), Runtime(app.sagas, store=store) as rt:
            work_id = await rt.start("orders.confirm", {"phone": "+441632960961",
                                                        "number": 42}, run=False)
            row = (await ended(store, [work_id]))[work_id]
            # send_message with a work id derived from the caller's key: a repeat (after
            # a crash) finds the first message instead of sending a second
            first = await send_message(rt, "sms", "code", "+441632960961", {"code": 1},
                                       work_id="msg-order-42")
            again = await send_message(rt, "sms", "code", "+441632960961", {"code": 1},
                                       work_id="msg-order-42")
            assert first == again == "msg-order-42"
            await ended(store, [first])
    assert row["status"] == "completed", row
    assert json.loads(row["output"])["sender"] == "sms0"
    assert [m["body"] for m in providers.state.sms] == ["Your code: 42", "Your code: 1"]


async def test_a_message_queued_under_one_config_is_sent_by_a_node_of_another(
        providers: ProviderServer, tmp_path: Any) -> None:
    before = messaging_app(config=parse(config(http=providers, attempts=2)))
    after = messaging_app(config=parse(config(http=providers, attempts=5, backoff=0.02)))
    assert before.sagas[0] is not after.sagas[0]
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        async with Runtime(before.sagas, store=store) as rt:
            work_id = await send_message(rt, "sms", "code", "+441632960961", {"code": 3})
        async with nodes(after, store):
            row = (await ended(store, [work_id]))[work_id]
    assert row["status"] == "completed"
    assert [m["body"] for m in providers.state.sms] == ["Your code: 3"]
