"""Policies applied to the GraphQL API, on a real SQLite store with a real worker node:
each principal sees and steers only what a policy gives it (by action, saga and a CEL
condition over the work), gets a typed ``forbidden`` error otherwise with nothing
changed, and a subscription stops delivering a work's events once a policy no longer
lets it read them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from engine import Runtime
from engine.store import SqlStore
from engine.store import policies as pol
from engine.store import principals as pr
from engine.store.feed import Feed
from engine.store.schema import commands
from graphql_api.schema import Context, schema
from graphql_api.service import Service
from workers.node import WorkerNode, WorkerSpec

from .app import sagas
from .wire import ROOT

POLICIES = [
    {"subject": "principal:viewer", "actions": ["read"], "sagas": ["slo*"]},
    {"subject": "group:operators", "actions": ["read", "write", "steer"], "sagas": ["gate"]},
    {"subject": "principal:tenant", "actions": ["read"], "sagas": ["slow"],
     "condition": "work.input == 1"},
]


def who(name: str, *groups: str) -> pr.Principal:
    return pr.Principal(principal_id=name, name=name, kind="service", groups=frozenset(groups))


async def test_each_principal_sees_and_steers_what_its_policies_give(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    async with SqlStore.open(url) as store, Feed.running(store) as feed, \
            Runtime(sagas(), store=store) as runtime:
        service = Service(store, feed, runtime, command_timeout=0.2)
        await pol.replace(store, POLICIES, by="test")
        slow = [await runtime.start("slow", i, run=False) for i in (1, 2)]
        gate = await runtime.start("gate", 0, run=False)

        async def run(principal: pr.Principal | None, query: str, **variables: Any
                      ) -> tuple[dict[str, Any] | None, list[Any]]:
            result = await schema.execute(query, variable_values=variables,
                                          context_value=Context(service, principal))
            return result.data, list(result.errors or [])

        listed = "{ allWorks { totalCount edges { node { workId } } } }"

        def ids(data: dict[str, Any] | None) -> set[str]:
            assert data is not None
            return {e["node"]["workId"] for e in data["allWorks"]["edges"]}

        # nobody: no policy names it, so nothing at all
        data, errors = await run(who("nobody"), listed)
        assert errors and errors[0].extensions["code"] == "forbidden"
        assert "'nobody' may not read anything" in errors[0].message
        # the viewer reads works of sagas matching slo*, and nothing else
        data, errors = await run(who("viewer"), listed)
        assert not errors and ids(data) == set(slow)
        data, _ = await run(who("viewer"), "query($id: String!) { work(workId: $id) "
                                           "{ workId } }", id=gate)
        assert data == {"work": None}
        # the condition: one of the two slow works
        data, errors = await run(who("tenant"), listed)
        assert not errors and ids(data) == {slow[0]}
        # the operators read and steer works of gate only
        data, _ = await run(who("ops", "operators"), listed)
        assert ids(data) == {gate}
        steer = 'mutation($id: String!) { pauseWork(workId: $id, by: "ops") { __typename } }'

        async def inbox() -> int:
            async with store.reader.connect() as conn:
                return int((await conn.execute(sa.select(sa.func.count()).select_from(
                    commands))).scalar() or 0)

        before = await inbox()
        data, errors = await run(who("ops", "operators"), steer, id=slow[0])
        assert errors and errors[0].extensions["code"] == "forbidden"
        assert "may not steer works of saga 'slow'" in errors[0].message
        assert await inbox() == before  # nothing sent
        data, errors = await run(who("ops", "operators"), steer, id=gate)
        assert not errors and await inbox() == before + 1
        create = ('mutation($saga: String!) { createWork(saga: $saga, input: 5) '
                  '{ __typename } }')
        data, errors = await run(who("ops", "operators"), create, saga="slow")
        assert errors and "may not write works of saga 'slow'" in errors[0].message
        data, errors = await run(who("ops", "operators"), create, saga="gate")
        assert not errors and data == {"createWork": {"__typename": "WorkCreated"}}
        # the viewer may not steer, write or administer anything
        for query, action in ((steer, "steer"), (create, "write"),
                              ('mutation { deleteSaga(name: "slow", by: "v") '
                               '{ __typename } }', "admin")):
            data, errors = await run(who("viewer"), query, id=slow[0], saga="slow")
            assert errors and f"may not {action} anything" in errors[0].message
        # admins, and Python in this process, may do everything
        data, errors = await run(who("root", pr.ADMINS), listed)
        assert not errors and len(ids(data)) == 4
        data, errors = await run(None, listed)
        assert not errors and len(ids(data)) == 4


async def test_a_subscription_stops_when_a_policy_is_tightened(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    async with SqlStore.open(url) as store:
        node = WorkerNode(store, sagas(), [WorkerSpec(name="w", concurrency=4)],
                          node_id="n", poll_interval=0.05)
        async with anyio.create_task_group() as tg, Feed.running(store) as feed, \
                Runtime(sagas(), store=store) as runtime:
            await tg.start(node.run)
            service = Service(store, feed, runtime, wake=node.mail)
            await pol.replace(store, POLICIES, by="test")
            seen: list[str] = []
            arrived = anyio.Event()
            stream = await schema.subscribe(
                "subscription { workEvents { workId type } }",
                context_value=Context(service, who("viewer")))

            async def follow() -> None:
                async for item in stream:  # type: ignore[union-attr]
                    assert item.errors is None, item.errors
                    seen.append(item.data["workEvents"]["workId"])
                    if seen[-1] == first:
                        arrived.set()

            first = "w" + "0" * 31  # the first work's id, chosen here
            tg.start_soon(follow)
            await anyio.sleep(0.2)
            await runtime.start("slow", 1, run=False, work_id=first)
            hidden = await runtime.start("gate", 1, run=False)
            with anyio.fail_after(20):
                await arrived.wait()
            assert hidden not in seen
            # tightened: the viewer reads nothing now; within a second no event comes
            await pol.replace(store, [p for p in POLICIES if p["subject"] != "principal:viewer"],
                              by="test")
            await anyio.sleep(1.0)
            count = len(seen)
            later = await runtime.start("slow", 2, run=False)
            await anyio.sleep(1.5)
            assert later not in seen[count:] and hidden not in seen
            node.stop()
            tg.cancel_scope.cancel()


async def test_bad_policies_are_refused_naming_what_is_wrong(tmp_path: Path) -> None:
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        for raw, message in (
                ({"subject": "group:x"}, "policies are a list"),
                ([{"subject": "x", "actions": ["read"]}], "policy 1: subject must be"),
                ([{"subject": "group:x", "actions": ["fly"]}], "policy 1: actions must be"),
                ([{"subject": "group:x", "actions": ["read"], "sagas": []}],
                 "sagas must be a list"),
                ([{"subject": "group:x", "actions": ["read"], "condition": "work.("}],
                 "policy 1: condition"),
                ([{"subject": "group:x", "actions": ["read"], "who": 1}], "no setting 'who'")):
            with pytest.raises(ValueError, match=message):
                await pol.replace(store, raw, by="t")  # type: ignore[arg-type]
        assert (await pol.load(store)).version == 0  # nothing changed
        done = await pol.replace(store, POLICIES, by="t")
        assert done.version == 1
        with pytest.raises(ValueError, match="at version 1, not 0"):
            await pol.replace(store, [], by="t", expected_version=0)


def test_the_policy_command_sets_them_from_a_file(tmp_path: Path) -> None:
    file = tmp_path / "p.json"
    file.write_text(json.dumps(POLICIES[:1]))
    store_url = f"sqlite+aiosqlite:///{tmp_path}/c.sqlite"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    made = subprocess.run([sys.executable, "-m", "graphql_api.cli", "policy", "--store",
                           store_url, "set", str(file)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)
    assert made.returncode == 0, made.stderr
    shown = subprocess.run([sys.executable, "-m", "graphql_api.cli", "policy", "--store",
                            store_url, "show"], capture_output=True, text=True, cwd=ROOT,
                           env=env, timeout=120)
    assert json.loads(shown.stdout) == {"version": 1, "policies": [POLICIES[0]]}


async def test_administrators_make_and_revoke_tokens_through_the_api(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    async with SqlStore.open(url) as store, Feed.running(store) as feed, \
            Runtime(sagas(), store=store) as runtime:
        service = Service(store, feed, runtime)
        await pol.replace(store, POLICIES, by="test")

        async def run(principal: pr.Principal, query: str, **variables: Any
                      ) -> tuple[dict[str, Any] | None, list[Any]]:
            result = await schema.execute(query, variable_values=variables,
                                          context_value=Context(service, principal))
            return result.data, list(result.errors or [])

        make = ('mutation { createToken(principal: "ci", groups: ["deployers"], days: 1, '
                'label: "nightly") { __typename ... on TokenCreated { token '
                'principalCreated credential { credentialId principal label } } '
                '... on InvalidInput { message } } }')
        admin = who("root", pr.ADMINS)
        data, errors = await run(admin, make)
        assert not errors and data is not None
        made = data["createToken"]
        assert made["principalCreated"] is True and made["credential"]["label"] == "nightly"
        verified = await pr.verify(store, made["token"])
        assert verified.name == "ci" and verified.groups == frozenset({"deployers"})
        listed, _ = await run(admin, "{ credentials(principal: \"ci\") { credentialId "
                                     "revokedAt } }")
        assert listed == {"credentials": [{"credentialId": made["credential"]["credentialId"],
                                           "revokedAt": None}]}
        # not for anyone else: the viewer may read works, not administer tokens
        for query in (make, '{ credentials { credentialId } }'):
            data, errors = await run(who("viewer"), query)
            assert errors and "may not admin anything" in errors[0].message
        revoke = ('mutation($id: String!) { revokeToken(credentialId: $id) { __typename '
                  '... on Credential { revokedAt } ... on NotFound { message } } }')
        data, _ = await run(admin, revoke, id=made["credential"]["credentialId"])
        assert data is not None and data["revokeToken"]["revokedAt"] is not None
        with pytest.raises(pr.CredentialError, match="revoked"):
            await pr.verify(store, made["token"])
        data, _ = await run(admin, revoke, id=made["credential"]["credentialId"])
        assert data is not None and "no live credential" in data["revokeToken"]["message"]
        bad, _ = await run(admin, 'mutation { createToken(principal: "two words") '
                                  '{ ... on InvalidInput { message } } }')
        assert bad is not None and "a principal's name must be" in bad["createToken"]["message"]
