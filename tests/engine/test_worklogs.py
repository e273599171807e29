"""ctx.logger's records kept with their work in a real store, fingers crossed: a failed
work keeps its DEBUG records, a completed one drops them; structured JSON lines; the
error-report hook told of a work that ended for good, with the exception."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from engine import Runtime, Saga, Stage, StageFailure
from engine.store import SqlStore
from engine.worklogs import ErrorReport, logs_of


async def pack(ctx: Any, n: int) -> int:
    ctx.logger.debug("weighing parcel %s", n)
    ctx.logger.info("packed parcel %s", n)
    return n


async def ship(ctx: Any, n: int) -> int:
    ctx.logger.debug("calling the carrier for %s", n)
    if n < 0:
        raise StageFailure("the carrier refused", retryable=False)
    return n


SAGA = Saga(name="parcel", stages=[Stage(name="pack", transaction=pack),
                                   Stage(name="ship", transaction=ship)])


async def test_debug_records_are_kept_only_for_a_work_that_failed(store_url: str) -> None:
    reports: list[ErrorReport] = []
    async with SqlStore.open(store_url) as store:
        async with Runtime([SAGA], store=store, on_error=reports.append) as runtime:
            good = await runtime.start("parcel", 1)
            bad = await runtime.start("parcel", -1)
            assert (await runtime.wait(good)).status == "completed"
            assert (await runtime.wait(bad)).status == "failed"
        # the runtime's end writes what it still held
        kept = await logs_of(store, good)
        failed = await logs_of(store, bad)
        infos = await logs_of(store, bad, levels=["info"])
        later = await logs_of(store, bad, after=failed[0]["position"])
    assert [(r["level"], r["path"], r["attempt"], r["message"]) for r in kept] == [
        ("INFO", "pack", 1, "packed parcel 1")]
    # DEBUG records come once the work has failed (by position); by time they fall in
    assert [(r["level"], r["path"], r["message"])
            for r in sorted(failed, key=lambda r: r["time"])] == [
        ("DEBUG", "pack", "weighing parcel -1"), ("INFO", "pack", "packed parcel -1"),
        ("DEBUG", "ship", "calling the carrier for -1")]
    assert [r["message"] for r in infos] == ["packed parcel -1"]
    assert [r["position"] for r in later] == [r["position"] for r in failed[1:]]
    assert all(r["logger"] == "stepsaga.work" for r in failed)
    assert [(r.work_id, r.saga, r.status, r.path) for r in reports] == [
        (bad, "parcel", "failed", "ship")]
    assert isinstance(reports[0].exception, StageFailure)
    assert reports[0].error["message"] == "the carrier refused"


async def test_a_broken_hook_never_stops_a_work(tmp_path: Path) -> None:
    def broken(report: ErrorReport) -> None:
        raise RuntimeError("the hook is broken")

    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store, \
            Runtime([SAGA], store=store, on_error=broken) as runtime:
        assert (await runtime.run("parcel", -1)).status == "failed"
        assert (await runtime.run("parcel", 2)).status == "completed"


async def test_records_of_stage_code_are_json_lines_with_work_path_and_attempt(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from graphql_api.observability import setup_logging

    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    try:
        setup_logging("json", "info")
        async with Runtime([SAGA]) as runtime:
            done = await runtime.run("parcel", 7)
    finally:
        root.handlers[:] = before[0]
        root.setLevel(before[1])
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()
             if '"stepsaga.work"' in line]
    assert [{k: r[k] for k in ("level", "message", "work_id", "stage", "attempt", "saga")}
            for r in lines] == [{"level": "INFO", "message": "packed parcel 7",
                                 "work_id": done.work_id, "stage": "pack", "attempt": 1,
                                 "saga": "parcel"}]  # DEBUG is below the level asked


async def test_a_work_s_logs_read_through_the_api(tmp_path: Path) -> None:
    from engine.store.feed import Feed
    from graphql_api.schema import Context, schema
    from graphql_api.service import Service

    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store, \
            Feed.running(store) as feed:
        async with Runtime([SAGA], store=store) as runtime:
            bad = (await runtime.run("parcel", -3)).work_id
        async with Runtime([SAGA], store=store) as runtime:
            service = Service(store, feed, runtime)
            query = ("query($id: String!, $after: String, $levels: [String!]) { "
                     "workLogs(workId: $id, after: $after, levels: $levels) { cursor level "
                     "path attempt message } }")
            found = await schema.execute(query, variable_values={"id": bad},
                                         context_value=Context(service))
            assert found.errors is None, found.errors
            assert found.data is not None
            rows = found.data["workLogs"]
            assert {(r["level"], r["path"], r["message"]) for r in rows} == {
                ("DEBUG", "pack", "weighing parcel -3"), ("INFO", "pack", "packed parcel -3"),
                ("DEBUG", "ship", "calling the carrier for -3")}
            after = await schema.execute(query, variable_values={
                "id": bad, "after": rows[0]["cursor"], "levels": ["debug"]},
                context_value=Context(service))
            assert after.data is not None
            assert [r["message"] for r in after.data["workLogs"]] == [
                r["message"] for r in rows[1:] if r["level"] == "DEBUG"]
            wrong = await schema.execute(query, variable_values={"id": bad,
                                                                 "levels": ["loud"]},
                                         context_value=Context(service))
            assert wrong.errors is not None
            assert "levels: 'loud' is not a level" in wrong.errors[0].message


async def test_a_record_is_formatted_when_kept_and_a_runtime_may_keep_none(
        tmp_path: Path) -> None:
    async def odd(ctx: Any, n: int) -> int:
        ctx.logger.debug("%d parcels and %d", n)  # one argument short: shown, not raised
        ctx.logger.warning("at %s%%", n)
        raise StageFailure("no", retryable=False)

    broken = Saga(name="broken", stages=[Stage(name="odd", transaction=odd)])
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        async with Runtime([broken], store=store) as runtime:
            kept = (await runtime.run("broken", 7)).work_id
        async with Runtime([broken], store=store, keep_logs=False) as runtime:
            unkept = (await runtime.run("broken", 8)).work_id
        records = await logs_of(store, kept)
        assert [(r["level"], r["message"]) for r in sorted(records, key=lambda r: r["time"])
                ] == [("DEBUG", "'%d parcels and %d' (7,) (could not format: not enough "
                                "arguments for format string)"), ("WARNING", "at 7%")]
        assert await logs_of(store, unkept) == []
