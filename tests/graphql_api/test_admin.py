"""Principals, policies and the audit log through the API, on a real SQLite store with a
real worker node: an administrator makes a principal, gives it policies and takes them
away; the operator actions it and others do are listed in the audit log with who and
why (and a work's own events name the principal); deleting a principal or a saga
removes the policies naming it; nobody else may do or read any of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from engine import Runtime
from engine.store import SqlStore
from engine.store import policies as pol
from engine.store import principals as pr
from engine.store import sagas as saga_rows
from engine.store.feed import Feed
from graphql_api.schema import Context, schema
from graphql_api.service import Service
from workers.node import WorkerNode, WorkerSpec

from .app import sagas

ADMIN = pr.Principal(principal_id="root", name="root", kind="person",
                     groups=frozenset({pr.ADMINS}))


async def test_principals_policies_and_the_audit_log(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    async with SqlStore.open(url) as store, Feed.running(store) as feed, \
            Runtime(sagas(), store=store) as runtime, anyio.create_task_group() as tg:
        node = WorkerNode(store, sagas(), [WorkerSpec("main", 4)], node_id="n1",
                          poll_interval=0.05)
        await tg.start(node.run)
        service = Service(store, feed, runtime, wake=node.mail, local=node.driven_state,
                          command_timeout=10)

        async def run(principal: pr.Principal | None, query: str, **variables: Any
                      ) -> tuple[dict[str, Any] | None, list[Any]]:
            result = await schema.execute(query, variable_values=variables,
                                          context_value=Context(service, principal))
            return result.data, list(result.errors or [])

        made, errors = await run(ADMIN, 'mutation { createPrincipal(name: "ops", groups: '
                                 '["operators"], reason: "on call") { __typename '
                                 '... on Principal { name groups kind } } }')
        assert not errors and made == {"createPrincipal": {
            "__typename": "Principal", "name": "ops", "groups": ["operators"],
            "kind": "service"}}
        again, _ = await run(ADMIN, 'mutation { createPrincipal(name: "ops") { __typename '
                                    '... on InvalidInput { message field } } }')
        assert again == {"createPrincipal": {"__typename": "InvalidInput", "field": "name",
                                             "message": "a principal named 'ops' exists "
                                                        "already"}}
        policies = [{"subject": "group:operators", "actions": ["read", "steer"],
                     "sagas": ["gate", "slow"]},
                    {"subject": "principal:ops", "actions": ["read"], "sagas": ["fragile"]}]
        set_them = ('mutation($p: JSON!, $v: Int) { setPolicies(policies: $p, '
                    'expectedVersion: $v, reason: "rota") { __typename ... on PolicySet '
                    '{ version } ... on Conflict { message } ... on InvalidInput { message '
                    '} } }')
        done, _ = await run(ADMIN, set_them, p=policies, v=0)
        assert done == {"setPolicies": {"__typename": "PolicySet", "version": 1}}
        stale, _ = await run(ADMIN, set_them, p=policies, v=0)
        assert stale is not None and stale["setPolicies"]["__typename"] == "Conflict"
        bad, _ = await run(ADMIN, set_them, p=[{"subject": "x"}], v=1)
        assert bad is not None and "subject must be" in bad["setPolicies"]["message"]
        assert (await pol.load(store)).version == 1  # nothing changed by either

        # the operator steers a work: its events and the audit log name it, with why
        ops = await pr.verify(store, (await pr.issue_token(store, "ops"))[0])
        work = await runtime.start("gate", 0, run=False)
        for _ in range(200):
            row = await store.work(work)
            if row is not None and row["status"] == "waiting":
                break
            await anyio.sleep(0.05)
        paused, errors = await run(ops, 'mutation($w: String!) { pauseWork(workId: $w, '
                                   'by: "ann", reason: "looks odd") { __typename } }', w=work)
        assert not errors and paused == {"pauseWork": {"__typename": "CommandTaken"}}
        events = [r.event for r in await store.read(work)]
        pause = next(e for e in events if e.type == "work.paused")
        assert pause.payload.get("by") == "ops (for ann)", pause.payload
        # a refused action is not an action: not in the log
        refused, errors = await run(ops, 'mutation { deleteSaga(name: "gate", by: "x") '
                                    '{ __typename } }')
        assert refused is None and "forbidden" in errors[0].message
        log, _ = await run(ADMIN, '{ auditLog { entries { principal action targetKind '
                                  'target reason details } next } }')
        assert log is not None
        entries = log["auditLog"]["entries"]
        assert [(e["principal"], e["action"], e["targetKind"], e["target"], e["reason"])
                for e in entries] == [
            ("ops", "pauseWork", "work", work, "looks odd"),
            ("root", "setPolicies", "policies", "", "rota"),
            ("root", "createPrincipal", "principal", "ops", "on call")]
        assert "policies" not in entries[1]["details"]  # what it set is in the policies
        page = ('query($a: Int) { auditLog(principal: "ops", first: 1, after: $a) '
                '{ entries { action } next } }')
        mine, _ = await run(ADMIN, page)
        assert mine is not None and mine["auditLog"]["entries"] == [{"action": "pauseWork"}]
        rest, _ = await run(ADMIN, page, a=mine["auditLog"]["next"])
        assert rest == {"auditLog": {"entries": [], "next": None}}
        # nobody but an administrator reads or changes any of it
        for query in ('{ principals { name } }', '{ policies { version } }',
                      '{ auditLog { next } }',
                      'mutation { deletePrincipal(name: "ops") { __typename } }'):
            data, errors = await run(ops, query)
            assert data is None and "forbidden" in errors[0].message, query
        # deleting a saga or a principal removes the policies naming them
        await saga_rows.put_saga(store, "kept", {"stages": [
            {"kind": "Stage", "name": "a", "transaction": "tick"}]},
            functions={"tick": lambda ctx, n: n}, by="root")
        await pol.replace(store, [*policies, {"subject": "group:operators",
                                              "actions": ["read"], "sagas": ["kept"]},
                                  {"subject": "group:operators", "actions": ["read"],
                                   "sagas": ["ke*"]}], by="root")
        await saga_rows.delete_saga(store, "kept", by="root")
        assert [p["sagas"] for p in (await pol.load(store)).to_json()] == [
            ["gate", "slow"], ["fragile"], ["ke*"]]
        gone, _ = await run(ADMIN, 'mutation { deletePrincipal(name: "ops") { __typename '
                                   '... on Principal { name } } }')
        assert gone == {"deletePrincipal": {"__typename": "Principal", "name": "ops"}}
        assert [p["subject"] for p in (await pol.load(store)).to_json()] == [
            "group:operators", "group:operators"]
        listed, _ = await run(ADMIN, '{ principals { name } }')
        assert listed == {"principals": []}
        tg.cancel_scope.cancel()
