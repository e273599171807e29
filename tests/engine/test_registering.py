"""Registering and unregistering sagas while a runtime runs, and disabled sagas: on a
SQLite file and on PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from engine import (
    DefinitionError,
    Runtime,
    Saga,
    SagaDisabledError,
    SagaRef,
    Stage,
    UnknownSagaError,
    WorkStateError,
)
from engine.store import SqlStore


async def add(ctx: Any, value: int) -> int:
    return value + 1


async def double(ctx: Any, value: int) -> int:
    return value * 2


def inc(*names: str, fn: Any = add) -> Saga:
    return Saga(name="inc", stages=[Stage(name=n, transaction=fn) for n in names or ("a",)])


TWICE = Saga(name="twice", stages=[SagaRef(name="x", saga="inc"),
                                   SagaRef(name="y", saga="inc")])


async def test_sagas_registered_while_running_refer_to_what_is_registered_now(
        store_url: str) -> None:
    async with SqlStore.open(store_url) as store, Runtime(store=store) as runtime:
        with pytest.raises(UnknownSagaError, match="refers to saga 'inc', which is not "
                                                   "registered"):
            runtime.register(TWICE)
        assert runtime.sagas == {}
        runtime.register(inc())
        runtime.register(TWICE)
        assert (await runtime.run("twice", 1)).output == 3
        before = runtime.definition("twice")
        with pytest.raises(DefinitionError, match="a saga is registered as 'inc' already; "
                                                  "pass replace=True"):
            runtime.register(inc("a", "b"))
        # replacing a saga compiles again the sagas that use it by name
        runtime.register(inc("a", "b"), replace=True)
        assert runtime.definition("twice") != before
        assert [s["path"] for s in runtime.describe("twice")["stages"]] == [
            "", "x", "x/a", "x/b", "y", "y/a", "y/b"]
        assert (await runtime.run("twice", 1)).output == 5
        with pytest.raises(DefinitionError, match="saga 'inc' cannot be unregistered: saga "
                                                  "'twice' uses it by name"):
            runtime.unregister("inc")
        assert sorted(runtime.sagas) == ["inc", "twice"]
        runtime.update_sagas(unregister=["twice", "inc"])
        assert runtime.sagas == {} and runtime.catalog() == []
        with pytest.raises(UnknownSagaError, match="no saga is registered as 'inc', so it "
                                                   "cannot be unregistered"):
            runtime.unregister("inc")
        with pytest.raises(UnknownSagaError, match="no saga is registered as 'twice'"):
            await runtime.start("twice", 1)


async def test_a_change_that_fails_changes_nothing() -> None:
    original = inc()
    async with Runtime(sagas=[original, TWICE]) as runtime:
        definition = runtime.definition("twice")
        broken = Saga(name="inc", stages=[SagaRef(name="loop", saga="twice")])
        with pytest.raises(DefinitionError, match="saga reference cycle"):
            runtime.register(broken, replace=True)
        with pytest.raises(DefinitionError, match="two sagas to register are named 'inc'"):
            runtime.update_sagas(register=[inc(), inc()], replace=True)
        with pytest.raises(DefinitionError, match="expected Saga definitions"):
            runtime.register("inc")  # type: ignore[arg-type]
        assert runtime.sagas["inc"] is original and runtime.definition("twice") == definition
        assert (await runtime.run("twice", 1)).output == 3


async def test_works_running_keep_their_plan(store_url: str) -> None:
    async with SqlStore.open(store_url) as store, \
            Runtime(sagas=[inc("a", "b")], store=store) as runtime:
        work_id = await runtime.start("inc", 1, paused=True)
        runtime.register(inc("a", "b", "c", fn=double), replace=True)
        await runtime.resume(work_id)
        assert (await runtime.wait(work_id)).output == 3  # two stages adding one
        again = await runtime.start("inc", 1, paused=True)
        runtime.unregister("inc")
        await runtime.resume(again)
        result = await runtime.wait(again)
        assert (result.status, result.output) == ("completed", 8)


async def test_a_disabled_saga_starts_no_work_and_its_works_go_on(store_url: str) -> None:
    async with SqlStore.open(store_url) as store, \
            Runtime(sagas=[inc("a", "b")], store=store) as runtime:
        running = await runtime.start("inc", 1, paused=True)
        queued = await runtime.start("inc", 5, run=False)
        assert runtime.is_enabled("inc")
        runtime.disable("inc", by="alice", reason="refunds are broken", at=0)
        assert not runtime.is_enabled("inc")
        kwargs: dict[str, Any]
        for kwargs in ({}, {"run": False}, {"paused": True}):
            with pytest.raises(SagaDisabledError) as refused:
                await runtime.start("inc", 1, **kwargs)
            assert str(refused.value) == (
                "saga 'inc' is disabled (by alice at 1970-01-01 00:00:00 UTC: refunds are "
                "broken): new works of it are refused (its works started before go on); "
                "enable it to start works")
            assert (refused.value.saga, refused.value.by, refused.value.reason) == (
                "inc", "alice", "refunds are broken")
        with pytest.raises(SagaDisabledError):
            await runtime.dry_run("inc", 1)
        assert isinstance(refused.value, RuntimeError) and \
            not isinstance(refused.value, WorkStateError)
        before = await store.works(limit=100)
        assert sorted(w["work_id"] for w in before) == sorted([running, queued])
        # its works go on: the one driven here, and the queued one when adopted
        await runtime.resume(running)
        assert (await runtime.wait(running)).output == 3
        assert await runtime.adopt(queued)
        assert (await runtime.wait(queued)).output == 7
        runtime.disable("inc")
        with pytest.raises(SagaDisabledError, match=r"^saga 'inc' is disabled: new works"):
            await runtime.start("inc", 1)
        runtime.disable("inc", reason="maintenance")
        with pytest.raises(SagaDisabledError, match=r"^saga 'inc' is disabled \(maintenance\)"):
            await runtime.start("inc", 1)
        runtime.enable("inc")
        assert (await runtime.run("inc", 1)).output == 3
        # a name not registered yet may be disabled: it holds once it is registered
        runtime.disable("later", by="bob")
        runtime.register(Saga(name="later", stages=[Stage(name="a", transaction=add)]))
        with pytest.raises(SagaDisabledError, match=r"^saga 'later' is disabled \(by bob\)"):
            await runtime.start("later", 1)
