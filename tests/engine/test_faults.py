"""Faults in user code and definitions: each fails the stage it belongs to (or is refused
when defined), is recorded as data, and leaves the runtime and its other works alone."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import tenacity

from engine import (
    Abort,
    Breakpoint,
    DefinitionError,
    Forward,
    Guard,
    Observer,
    Parallel,
    RecordedEvent,
    RetryPolicy,
    RetryTransaction,
    Runtime,
    Saga,
    Sleep,
    Stage,
    Wait,
    replay,
)
from engine.store import SqlStore

from .helpers import Ledger, retry, types

START = ["work.created", "work.started"]
TX = ["stage.transaction.started", "stage.transaction.completed"]
FAILED = ["stage.transaction.started", "stage.transaction.failed", "stage.failed"]
ROLLBACK = ["work.compensating", "stage.compensation.started",
            "stage.compensation.completed", "work.failed"]
INTERRUPTED = "engine.errors.InterruptedCall"  # error_data records module and class


async def ok(ctx: Any, value: Any) -> Any:
    return value


def url_of(path: Path) -> str:
    return "sqlite+aiosqlite:///" + str(path / "s.sqlite")


@asynccontextmanager
async def runtime(sagas: list[Saga], store_dir: Path | None = None,
                  **kw: Any) -> AsyncIterator[tuple[Runtime, SqlStore | None]]:
    """A runtime in memory, or on a SQLite file in ``store_dir``.

    A stray ``CancelledError`` in a runtime's task cancels its task group, and the
    runtime's exit swallows that cancellation: the body would end silently, its
    assertions skipped. This fails the test instead."""
    cut_short = False
    async with AsyncExitStack() as stack:
        store = None
        if store_dir is not None:
            store = await stack.enter_async_context(SqlStore.open(url_of(store_dir)))
        rt = await stack.enter_async_context(Runtime(sagas, store=store, **kw))
        try:
            yield rt, store
        except BaseException:
            cut_short = True
            raise
    if cut_short:  # reached only when the exit swallowed what the body raised
        pytest.fail("the runtime's task group was cancelled before the test body ended")


class Bystander:
    """A work of another saga, in flight in the same runtime until let go: it must end
    normally whatever the work under test did."""

    def __init__(self) -> None:
        self.gate = anyio.Event()

        async def hold(ctx: Any, value: int) -> int:
            await self.gate.wait()
            return value + 1

        self.saga = Saga(name="bystander", stages=[Stage(name="hold", transaction=hold)])

    async def start(self, rt: Runtime) -> str:
        return await rt.start("bystander", 1)

    async def finish(self, rt: Runtime, work_id: str) -> None:
        self.gate.set()
        with anyio.fail_after(5):
            result = await rt.wait(work_id)
        assert (result.status, result.output) == ("completed", 2)
        assert types(rt, work_id) == [*START, *TX, "work.completed"]


def payloads(rt: Runtime, work_id: str, kind: str, path: str | None = None) -> list[Any]:
    return [e.event.payload for e in rt.events(work_id)
            if e.type == kind and (path is None or e.path == path)]


def two_stages(b: Stage, ledger: Ledger) -> Saga:
    """Stage a completes (and is compensated on failure), then the stage under test."""
    return Saga(name="s", stages=[
        Stage(name="a", transaction=ledger.tx(), compensation=ledger.comp()), b])


# ---------------------------------------------------------------- 1. retry wait strategies


def raising_wait(state: Any) -> float:
    raise RuntimeError("boom")


@pytest.mark.parametrize(("wait", "why"), [
    (raising_wait, "boom"),
    (lambda state: float("inf"), "inf"),
    (lambda state: float("nan"), "nan"),
], ids=["raises", "inf", "nan"])
async def test_a_failing_wait_strategy_fails_the_stage_for_good(
        wait: Callable[[Any], float], why: str) -> None:
    ledger = Ledger()
    ledger.fail("b")
    bystander = Bystander()
    saga = two_stages(Stage(name="b", transaction=ledger.tx(),
                            retry=RetryPolicy(attempts=3, wait=wait)), ledger)
    async with runtime([saga, bystander.saga]) as (rt, _):
        other = await bystander.start(rt)
        with anyio.fail_after(5):
            result = await rt.run("s", 1)
        assert types(rt, result.work_id) == [*START, *TX, *FAILED, *ROLLBACK]
        (failed,) = payloads(rt, result.work_id, "stage.failed")
        error = failed["error"]
        assert (error["type"], error["retryable"]) == ("RetryPolicyError", False)
        assert "stage 'b'" in error["message"] and why in error["message"]
        assert (result.status, result.compensated) == ("failed", ("a",))
        assert result.failure is not None and result.failure["error"]["type"] == "RetryPolicyError"
        await bystander.finish(rt, other)


def test_a_tenacity_strategy_choosing_nan_is_refused_when_the_policy_is_made() -> None:
    with pytest.raises(ValueError, match="finite delay"):
        RetryPolicy(attempts=3, wait=tenacity.wait_fixed(float("nan")))


# ---------------------------------------------------------------- 2. fallbacks


@pytest.mark.parametrize("fallback", [{1, 2}, object()], ids=["set", "object"])
def test_a_fallback_that_is_not_json_is_refused_when_defined(fallback: Any) -> None:
    with pytest.raises(DefinitionError, match="stage 'b': fallback is not JSON"):
        Stage(name="b", transaction=ok, fallback=fallback)


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "sqlite"])
async def test_a_fallback_changed_after_definition_fails_the_stage(
        durable: bool, tmp_path: Path) -> None:
    ledger = Ledger()
    ledger.fail("b")
    fallback: list[Any] = [1]
    saga = two_stages(Stage(name="b", transaction=ledger.tx(), fallback=fallback), ledger)
    fallback.append({2})  # a list stays mutable after the definition checked it
    async with runtime([saga], tmp_path if durable else None) as (rt, store):
        with anyio.fail_after(5):
            result = await rt.run("s", 1)
        assert types(rt, result.work_id) == [*START, *TX, *FAILED, *ROLLBACK]
        (failed,) = payloads(rt, result.work_id, "stage.failed")
        assert failed["error"]["type"] == "OutputError"
        assert "fallback of stage 'b'" in failed["error"]["message"]
        assert (result.status, result.compensated) == ("failed", ("a",))
        if store is not None:
            row = await store.work(result.work_id)
            assert row is not None and row["status"] == "failed"


# ---------------------------------------------------------------- 3. nested retry budgets


def nested(ledger: Ledger, *, sibling: bool = False) -> Saga:
    inner = Saga(name="inner", retry_budget=5, stages=[
        Stage(name="x", transaction=ledger.tx(), retry=retry(10))])
    after = [Stage(name="y", transaction=ledger.tx(), retry=retry(10))] if sibling else []
    return Saga(name="outer", retry_budget=1, stages=[inner, *after])


async def test_a_retry_counts_against_every_budget_on_its_path() -> None:
    ledger = Ledger()
    ledger.fail("inner/x")
    async with runtime([nested(ledger)]) as (rt, _):
        result = await rt.run("outer", 1)
        assert types(rt, result.work_id) == [
            *START, "stage.started",
            "stage.transaction.started", "stage.transaction.failed", "stage.retry.scheduled",
            *FAILED, "stage.failed", "work.compensating", "work.failed"]
        (scheduled,) = payloads(rt, result.work_id, "stage.retry.scheduled")
        assert scheduled["budgets"] == ["inner", ""]  # innermost first
        assert result.status == "failed"
        assert result.failure is not None and result.failure["path"] == "inner/x"


async def test_a_sibling_cannot_retry_once_the_outer_budget_is_spent() -> None:
    ledger = Ledger()
    ledger.fail("inner/x", times=1)
    ledger.fail("y")
    async with runtime([nested(ledger, sibling=True)]) as (rt, _):
        result = await rt.run("outer", 1)
        scheduled = [(e.path, e.event.payload["budgets"]) for e in rt.events(result.work_id)
                     if e.type == "stage.retry.scheduled"]
        assert scheduled == [("inner/x", ["inner", ""])]
        assert ledger.calls == [("tx", "inner/x"), ("tx", "inner/x"), ("tx", "y")]
        assert result.status == "failed"
        assert result.failure is not None and result.failure["path"] == "y"


# ---------------------------------------------------------------- 4. a clean-up that runs out


async def test_a_clean_up_that_runs_out_keeps_the_original_failure(tmp_path: Path) -> None:
    async def charge(ctx: Any, value: Any) -> Any:
        raise RuntimeError("card declined")

    async def refund(ctx: Any, value: Any, output: Any, reason: Any) -> None:
        raise RuntimeError("refund service down")

    saga = Saga(name="s", stages=[Stage(name="charge", transaction=charge, compensation=refund,
                                        compensation_retry=retry(2))])
    comp_failed = ["stage.compensation.started", "stage.compensation.failed"]
    async with runtime([saga], tmp_path) as (rt, _):
        result = await rt.run("s", 1)
        wid = result.work_id
        assert types(rt, wid) == [
            *START, "stage.transaction.started", "stage.transaction.failed", *comp_failed,
            "stage.retry.scheduled", *comp_failed, "work.compensation_failed"]
        assert result.failure is not None and result.failure["path"] == "charge"
        assert result.failure["error"]["message"] == "card declined"
        (stopped,) = payloads(rt, wid, "work.compensation_failed")
        assert stopped["failure"]["path"] == "charge"
        assert stopped["failure"]["error"]["message"] == "card declined"
    async with runtime([saga], tmp_path) as (rt, store):
        assert store is not None
        for again in (await rt.wait(wid), replay((await store.load(wid))[1])):
            assert again.status == "compensation_failed"
            assert again.failure is not None and again.failure["path"] == "charge"
            assert again.failure["error"]["message"] == "card declined"
            assert again.error is not None and again.error["message"] == "refund service down"


# ---------------------------------------------------------------- 5. breakpoints


def three(ledger: Ledger) -> Saga:
    return Saga(name="three", stages=[Stage(name=n, transaction=ledger.tx()) for n in "abc"])


BEFORE_B = Breakpoint(event="stage.transaction.started", path="b", when="before")
PAUSED_AT_B = [*START, *TX, "work.paused"]


def pause_watch() -> tuple[anyio.Event, Callable[[RecordedEvent], None]]:
    paused = anyio.Event()

    def on_event(recorded: RecordedEvent) -> None:
        if recorded.type == "work.paused":
            paused.set()

    return paused, on_event


async def start_to_breakpoint(ledger: Ledger, tmp_path: Path) -> str:
    """Start a work that pauses in front of b's transaction; the runtime then closes."""
    paused, on_event = pause_watch()
    async with runtime([three(ledger)], tmp_path, on_event=on_event) as (rt, _):
        wid = await rt.start("three", 1, breakpoints=[BEFORE_B])
        with anyio.fail_after(5):
            await paused.wait()
        (pause,) = payloads(rt, wid, "work.paused")
        assert pause["reason"] == "breakpoint"
        assert pause["pending"] == {"type": "stage.transaction.started", "path": "b",
                                    "attempt": 1}
    return wid


async def mstep_past_the_breakpoint(rt: Runtime, wid: str, ledger: Ledger) -> None:
    report = await rt.mstep(wid)
    assert report.events and (report.events[0].type, report.events[0].path) == (
        "stage.transaction.started", "b")
    assert report.reason == "finished"
    assert (await rt.wait(wid)).output == 4
    assert ledger.calls == [("tx", "a"), ("tx", "b"), ("tx", "c")]


async def test_mstep_steps_past_the_breakpoint_it_paused_at() -> None:
    ledger = Ledger()
    paused, on_event = pause_watch()
    async with runtime([three(ledger)], on_event=on_event) as (rt, _):
        wid = await rt.start("three", 1, breakpoints=[BEFORE_B])
        with anyio.fail_after(5):
            await paused.wait()
        assert types(rt, wid) == PAUSED_AT_B
        await mstep_past_the_breakpoint(rt, wid, ledger)
        assert types(rt, wid) == [*PAUSED_AT_B, *TX, *TX, "work.completed"]


async def test_mstep_steps_past_a_stored_breakpoint_after_a_restart(tmp_path: Path) -> None:
    ledger = Ledger()
    wid = await start_to_breakpoint(ledger, tmp_path)
    async with runtime([three(ledger)], tmp_path) as (rt, _):
        assert await rt.recover() == [wid]
        assert types(rt, wid) == PAUSED_AT_B
        await mstep_past_the_breakpoint(rt, wid, ledger)
        assert [e.type for e in await rt.history(wid)] == [
            *PAUSED_AT_B, *TX, *TX, "work.completed"]


async def test_step_goes_on_from_a_stored_breakpoint_after_a_restart(tmp_path: Path) -> None:
    ledger = Ledger()
    wid = await start_to_breakpoint(ledger, tmp_path)
    async with runtime([three(ledger)], tmp_path) as (rt, _):
        assert await rt.recover() == [wid]
        for kind in TX:
            recorded = await rt.step(wid)
            assert recorded is not None and (recorded.type, recorded.path) == (kind, "b")
        await rt.resume(wid)
        with anyio.fail_after(5):
            result = await rt.wait(wid)
        assert (result.status, result.output) == ("completed", 4)
        assert types(rt, wid) == [*PAUSED_AT_B, *TX, "work.resumed", *TX, "work.completed"]


# ---------------------------------------------------------------- 6. hook names


def audit(ctx: Any, recorded: RecordedEvent) -> Any:
    return recorded.path


async def allow(ctx: Any, value: Any) -> bool:
    return True


@pytest.mark.parametrize("stage_hook", [
    Observer(name="audit", notify=audit), Guard(name="audit", check=allow)],
    ids=["observer", "guard"])
def test_two_hooks_with_one_name_reaching_a_stage_are_refused(stage_hook: Any) -> None:
    saga = Saga(name="s", hooks=(Observer(name="audit", notify=audit),), stages=[
        Stage(name="a", transaction=ok), Stage(name="b", transaction=ok, hooks=(stage_hook,))])
    with pytest.raises(DefinitionError, match=r"two hooks named 'audit' reach stage 'b', "
                                              r"declared on '\(root\)' and on 'b'"):
        Runtime([saga])


async def test_observers_with_different_names_both_record() -> None:
    events = ("stage.transaction.completed",)
    saga = Saga(name="s", hooks=(Observer(name="audit", notify=audit, events=events),), stages=[
        Stage(name="b", transaction=ok, hooks=(
            Observer(name="metrics", notify=lambda ctx, r: r.event.payload["output"],
                     events=events),))])
    async with runtime([saga]) as (rt, _):
        result = await rt.run("s", 7)
        produced = [(p["observer"], p["value"])
                    for p in payloads(rt, result.work_id, "stage.observer.produced")]
        assert sorted(produced) == [("audit", "b"), ("metrics", 7)]
        assert rt.state(result.work_id).observations == {"b:audit": "b", "b:metrics": 7}


# ---------------------------------------------------------------- 7. compensation results


def rolled_back(returns: Any) -> Saga:
    async def undo(ctx: Any, value: Any, output: Any, reason: Any) -> Any:
        return returns

    return Saga(name="s", stages=[
        Stage(name="a", transaction=ok, compensation=undo, compensation_retry=retry(2)),
        Stage(name="b", transaction=Ledger().fatal())])


@pytest.mark.parametrize("returns", [42, "ok", Forward(output=1), RetryTransaction()],
                         ids=["int", "str", "forward", "retry_transaction"])
async def test_a_rollback_returning_what_it_may_not_fails(returns: Any) -> None:
    comp_failed = ["stage.compensation.started", "stage.compensation.failed"]
    async with runtime([rolled_back(returns)]) as (rt, _):
        result = await rt.run("s", 1)
        assert types(rt, result.work_id) == [
            *START, *TX, *FAILED, "work.compensating", *comp_failed, "stage.retry.scheduled",
            *comp_failed, "work.compensation_failed"]
        for failed in payloads(rt, result.work_id, "stage.compensation.failed", "a"):
            assert failed["error"]["type"] == "CompensationResultError"
            assert "stage 'a'" in failed["error"]["message"]
            assert repr(returns) in failed["error"]["message"]
        assert result.status == "compensation_failed"
        assert result.failure is not None and result.failure["path"] == "b"


@pytest.mark.parametrize("returns", [None, Abort()], ids=["none", "abort"])
async def test_a_rollback_may_return_none_or_abort(returns: Any) -> None:
    async with runtime([rolled_back(returns)]) as (rt, _):
        result = await rt.run("s", 1)
        assert types(rt, result.work_id) == [*START, *TX, *FAILED, *ROLLBACK]
        assert (result.status, result.compensated) == ("failed", ("a",))


# ---------------------------------------------------------------- 8. poison outputs


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"v": value}
    return value


POISON: list[Any] = [
    pytest.param(lambda: float("nan"), id="nan"),
    pytest.param(lambda: float("inf"), id="inf"),
    pytest.param(lambda: 10 ** 5000, id="long_int"),  # str() of it raises ValueError
    pytest.param(lambda: deep(5000), id="deep_dict"),
]


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "sqlite"])
@pytest.mark.parametrize("poison", POISON)
async def test_a_poison_output_fails_its_stage(poison: Callable[[], Any], durable: bool,
                                               tmp_path: Path) -> None:
    async def produce(ctx: Any, value: Any) -> Any:
        return poison()

    ledger = Ledger()
    bystander = Bystander()
    saga = two_stages(Stage(name="b", transaction=produce, retry=retry(3)), ledger)
    store_dir = tmp_path if durable else None
    async with runtime([saga, bystander.saga], store_dir) as (rt, store):
        other = await bystander.start(rt)
        with anyio.fail_after(5):
            result = await rt.run("s", 1)
        wid = result.work_id
        assert types(rt, wid) == [*START, *TX, *FAILED, *ROLLBACK]
        (failed,) = payloads(rt, wid, "stage.transaction.failed", "b")
        assert (failed["error"]["type"], failed["error"]["retryable"]) == ("OutputError", False)
        assert "output of stage 'b'" in failed["error"]["message"]
        assert (result.status, result.compensated) == ("failed", ("a",))
        await bystander.finish(rt, other)
        if store is not None:
            row = await store.work(wid)
            assert row is not None and row["status"] == "failed"
    if durable:
        async with runtime([saga, bystander.saga], tmp_path) as (rt, _):
            assert await rt.recover() == []
            again = await rt.wait(wid)
            assert (again.status, again.compensated) == ("failed", ("a",))
            assert again.failure is not None
            assert again.failure["error"]["type"] == "OutputError"
            assert [e.type for e in await rt.history(wid)] == [*START, *TX, *FAILED, *ROLLBACK]


# ---------------------------------------------------------------- 9. BaseExceptions


BASE_EXCEPTIONS: list[Any] = [
    pytest.param(KeyboardInterrupt, id="KeyboardInterrupt"),
    pytest.param(SystemExit, id="SystemExit"),
    pytest.param(GeneratorExit, id="GeneratorExit"),
    pytest.param(lambda: BaseException("x"), id="BaseException"),
    pytest.param(asyncio.CancelledError, id="CancelledError"),  # not asked for by anyone
]


@pytest.mark.parametrize("make", BASE_EXCEPTIONS)
async def test_a_base_exception_from_a_transaction_fails_only_its_stage(
        make: Callable[[], BaseException]) -> None:
    async def interrupt(ctx: Any, value: Any) -> Any:
        raise make()

    ledger = Ledger()
    bystander = Bystander()
    saga = two_stages(Stage(name="b", transaction=interrupt, retry=retry(3)), ledger)
    async with runtime([saga, bystander.saga]) as (rt, _):
        other = await bystander.start(rt)
        with anyio.fail_after(5):
            result = await rt.run("s", 1)
        assert types(rt, result.work_id) == [*START, *TX, *FAILED, *ROLLBACK]
        (failed,) = payloads(rt, result.work_id, "stage.transaction.failed", "b")
        assert (failed["error"]["type"], failed["error"]["retryable"]) == (INTERRUPTED, False)
        assert type(make()).__name__ in failed["error"]["message"]
        assert (result.status, result.compensated) == ("failed", ("a",))
        await bystander.finish(rt, other)


async def test_a_compensation_raising_system_exit_fails_the_compensation() -> None:
    async def undo(ctx: Any, value: Any, output: Any, reason: Any) -> None:
        raise SystemExit(3)

    bystander = Bystander()
    saga = Saga(name="s", stages=[Stage(name="a", transaction=ok, compensation=undo),
                                  Stage(name="b", transaction=Ledger().fatal())])
    async with runtime([saga, bystander.saga]) as (rt, _):
        other = await bystander.start(rt)
        with anyio.fail_after(5):
            result = await rt.run("s", 1)
        assert types(rt, result.work_id) == [
            *START, *TX, *FAILED, "work.compensating", "stage.compensation.started",
            "stage.compensation.failed", "work.compensation_failed"]
        (failed,) = payloads(rt, result.work_id, "stage.compensation.failed", "a")
        assert (failed["error"]["type"], failed["error"]["retryable"]) == (INTERRUPTED, False)
        assert "SystemExit" in failed["error"]["message"]
        assert result.status == "compensation_failed"
        await bystander.finish(rt, other)


# ---------------------------------------------------------------- 10. stage timeouts


async def blocking(ctx: Any, value: Any) -> Any:
    time.sleep(0.3)  # noqa: ASYNC251 -- blocking on purpose: no timeout can cancel it
    return value


async def swallowing(ctx: Any, value: Any) -> Any:
    try:
        await anyio.sleep(1)
    except BaseException:  # swallows the cancellation on purpose
        return 1
    return 2


@pytest.mark.parametrize("transaction", [blocking, swallowing], ids=["blocking", "swallowing"])
async def test_a_call_that_overruns_its_timeout_times_out(transaction: Any) -> None:
    saga = Saga(name="s", stages=[
        Stage(name="slow", transaction=transaction, timeout=0.1, retry=retry(1))])
    async with runtime([saga]) as (rt, _):
        with anyio.fail_after(5):
            result = await rt.run("s", 1)
        assert types(rt, result.work_id) == [*START, *FAILED, "work.compensating", "work.failed"]
        (failed,) = payloads(rt, result.work_id, "stage.transaction.failed")
        assert failed["error"]["timed_out"] is True
        assert "timed out after 0.1s" in failed["error"]["message"]
        assert result.status == "failed" and result.output is None


# ---------------------------------------------------------------- 11. durations when defined


@pytest.mark.parametrize(("define", "name"), [
    (lambda: Sleep(name="nap", seconds=math.nan), "sleep 'nap'"),
    (lambda: Sleep(name="nap", seconds=math.inf), "sleep 'nap'"),
    (lambda: Sleep(name="nap", seconds=-1), "sleep 'nap'"),
    (lambda: Wait(name="hold", signal="go", timeout=math.nan), "wait 'hold'"),
    (lambda: Wait(name="hold", signal="go", timeout=math.inf), "wait 'hold'"),
    (lambda: Stage(name="slow", transaction=ok, timeout="5"), "stage 'slow'"),
    (lambda: Stage(name="slow", transaction=ok, timeout=True), "stage 'slow'"),
], ids=["sleep_nan", "sleep_inf", "sleep_negative", "wait_nan", "wait_inf",
        "stage_str", "stage_bool"])
def test_a_duration_must_be_a_finite_number(define: Callable[[], Any], name: str) -> None:
    with pytest.raises(DefinitionError, match=name):
        define()


# ---------------------------------------------------------------- 12. idempotency keys


async def test_every_call_has_its_own_idempotency_key() -> None:
    keys: list[str] = []
    tries = {"b": 0, "a": 0}

    async def record(ctx: Any, value: Any) -> Any:
        keys.append(ctx.idempotency_key)
        if ctx.path == "b":
            raise RuntimeError("b failed")
        return value

    async def undo(ctx: Any, value: Any, output: Any, reason: Any) -> None:
        keys.append(ctx.idempotency_key)
        tries[ctx.path] += 1
        # b's first clean-up fails once; a's rollback fails twice, then works
        if (ctx.path, tries[ctx.path]) in (("b", 1), ("a", 1), ("a", 2)):
            raise RuntimeError(f"{ctx.path} undo failed")

    saga = Saga(name="s", stages=[
        Stage(name="a", transaction=record, compensation=undo, compensation_retry=retry(2)),
        Stage(name="b", transaction=record, compensation=undo, retry=retry(2),
              compensation_retry=retry(2))])
    async with runtime([saga]) as (rt, _):
        result = await rt.run("s", 1)
        assert result.status == "compensation_failed"
        await rt.retry_compensation(result.work_id, by="ops")
        with anyio.fail_after(5):
            result = await rt.wait(result.work_id)
        assert (result.status, result.compensated) == ("failed", ("a",))
    w = result.work_id
    assert keys == [
        f"{w}/a/1",
        f"{w}/b/1", f"{w}/b/1/cleanup/1", f"{w}/b/1/cleanup/2",
        f"{w}/b/2", f"{w}/b/2/cleanup/1",
        f"{w}/a/rollback/1", f"{w}/a/rollback/2",
        f"{w}/a/rollback/1.1",
    ]
    assert len(set(keys)) == len(keys)


async def test_a_clean_up_beside_a_branch_in_flight_keeps_its_own_attempt() -> None:
    # decide() offered an open clean-up under the transaction's attempt while another
    # branch was in flight: attempt 2's clean-up ran as .../2/cleanup/2, recorded as try 2
    keys: list[str] = []
    gate = anyio.Event()

    async def slow(ctx: Any, value: Any) -> Any:
        await gate.wait()
        return value

    async def flaky(ctx: Any, value: Any) -> Any:
        keys.append(ctx.idempotency_key)
        if ctx.attempt <= 2:
            raise RuntimeError("fails")
        gate.set()
        return value

    async def undo(ctx: Any, value: Any, output: Any, reason: Any) -> None:
        keys.append(ctx.idempotency_key)

    saga = Saga(name="s", stages=[Parallel(name="p", branches=[
        Stage(name="b", transaction=flaky, compensation=undo, retry=retry(3)),
        Stage(name="slow", transaction=slow)])])
    async with Runtime([saga]) as rt:
        result = await rt.run("s", 1)
        assert result.status == "completed"
        tries = [(e.type, e.event.attempt) for e in rt.events(result.work_id)
                 if e.type.startswith("stage.compensation")]
    assert tries == [("stage.compensation.started", 1), ("stage.compensation.completed", 1)] * 2
    assert [k.split("/", 1)[1] for k in keys] == [
        "p/b/1", "p/b/1/cleanup/1", "p/b/2", "p/b/2/cleanup/1", "p/b/3"]
