"""The schema on its own (``schema.execute``, ``schema.subscribe``) against a real store
and a worker node in this process; the checked-in SDL matches the schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from engine import Command, Runtime, replay
from engine.store import SqlStore
from engine.store.feed import Feed
from graphql_api.schema import Context, schema
from graphql_api.service import Service
from workers.node import WorkerNode, WorkerSpec

from .app import sagas

SDL = Path(__file__).resolve().parents[2] / "graphql_api" / "schema.graphql"

async def until(check: Any, seconds: float = 20.0) -> None:
    """Wait (bounded) until ``check()`` is true."""
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await anyio.sleep(0.02)
    raise AssertionError(f"not so after {seconds} s")


def test_the_checked_in_sdl_is_the_schema() -> None:
    assert SDL.read_text() == schema.as_str() + "\n", (
        "the schema changed: write it out with "
        "python -c 'from graphql_api.schema import schema; print(schema.as_str())' "
        "> graphql_api/schema.graphql")


async def test_lists_page_by_cursor_and_load_stage_runs_in_one_batch(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    async with SqlStore.open(url) as store:
        node = WorkerNode(store, sagas(), [WorkerSpec(name="w", concurrency=20)],
                          node_id="n", poll_interval=0.05)
        async with anyio.create_task_group() as tg, Feed.running(store) as feed, \
                Runtime(sagas(), store=store) as runtime:
            await tg.start(node.run)
            service = Service(store, feed, runtime, wake=node.mail)
            ids = [await runtime.start("gate", i, run=False) for i in range(7)]

            async def run(query: str, **variables: Any) -> dict[str, Any]:
                result = await schema.execute(query, variable_values=variables,
                                              context_value=Context(service))
                assert result.errors is None, result.errors
                assert result.data is not None
                return result.data

            page = "query($after: String) { allWorks(first: 3, after: $after, " \
                   "saga: [\"gate\"]) { totalCount pageInfo { hasNextPage endCursor } " \
                   "edges { node { workId id stageRuns { path } } } } }"
            seen: list[str] = []
            after = None
            while True:
                found = (await run(page, after=after))["allWorks"]
                seen += [e["node"]["workId"] for e in found["edges"]]
                assert found["totalCount"] == 7
                if not found["pageInfo"]["hasNextPage"]:
                    break
                after = found["pageInfo"]["endCursor"]
            assert seen == ids[::-1]  # newest first, each once
            oldest = (await run("query { allWorks(first: 2, orderBy: CREATED_AT, "
                                "descending: false) { pageInfo { endCursor } "
                                "edges { node { workId } } } }"))["allWorks"]
            assert [e["node"]["workId"] for e in oldest["edges"]] == ids[:2]
            wrong = await schema.execute(
                "query($after: String) { allWorks(first: 2, after: $after, "
                "orderBy: PRIORITY) { totalCount } }",
                variable_values={"after": oldest["pageInfo"]["endCursor"]},
                context_value=Context(service))
            assert wrong.errors and "not by 'priority'" in wrong.errors[0].message
            # a global id resolves through node()
            first = (await run(page))["allWorks"]["edges"][0]["node"]
            again = await run("query($id: ID!) { node(id: $id) { ... on Work { workId } } }",
                              id=first["id"])
            assert again["node"]["workId"] == first["workId"]
            # a subscription from a cursor, and a signal sent through the schema
            events: list[str] = []

            async def follow() -> None:
                stream = await schema.subscribe(
                    "subscription($id: String) { workEvents(workId: $id, after: \"0\") "
                    "{ type } }", variable_values={"id": ids[0]},
                    context_value=Context(service))
                async for item in stream:  # type: ignore[union-attr]
                    assert item.data is not None
                    events.append(item.data["workEvents"]["type"])
                    if events[-1] == "work.completed":
                        return

            tg.start_soon(follow)
            await until(lambda: "stage.wait.started" in events)
            sent = await run("mutation($id: String!) { signalWork(workId: $id, name: \"go\","
                             " payload: 1) { ... on CommandTaken { outcome } } }", id=ids[0])
            assert sent["signalWork"]["outcome"] == "applied"
            await until(lambda: "work.completed" in events)
            assert events[0] == "work.created" and "work.command" in events
            node.stop()
            tg.cancel_scope.cancel()


async def test_workers_are_listed_and_changed_through_their_node(store_url: str) -> None:
    async with SqlStore.open(store_url) as store:
        node = WorkerNode(store, sagas(), [WorkerSpec(name="w", concurrency=2)],
                          node_id="n1", poll_interval=0.05)
        async with anyio.create_task_group() as tg, Feed.running(store) as feed, \
                Runtime(sagas(), store=store) as runtime:
            await tg.start(node.run)
            service = Service(store, feed, runtime, wake=node.mail)

            async def run(query: str, **variables: Any) -> dict[str, Any]:
                result = await schema.execute(query, variable_values=variables,
                                              context_value=Context(service))
                assert result.errors is None, result.errors
                assert result.data is not None
                return result.data

            listed = await run("{ allWorkers { workerId status concurrency node } }")
            assert listed["allWorkers"] == [{"workerId": "n1/w", "status": "active",
                                             "concurrency": 2, "node": "n1"}]
            change = ("mutation($m: String!) {{ {0} {{ __typename ... on WorkerChanged "
                      "{{ outcome worker {{ workerId status concurrency }} }} "
                      "... on NotFound {{ message }} ... on InvalidInput {{ message }} }} }}")
            added = await run(change.format('addWorkers(node: "n1", name: "extra", '
                                            'concurrency: 3, by: $m)'), m="ann")
            assert added["addWorkers"]["worker"] == {"workerId": "n1/extra",
                                                     "status": "active", "concurrency": 3}
            resized = await run(change.format('updateWorkers(workerId: "n1/extra", '
                                              'concurrency: 5, by: $m)'), m="ann")
            assert resized["updateWorkers"]["worker"]["concurrency"] == 5
            assert node.workers()["extra"]["concurrency"] == 5  # the node itself changed
            # its load over time: registered with 3 slots, then resized to 5
            load = await run('{ worker(workerId: "n1/extra") { load { time running '
                             'concurrency } } }')
            points = load["worker"]["load"]  # (a heartbeat may come between: running 0)
            assert {p["running"] for p in points} == {0}
            sizes = [p["concurrency"] for p in points]
            assert sizes[0] == 3 and sizes[-1] == 5 and set(sizes) == {3, 5}
            since = next(p["time"] for p in points if p["concurrency"] == 5)
            later = await run('query($t: Float) { worker(workerId: "n1/extra") '
                              '{ load(since: $t, first: 1) { concurrency } } }', t=since)
            assert later["worker"]["load"] == [{"concurrency": 5}]
            bad = await run(change.format('updateWorkers(workerId: "n1/extra", '
                                          'concurrency: 0, by: $m)'), m="ann")
            assert bad["updateWorkers"]["__typename"] == "InvalidInput"
            assert "concurrency must be a whole number >= 1" in bad["updateWorkers"]["message"]
            missing = await run(change.format('updateWorkers(workerId: "n1/nope", '
                                              'concurrency: 2, by: $m)'), m="ann")
            assert missing["updateWorkers"]["__typename"] == "NotFound"
            nowhere = await run(change.format('addWorkers(node: "n9", name: "x", by: $m)'),
                                m="ann")
            assert nowhere["addWorkers"]["__typename"] == "NotFound"
            removed = await run(change.format('removeWorkers(workerId: "n1/extra", by: $m)'),
                                m="ann")
            assert removed["removeWorkers"]["outcome"] == "applied"
            for _ in range(250):
                rows = {r["workerId"]: r["status"] for r in (await run(
                    "{ allWorkers { workerId status } }"))["allWorkers"]}
                if rows.get("n1/extra") == "removed":
                    break
                await anyio.sleep(0.02)
            assert rows == {"n1/w": "active", "n1/extra": "removed"}
            # a worker whose heartbeat is older than the lease time shows as lost
            stale = Service(store, feed, runtime, lost_after=1e-9)
            shown = await schema.execute("{ allWorkers(status: [\"lost\"]) { workerId } }",
                                         context_value=Context(stale))
            assert shown.data == {"allWorkers": [{"workerId": "n1/w"}]}
            node.stop()
            tg.cancel_scope.cancel()


async def test_time_travel_through_a_long_work_replays_from_checkpoints(
        tmp_path: Path) -> None:
    from engine import Map, Saga, Stage

    async def quick(ctx: Any, n: int) -> int:
        return n + 1

    many = Saga(name="many", stages=[Map(name="each", stage=Stage(name="one",
                                                                  transaction=quick))])
    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    async with SqlStore.open(url) as store, Feed.running(store) as feed, \
            Runtime([many], store=store) as runtime:
        done = await runtime.run("many", list(range(200)))
        assert done.status == "completed" and done.events > 300
        service = Service(store, feed, runtime)
        stream = await store.read(done.work_id)
        for seq in (0, 1, 150, 301, 299, done.events, 205):
            state = await service.state_at(done.work_id, seq)
            assert state == replay(stream[:seq]) if seq else state.seq == 0
        assert sorted(service._checkpoints[done.work_id]) == list(
            range(100, done.events + 1, 100))
        query = ("query($id: String!, $seq: Int!) { work(workId: $id) { "
                 "stateAt(seq: $seq) stateDiff(fromSeq: 1, toSeq: 2) "
                 "events(afterSeq: 300, first: 5) { seq } } }")
        result = await schema.execute(query, variable_values={"id": done.work_id, "seq": 250},
                                      context_value=Context(service))
        assert result.errors is None and result.data is not None
        work = result.data["work"]
        assert work["stateAt"]["seq"] == 250
        assert [e["seq"] for e in work["events"]] == [301, 302, 303, 304, 305]
        assert {"path": "status", "before": "pending", "after": "running"} in work["stateDiff"]
        bad = await schema.execute(query, variable_values={"id": done.work_id,
                                                           "seq": done.events + 1},
                                   context_value=Context(service))
        assert bad.errors and f"no seq {done.events + 1}" in bad.errors[0].message
        # only some types, after a seq: the seqs the stream has of them, in order
        kinds = ["stage.transaction.completed", "work.completed"]
        typed = await schema.execute(
            "query($id: String!, $types: [String!]) { work(workId: $id) { "
            "events(afterSeq: 100, first: 1000, types: $types) { seq type } } }",
            variable_values={"id": done.work_id, "types": kinds}, context_value=Context(service))
        assert typed.errors is None and typed.data is not None
        assert [(e["seq"], e["type"]) for e in typed.data["work"]["events"]] == [
            (r.seq, r.event.type) for r in stream if r.seq > 100 and r.event.type in kinds]
        assert typed.data["work"]["events"][-1]["type"] == "work.completed"
        none = await schema.execute(
            "query($id: String!) { work(workId: $id) { events(types: []) { seq } } }",
            variable_values={"id": done.work_id}, context_value=Context(service))
        assert none.errors and "types must name 1 to 100 event types" in none.errors[0].message


async def test_schedules_locks_and_services_through_the_schema(tmp_path: Path) -> None:
    from workers.health import HealthCheck
    from workers.locks import LockService

    async def fine() -> bool:
        return True

    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    async with SqlStore.open(url) as store:
        node = WorkerNode(store, sagas(), [WorkerSpec(name="w", concurrency=2)],
                          node_id="n1", poll_interval=0.05, schedules=False,
                          health_checks=[HealthCheck("mailer", fine),
                                         HealthCheck("relay", fine, depends_on=("mailer",))],
                          health_interval=0.05)
        async with anyio.create_task_group() as tg, Feed.running(store) as feed, \
                Runtime(sagas(), store=store) as runtime:
            await tg.start(node.run)
            service = Service(store, feed, runtime, wake=node.mail)

            async def run(query: str, **variables: Any) -> dict[str, Any]:
                result = await schema.execute(query, variable_values=variables,
                                              context_value=Context(service))
                assert result.errors is None, result.errors
                assert result.data is not None
                return result.data

            shape = ("{ __typename ... on ScheduleChanged { workId schedule { name cron "
                     "paused fired saga timezone } } ... on InvalidInput { message field } "
                     "... on NotFound { message } ... on Conflict { message } }")
            made = await run(f'mutation {{ createSchedule(name: "nightly", saga: "gate", '
                             f'cron: "0 3 * * *", input: 1) {shape} }}')
            assert made["createSchedule"]["schedule"]["cron"] == "0 3 * * *"
            again = await run(f'mutation {{ createSchedule(name: "nightly", saga: "gate", '
                              f'cron: "0 3 * * *") {shape} }}')
            assert again["createSchedule"]["__typename"] == "Conflict"
            bad = await run(f'mutation {{ createSchedule(name: "x", saga: "gate", '
                            f'cron: "every day") {shape} }}')
            assert bad["createSchedule"]["__typename"] == "InvalidInput"
            unknown = await run(f'mutation {{ createSchedule(name: "x", saga: "nope", '
                                f'cron: "0 3 * * *") {shape} }}')
            assert unknown["createSchedule"]["__typename"] == "NotFound"
            moved = await run(f'mutation {{ updateSchedule(name: "nightly", '
                              f'cron: "30 4 * * *", timezone: "Europe/Paris") {shape} }}')
            assert moved["updateSchedule"]["schedule"]["timezone"] == "Europe/Paris"
            paused = await run(f'mutation {{ pauseSchedule(name: "nightly") {shape} }}')
            assert paused["pauseSchedule"]["schedule"]["paused"] is True
            fired = await run(f'mutation {{ triggerSchedule(name: "nightly") {shape} }}')
            work_id = fired["triggerSchedule"]["workId"]
            assert fired["triggerSchedule"]["schedule"]["fired"] == 1
            assert (await run("query($id: String!) { work(workId: $id) { saga } }",
                              id=work_id))["work"]["saga"] == "gate"
            assert [s["name"] for s in (await run("{ schedules { name } }"))["schedules"]] \
                == ["nightly"]
            gone = await run(f'mutation {{ deleteSchedule(name: "nightly") {shape} }}')
            assert gone["deleteSchedule"]["schedule"] is None
            missing = await run(f'mutation {{ pauseSchedule(name: "nightly") {shape} }}')
            assert missing["pauseSchedule"]["__typename"] == "NotFound"
            # locks: a holder and a waiter, as the lock service has them
            lock = LockService(store)
            await lock.acquire("customer:7", "work-a", ttl=30)
            shown = await run('{ locks(name: "customer:7") { held { holder } waiting '
                              '{ holder } } }')
            assert shown["locks"] == {"held": [{"holder": "work-a"}], "waiting": []}
            # services: the health graph's history
            for _ in range(100):
                health = (await run("{ services { service available dependsOn "
                                    "history { ok } } }"))["services"]
                if health:
                    break
                await anyio.sleep(0.02)
            assert [(h["service"], h["available"], h["dependsOn"]) for h in health] == [
                ("mailer", True, []), ("relay", True, ["mailer"])]
            # and followed from the newest one's cursor: the next round's checks
            newest = max(int(r["cursor"]) for r in (await run(
                "{ services { history { cursor } } }"))["services"][0]["history"])
            stream = await schema.subscribe(
                "subscription($after: String) { serviceChecks(after: $after, interval: 0.05) "
                "{ cursor service dependsOn run { cursor ok available } } }",
                variable_values={"after": str(newest)}, context_value=Context(service))
            pushed = []
            with anyio.fail_after(10):
                async for item in stream:  # type: ignore[union-attr]
                    assert item.errors is None, item.errors
                    pushed.append(item.data["serviceChecks"])
                    if {p["service"] for p in pushed} == {"mailer", "relay"}:
                        break
            assert all(int(p["cursor"]) > newest and p["run"]["cursor"] == p["cursor"]
                       and p["run"]["ok"] for p in pushed)
            assert {p["service"]: p["dependsOn"] for p in pushed} == {"mailer": [],
                                                                       "relay": ["mailer"]}
            node.stop()
            tg.cancel_scope.cancel()


async def test_works_and_stages_subscriptions_follow_filters(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    async with SqlStore.open(url) as store:
        node = WorkerNode(store, sagas(), [WorkerSpec(name="w", concurrency=4)],
                          node_id="n1", poll_interval=0.05)
        async with anyio.create_task_group() as tg, Feed.running(store) as feed, \
                Runtime(sagas(), store=store) as runtime:
            await tg.start(node.run)
            service = Service(store, feed, runtime, wake=node.mail)
            changes: list[dict[str, Any]] = []
            stages: list[dict[str, Any]] = []

            async def follow(query: str, into: list[dict[str, Any]], count: int) -> None:
                stream = await schema.subscribe(query, context_value=Context(service))
                async for item in stream:  # type: ignore[union-attr]
                    assert item.errors is None, item.errors
                    assert item.data is not None
                    into.append(next(iter(item.data.values())))
                    if len(into) >= count:
                        return

            tg.start_soon(follow, 'subscription { works(saga: ["gate"], status: ["completed"])'
                                  ' { cursor type work { workId status output } } }',
                          changes, 2)
            tg.start_soon(follow, 'subscription { stages(saga: ["slow"], template: ["s3"]) '
                                  '{ type workId path template run { status } } }', stages, 2)
            await anyio.sleep(0.1)  # both subscribed, from now on
            slow = await runtime.start("slow", 0, run=False)
            gates = [await runtime.start("gate", i, run=False) for i in range(2)]
            for wid in gates:
                await service.command(wid, Command(kind="signal",
                                                   args={"name": "go", "payload": 1}))
            await until(lambda: len(changes) >= 2 and len(stages) >= 2, 30)
            assert {c["work"]["workId"] for c in changes} == set(gates)
            assert all(c["type"] == "work.completed" and c["work"]["output"] == 2
                       for c in changes)
            assert [s["type"] for s in stages] == ["stage.transaction.started",
                                                   "stage.transaction.completed"]
            assert {s["workId"] for s in stages} == {slow}
            assert stages[-1]["run"]["status"] == "completed"
            node.stop()
            tg.cancel_scope.cancel()


async def test_create_work_is_idempotent_by_request_id_and_key(store_url: str) -> None:
    async with SqlStore.open(store_url) as store, Feed.running(store) as feed, \
            Runtime(sagas(), store=store) as runtime:
        service = Service(store, feed, runtime)

        async def run(query: str, **variables: Any) -> dict[str, Any]:
            result = await schema.execute(query, variable_values=variables,
                                          context_value=Context(service))
            assert result.errors is None, result.errors
            assert result.data is not None
            return next(iter(result.data.values()))

        shape = ("{ __typename ... on WorkCreated { work { workId paused priority "
                 "breakpoints } } ... on Conflict { message field } ... on InvalidInput "
                 "{ message field } ... on NotFound { message field } }")
        create = ("mutation($input: JSON, $rid: String) { createWork(saga: \"gate\", "
                  "input: $input, paused: true, priority: 3, requestId: $rid, breakpoints: "
                  "[{event: \"stage.*\", path: \"b\", condition: \"state.seq > 2\"}]) "
                  f"{shape} }}")
        first = await run(create, input=1, rid="r-1")
        work = first["work"]
        assert work["paused"] and work["priority"] == 3
        assert work["breakpoints"][0]["condition"] == "state.seq > 2"
        again = await run(create, input=1, rid="r-1")
        assert again["work"]["workId"] == work["workId"]
        other = await run(create, input=2, rid="r-1")
        assert other == {"__typename": "Conflict", "message": other["message"],
                         "field": "requestId"}
        bad = await run("mutation { createWork(saga: \"gate\", breakpoints: [{condition: "
                        f"\"state.seq >\"}}]) {shape} }}")
        assert bad["__typename"] == "InvalidInput" and bad["field"] == "breakpoint"
        unknown = await run(f"mutation {{ createWork(saga: \"nope\") {shape} }}")
        assert unknown["__typename"] == "NotFound" and unknown["field"] == "saga"
        schema_bad = await run(f"mutation {{ createWork(saga: \"gate\", priority: 10000000) "
                               f"{shape} }}")
        assert schema_bad["__typename"] == "InvalidInput" and \
            schema_bad["field"] == "priority"
        keyed = ("mutation($input: JSON) { updateOrCreateWork(key: \"order-7\", "
                 f"saga: \"gate\", input: $input) {shape} }}")
        made = await run(keyed, input=7)
        assert (await run(keyed, input=7))["work"]["workId"] == made["work"]["workId"]
        assert (await run(keyed, input=8))["__typename"] == "Conflict"
        # nothing stored for the refused ones: the two works and nothing else
        assert len(await store.work_ids()) == 2


async def test_delete_work_through_the_schema(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    async with SqlStore.open(url) as store, Feed.running(store) as feed, \
            Runtime(sagas(), store=store) as runtime:
        service = Service(store, feed, runtime)
        done = (await runtime.run("slow", 0)).work_id
        live = await runtime.start("gate", 0, run=False)
        shape = ("{ __typename ... on WorkDeleted { workId saga status deletedBy } "
                 "... on WrongState { message now: status } ... on NotFound { field } }")

        async def delete(work_id: str) -> dict[str, Any]:
            result = await schema.execute(
                f'mutation($id: String!) {{ deleteWork(workId: $id, by: "ann") {shape} }}',
                variable_values={"id": work_id}, context_value=Context(service))
            assert result.errors is None and result.data is not None
            return dict(result.data["deleteWork"])

        assert await delete(live) == {"__typename": "WrongState", "now": "pending",
                                      "message": (await delete(live))["message"]}
        assert (await delete("nope"))["field"] == "workId"
        assert await delete(done) == {"__typename": "WorkDeleted", "workId": done,
                                      "saga": "slow", "status": "completed",
                                      "deletedBy": "ann"}
        assert await store.read(done) == [] and await store.read(live) != []
        more = [(await runtime.run("slow", n)).work_id for n in (1, 2)]
        for work_id in more:
            assert (await delete(work_id))["__typename"] == "WorkDeleted"
        page = ("query($after: String) { deletions(first: 2, after: $after) { edges { "
                "cursor node { workId } } pageInfo { hasNextPage endCursor } } }")
        seen: list[str] = []
        after = None
        for _ in range(3):  # two pages: newest first, each deletion once
            audit = await schema.execute(page, variable_values={"after": after},
                                         context_value=Context(service))
            assert audit.errors is None and audit.data is not None
            found = audit.data["deletions"]
            seen += [e["node"]["workId"] for e in found["edges"]]
            if not found["pageInfo"]["hasNextPage"]:
                break
            after = found["pageInfo"]["endCursor"]
        assert seen == [*more[::-1], done]


async def test_the_catalog_shows_sagas_stages_and_what_the_nodes_run(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    async with SqlStore.open(url) as store:
        node = WorkerNode(store, sagas(), [WorkerSpec(name="w", concurrency=4)],
                          node_id="n1", poll_interval=0.05)
        async with anyio.create_task_group() as tg, Feed.running(store) as feed, \
                Runtime(sagas(), store=store) as runtime:
            await tg.start(node.run)
            service = Service(store, feed, runtime, wake=node.mail)
            for i in range(3):
                await runtime.run("slow", i)

            async def run(query: str, **variables: Any) -> dict[str, Any]:
                result = await schema.execute(query, variable_values=variables,
                                              context_value=Context(service))
                assert result.errors is None, result.errors
                assert result.data is not None
                return result.data

            found = (await run("{ allSagas { id name definition version running "
                               "{ definition nodes } stages { path kind hasCompensation } "
                               "} }"))["allSagas"]
            by_name = {s["name"]: s for s in found}
            assert set(by_name) == {"slow", "gate", "fragile"}
            fragile = by_name["fragile"]
            assert [(s["path"], s["kind"], s["hasCompensation"]) for s in
                    fragile["stages"]] == [("", "Saga", False), ("a", "Stage", True),
                                           ("b", "Stage", False)]
            assert fragile["running"] == [{"definition": fragile["definition"],
                                           "nodes": ["n1"]}]
            again = await run("query($id: ID!) { node(id: $id) { ... on Saga { name } } }",
                              id=fragile["id"])
            assert again["node"]["name"] == "fragile"
            stage = (await run('{ stage(saga: "slow", path: "s3") { kind figures { runs '
                               'completed avgDuration p95Duration } details } }'))["stage"]
            assert stage["kind"] == "Stage" and stage["figures"]["runs"] == 3
            assert stage["figures"]["completed"] == 3
            assert stage["figures"]["p95Duration"] >= stage["figures"]["avgDuration"] * 0.5
            assert stage["details"]["transaction"] == "tests.graphql_api.app.tick"
            waits = (await run('{ allStages(kind: "Wait") { saga path } }'))["allStages"]
            assert waits == [{"saga": "gate", "path": "w"}]
            node.stop()
            tg.cancel_scope.cancel()


async def test_update_work_changes_priority_and_a_queued_input(store_url: str) -> None:
    from engine.store.schema import leases

    async with SqlStore.open(store_url) as store, Feed.running(store) as feed, \
            Runtime(sagas(), store=store) as runtime:
        service = Service(store, feed, runtime, command_timeout=0.2)
        queued = await runtime.start("gate", 1, run=False)

        async def update(args: str) -> dict[str, Any]:
            result = await schema.execute(
                f"mutation($id: String!) {{ updateWork(workId: $id, {args}) {{ __typename "
                "... on CommandTaken { outcome number } ... on InvalidInput { message } "
                "... on WrongState { message } } }", variable_values={"id": queued},
                context_value=Context(service))
            assert result.errors is None and result.data is not None
            return dict(result.data["updateWork"])

        # no node holds it: the command waits in its inbox, the claim order changes now
        assert await update("priority: 7, setInput: true, input: 5") == {
            "__typename": "CommandTaken", "outcome": "pending", "number": 1}
        async with store.engine.connect() as conn:
            import sqlalchemy as sa

            lease = (await conn.execute(sa.select(leases.c.priority).where(
                leases.c.work_id == queued))).scalar_one()
        assert lease == 7
        refused = await update("priority: 10000000")
        assert refused["__typename"] == "InvalidInput" and "priority must be" in \
            refused["message"]
        assert (await update(""))["__typename"] == "InvalidInput"
        node = WorkerNode(store, sagas(), [WorkerSpec(name="w")], node_id="n1",
                          poll_interval=0.05)
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)
            for _ in range(250):
                state = await service.state(queued)
                if state.commands_applied == 1 and state.stages:
                    break
                await anyio.sleep(0.02)
            # taken before anything ran: the work started on the new input
            assert state.priority == 7 and state.stages[""].input == 5
            late = await update("setInput: true, input: 6")
            assert late["__typename"] == "WrongState" and "its input is recorded" in \
                late["message"]
            node.stop()
            tg.cancel_scope.cancel()


async def test_a_list_of_works_costs_one_query_per_field_not_one_per_work(
        tmp_path: Path) -> None:
    from sqlalchemy import event

    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    async with SqlStore.open(url) as store, Feed.running(store) as feed, \
            Runtime(sagas(), store=store) as runtime:
        service = Service(store, feed, runtime)
        for i in range(12):
            await runtime.run("slow", i)
        queued = await runtime.start("slow", 0, run=False, start_at=4e9)  # none takes it
        await store.send_command(queued, Command(kind="pause", by="ann"))
        await store.send_command(queued, Command(kind="resume", by="ann"))
        statements: list[str] = []

        def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        event.listen(store.engine.sync_engine, "before_cursor_execute", seen)
        result = await schema.execute(
            "{ allWorks(first: 13) { edges { node { workId stageRuns { path } "
            "events(first: 3) { seq } pendingCommands { number kind by } } } } }",
            context_value=Context(service))
        event.remove(store.engine.sync_engine, "before_cursor_execute", seen)
        assert result.errors is None and result.data is not None
        first, *edges = result.data["allWorks"]["edges"]  # newest first: the queued one
        assert first["node"]["workId"] == queued and first["node"]["stageRuns"] == []
        assert first["node"]["pendingCommands"] == [
            {"number": 1, "kind": "pause", "by": "ann"},
            {"number": 2, "kind": "resume", "by": "ann"}]
        assert len(edges) == 12
        assert all([e["seq"] for e in edge["node"]["events"]] == [1, 2, 3] for edge in edges)
        assert all(len(edge["node"]["stageRuns"]) == 30 for edge in edges)
        assert all(edge["node"]["pendingCommands"] == [] for edge in edges)
        from_events = [s for s in statements if "FROM events" in s]
        from_runs = [s for s in statements if "FROM stage_runs" in s]
        from_inbox = [s for s in statements if "FROM commands" in s]
        assert len(from_events) == 1 and len(from_runs) == 1 and len(from_inbox) == 1, \
            statements


async def test_sagas_given_as_data_through_the_schema(store_url: str) -> None:
    from graphql_api.server import running_api
    from tests.workers.sagas_app import app

    data = {"stages": [{"kind": "Stage", "name": "a", "transaction": "add"},
                       {"kind": "Stage", "name": "b", "transaction": "add"}]}
    async with SqlStore.open(store_url) as store:
        node = app.node(store, [WorkerSpec(name="w")], node_id="n1", poll_interval=0.05)
        async with anyio.create_task_group() as tg, running_api(store, app, node=node) \
                as service:
            await tg.start(node.run)

            async def run(query: str, **variables: Any) -> dict[str, Any]:
                result = await schema.execute(query, variable_values=variables,
                                              context_value=Context(service))
                assert result.errors is None, result.errors
                assert result.data is not None
                return dict(next(iter(result.data.values())))

            shape = ("{ __typename ... on SagaChanged { name version enabled saga { name "
                     "givenAsData enabled stages { path kind } } } ... on InvalidInput "
                     "{ message field } ... on NotFound { message } ... on WrongState "
                     "{ message } ... on Conflict { message } }")
            made = await run(f"mutation($data: JSON!) {{ createSaga(name: \"twice\", "
                             f"data: $data, by: \"ann\") {shape} }}", data=data)
            assert made["saga"]["givenAsData"] and made["saga"]["stages"][1:] == [
                {"path": "a", "kind": "Stage"}, {"path": "b", "kind": "Stage"}]
            unknown = await run(f"mutation($data: JSON!) {{ createSaga(name: \"bad\", "
                                f"data: $data, by: \"ann\") {shape} }}", data={"stages": [
                                    {"kind": "Stage", "name": "a", "transaction": "nope"}]})
            assert unknown["__typename"] == "InvalidInput" and "'nope'" in unknown["message"]
            clash = await run(f"mutation($data: JSON!) {{ createSaga(name: \"code\", "
                              f"data: $data, by: \"ann\") {shape} }}", data=data)
            assert clash["__typename"] == "InvalidInput"
            create = ("mutation { createWork(saga: \"twice\", input: 1) { __typename "
                      "... on WorkCreated { work { workId } } ... on WrongState "
                      "{ message } } }")
            work_id = (await run(create))["work"]["workId"]
            for _ in range(250):
                row = await store.work(work_id)
                if row is not None and row["status"] == "completed":
                    break
                await anyio.sleep(0.02)
            assert row is not None and row["output"] == "3"  # run by the node: 1 + 1 + 1
            off = await run(f"mutation {{ disableSaga(name: \"twice\", by: \"ann\", reason: "
                            f"\"maintenance\") {shape} }}")
            assert off["enabled"] is False
            refused = await run(create)
            assert refused["__typename"] == "WrongState" and "disabled" in refused["message"]
            assert (await run(f"mutation {{ enableSaga(name: \"twice\", by: \"ann\") "
                              f"{shape} }}"))["enabled"] is True
            gone = await run(f"mutation {{ deleteSaga(name: \"twice\", by: \"ann\") "
                             f"{shape} }}")
            assert gone["__typename"] == "SagaChanged" and gone["saga"] is None
            missing = await run(f"mutation {{ deleteSaga(name: \"twice\", by: \"ann\") "
                                f"{shape} }}")
            assert missing["__typename"] == "NotFound"
            names = {s["name"] for s in (await schema.execute(
                "{ allSagas { name } }", context_value=Context(service))).data["allSagas"]}
            assert names == {"code"}
            node.stop()
            tg.cancel_scope.cancel()


async def test_the_workers_subscription_yields_changes_not_heartbeats(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    async with SqlStore.open(url) as store:
        node = WorkerNode(store, sagas(), [WorkerSpec(name="w", concurrency=2)],
                          node_id="n1", poll_interval=0.05, lease_ttl=0.3)
        async with anyio.create_task_group() as tg, Feed.running(store) as feed, \
                Runtime(sagas(), store=store) as runtime:
            await tg.start(node.run)
            service = Service(store, feed, runtime, wake=node.mail)
            seen: list[dict[str, Any]] = []
            document = ('subscription($after: String) { workers(node: ["n1"], '
                        'after: $after, interval: 0.05) { cursor type worker { workerId '
                        'status concurrency } } }')

            async def follow(into: list[dict[str, Any]], after: str | None = None) -> None:
                stream = await schema.subscribe(document, variable_values={"after": after},
                                                context_value=Context(service))
                async for item in stream:  # type: ignore[union-attr]
                    assert item.data is not None
                    into.append(item.data["workers"])

            tg.start_soon(follow, seen)
            await until(lambda: len(seen) >= 1)
            await anyio.sleep(0.5)  # heartbeats every 0.1 s: none of them is a change
            assert [(c["type"], c["worker"]) for c in seen] == [
                ("worker.current", {"workerId": "n1/w", "status": "active", "concurrency": 2})]
            await node.set_concurrency("w", 4)
            await until(lambda: len(seen) >= 2)
            assert seen[-1]["type"] == "worker.updated"
            assert seen[-1]["worker"]["concurrency"] == 4
            assert int(seen[-1]["cursor"]) > int(seen[0]["cursor"])
            # resumed from the first cursor: the change it missed, nothing before
            resumed: list[dict[str, Any]] = []
            tg.start_soon(follow, resumed, seen[0]["cursor"])
            await until(lambda: len(resumed) >= 1)
            assert resumed[0]["type"] == "worker.updated"
            assert resumed[0]["worker"]["concurrency"] == 4
            node.stop()
            tg.cancel_scope.cancel()


async def test_aggregate_folds_with_a_reducer_the_app_registered(tmp_path: Path) -> None:
    import pytest

    from workers.node import WorkerApp

    app = WorkerApp(sagas=sagas(), reducers={"spread": lambda v: max(v) - min(v)})
    with pytest.raises(ValueError, match="'max' is built in"):
        WorkerApp(sagas=sagas(), reducers={"max": max})
    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    async with SqlStore.open(url) as store, Feed.running(store) as feed, \
            Runtime(app.sagas, store=store) as runtime:
        for n in range(3):
            await runtime.run("slow", n)
        service = Service(store, feed, runtime, app=app)
        query = ('{ reducers aggregate(groupBy: ["saga"], reducer: "spread", '
                 'field: "duration", bucketSeconds: 3600, time: "finished_at") '
                 '{ group value count } }')
        result = await schema.execute(query, context_value=Context(service))
        assert result.errors is None and result.data is not None
        assert result.data["reducers"] == ["count", "sum", "avg", "min", "max", "p95", "spread"]
        took = [w["duration"] for w in await store.works(limit=10)]
        [row] = [r for r in result.data["aggregate"] if r["group"]["saga"] == "slow"]
        assert row["count"] == 3 and abs(row["value"] - (max(took) - min(took))) < 1e-9
        unknown = await schema.execute('{ aggregate(reducer: "median", field: "duration") '
                                       '{ value } }', context_value=Context(service))
        assert unknown.errors and "one of count, sum, avg, min, max, p95, spread" in \
            unknown.errors[0].message
