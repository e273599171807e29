"""The pack's fields through a real ``stepsaga serve --app workers.actions.messaging:app
--config ...`` (its worker node delivering to the loopback servers): channels listed,
created (refused with typed errors naming the field), paused with their messages held,
resumed, purged and deleted; messages sent, refused at once when bad, and a failed one
sent again; a reader may list but not steer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.store import SqlStore
from tests.graphql_api.test_extensions import cli, codes, post
from tests.graphql_api.wire import Served

from .conftest import HELD
from .servers import ProviderServer

CHANNEL = "{ name kind senders state turns declared queued changedBy }"
RESULT = "... on MessagingChannel " + CHANNEL + \
    " ... on InvalidInput { message field } ... on Conflict { message field }" \
    " ... on NotFound { message field }"
CHANGE = "... on ChannelChanged { messages channel " + CHANNEL + " }" \
    " ... on NotFound { message field }"
SEND = "... on MessageQueued { workId } ... on InvalidInput { message field }" \
    " ... on NotFound { message field } ... on WrongState { message status }"


def toml(providers: ProviderServer) -> str:
    lines = ["[messaging]", "attempts = 1", "backoff = 0.01",
             "[messaging.templates.code]", 'text = "Your code: {{ code }}"']
    for i in range(2):
        providers.state.accounts[f"AC{i}"] = f"secret{i}"
        lines += [f"[messaging.senders.sms{i}]", 'kind = "twilio"', f'url = "{providers.url}"',
                  f'account_sid = "AC{i}"', f'auth_token = "secret{i}"',
                  f'from = "+1555000000{i}"']
    lines += ["[messaging.channels.sms]", 'kind = "sms"', 'senders = ["sms0", "sms1"]']
    return "\n".join(lines) + "\n"


@pytest.fixture
def served(tmp_path: Path, providers: ProviderServer) -> Iterator[dict[str, Any]]:
    store = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    config = tmp_path / "stepsaga.toml"
    config.write_text(toml(providers))
    server = Served("serve", "--store", store, "--port", "0", "--config", str(config),
                    "--app", "workers.actions.messaging:app")
    try:
        ready = server.ready()
        ready["store"] = store
        yield ready
    finally:
        code, _, err = server.stop()
        assert code == 0, err


async def wait_rows(url: str, ids: list[str], check: Any, seconds: float = 30.0
                    ) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async with SqlStore.open(url) as store:
        for _ in range(int(seconds / 0.1)):
            rows = [await store.work(w) or {} for w in ids]
            if all(check(r) for r in rows):
                return rows
            await anyio.sleep(0.1)
    raise AssertionError(f"not so after {seconds} s: "
                         f"{[(r.get('status'), r.get('current_stage')) for r in rows]}")


def ended(row: dict[str, Any]) -> bool:
    return row.get("status") in ("completed", "failed", "cancelled")


async def test_channels_and_messages_through_the_api(
        served: dict[str, Any], providers: ProviderServer) -> None:
    url, admin, store = served["url"], served["token"], served["store"]

    def ask(query: str, **variables: Any) -> Any:
        answer = post(url, query, admin, **variables)
        assert "errors" not in answer, answer
        return answer["data"]

    listed = ask("{ messagingChannels " + CHANNEL + " }")["messagingChannels"]
    assert listed == [{"name": "sms", "kind": "sms", "senders": ["sms0", "sms1"],
                       "state": "active", "turns": 0, "declared": True, "queued": 0,
                       "changedBy": "config"}]
    create = ("mutation($n: String!, $k: String!, $s: [String!]!) { "
              "createMessagingChannel(name: $n, kind: $k, senders: $s) { " + RESULT + " } }")
    made = ask(create, n="alerts", k="sms", s=["sms1", "sms0"])["createMessagingChannel"]
    assert (made["name"], made["senders"], made["declared"]) == ("alerts", ["sms1", "sms0"],
                                                                 False)
    again = ask(create, n="alerts", k="sms", s=["sms0"])["createMessagingChannel"]
    assert again["field"] == "name" and "exists already" in again["message"]
    bad = ask(create, n="x", k="sms", s=["mail"])["createMessagingChannel"]
    assert bad["field"] == "senders" and "unknown sender 'mail'" in bad["message"]

    # paused: the messages are held, nothing is sent; resumed: they go
    paused = ask('mutation { pauseMessagingChannel(name: "alerts", reason: "test") { '
                 + RESULT + " } }")["pauseMessagingChannel"]
    assert paused["state"] == "paused"
    send = ("mutation($c: String!, $t: String!, $to: String!, $x: JSON) { sendMessage("
            "channel: $c, template: $t, to: $to, context: $x) { " + SEND + " } }")
    ids = [ask(send, c="alerts", t="code", to="+441632960961", x={"code": i})
           ["sendMessage"]["workId"] for i in range(2)]
    await wait_rows(store, ids, lambda r: r.get("current_stage") == HELD)
    one = ask('{ messagingChannel(name: "alerts") ' + CHANNEL + " }")["messagingChannel"]
    assert (one["state"], one["queued"]) == ("paused", 2) and providers.state.sms == []
    resumed = ask('mutation { resumeMessagingChannel(name: "alerts") { ' + CHANGE + " } }")
    assert resumed["resumeMessagingChannel"]["messages"] == 2
    rows = await wait_rows(store, ids, ended)
    assert [r["status"] for r in rows] == ["completed", "completed"]
    assert sorted(m["account_sid"] for m in providers.state.sms) == ["AC0", "AC1"]

    # purged: what is queued is cancelled
    ask('mutation { pauseMessagingChannel(name: "alerts") { ' + RESULT + " } }")
    held = ask(send, c="alerts", t="code", to="+441632960961", x={"code": 9})
    held_id = held["sendMessage"]["workId"]
    await wait_rows(store, [held_id], lambda r: r.get("current_stage") == HELD)
    purged = ask('mutation { purgeMessagingChannel(name: "alerts") { ' + CHANGE + " } }")
    assert purged["purgeMessagingChannel"]["messages"] == 1
    assert (await wait_rows(store, [held_id], ended))[0]["status"] == "cancelled"

    # bad messages are refused at once, naming the field; nothing is queued
    for variables, field, text in [
        ({"c": "alerts", "t": "code", "to": "12345", "x": {"code": 1}}, "to", "E.164"),
        ({"c": "alerts", "t": "code", "to": "+441632960961", "x": {}}, "template",
         "'code' is undefined"),
        ({"c": "alerts", "t": "nope", "to": "+441632960961"}, "template",
         "unknown template 'nope'"),
        ({"c": "fax", "t": "code", "to": "+441632960961"}, "channel",
         "channel 'fax' does not exist"),
    ]:
        refused = ask(send, **variables)["sendMessage"]
        assert refused["field"] == field and text in refused["message"], refused

    # a message every sender refuses fails for good (attempts = 1); sent again, it goes
    ask('mutation { resumeMessagingChannel(name: "alerts") { ' + CHANGE + " } }")
    providers.state.fail.update({"AC0": 503, "AC1": 503})
    failed_id = ask(send, c="alerts", t="code", to="+441632960961", x={"code": 5})[
        "sendMessage"]["workId"]
    [row] = await wait_rows(store, [failed_id], ended)
    assert row["status"] == "failed" and "every sender failed" in row["error"]
    providers.state.fail.clear()
    retry = "mutation($w: String!) { retryMessage(workId: $w) { " + SEND + " } }"
    again_id = ask(retry, w=failed_id)["retryMessage"]["workId"]
    [row] = await wait_rows(store, [again_id], ended)
    assert row["status"] == "completed" and json.loads(row["input"])["context"] == {
        "code": 5}
    assert ask(retry, w=again_id)["retryMessage"]["status"] == "completed"  # WrongState

    # a reader may list the channels, not steer them
    policy = Path(store.split("///", 1)[1]).with_name("p.json")
    policy.write_text(json.dumps([{"subject": "group:readers", "actions": ["read"]}]))
    assert cli("policy", "--store", store, "set", str(policy)).returncode == 0
    made_token = cli("token", "--store", store, "create", "viewer", "--group", "readers")
    viewer = made_token.stdout.strip()
    seen = post(url, "{ messagingChannels { name } }", viewer)["data"]["messagingChannels"]
    assert [c["name"] for c in seen] == ["alerts", "sms"]
    refused = post(url, 'mutation { pauseMessagingChannel(name: "sms") { ' + RESULT + " } }",
                   viewer)
    assert codes(refused) == ["forbidden"]

    # deleted: gone from the list, its name free again
    deleted = ask('mutation { deleteMessagingChannel(name: "alerts") { ' + CHANGE + " } }")
    assert deleted["deleteMessagingChannel"]["channel"]["state"] == "deleted"
    assert [c["name"] for c in ask("{ messagingChannels { name } }")[
        "messagingChannels"]] == ["sms"]
    assert ask(create, n="alerts", k="sms", s=["sms0"])["createMessagingChannel"][
        "state"] == "active"

    # the operators' actions on channels are in the audit log, with the reason given
    log = ask("{ auditLog { entries { action target reason } } }")["auditLog"]["entries"]
    done = [(e["action"], e["target"]) for e in log]
    assert ("pauseMessagingChannel", "alerts") in done
    assert ("purgeMessagingChannel", "alerts") in done
    assert ("deleteMessagingChannel", "alerts") in done
    assert {"action": "pauseMessagingChannel", "target": "alerts", "reason": "test"} in log
