"""Definitions: bad input rejected when defined; the other composites; hooks; services."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from engine import (
    Branch,
    DefinitionError,
    Guard,
    Loop,
    ManualClock,
    Map,
    Observer,
    Parallel,
    Runtime,
    Saga,
    SagaRef,
    Service,
    ServiceError,
    Sleep,
    Stage,
    UnknownSagaError,
    UnknownWorkError,
    WorkStateError,
)

from .helpers import Ledger, retry, types


async def noop(ctx: Any, value: Any) -> Any:
    return value


def stage(name: str, **kw: Any) -> Stage:
    return Stage(name=name, transaction=noop, **kw)


# ---------------------------------------------------------------- bad input


def test_duplicate_stage_name_names_the_saga_and_the_stage() -> None:
    with pytest.raises(DefinitionError, match="saga 'order': duplicate stage name 'pay'"):
        Saga(name="order", stages=[stage("pay"), stage("pay")])


def test_dependency_cycle_is_rejected() -> None:
    with pytest.raises(DefinitionError, match=r"dependency cycle a -> b -> c -> a"):
        Parallel(name="p", branches=[stage("a"), stage("b"), stage("c")],
                 depends_on={"a": ["b"], "b": ["c"], "c": ["a"]})


def test_dependency_on_a_missing_branch_is_rejected() -> None:
    with pytest.raises(DefinitionError, match="branch 'a' depends on missing branch 'zz'"):
        Parallel(name="p", branches=[stage("a")], depends_on={"a": ["zz"]})
    with pytest.raises(DefinitionError, match="names branch 'q', which does not exist"):
        Parallel(name="p", branches=[stage("a")], depends_on={"q": ["a"]})


def test_loop_without_a_maximum_is_rejected() -> None:
    with pytest.raises(DefinitionError, match="loop 'poll' has no maximum"):
        Loop(name="poll", body=stage("x"), until=lambda c, o: True, max_iterations=None)
    with pytest.raises(DefinitionError, match="max_iterations >= 1, got 0"):
        Loop(name="poll", body=stage("x"), until=lambda c, o: True, max_iterations=0)


@pytest.mark.parametrize("name", ["", "a/b", "x[1]", "1abc", "a b", None])
def test_invalid_names_are_rejected(name: Any) -> None:
    with pytest.raises(DefinitionError, match=r"name .* is invalid"):
        stage(name)


def test_other_malformed_definitions() -> None:
    with pytest.raises(DefinitionError, match="expected at least one stage"):
        Saga(name="s", stages=[])
    with pytest.raises(DefinitionError, match="timeout must be a finite number of seconds > 0"):
        stage("a", timeout=0)
    with pytest.raises(DefinitionError, match="max_concurrency must be an int >= 1"):
        Map(name="m", stage=stage("a"), max_concurrency=0)
    with pytest.raises(DefinitionError, match="default 'zz' is not one of its cases"):
        Branch(name="b", choose=lambda c, i: "a", cases=[stage("a")], default="zz")
    with pytest.raises(DefinitionError, match="is not a stage definition"):
        Saga(name="s", stages=["nope"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="attempts must be an int >= 1"):
        retry(0)


def test_unknown_saga_reference_and_reference_cycles() -> None:
    with pytest.raises(UnknownSagaError, match="refers to saga 'ghost'"):
        Runtime([Saga(name="s", stages=[SagaRef(name="x", saga="ghost")])])
    a = Saga(name="a", stages=[SagaRef(name="to_b", saga="b")])
    b = Saga(name="b", stages=[SagaRef(name="to_a", saga="a")])
    with pytest.raises(DefinitionError, match="saga reference cycle"):
        Runtime([a, b])


async def test_unknown_saga_and_work_are_clear_errors() -> None:
    async with Runtime([Saga(name="s", stages=[stage("a")])]) as rt:
        with pytest.raises(UnknownSagaError, match="no saga is registered as 'nope'"):
            await rt.start("nope")
        with pytest.raises(UnknownWorkError, match="no work has id 'w9'"):
            rt.state("w9")
        result = await rt.run("s", 1)
        with pytest.raises(WorkStateError, match="completed; cannot signal 'go'"):
            await rt.signal(result.work_id, "go")
        assert types(rt, result.work_id)[-1] == "work.completed"


# -------------------------------------------------------------- composites


async def test_branch_picks_a_case_by_condition() -> None:
    ledger = Ledger()
    saga = Saga(name="s", stages=[Branch(
        name="route", choose=lambda ctx, v: "big" if v > 10 else "small",
        cases=[Stage(name="big", transaction=ledger.tx(100)),
               Stage(name="small", transaction=ledger.tx(1))])])
    async with Runtime([saga]) as rt:
        assert (await rt.run("s", 50)).output == 150
        result = await rt.run("s", 5)
        assert result.output == 6
        assert ledger.calls == [("tx", "route/big"), ("tx", "route/small")]
        assert types(rt, result.work_id) == [
            "work.created", "work.started", "stage.started", "stage.condition.started",
            "stage.condition.completed", "stage.transaction.started",
            "stage.transaction.completed", "stage.completed", "work.completed"]


async def test_branch_choosing_an_unknown_case_fails_with_a_clear_error() -> None:
    saga = Saga(name="s", stages=[Branch(name="route", choose=lambda c, v: "nope",
                                         cases=[stage("a")])])
    async with Runtime([saga]) as rt:
        result = await rt.run("s", 1)
        assert result.status == "failed"
        assert result.failure is not None
        assert "chose 'nope', which is not one of its cases" in result.failure["error"]["message"]


async def test_sleep_is_a_durable_timer_on_the_clock() -> None:
    clock = ManualClock()
    saga = Saga(name="s", stages=[Sleep(name="nap", seconds=3600), stage("after")])
    async with Runtime([saga], clock=clock) as rt:
        wid = await rt.start("s", "x")
        with anyio.fail_after(5):
            while "stage.sleep.started" not in types(rt, wid):
                await anyio.lowlevel.checkpoint()
        clock.advance(3599)
        for _ in range(50):
            await anyio.lowlevel.checkpoint()
        assert rt.state(wid).status == "running"
        clock.advance(1)
        result = await rt.wait(wid)
        assert result.output == "x"
        events = rt.events(wid)
        woke = next(e for e in events if e.type == "stage.completed" and e.path == "nap")
        slept = next(e for e in events if e.type == "stage.sleep.started")
        assert woke.time - slept.time == 3600


async def test_registered_saga_used_as_a_stage_by_name() -> None:
    ledger = Ledger()
    payment = Saga(name="payment", stages=[
        Stage(name="charge", transaction=ledger.tx(10), compensation=ledger.comp())])
    order = Saga(name="order", stages=[SagaRef(name="pay", saga="payment"),
                                       Stage(name="ship", transaction=ledger.fatal())])
    async with Runtime([payment, order]) as rt:
        result = await rt.run("order", 1)
        assert ledger.calls == [("tx", "pay/charge"), ("tx", "ship"), ("comp", "pay/charge")]
        assert result.compensated == ("pay/charge",)


async def test_map_items_from_a_function_and_empty_maps() -> None:
    saga = Saga(name="s", stages=[Map(name="m", items=lambda ctx, v: v["xs"],
                                      stage=Stage(name="sq", transaction=lambda c, x: _sq(x)))])
    async with Runtime([saga]) as rt:
        assert (await rt.run("s", {"xs": [1, 2, 3]})).output == [1, 4, 9]
        assert (await rt.run("s", {"xs": []})).output == []
        bad = await rt.run("s", {"xs": 5})
        assert bad.status == "failed" and bad.failure is not None
        assert "must be a JSON-serialisable list" in bad.failure["error"]["message"]


async def _sq(x: int) -> int:
    return x * x


async def test_loop_completes_at_its_maximum_when_asked() -> None:
    saga = Saga(name="s", stages=[Loop(name="l", body=Stage(name="x", transaction=lambda c, v:
                                                            _sq(v)),
                                       until=lambda c, o: False, max_iterations=3,
                                       on_max="complete")])
    async with Runtime([saga]) as rt:
        assert (await rt.run("s", 2)).output == 256


# -------------------------------------------------------------- user code


async def test_timeout_cancels_the_transaction_and_records_it() -> None:
    cancelled = anyio.Event()

    async def hang(ctx: Any, value: Any) -> Any:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    saga = Saga(name="s", stages=[Stage(name="a", transaction=hang, timeout=0.05,
                                        retry=retry(2))])
    async with Runtime([saga]) as rt:
        result = await rt.run("s", 1)
        assert cancelled.is_set()
        assert result.status == "failed" and result.failure is not None
        error = result.failure["error"]
        assert error["timed_out"] and "timed out after 0.05s" in error["message"]
        assert types(rt, result.work_id).count("stage.transaction.failed") == 2


async def test_user_errors_are_data_and_never_crash_the_engine() -> None:
    async def bad_output(ctx: Any, value: Any) -> Any:
        return object()

    async def raises_base(ctx: Any, value: Any) -> Any:
        raise KeyError("missing")

    saga = Saga(name="s", stages=[Stage(name="a", transaction=bad_output)])
    saga2 = Saga(name="t", stages=[Stage(name="a", transaction=raises_base)])
    async with Runtime([saga, saga2]) as rt:
        result = await rt.run("s", 1)
        assert result.status == "failed" and result.failure is not None
        assert "not JSON-serialisable" in result.failure["error"]["message"]
        result = await rt.run("t", 1)
        error = result.failure["error"] if result.failure else {}
        assert error["type"] == "KeyError" and "raises_base" in error["traceback"]


async def test_input_and_output_schemas_are_checked() -> None:
    saga = Saga(name="s", stages=[Stage(
        name="a", transaction=noop,
        input_schema={"type": "object", "required": ["amount"]},
        output_schema={"type": "object", "properties": {"amount": {"type": "integer"}}})])
    async with Runtime([saga]) as rt:
        assert (await rt.run("s", {"amount": 5})).status == "completed"
        result = await rt.run("s", {"amt": 5})
        assert result.failure is not None
        assert "input of stage 'a' does not match its schema" in result.failure["error"]["message"]
        result = await rt.run("s", {"amount": "5"})
        assert result.failure is not None
        assert "output of stage 'a'" in result.failure["error"]["message"]


async def test_observers_record_only_failures_and_produced_state() -> None:
    seen: list[str] = []

    def watch(ctx: Any, recorded: Any) -> Any:
        seen.append(recorded.type)
        return {"seen": recorded.path} if recorded.type == "stage.transaction.completed" else None

    def broken(ctx: Any, recorded: Any) -> None:
        raise RuntimeError("observer bug")

    saga = Saga(name="s", hooks=(
        Observer(name="audit", notify=watch, events=("stage.transaction.*",), paths=("b",)),
        Observer(name="oops", notify=broken, events=("work.completed",)),
    ), stages=[stage("a"), stage("b")])
    async with Runtime([saga]) as rt:
        result = await rt.run("s", 1)
        assert result.status == "completed"  # never fatal
        assert seen == ["stage.transaction.started", "stage.transaction.completed"]
        state = rt.state(result.work_id)
        assert state.observations == {"b:audit": {"seen": "b"}}
        kinds = types(rt, result.work_id)
        assert kinds.count("stage.observer.produced") == 1
        assert kinds[-1] == "stage.observer.failed"


async def test_guards_cascade_down_to_a_depth() -> None:
    checked: list[str] = []

    def check(ctx: Any, value: Any) -> bool:
        checked.append(ctx.path)
        return True

    inner = Saga(name="inner", stages=[stage("deep")])
    saga = Saga(name="s", hooks=(Guard(name="g", check=check, depth=1),),
                stages=[stage("top"), inner])
    async with Runtime([saga]) as rt:
        await rt.run("s", 1)
    assert checked == ["top"]  # inner/deep is two levels down


async def test_services_are_checked_created_lazily_and_closed() -> None:
    log: list[str] = []

    async def make_db(scope: Any) -> dict[str, Any]:
        log.append("open db")
        return {"vault": await scope.get("vault")}

    def make_vault(scope: Any) -> str:
        log.append("open vault")
        return "secret"

    async def use(ctx: Any, value: Any) -> Any:
        db = await ctx.service("db")
        return db["vault"]

    services = [
        Service(name="db", factory=make_db, depends_on=("vault",),
                close=lambda v: log.append("close db")),
        Service(name="vault", factory=make_vault, close=lambda v: log.append("close vault")),
    ]
    saga = Saga(name="s", stages=[Stage(name="a", transaction=use, services=("db",))])
    async with Runtime([saga], services=services) as rt:
        result = await rt.run("s", None)
        assert result.output == "secret"
        with anyio.fail_after(5):
            while len(log) < 4:
                await anyio.lowlevel.checkpoint()
    assert log == ["open vault", "open db", "close db", "close vault"]

    async with Runtime([saga]) as rt:
        with pytest.raises(ServiceError, match=r"missing services: 'db' \(required by 'a'\)"):
            await rt.start("s")
    cyclic = [Service(name="db", factory=make_db, depends_on=("vault",)),
              Service(name="vault", factory=make_vault, depends_on=("db",))]
    async with Runtime([saga], services=cyclic) as rt:
        with pytest.raises(ServiceError, match="service dependency cycle: db -> vault -> db"):
            await rt.start("s")
        assert rt.works() == []


async def test_cancel_compensates_then_ends_cancelled() -> None:
    ledger = Ledger()
    saga = Saga(name="s", stages=[
        Stage(name="a", transaction=ledger.tx(), compensation=ledger.comp()),
        Stage(name="b", transaction=ledger.tx())])
    async with Runtime([saga]) as rt:
        wid = await rt.start("s", 1, paused=True)
        await rt.step(wid)
        await rt.step(wid)
        await rt.step(wid)
        await rt.cancel(wid, by="ops", reason="customer left")
        result = await rt.wait(wid)
        assert result.status == "cancelled"
        assert ledger.compensated() == ["a"]
        assert result.failure is not None
        assert result.failure["error"]["message"] == "customer left"
