"""Secrets through a real ``stepsaga serve`` with a key in its config file: a work whose
saga's schema marks its card secret is created over HTTP; an administrator and a
principal a policy gives ``secrets`` read it opened, a reader gets ``"[secret]"`` in
its input, its events and over a WebSocket subscription, and the store's file holds
no byte of it in the clear."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
from gql import Client, GraphQLRequest, gql
from gql.transport.websockets import WebsocketsTransport

from engine.secrets import REDACTED

from ..auth import bearer
from .secret_app import CARD, TOKEN
from .test_limits import _cli
from .wire import Served

KEY = "5e" * 32
READ = """query($id: String!) { work(workId: $id) { status input output
  events(first: 20) { type payload cursor } } }"""


def test_secrets_are_shown_to_who_may_read_them_and_redacted_for_others(
        tmp_path: Path) -> None:
    store = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    config = tmp_path / "stepsaga.toml"
    config.write_text(f'[secrets]\nkey = "{KEY}"\n')
    _cli("migrate", "--url", store)
    policies = tmp_path / "p.json"
    policies.write_text(json.dumps([
        {"subject": "group:readers", "actions": ["read"]},
        {"subject": "group:finance", "actions": ["read", "secrets"]}]))
    _cli("policy", "--store", store, "set", str(policies))
    reader = _cli("token", "--store", store, "create", "reader", "--group", "readers")
    finance = _cli("token", "--store", store, "create", "finance", "--group", "finance")
    server = Served("serve", "--store", store, "--port", "0", "--app",
                    "tests.graphql_api.secret_app:sagas", "--config", str(config))
    told = server.ready()
    url, admin = told["url"], told["token"]
    try:
        with httpx.Client(timeout=30) as client:
            made = client.post(url, headers=bearer(admin), json={
                "query": 'mutation($i: JSON) { createWork(saga: "pay", input: $i) { '
                         '__typename ... on WorkCreated { work { workId } } } }',
                "variables": {"i": {"card": CARD, "amount": 3}}}).json()
            work_id = made["data"]["createWork"]["work"]["workId"]

            def read(token: str) -> dict[str, Any]:
                found: dict[str, Any] = client.post(url, headers=bearer(token), json={
                    "query": READ, "variables": {"id": work_id}}).json()["data"]["work"]
                return found

            deadline = time.monotonic() + 20
            while read(admin)["status"] != "completed":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            for token in (admin, finance):
                seen = read(token)
                assert seen["input"] == {"card": CARD, "amount": 3}
                assert seen["output"] == "charged 4242"
                assert {"token": TOKEN, "last4": "4242"} in [
                    e["payload"].get("output") for e in seen["events"]]
            hidden = read(reader)
            assert hidden["input"] == {"card": REDACTED, "amount": 3}
            assert CARD not in json.dumps(hidden) and TOKEN not in json.dumps(hidden)
            assert {"token": REDACTED, "last4": "4242"} in [
                e["payload"].get("output") for e in hidden["events"]]
        # a subscription shows them the same way
        payloads = anyio.run(_subscribed, url, reader, work_id,
                             hidden["events"][0]["cursor"])
        assert payloads and CARD not in json.dumps(payloads)
        assert {"card": REDACTED, "amount": 3} in [p.get("input") for p in payloads]
    finally:
        code, _, err = server.stop()
    assert code == 0, err
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("s.sqlite"))
    assert CARD.encode() not in raw and TOKEN.encode() not in raw
    assert CARD not in err and TOKEN not in err  # nor the server's log


async def _subscribed(url: str, token: str, work_id: str, after: str
                      ) -> list[dict[str, Any]]:
    transport = WebsocketsTransport(url=url.replace("http://", "ws://"),
                                    headers=bearer(token),
                                    subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL])
    found: list[dict[str, Any]] = []
    document = gql("subscription($id: String, $after: String) { workEvents(workId: $id, "
                   "after: $after) { seq type payload } }")
    async with Client(transport=transport) as session:
        with anyio.move_on_after(10):
            async for event in session.subscribe(GraphQLRequest(
                    document, variable_values={"id": work_id, "after": after})):
                found.append(event["workEvents"]["payload"])
                if event["workEvents"]["type"] == "work.completed":
                    break
    return found
