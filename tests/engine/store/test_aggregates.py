"""Group-by with reducers over works and stage runs, on both databases: the database's
folds and Python's (p95, CEL expressions) agree with folds computed here by hand."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from engine import Runtime, Saga, Stage, StageFailure
from engine.errors import ExpressionError
from engine.store import SqlStore
from engine.store.aggregates import aggregate, check_reducers


async def grow(ctx: Any, n: int) -> dict[str, Any]:
    if n % 5 == 4:
        raise StageFailure("no", retryable=False)
    return {"items": list(range(n % 3))}


SAGAS = [Saga(name="a", stages=[Stage(name="one", transaction=grow)]),
         Saga(name="b", stages=[Stage(name="one", transaction=grow),
                                Stage(name="two", transaction=grow)])]


async def test_groups_fold_as_computed_by_hand(store_url: str) -> None:
    async with SqlStore.open(store_url) as store, Runtime(SAGAS, store=store) as rt:
        for i in range(20):
            await rt.run("a" if i % 2 else "b", i)
        rows = await store.works(limit=100)
        by_hand: dict[tuple[str, str], list[float]] = {}
        for row in rows:
            by_hand.setdefault((row["saga"], row["status"]), []).append(row["duration"])
        counted = await aggregate(store, group_by=["saga", "status"])
        assert {(r["group"]["saga"], r["group"]["status"]): r["count"] for r in counted} == \
            {k: len(v) for k, v in by_hand.items()}
        for reducer, fold in (("sum", math.fsum), ("max", max), ("min", min),
                              ("avg", lambda v: math.fsum(v) / len(v)),
                              ("p95", lambda v: sorted(v)[math.ceil(0.95 * len(v)) - 1])):
            found = await aggregate(store, group_by=["saga", "status"], reducer=reducer,
                                    field="duration")
            for row in found:
                expected = fold(by_hand[(row["group"]["saga"], row["group"]["status"])])
                assert row["value"] == pytest.approx(expected), (reducer, row)
        # a CEL expression maps each work to a number: items in the output
        items = await aggregate(store, group_by=["saga"], reducer="sum",
                                expression="has(work.output.items) ? "
                                           "double(size(work.output.items)) : 0.0",
                                status=["completed"])
        expected: dict[str, float] = {}
        for row in rows:
            if row["status"] == "completed":
                output = json.loads(row["output"])
                expected[row["saga"]] = expected.get(row["saga"], 0.0) + len(
                    output.get("items", []) if isinstance(output, dict) else [])
        assert {r["group"]["saga"]: r["value"] for r in items} == expected
        # time buckets: every work of this run falls in one ten-minute bucket or two
        buckets = await aggregate(store, bucket=600.0)
        assert sum(r["count"] for r in buckets) == 20 and len(buckets) <= 2
        assert all(r["group"]["bucket"] % 600 == 0 for r in buckets)
        # by when they finished: the same works, in buckets of their finishing times
        finished = await aggregate(store, bucket=1.0, time="finished_at", group_by=["status"])
        assert sum(r["count"] for r in finished) == 20
        for row in finished:
            start = row["group"]["bucket"]
            assert row["count"] == len([w for w in rows if w["status"] == row["group"]["status"]
                                        and start <= w["finished_at"] < start + 1.0])
        # a reducer registered in Python: the spread of each saga's durations
        spread = await aggregate(store, group_by=["saga"], reducer="spread", field="duration",
                                 reducers={"spread": lambda v: max(v) - min(v)})
        for row in spread:
            took = [w["duration"] for w in rows if w["saga"] == row["group"]["saga"]]
            assert row["value"] == pytest.approx(max(took) - min(took))
        # stage runs by template
        stages = await aggregate(store, over="stage_runs", group_by=["saga", "template"])
        assert {(r["group"]["saga"], r["group"]["template"]) for r in stages} >= {
            ("a", "one"), ("b", "one")}


async def test_bad_arguments_name_what_is_wrong(tmp_path: Any) -> None:
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        for kwargs, message in (({"over": "events"}, "over must be one of"),
                                ({"group_by": ["input"]}, "cannot be grouped by 'input'"),
                                ({"reducer": "median"}, "reducer must be one of"),
                                ({"reducer": "sum"}, "needs a field or an expression"),
                                ({"reducer": "sum", "field": "input"}, "no number 'input'"),
                                ({"bucket": 0}, "bucket must be a number of seconds > 0")):
            with pytest.raises(ValueError, match=message):
                await aggregate(store, **kwargs)
        with pytest.raises(ExpressionError, match="reads 'state'"):
            await aggregate(store, reducer="sum", expression="state.seq")
        with pytest.raises(ValueError, match="stage_runs have no time 'created_at'"):
            await aggregate(store, over="stage_runs", time="created_at")
        # registered reducers: checked when registered, and what they give when folding
        for reducers, message in (({"p95": max}, "'p95' is built in"),
                                  ({"two words": max}, "must be a word"),
                                  ({"top": 3}, "must be a function")):
            with pytest.raises(ValueError, match=message):
                check_reducers(reducers)  # type: ignore[arg-type]
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/t.sqlite") as store, \
            Runtime(SAGAS, store=store) as rt:
        await rt.run("a", 1)
        for function, message in ((lambda v: 1 / 0, "reducer 'bad' failed on a group of 1 "
                                                     "values: ZeroDivisionError"),
                                  (lambda v: "high", "reducer 'bad' gave 'high'"),
                                  (lambda v: math.inf, "reducer 'bad' gave inf")):
            with pytest.raises(ValueError, match=message):
                await aggregate(store, reducer="bad", field="duration",
                                reducers={"bad": function})
