"""``dryRun`` through the schema, on a real store (SQLite and PostgreSQL): the rehearsal
of the demo saga with a stage forced to fail compensates the stages before it, a
rehearsal stores nothing, and bad requests are typed errors naming what is wrong."""

from __future__ import annotations

from typing import Any

from engine import Runtime
from engine.store import SqlStore
from engine.store.feed import Feed
from graphql_api.schema import Context, schema
from graphql_api.service import Service
from workers.actions import DEMO_ORDER, demo_saga

from .app import sagas

DRY_RUN = """mutation($saga: String!, $input: JSON, $fail: [String!]) {
  dryRun(saga: $saga, input: $input, fail: $fail) { __typename
    ... on DryRunReport { saga status ended output error failure compensated fail
      stages { path status attempts forced output error }
      events { seq type path attempt payload } }
    ... on InvalidInput { message field } ... on NotFound { message field } } }"""


async def test_a_dry_run_rehearses_a_compensation_and_stores_nothing(store_url: str) -> None:
    async with SqlStore.open(store_url) as store, Feed.running(store) as feed, \
            Runtime([demo_saga(), *sagas()], store=store) as runtime:
        service = Service(store, feed, runtime)

        async def dry_run(saga: str, input: Any = None, fail: Any = None) -> dict[str, Any]:
            result = await schema.execute(
                DRY_RUN, variable_values={"saga": saga, "input": input, "fail": fail},
                context_value=Context(service))
            assert result.errors is None, result.errors
            assert result.data is not None
            return dict(result.data["dryRun"])

        happy = await dry_run("demo", DEMO_ORDER)
        assert (happy["status"], happy["ended"], happy["compensated"]) == (
            "completed", True, [])
        assert happy["output"] == {"shipped": ["box:a"]}  # ship's example
        outputs = {s["path"]: s["output"] for s in happy["stages"]}
        assert outputs["pay/book"] == "slot-1" and outputs["pack[0]/box"] == "box:a"

        charged = await dry_run("demo", DEMO_ORDER, ["pay/charge"])
        assert (charged["status"], charged["ended"], charged["fail"]) == (
            "failed", True, ["pay/charge"])
        assert charged["failure"]["path"] == "pay/charge"
        assert "forced failure of 'pay/charge' (dry run)" in charged["error"]["message"]
        # what completed before it is undone, the reservation last; its side branch
        # (pay/book) ran beside it
        assert charged["compensated"][-1] == "reserve"
        assert set(charged["compensated"]) == {"reserve", "pay/book"}
        stages = {s["path"]: s for s in charged["stages"]}
        assert (stages["pay/charge"]["status"], stages["pay/charge"]["forced"]) == (
            "failed", True)
        assert (stages["reserve"]["status"], stages["reserve"]["forced"]) == (
            "compensated", False)
        assert "ship" not in stages and "pack" not in stages  # never reached
        events = charged["events"]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert (events[0]["type"], events[-1]["type"]) == ("work.created", "work.failed")
        assert events[0]["payload"]["dry_run"] == {"fail": ["pay/charge"]}
        undone = [e for e in events if e["type"] == "stage.compensation.completed"
                  and e["path"] == "reserve"]
        assert [e["payload"]["dry_run"] for e in undone] == [True]  # recorded, not called

        every = await dry_run("demo", DEMO_ORDER, ["pack[*]/box"])
        assert every["fail"] == ["pack[[]*]/box"] and every["status"] == "failed"
        assert {s["path"] for s in every["stages"] if s["forced"]} == {"pack[0]/box"}
        # nothing of any of them was stored
        assert await store.work_ids() == []
        count = await schema.execute("{ allWorks(first: 0) { totalCount } }",
                                     context_value=Context(service))
        assert count.data == {"allWorks": {"totalCount": 0}}


async def test_a_bad_dry_run_is_a_typed_error_naming_what_is_wrong(store_url: str) -> None:
    async with SqlStore.open(store_url) as store, Feed.running(store) as feed, \
            Runtime([demo_saga(), *sagas()], store=store) as runtime:
        service = Service(store, feed, runtime)

        async def dry_run(saga: str, input: Any = None, fail: Any = None) -> dict[str, Any]:
            result = await schema.execute(
                DRY_RUN, variable_values={"saga": saga, "input": input, "fail": fail},
                context_value=Context(service))
            assert result.errors is None and result.data is not None
            return dict(result.data["dryRun"])

        unknown = await dry_run("nope")
        assert (unknown["__typename"], unknown["field"]) == ("NotFound", "saga")
        assert "'nope'" in unknown["message"] and "demo" in unknown["message"]
        empty = await dry_run("demo", {"items": []})
        assert (empty["__typename"], empty["field"]) == ("InvalidInput", "input")
        assert "does not match its schema: items: [] should be non-empty" in empty["message"]
        typo = await dry_run("demo", DEMO_ORDER, ["pay/charge", "pay/chrage"])
        assert (typo["__typename"], typo["field"]) == ("InvalidInput", "fail")
        assert typo["message"].startswith(
            "fail pattern 'pay/chrage' names no stage of saga 'demo' with a transaction; "
            "expected one of reserve, pay/charge, pay/book, pack[*]/box, ship")
        composite = await dry_run("demo", DEMO_ORDER, ["pay"])  # no transaction of its own
        assert (composite["__typename"], composite["field"]) == ("InvalidInput", "fail")
        assert await store.work_ids() == []


async def test_a_dry_run_that_waits_stops_when_its_time_runs_out(tmp_path: Any) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    async with SqlStore.open(url) as store, Feed.running(store) as feed, \
            Runtime(sagas(), store=store) as runtime:
        service = Service(store, feed, runtime)
        found = await service.dry_run("gate", 1, limit=0.2)  # waits for a signal
        assert not found.ended and found.state.stages["w"].status == "running"
        assert found.events[-1].type == "stage.wait.started"
        assert await store.work_ids() == []
