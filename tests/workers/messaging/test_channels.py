"""Channels from Python: a paused channel holds its messages as waiting works (not
failed ones, holding no worker slot) and resuming releases them; purging cancels what
is queued; a deleted channel takes no more; channels created with senders of the
config, refused with errors naming the field; a channel's rate limit spaces its
messages; an SMTP sender that refuses hands over to the next."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine import Runtime
from engine.store import SqlStore
from workers.actions.messaging import ChannelError, Channels, messaging_app, parse, send_message

from .conftest import HELD, ended, held, nodes
from .servers import MailServer, ProviderServer
from .test_delivery import config


async def test_a_paused_channel_holds_its_messages_and_resuming_sends_them(
        providers: ProviderServer, store_url: str) -> None:
    cfg = parse(config(http=providers))
    app = messaging_app(config=cfg)
    async with SqlStore.open(store_url) as store:
        channels = Channels(store, cfg)
        paused = await channels.pause("sms", by="ops")
        assert (paused.state, paused.changed_by) == ("paused", "ops")
        # one worker slot: held messages take none, the other channels' go on
        async with nodes(app, store, concurrency=1), Runtime(app.sagas, store=store) as rt:
            ids = [await send_message(rt, "sms", "code", "+441632960961", {"code": i})
                   for i in range(3)]
            await held(store, ids)
            queued = await channels.queued("sms")
            assert {m["work_id"] for m in queued} == set(ids)
            for work_id in ids:
                runs = {r["path"]: r["status"] for r in await store.stage_runs(work_id)}
                assert runs[HELD] == "running" and "deliver" not in runs, runs
                # a held message is a waiting work, not a running (nor a failed) one
                assert (await store.work(work_id) or {})["status"] == "waiting"
            chat = await send_message(rt, "chat", "code", "-100123", {"code": 5})
            assert (await ended(store, [chat]))[chat]["status"] == "completed"
            assert providers.state.sms == []  # nothing sent while paused
            channel, told = await channels.resume("sms", by="ops")
            assert (channel.state, told) == ("active", 3)
            rows = await ended(store, ids)
    assert {r["status"] for r in rows.values()} == {"completed"}
    assert sorted(m["body"] for m in providers.state.sms) == [
        f"Your code: {i}" for i in range(3)]


async def test_purging_cancels_what_is_queued_and_a_deleted_channel_takes_no_more(
        providers: ProviderServer, tmp_path: Any) -> None:
    cfg = parse(config(http=providers))
    app = messaging_app(config=cfg)
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        channels = Channels(store, cfg)
        await channels.pause("chat")
        async with nodes(app, store), Runtime(app.sagas, store=store) as rt:
            ids = [await send_message(rt, "chat", "code", "-100123", {"code": i})
                   for i in range(3)]
            await held(store, ids)
            assert await channels.purge("chat", by="ops") == 3
            rows = await ended(store, ids)
            assert {r["status"] for r in rows.values()} == {"cancelled"}
            assert await channels.queued("chat") == []
            # the channel stays paused; resumed, it sends the next ones
            await channels.resume("chat")
            sent = await send_message(rt, "chat", "code", "-100123", {"code": 9})
            assert (await ended(store, [sent]))[sent]["status"] == "completed"
            # deleted: gone from the list, and a message for it fails naming it
            await channels.delete("chat", by="ops")
            assert "chat" not in [c.name for c in await channels.list()]
            late = await send_message(rt, "chat", "code", "-100123", {"code": 10})
            row = (await ended(store, [late]))[late]
        assert row["status"] == "failed"
        assert "channel 'chat' was deleted" in json.loads(row["error"])["message"]
        # a declared channel deleted stays deleted (the config does not bring it back)
        assert (await Channels(store, cfg).find("chat")).state == "deleted"  # type: ignore[union-attr]
    assert [m["text"] for m in providers.state.chats] == ["Your code: 9"]


async def test_channels_are_created_with_the_configs_senders_and_refused_naming_the_field(
        providers: ProviderServer, mail_server: MailServer, tmp_path: Any) -> None:
    cfg = parse(config(mail_server, providers))
    app = messaging_app(config=cfg)
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        channels = Channels(store, cfg)
        made = await channels.create("alerts", "sms", ["sms2", "sms0"], by="ops")
        assert (made.kind, made.senders, made.declared) == ("sms", ("sms2", "sms0"), False)
        for args, field, text in [
            (("alerts", "sms", ["sms1"]), "name", "exists already"),
            (("bad name!", "sms", ["sms1"]), "name", "must be 1 to 64"),
            (("x", "fax", ["sms1"]), "kind", "expected one of email, sms, chat"),
            (("x", "sms", ["nope"]), "senders", "unknown sender 'nope'"),
            (("x", "sms", ["mail0"]), "senders", "mail0' is a smtp sender"),
            (("x", "sms", []), "senders", "one or more sender names"),
        ]:
            with pytest.raises(ChannelError) as refused:
                await channels.create(*args)  # type: ignore[arg-type]
            assert refused.value.field == field and text in str(refused.value), refused.value
        with pytest.raises(ChannelError, match="channel 'nope' does not exist"):
            await channels.pause("nope")
        assert [c.name for c in await channels.list()] == ["alerts", "chat", "email", "sms"]
        async with nodes(app, store), Runtime(app.sagas, store=store) as rt:
            ids = [await send_message(rt, "alerts", "code", "+441632960961", {"code": i})
                   for i in range(4)]
            rows = await ended(store, ids)
    assert sorted(json.loads(r["output"])["sender"] for r in rows.values()) == [
        "sms0", "sms0", "sms2", "sms2"]


async def test_a_channels_rate_limit_spaces_its_messages(
        providers: ProviderServer, tmp_path: Any) -> None:
    section = config(http=providers)
    section["channels"]["sms"].update(rate=10.0, burst=1)
    app = messaging_app(config=parse(section))
    assert set(app.rate_limits) == {"messaging:sms"}
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        async with Runtime(app.sagas, store=store) as rt:
            ids = [await send_message(rt, "sms", "code", "+441632960961", {"code": i})
                   for i in range(5)]
        async with nodes(app, store):
            rows = await ended(store, ids)
    assert {r["status"] for r in rows.values()} == {"completed"}
    times = sorted(m["at"] for m in providers.state.sms)
    # one token every 0.1 s after the first: four gaps of 0.1 s at least (some slack
    # for the bucket's clock)
    assert times[-1] - times[0] >= 0.35, times


async def test_an_smtp_sender_that_refuses_hands_over_and_a_permanent_refusal_is_final(
        mail_server: MailServer, tmp_path: Any) -> None:
    mail_server.refuse["sender1@example.com"] = "451 4.3.0 try again later"
    app = messaging_app(config=parse(config(mail_server, attempts=2)))
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        async with nodes(app, store), Runtime(app.sagas, store=store) as rt:
            ids = [await send_message(rt, "email", "welcome", f"u{i}@example.com",
                                      {"name": "U", "code": i}) for i in range(3)]
            rows = await ended(store, ids)
            assert {r["status"] for r in rows.values()} == {"completed"}
            assert sorted(m.mail_from for m in mail_server.mails) == [
                "sender0@example.com", "sender2@example.com", "sender2@example.com"]
            # every sender refusing for good: not retried, a failed work
            for i in range(3):
                mail_server.refuse[f"sender{i}@example.com"] = "550 5.7.1 relaying denied"
            last = await send_message(rt, "email", "welcome", "ada@example.com",
                                      {"name": "Ada", "code": 1})
            row = (await ended(store, [last]))[last]
            runs = {r["path"]: r for r in await store.stage_runs(last)}
    assert row["status"] == "failed" and runs["deliver"]["attempts"] == 1
    assert "550" in json.loads(row["error"])["message"]


async def test_an_smtp_sender_keeps_its_connection_for_the_messages_waiting(
        mail_server: MailServer, tmp_path: Any) -> None:
    section = config(mail_server)
    section["channels"]["email"]["senders"] = ["mail0"]
    app = messaging_app(config=parse(section))
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        async with Runtime(app.sagas, store=store) as rt:
            ids = [await send_message(rt, "email", "welcome", f"u{i}@example.com",
                                      {"name": "U", "code": i}) for i in range(8)]
        async with nodes(app, store, concurrency=8):
            rows = await ended(store, ids)
    assert {r["status"] for r in rows.values()} == {"completed"}
    assert sorted(m.to[0] for m in mail_server.mails) == sorted(
        f"u{i}@example.com" for i in range(8))
    # one connection at a time (connections = 1), handed from message to message
    assert len({m.peer for m in mail_server.mails}) < 8
