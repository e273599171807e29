"""Sagas in the store (engine.store.sagas), on a SQLite file and on PostgreSQL: put,
enable, disable and delete with their refusals, nothing changed by a refused change;
what a poller compares changes with every change; PostgreSQL NOTIFYs each one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from engine import (
    ConflictError,
    DefinitionError,
    Functions,
    Runtime,
    Saga,
    Stage,
    UnknownSagaError,
    WorkStateError,
    saga_from_data,
)
from engine.store import SqlStore
from engine.store.migrate import copy_store
from engine.store.sagas import (
    CHANNEL,
    delete_saga,
    disable_saga,
    enable_saga,
    fingerprint,
    get_saga,
    list_sagas,
    put_saga,
)


async def reserve(ctx: Any, value: Any) -> Any:
    return value


async def charge(ctx: Any, value: Any) -> Any:
    return value


FUNCTIONS = Functions({"reserve": reserve, "charge": charge})
CODE = [Saga(name="billing", stages=[Stage(name="bill", transaction=charge)])]


def order(*stages: str, ref: str | None = None) -> dict[str, Any]:
    found: list[dict[str, Any]] = [{"kind": "Stage", "name": s, "transaction": s}
                                   for s in stages or ("reserve",)]
    if ref is not None:
        found.append({"kind": "SagaRef", "name": "use", "saga": ref})
    return {"stages": found}


async def snapshot(store: SqlStore) -> tuple[Any, ...]:
    return (await fingerprint(store), [r.to_dict() for r in await list_sagas(store)])


async def test_put_creates_and_replaces_a_saga_given_as_data(store_url: str) -> None:
    async with SqlStore.open(store_url) as store:
        assert await list_sagas(store) == [] and await fingerprint(store) == (0, None)
        created = await put_saga(store, "order", order(), functions=FUNCTIONS, by="ann",
                                 code_sagas=CODE)
        assert (created.name, created.version, created.enabled, created.in_code) == (
            "order", 1, True, False)
        assert created.data == {"name": "order", **order()}
        assert (created.created_by, created.updated_by) == ("ann", "ann")
        assert created.disabled_by is created.disabled_at is created.disabled_reason is None
        assert await get_saga(store, "order") == created
        assert await get_saga(store, "nope") is None
        # the stored data builds the saga back
        saga = saga_from_data(created.data, FUNCTIONS)
        assert [s.name for s in saga.stages] == ["reserve"]
        # the same data again changes nothing
        same = await put_saga(store, "order", {"name": "order", **order()},
                              functions=FUNCTIONS, by="bob")
        assert same == created
        await disable_saga(store, "order", by="cy", reason="testing")
        replaced = await put_saga(store, "order", order("reserve", "charge"),
                                  functions=FUNCTIONS, by="bob", expected_version=2)
        assert (replaced.version, replaced.updated_by, replaced.created_by) == (3, "bob", "ann")
        assert not replaced.enabled and replaced.disabled_by == "cy"  # still disabled
        assert replaced.updated_at > created.updated_at
        assert [r.name for r in await list_sagas(store)] == ["order"]
        # a saga using another by name: a code saga, or a stored data saga
        uses = await put_saga(store, "checkout", order(ref="order"), functions=FUNCTIONS,
                              by="ann", code_sagas=CODE)
        also = await put_saga(store, "invoice", order(ref="billing"), functions=FUNCTIONS,
                              by="ann", code_sagas=CODE)
        assert uses.version == also.version == 1
        assert [r.name for r in await list_sagas(store)] == ["checkout", "invoice", "order"]


async def test_a_refused_put_changes_nothing(store_url: str) -> None:
    async with SqlStore.open(store_url) as store:
        await put_saga(store, "order", order(), functions=FUNCTIONS, by="ann")
        await put_saga(store, "checkout", order(ref="order"), functions=FUNCTIONS, by="ann")
        await disable_saga(store, "billing", by="ann", code_sagas=CODE)
        before = await snapshot(store)
        refusals: list[tuple[str, Any, dict[str, Any], type[Exception], str]] = [
            ("order", order("charge2"), {}, DefinitionError,
             "stage 'charge2': transaction 'charge2' is not registered (registered: charge, "
             "reserve)"),
            ("order", {"stages": [{"kind": "Stage", "name": "a"}]}, {}, DefinitionError,
             "stage 'a': 'transaction' is missing"),
            ("order", [1], {}, DefinitionError, "saga 'order': its data must be a JSON object"),
            ("order", {"name": "other", **order()}, {}, DefinitionError,
             "saga 'order': its data names another saga, 'other'"),
            ("order", {**order(), "input_schema": {"x": {1, 2}}}, {}, DefinitionError,
             "saga 'order': its data is not JSON"),
            ("bad name", order(), {}, DefinitionError, "saga name 'bad name' is invalid"),
            ("billing", order(), {"code_sagas": CODE}, DefinitionError,
             "saga 'billing' is registered in code; a saga given as data needs a name"),
            ("billing", order(), {}, DefinitionError,
             "saga 'billing' is registered in code (the store only enables or disables it)"),
            ("new", order(ref="missing"), {}, DefinitionError,
             "stage 'use' refers to saga 'missing', which is not registered"),
            ("order", order(ref="checkout"), {}, DefinitionError,
             "saga reference cycle: order -> checkout -> order"),
            ("order", order("charge"), {"expected_version": 7}, ConflictError,
             "saga 'order' is at version 1 in the store, not 7: it was changed meanwhile"),
            ("order", order("charge"), {"expected_version": 0}, ConflictError,
             "saga 'order' is at version 1 in the store, not 0"),
            ("order", order("charge"), {"by": ""}, ValueError,
             "a change of a saga needs who makes it"),
        ]
        for name, data, options, error, message in refusals:
            kwargs: dict[str, Any] = {"functions": FUNCTIONS, "by": "bob", **options}
            with pytest.raises(error) as raised:
                await put_saga(store, name, data, **kwargs)
            assert message in str(raised.value), (message, str(raised.value))
            assert await snapshot(store) == before, message
        # a saga stored for other functions cannot be checked here, and is left as it is
        other = Functions({"reserve": reserve})
        with pytest.raises(DefinitionError, match="saga 'new' uses saga 'checkout' by name, "
                                                  "which does not build with these functions"):
            await put_saga(store, "new", order("charge2", ref="checkout"),
                           functions=Functions({"charge2": charge}), by="bob")
        assert await snapshot(store) == before
        assert (await put_saga(store, "lone", order(), functions=other, by="bob")).version == 1


async def test_enable_and_disable_any_saga(store_url: str) -> None:
    async with SqlStore.open(store_url) as store:
        await put_saga(store, "order", order(), functions=FUNCTIONS, by="ann")
        with pytest.raises(UnknownSagaError, match="no saga is registered as 'nope', in code "
                                                   "or as data \\(known: billing, order\\)"):
            await disable_saga(store, "nope", by="ann", code_sagas=CODE)
        with pytest.raises(ValueError, match="who makes it"):
            await disable_saga(store, "order", by="")
        off = await disable_saga(store, "billing", by="ann", reason="audit", code_sagas=CODE)
        assert (off.in_code, off.enabled, off.version, off.disabled_by, off.disabled_reason) == (
            True, False, 1, "ann", "audit")
        assert off.disabled_at == off.updated_at
        # a code saga's row stays known once written: no code_sagas needed from then on
        assert await disable_saga(store, "billing", by="bob") == off  # already: no change
        on = await enable_saga(store, "billing", by="bob")
        assert (on.enabled, on.version, on.updated_by, on.disabled_by, on.disabled_at) == (
            True, 2, "bob", None, None)
        assert await enable_saga(store, "billing", by="cy") == on
        data_off = await disable_saga(store, "order", by="cy")
        assert (data_off.enabled, data_off.version, data_off.disabled_reason) == (False, 2, "")
        assert (await enable_saga(store, "order", by="cy")).enabled


async def test_delete_a_saga_given_as_data_and_its_refusals(store_url: str) -> None:
    async with SqlStore.open(store_url) as store:
        await put_saga(store, "order", order(), functions=FUNCTIONS, by="ann")
        await put_saga(store, "checkout", order(ref="order"), functions=FUNCTIONS, by="ann")
        await disable_saga(store, "billing", by="ann", code_sagas=CODE)
        saga = saga_from_data((await get_saga(store, "order")).data, FUNCTIONS)  # type: ignore[union-attr]
        async with Runtime([saga], store=store) as runtime:
            await runtime.run("order", 1)  # a finished work does not keep it
            queued = [await runtime.start("order", i, run=False) for i in range(2)]
            paused = await runtime.start("order", 1, paused=True)
            before = await snapshot(store)
            for name, error, message in [
                    ("nope", UnknownSagaError, "no saga is stored as 'nope' (stored: billing, "
                                               "checkout, order)"),
                    ("billing", DefinitionError, "saga 'billing' is registered in code: only a "
                                                 "saga given as data can be deleted"),
                    ("order", DefinitionError, "saga 'order' is used by name by saga "
                                               "'checkout'; change or delete that one first")]:
                with pytest.raises(error) as raised:
                    await delete_saga(store, name, by="bob")
                assert message in str(raised.value)
                assert await snapshot(store) == before
            await delete_saga(store, "checkout", by="bob")
            before = await snapshot(store)
            with pytest.raises(WorkStateError) as raised:
                await delete_saga(store, "order", by="bob")
            assert str(raised.value) == (
                "saga 'order' has 3 unfinished works (1 paused, 2 pending); let them end, or "
                "cancel them, before deleting it")
            assert await snapshot(store) == before
            await runtime.cancel(paused, compensate=False)
            await runtime.wait(paused)
            for work_id in queued:
                assert await runtime.adopt(work_id)
                await runtime.wait(work_id)
        deleted = await delete_saga(store, "order", by="bob")
        assert deleted.name == "order" and deleted.version == 1
        assert [r.name for r in await list_sagas(store)] == ["billing"]
        with pytest.raises(ValueError, match="who makes it"):
            await delete_saga(store, "billing", by="")


async def test_every_change_changes_the_fingerprint(store_url: str) -> None:
    async with SqlStore.open(store_url) as store:
        seen = [await fingerprint(store)]
        changes = [
            put_saga(store, "a", order(), functions=FUNCTIONS, by="x"),
            put_saga(store, "b", order(), functions=FUNCTIONS, by="x"),
            put_saga(store, "a", order("charge"), functions=FUNCTIONS, by="x"),
            disable_saga(store, "b", by="x"),
            enable_saga(store, "b", by="x"),
            delete_saga(store, "b", by="x"),  # the newest row goes: the count tells
            put_saga(store, "b", order(), functions=FUNCTIONS, by="x"),
            delete_saga(store, "a", by="x"),
        ]
        for change in changes:
            await change
            seen.append(await fingerprint(store))
        assert len(set(seen)) == len(seen), seen


async def test_postgresql_notifies_every_change(postgres_url: str) -> None:
    import asyncpg

    url = sa.make_url(postgres_url).set(drivername="postgresql")
    got: list[str] = []
    third = anyio.Event()

    def heard(_c: Any, _p: Any, _ch: Any, name: str) -> None:
        got.append(name)
        if len(got) == 3:
            third.set()

    async with SqlStore.open(postgres_url) as store:
        conn = await asyncpg.connect(url.render_as_string(hide_password=False))
        try:
            await conn.add_listener(CHANNEL, heard)
            await put_saga(store, "a", order(), functions=FUNCTIONS, by="x")
            await disable_saga(store, "a", by="x")
            await put_saga(store, "a", order(), functions=FUNCTIONS, by="x")  # no change
            await delete_saga(store, "a", by="x")
            with pytest.raises(UnknownSagaError):
                await delete_saga(store, "a", by="x")  # refused: nothing sent
            with anyio.fail_after(10):
                await third.wait()
            await conn.execute("SELECT 1")  # a NOTIFY sent after the third one came by now
        finally:
            await conn.close()
    assert got == ["a", "a", "a"]


async def test_a_copied_store_keeps_its_sagas(tmp_path: Path, store_url: str) -> None:
    source_url = f"sqlite+aiosqlite:///{tmp_path}/source.sqlite"
    async with SqlStore.open(source_url) as source, SqlStore.open(store_url) as target:
        await put_saga(source, "order", order(), functions=FUNCTIONS, by="ann")
        await disable_saga(source, "billing", by="ann", reason="old", code_sagas=CODE)
        await copy_store(source, target)
        assert await list_sagas(target) == await list_sagas(source)
        await copy_store(source, target)  # again: what it holds stays
        assert await list_sagas(target) == await list_sagas(source)
