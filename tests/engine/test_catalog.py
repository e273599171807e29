"""The catalog of a saga: its definition as data (engine.catalog.describe), the hash works
record of it, and which works a changed definition goes on with (Saga.version and
continues), on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
import tenacity

from engine import (
    Branch,
    DefinitionError,
    DefinitionMismatchError,
    Guard,
    Loop,
    Map,
    Observer,
    Parallel,
    RecordedEvent,
    RetryPolicy,
    Runtime,
    Saga,
    SagaRef,
    Sleep,
    Stage,
    Wait,
    compile_saga,
)
from engine.catalog import can_continue, definition_hash, describe, hash_description
from engine.store import SqlStore
from engine.store.schema import events, snapshots

ROOT = Path(__file__).resolve().parents[2]


class CardDeclined(Exception):
    pass


async def step(ctx: Any, value: Any) -> Any:
    return value


async def other_step(ctx: Any, value: Any) -> Any:
    return value


async def undo(ctx: Any, value: Any, output: Any, reason: Any) -> None:
    return None


async def items(ctx: Any, value: Any) -> list[int]:
    return [1, 2]


async def done(ctx: Any, output: Any) -> bool:
    return True


async def pick(ctx: Any, value: Any) -> str:
    return "fast"


async def positive(ctx: Any, value: Any) -> bool:
    return True


async def watch(ctx: Any, event: Any) -> None:
    return None


def payment(*, attempts: int = 4, version: int = 3, wait: float = 2,
            schema: Any = None) -> Saga:
    return Saga(name="payment", version=version, stages=[
        Stage(name="charge", transaction=step, compensation=undo,
              retry=RetryPolicy(attempts=attempts, wait=tenacity.wait_fixed(wait),
                                retry_on=(ConnectionError, CardDeclined),
                                give_up_on=(ValueError,)),
              timeout=5.0, compensation_timeout=7.0,
              compensation_retry=RetryPolicy(attempts=2, wait=tenacity.wait_fixed(1)),
              hooks=(Guard(name="positive", check=positive),),
              input_schema={"type": "object"},
              output_schema=schema or {"type": "object"},
              example={"charged": True}, services=("bank",), lock_key="card:{card}",
              rate_limit_key="bank:{bank}")])


def composite(*, extra: bool = False, attempts: int = 4, description: str = "",
              transaction: Any = step, example: Any = 1, version: int = 1,
              continues: tuple[int, ...] = (), seconds: float = 30) -> Saga:
    stages: list[Any] = [
        Parallel(name="prepare", max_concurrency=2, depends_on={"pack": ["reserve", "check"]},
                 branches=[Stage(name="reserve", transaction=transaction, example=example),
                           Stage(name="check", transaction=step),
                           Stage(name="pack", transaction=step)]),
        Map(name="boxes", items=items, max_concurrency=3,
            stage=Loop(name="poll", max_iterations=5, until=done, on_max="complete",
                       body=Stage(name="look", transaction=step))),
        Branch(name="speed", choose=pick, default="slow", cases=[
            Wait(name="fast", signal="go", timeout=60, timeout_output={"late": True}),
            Sleep(name="slow", seconds=seconds)]),
        SagaRef(name="pay", saga="payment"),
    ]
    if extra:
        stages.append(Stage(name="notify", transaction=step))
    return Saga(name="order", description=description, version=version, continues=continues,
                retry_budget=6, stages=stages,
                hooks=(Observer(name="audit", notify=watch, events=("stage.*",)),))


def plan_of(saga: Saga, *others: Saga) -> Any:
    others = others or (payment(),)
    return compile_saga(saga, {s.name: s for s in (saga, *others)})


def test_describe_gives_every_stage_with_its_kind_and_parameters() -> None:
    found = describe(plan_of(composite()))
    json.dumps(found, allow_nan=False)  # JSON-ready
    assert (found["saga"], found["version"], found["continues"]) == ("order", 1, [])
    assert found["services"] == {"bank": ["pay/charge"]}
    stages = {s["template"]: s for s in found["stages"]}
    assert [(s["path"], s["kind"]) for s in found["stages"]] == [
        ("", "Saga"), ("prepare", "Parallel"), ("prepare/reserve", "Stage"),
        ("prepare/check", "Stage"), ("prepare/pack", "Stage"), ("boxes", "Map"),
        ("boxes[*]/poll", "Loop"), ("boxes[*]/poll[*]/look", "Stage"), ("speed", "Branch"),
        ("speed/fast", "Wait"), ("speed/slow", "Sleep"), ("pay", "SagaRef"),
        ("pay/charge", "Stage")]
    root = stages[""]
    assert root["children"] == ["prepare", "boxes", "speed", "pay"]
    assert root["retry_budget"] == 6
    assert root["hooks"] == [{"kind": "Observer", "name": "audit", "events": ["stage.*"],
                              "paths": ["*"], "depth": None,
                              "notify": "tests.engine.test_catalog.watch"}]
    assert stages["prepare"]["depends_on"] == {"pack": ["check", "reserve"]}
    assert stages["prepare"]["max_concurrency"] == 2
    assert stages["prepare"]["children"] == ["prepare/reserve", "prepare/check", "prepare/pack"]
    assert stages["prepare/reserve"]["example"] == 1
    assert (stages["boxes"]["items"], stages["boxes"]["max_concurrency"]) == (
        "tests.engine.test_catalog.items", 3)
    poll = stages["boxes/poll"]
    assert (poll["max_iterations"], poll["on_max"], poll["until"]) == (
        5, "complete", "tests.engine.test_catalog.done")
    speed = stages["speed"]
    assert (speed["cases"], speed["default"], speed["choose"]) == (
        ["fast", "slow"], "slow", "tests.engine.test_catalog.pick")
    assert {k: stages["speed/fast"][k] for k in ("signal", "timeout", "timeout_output")} == {
        "signal": "go", "timeout": 60, "timeout_output": {"late": True}}
    assert stages["speed/slow"]["seconds"] == 30
    pay = stages["pay"]
    assert (pay["saga"], pay["version"], pay["children"]) == ("payment", 3, ["pay/charge"])
    charge = stages["pay/charge"]
    assert charge["transaction"] == "tests.engine.test_catalog.step"
    assert charge["compensation"] == "tests.engine.test_catalog.undo"
    assert charge["retry"] == {
        "attempts": 4, "retry_on": ["ConnectionError", "tests.engine.test_catalog.CardDeclined"],
        "give_up_on": ["ValueError"],
        "backoff": {"type": "wait_fixed", "parameters": {"wait_fixed": 2.0}}}
    assert (charge["timeout"], charge["compensation_timeout"]) == (5.0, 7.0)
    assert charge["compensation_retry"]["attempts"] == 2
    assert (charge["input_schema"], charge["output_schema"], charge["example"]) == (
        {"type": "object"}, {"type": "object"}, {"charged": True})
    assert (charge["services"], charge["lock_key"], charge["rate_limit_key"]) == (
        ["bank"], "card:{card}", "bank:{bank}")
    assert charge["hooks"][0] == {"kind": "Guard", "name": "positive", "when": "pre",
                                  "depth": 0, "check": "tests.engine.test_catalog.positive"}
    assert charge["guards"] == {"pre": ["positive"], "post": []}
    assert charge["observers"] == ["audit"]  # declared on the root, it reaches every stage
    assert stages["prepare/check"]["compensation"] is None
    assert stages["prepare/check"]["retry"]["backoff"]["type"] == "wait_exponential_jitter"
    assert hash_description(found) == found["definition"] == definition_hash(plan_of(composite()))


def test_a_backoff_that_is_a_plain_function_is_shown_by_name() -> None:
    def backoff(state: Any) -> float:
        return 1.0

    saga = Saga(name="s", stages=[Stage(name="a", transaction=step,
                                        retry=RetryPolicy(attempts=2, wait=backoff))])
    (_, stage) = describe(compile_saga(saga))["stages"]
    assert stage["retry"]["backoff"] == {
        "type": "function",
        "name": "tests.engine.test_catalog."
                "test_a_backoff_that_is_a_plain_function_is_shown_by_name.<locals>.backoff"}


HASH_SCRIPT = ("from tests.engine.test_catalog import composite, plan_of\n"
               "from engine.catalog import definition_hash\n"
               "print(definition_hash(plan_of(composite())))\n")


def test_the_hash_is_the_same_in_other_processes() -> None:
    here = definition_hash(plan_of(composite()))
    for seed in ("1", "2"):  # another str hash seed: no set or dict order leaks in
        child = subprocess.run([sys.executable, "-c", HASH_SCRIPT], capture_output=True,
                               text=True, timeout=60, cwd=ROOT,
                               env={**os.environ, "PYTHONHASHSEED": seed})
        assert child.returncode == 0, child.stderr
        assert child.stdout.strip() == here


def test_the_hash_changes_with_what_a_work_replays_and_not_with_the_cosmetic() -> None:
    base = definition_hash(plan_of(composite()))
    changed = {
        "a stage added": plan_of(composite(extra=True)),
        "a retry of a saga used by name": plan_of(composite(), payment(attempts=5)),
        "a sleep's seconds": plan_of(composite(seconds=31)),
        "a schema": plan_of(composite(), payment(schema={"type": "object", "version": 2})),
    }
    for what, plan in changed.items():
        assert definition_hash(plan) != base, what
    renamed = Saga(name="order", stages=[Stage(name="b", transaction=step)])
    assert definition_hash(compile_saga(renamed)) != definition_hash(compile_saga(
        Saga(name="order", stages=[Stage(name="a", transaction=step)])))
    two = [Stage(name="a", transaction=step), Stage(name="b", transaction=step)]
    assert definition_hash(compile_saga(Saga(name="order", stages=two))) != \
        definition_hash(compile_saga(Saga(name="order", stages=two[::-1])))
    same = {
        "a description": plan_of(composite(description="the order flow")),
        "an example": plan_of(composite(example=2)),
        "another function of the same kind": plan_of(composite(transaction=other_step)),
        "a version": plan_of(composite(version=2, continues=(1,))),
        "the version of a saga used by name": plan_of(composite(), payment(version=4)),
        "a backoff (the delay chosen is recorded)": plan_of(composite(), payment(wait=3)),
    }
    for what, plan in same.items():
        assert definition_hash(plan) == base, what


def test_version_and_continues_are_checked() -> None:
    with pytest.raises(DefinitionError, match="saga 'x': version must be a whole number >= 1"):
        Saga(name="x", version=0, stages=[Stage(name="a", transaction=step)])
    with pytest.raises(DefinitionError, match=r"continues must hold versions .* got '1'"):
        Saga(name="x", continues=("1",), stages=[Stage(name="a", transaction=step)])  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="continues must be a tuple of versions"):
        Saga(name="x", continues=1, stages=[Stage(name="a", transaction=step)])  # type: ignore[arg-type]
    saga = Saga(name="x", version=3, continues=[2, 1, 2],  # type: ignore[arg-type]
                stages=[Stage(name="a", transaction=step)])
    assert saga.continues == (1, 2)
    plan = compile_saga(saga)
    assert can_continue(plan, None, None)  # older than hashes
    assert can_continue(plan, definition_hash(plan), 3)
    assert can_continue(plan, "0" * 32, 1) and not can_continue(plan, "0" * 32, 3)


# ---------------------------------------------------------------- works and definitions


def order(*, version: int = 1, continues: tuple[int, ...] = (), extra: bool = False) -> Saga:
    stages: list[Any] = [Stage(name="reserve", transaction=step),
                         Wait(name="approve", signal="approve"),
                         Stage(name="ship", transaction=step)]
    if extra:
        stages.append(Stage(name="notify", transaction=step))
    return Saga(name="order", version=version, continues=continues, stages=stages)


async def _started_on_v1(store: SqlStore) -> str:
    """A work of order version 1 that reserved and waits for its approval; its runtime
    has closed (its lease handed back)."""
    waiting = anyio.Event()

    def seen(recorded: RecordedEvent) -> None:
        if recorded.event.type == "stage.wait.started":
            waiting.set()

    async with Runtime([order()], store=store, on_event=seen) as v1:
        work_id = await v1.start("order", {"sku": "tea"})
        with anyio.fail_after(10):
            await waiting.wait()
    return work_id


async def test_a_work_records_its_definition_and_a_changed_one_does_not_go_on_with_it(
        store_url: str) -> None:
    v1, v2 = order(), order(version=2, extra=True)
    async with SqlStore.open(store_url) as store:
        work_id = await _started_on_v1(store)
        (created,) = await store.read(work_id, until=1)
        assert created.event.payload["definition"] == definition_hash(compile_saga(v1))
        assert created.event.payload["definition_version"] == 1
        row = await store.work(work_id)
        assert row is not None
        assert (row["definition"], row["definition_version"]) == (
            definition_hash(compile_saga(v1)), 1)
        async with Runtime([v2], store=store) as runtime:
            with pytest.raises(DefinitionMismatchError) as refused:
                await runtime.adopt(work_id)
            message = str(refused.value)
            for part in (work_id, definition_hash(compile_saga(v1)), "(version 1)",
                         runtime.definition("order"), "(version 2, continuing versions: none)",
                         "declare version 1 in the saga's continues"):
                assert part in message
            assert (refused.value.definition, refused.value.version) == (
                definition_hash(compile_saga(v1)), 1)
            assert await runtime.recover() == []  # it leaves the work too
        row = await store.work(work_id)
        assert row is not None and row["status"] == "waiting"  # unfinished, in the store
        # a definition that declares version 1 compatible goes on with it
        async with Runtime([order(version=2, continues=(1,), extra=True)],
                           store=store) as runtime:
            assert await runtime.adopt(work_id) is True
            await runtime.signal(work_id, "approve", {"ok": True})
            with anyio.fail_after(10):
                result = await runtime.wait(work_id)
        assert result.status == "completed"
        paths = [e.event.path for e in await store.read(work_id)
                 if e.event.type == "stage.transaction.completed"]
        assert paths == ["reserve", "ship", "notify"]  # the new stage ran too


async def test_a_work_older_than_definition_hashes_goes_on_under_any_definition(
        store_url: str) -> None:
    async with SqlStore.open(store_url) as store:
        work_id = await _started_on_v1(store)
        # what a work created before hashes looks like: its creation says nothing of them
        async with store.engine.begin() as conn:
            first = (await conn.execute(events.select().where(
                events.c.work_id == work_id, events.c.seq == 1))).mappings().one()
            payload = json.loads(first["payload"])
            del payload["definition"], payload["definition_version"]
            await conn.execute(events.update().where(events.c.position == first["position"])
                               .values(payload=json.dumps(payload)))
            await conn.execute(snapshots.delete().where(snapshots.c.work_id == work_id))
        async with Runtime([order(version=5, extra=True)], store=store) as runtime:
            assert await runtime.adopt(work_id) is True
            await runtime.signal(work_id, "approve")
            with anyio.fail_after(10):
                assert (await runtime.wait(work_id)).status == "completed"


async def test_a_rewind_puts_a_work_on_the_current_definition(store_url: str) -> None:
    v2 = order(version=2, extra=True)
    async with SqlStore.open(store_url) as store:
        work_id = await _started_on_v1(store)
        async with Runtime([v2], store=store) as runtime:
            stream = await runtime.history(work_id)
            fork = await runtime.rewind(work_id, len(stream), paused=False)
            forked = runtime.state(fork)
            assert (forked.definition, forked.definition_version) == (
                runtime.definition("order"), 2)
            assert forked.parent_work_id == work_id
            await runtime.signal(fork, "approve")
            with anyio.fail_after(10):
                assert (await runtime.wait(fork)).status == "completed"
        (created,) = await store.read(fork, until=1)
        assert created.event.payload["definition_version"] == 2
        # a definition without a stage the prefix ran cannot take the fork
        async with Runtime([Saga(name="order", version=3, stages=[
                Stage(name="reserve", transaction=step), Stage(name="ship", transaction=step)])],
                store=store) as runtime:
            with pytest.raises(ValueError, match="stage 'approve', which this definition "
                                                 "does not have; rewind to an earlier seq"):
                await runtime.rewind(work_id, len(stream))
            fresh = await runtime.rewind(work_id, 1, paused=False)  # from its creation
            with anyio.fail_after(10):
                assert (await runtime.wait(fresh)).status == "completed"


async def test_retrying_a_compensation_needs_the_definition_the_work_started_on(
        tmp_path: Path) -> None:
    async def fail(ctx: Any, value: Any) -> Any:
        raise RuntimeError("down")

    async def broken_undo(ctx: Any, value: Any, output: Any, reason: Any) -> None:
        raise RuntimeError("undo down")

    def saga(version: int) -> Saga:
        return Saga(name="s", version=version, stages=[
            Stage(name="a", transaction=step, compensation=broken_undo,
                  compensation_retry=RetryPolicy(attempts=1)),
            Stage(name="b", transaction=fail)] + ([Stage(name="c", transaction=step)]
                                                  if version > 1 else []))

    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        async with Runtime([saga(1)], store=store) as runtime:
            result = await runtime.run("s", 1)
        assert result.status == "compensation_failed"
        async with Runtime([saga(2)], store=store) as runtime:
            with pytest.raises(DefinitionMismatchError, match="started on definition"):
                await runtime.retry_compensation(result.work_id, by="ops")
