"""Acceptance: the exact ordered event types of the saga shapes people rely on."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from engine import (
    Abort,
    Forward,
    Guard,
    Loop,
    ManualClock,
    Map,
    Parallel,
    RetryTransaction,
    Runtime,
    Saga,
    Stage,
    Wait,
)

from .helpers import Ledger, retry, typed_paths, types

TX = ["stage.transaction.started", "stage.transaction.completed"]
START = ["work.created", "work.started"]


def three(ledger: Ledger, *, c: Any = None, **stage_kw: Any) -> Saga:
    return Saga(name="three", stages=[
        Stage(name="a", transaction=ledger.tx(), compensation=ledger.comp()),
        Stage(name="b", transaction=ledger.tx(), compensation=ledger.comp()),
        Stage(name="c", transaction=c or ledger.tx(), **stage_kw),
    ])


async def test_happy_three_stage_saga() -> None:
    ledger = Ledger()
    async with Runtime([three(ledger)]) as rt:
        result = await rt.run("three", 1)
        assert (result.status, result.output) == ("completed", 4)
        assert types(rt, result.work_id) == [*START, *TX, *TX, *TX, "work.completed"]
        assert ledger.calls == [("tx", "a"), ("tx", "b"), ("tx", "c")]


async def test_third_stage_fails_and_first_two_are_compensated_in_reverse() -> None:
    ledger = Ledger()
    async with Runtime([three(ledger, c=ledger.fatal())]) as rt:
        result = await rt.run("three", 1)
        assert result.status == "failed"
        assert typed_paths(rt, result.work_id) == [
            ("work.created", ""), ("work.started", ""),
            ("stage.transaction.started", "a"), ("stage.transaction.completed", "a"),
            ("stage.transaction.started", "b"), ("stage.transaction.completed", "b"),
            ("stage.transaction.started", "c"), ("stage.transaction.failed", "c"),
            ("stage.failed", "c"), ("work.compensating", ""),
            ("stage.compensation.started", "b"), ("stage.compensation.completed", "b"),
            ("stage.compensation.started", "a"), ("stage.compensation.completed", "a"),
            ("work.failed", ""),
        ]
        assert ledger.compensated() == ["b", "a"]
        # the original reason reaches the result
        assert result.failure is not None and result.failure["path"] == "c"
        assert result.failure["error"]["message"] == "c refused"
        assert result.compensated == ("b", "a")


async def test_compensations_receive_the_original_failure() -> None:
    seen: list[tuple[str, str, Any]] = []

    async def comp(ctx: Any, value: Any, output: Any, reason: Any) -> None:
        seen.append((ctx.path, reason.path, reason.message))

    ledger = Ledger()
    saga = Saga(name="s", stages=[
        Stage(name="a", transaction=ledger.tx(), compensation=comp),
        Stage(name="b", transaction=ledger.fatal()),
    ])
    async with Runtime([saga]) as rt:
        await rt.run("s", 0)
    assert seen == [("a", "b", "b refused")]


async def test_retried_stage_then_succeeds() -> None:
    ledger = Ledger()
    ledger.fail("b", times=2)
    saga = Saga(name="s", stages=[
        Stage(name="a", transaction=ledger.tx()),
        Stage(name="b", transaction=ledger.tx(), retry=retry(3)),
    ])
    async with Runtime([saga], clock=ManualClock(autojump=True)) as rt:
        result = await rt.run("s", 1)
        assert result.status == "completed" and result.output == 3
        failed_attempt = ["stage.transaction.started", "stage.transaction.failed",
                          "stage.retry.scheduled"]
        assert types(rt, result.work_id) == [
            *START, *TX, *failed_attempt, *failed_attempt, *TX, "work.completed"]
        attempts = [e.event.attempt for e in rt.events(result.work_id)
                    if e.type == "stage.transaction.started" and e.path == "b"]
        assert attempts == [1, 2, 3]


async def test_retry_backoff_is_recorded_and_waits_on_the_clock() -> None:
    clock = ManualClock()
    ledger = Ledger()
    ledger.fail("a", times=1)
    import tenacity

    from engine import RetryPolicy
    saga = Saga(name="s", stages=[Stage(
        name="a", transaction=ledger.tx(),
        retry=RetryPolicy(attempts=2, wait=tenacity.wait_fixed(30)))])
    async with Runtime([saga], clock=clock) as rt:
        wid = await rt.start("s", 1)
        scheduled = anyio.Event()
        for _ in range(1000):  # bounded: the runner records the schedule right away
            if "stage.retry.scheduled" in types(rt, wid):
                scheduled.set()
                break
            await anyio.lowlevel.checkpoint()
        assert scheduled.is_set()
        event = rt.events(wid)[-1]
        assert event.event.payload["delay"] == 30.0
        assert event.event.payload["not_before"] == clock.now() + 30
        for _ in range(50):
            await anyio.lowlevel.checkpoint()
        assert rt.state(wid).status == "running"  # still waiting: no time has passed
        clock.advance(30)
        result = await rt.wait(wid)
        assert result.status == "completed"


async def test_retries_exhausted() -> None:
    ledger = Ledger()
    ledger.fail("b")
    saga = Saga(name="s", stages=[
        Stage(name="a", transaction=ledger.tx(), compensation=ledger.comp()),
        Stage(name="b", transaction=ledger.tx(), retry=retry(2)),
    ])
    async with Runtime([saga], clock=ManualClock(autojump=True)) as rt:
        result = await rt.run("s", 1)
        assert result.status == "failed"
        assert types(rt, result.work_id) == [
            *START, *TX,
            "stage.transaction.started", "stage.transaction.failed", "stage.retry.scheduled",
            "stage.transaction.started", "stage.transaction.failed",
            "stage.failed", "work.compensating",
            "stage.compensation.started", "stage.compensation.completed", "work.failed"]
        assert result.failure is not None
        assert "b failed (attempt 2)" in result.failure["error"]["message"]


async def test_retry_budget_is_shared_by_the_saga() -> None:
    ledger = Ledger()
    ledger.fail("a", times=2)
    ledger.fail("b", times=2)
    saga = Saga(name="s", retry_budget=3, stages=[
        Stage(name="a", transaction=ledger.tx(), retry=retry(5)),
        Stage(name="b", transaction=ledger.tx(), retry=retry(5)),
    ])
    async with Runtime([saga], clock=ManualClock(autojump=True)) as rt:
        result = await rt.run("s", 1)
        assert result.status == "failed"
        retries = [e.path for e in rt.events(result.work_id) if e.type == "stage.retry.scheduled"]
        assert retries == ["a", "a", "b"]


async def test_pre_guard_vetoes() -> None:
    ledger = Ledger()
    saga = Saga(name="s", stages=[
        Stage(name="a", transaction=ledger.tx(), compensation=ledger.comp()),
        Stage(name="b", transaction=ledger.tx(), retry=retry(3),
              hooks=(Guard(name="positive", check=lambda ctx, v: v < 0),)),
    ])
    async with Runtime([saga]) as rt:
        result = await rt.run("s", 1)
        assert result.status == "failed"
        assert types(rt, result.work_id) == [
            *START, *TX, "stage.guard.started", "stage.guard.completed", "stage.failed",
            "work.compensating", "stage.compensation.started", "stage.compensation.completed",
            "work.failed"]
        assert ("tx", "b") not in ledger.calls  # vetoed before it ran, and never retried
        assert result.failure is not None
        assert result.failure["error"]["type"] == "GuardVeto"


async def test_post_guard_veto_compensates_the_stage_with_its_output() -> None:
    seen: list[Any] = []

    async def comp(ctx: Any, value: Any, output: Any, reason: Any) -> None:
        seen.append((ctx.path, output, reason.type))

    ledger = Ledger()
    saga = Saga(name="s", stages=[
        Stage(name="a", transaction=ledger.tx(), compensation=comp),
        Stage(name="b", transaction=ledger.tx(10), compensation=comp,
              hooks=(Guard(name="small", when="post", check=lambda ctx, out: out < 5),)),
    ])
    async with Runtime([saga]) as rt:
        result = await rt.run("s", 1)
        assert result.status == "failed"
        assert types(rt, result.work_id) == [
            *START, *TX, *TX, "stage.guard.started", "stage.guard.completed",
            "stage.compensation.started", "stage.compensation.completed", "stage.failed",
            "work.compensating", "stage.compensation.started", "stage.compensation.completed",
            "work.failed"]
        assert seen == [("b", 12, "GuardVeto"), ("a", 2, "GuardVeto")]


async def test_compensation_failing_until_compensation_failed_then_retried() -> None:
    broken = {"on": True}
    calls: list[int] = []

    async def flaky_comp(ctx: Any, value: Any, output: Any, reason: Any) -> None:
        calls.append(ctx.attempt)
        if broken["on"]:
            raise ConnectionError("refund service down")

    ledger = Ledger()
    saga = Saga(name="s", stages=[
        Stage(name="a", transaction=ledger.tx(), compensation=flaky_comp,
              compensation_retry=retry(2)),
        Stage(name="b", transaction=ledger.fatal()),
    ])
    async with Runtime([saga], clock=ManualClock(autojump=True)) as rt:
        result = await rt.run("s", 1)
        assert result.status == "compensation_failed"
        assert types(rt, result.work_id) == [
            *START, *TX, "stage.transaction.started", "stage.transaction.failed",
            "stage.failed", "work.compensating",
            "stage.compensation.started", "stage.compensation.failed", "stage.retry.scheduled",
            "stage.compensation.started", "stage.compensation.failed",
            "work.compensation_failed"]
        # the original failure survives; the error says what could not be undone
        assert result.failure is not None and result.failure["path"] == "b"
        assert result.error is not None and "refund service down" in result.error["message"]
        broken["on"] = False
        await rt.retry_compensation(result.work_id, by="ops")
        again = await rt.wait(result.work_id)
        assert again.status == "failed" and again.compensated == ("a",)
        assert types(rt, result.work_id)[-4:] == [
            "work.compensation_retried", "stage.compensation.started",
            "stage.compensation.completed", "work.failed"]


async def test_compensation_failed_can_be_resolved_by_a_person() -> None:
    async def comp(ctx: Any, value: Any, output: Any, reason: Any) -> None:
        raise ConnectionError("down")

    ledger = Ledger()
    saga = Saga(name="s", stages=[
        Stage(name="a", transaction=ledger.tx(), compensation=comp,
              compensation_retry=retry(1)),
        Stage(name="b", transaction=ledger.fatal()),
    ])
    async with Runtime([saga]) as rt:
        result = await rt.run("s", 1)
        assert result.status == "compensation_failed"
        await rt.resolve(result.work_id, by="ops", reason="refunded by hand")
        state = rt.state(result.work_id)
        assert state.status == "failed" and state.resolved
        assert types(rt, result.work_id)[-1] == "work.resolved"


async def test_forward_recovery_with_a_substitute_output() -> None:
    async def cleanup(ctx: Any, value: Any, output: Any, reason: Any) -> Forward:
        assert output is None and reason.message == "b refused"
        return Forward(output=100)

    ledger = Ledger()
    saga = Saga(name="s", stages=[
        Stage(name="a", transaction=ledger.tx(), compensation=ledger.comp()),
        Stage(name="b", transaction=ledger.fatal(), compensation=cleanup),
        Stage(name="c", transaction=ledger.tx()),
    ])
    async with Runtime([saga]) as rt:
        result = await rt.run("s", 1)
        assert (result.status, result.output) == ("completed", 101)
        assert types(rt, result.work_id) == [
            *START, *TX, "stage.transaction.started", "stage.transaction.failed",
            "stage.compensation.started", "stage.compensation.completed", "stage.completed",
            *TX, "work.completed"]
        assert ledger.compensated() == []


async def test_compensation_asks_to_retry_the_transaction_within_the_policy() -> None:
    ledger = Ledger()
    cleanups: list[int] = []

    async def cleanup(ctx: Any, value: Any, output: Any, reason: Any) -> RetryTransaction:
        cleanups.append(ctx.attempt)
        return RetryTransaction(reason="released the hold, try again")

    saga = Saga(name="s", stages=[
        Stage(name="a", transaction=ledger.fatal(), compensation=cleanup, retry=retry(2)),
    ])
    async with Runtime([saga], clock=ManualClock(autojump=True)) as rt:
        result = await rt.run("s", 1)
        assert result.status == "failed"
        attempt = ["stage.transaction.started", "stage.transaction.failed",
                   "stage.compensation.started", "stage.compensation.completed"]
        assert types(rt, result.work_id) == [
            *START, *attempt, "stage.retry.scheduled", *attempt, "stage.failed",
            "work.compensating", "work.failed"]
        assert ledger.calls == [("tx", "a"), ("tx", "a")]


async def test_fallback_output_instead_of_failing() -> None:
    ledger = Ledger()
    saga = Saga(name="s", stages=[
        Stage(name="quote", transaction=ledger.fatal(), fallback=42),
        Stage(name="next", transaction=ledger.tx()),
    ])
    async with Runtime([saga]) as rt:
        result = await rt.run("s", 1)
        assert (result.status, result.output) == ("completed", 43)
        payloads = [e.event.payload for e in rt.events(result.work_id)
                    if e.type == "stage.completed"]
        assert payloads == [{"output": 42, "fallback": True}]


async def test_abort_stops_every_retry_but_still_compensates() -> None:
    ledger = Ledger()
    ledger.fail("charge")  # a retryable error, with attempts left

    async def cleanup(ctx: Any, value: Any, output: Any, reason: Any) -> Abort:
        ledger.calls.append(("cleanup", ctx.path))
        return Abort(reason="fraud suspected")

    saga = Saga(name="s", stages=[
        Stage(name="a", transaction=ledger.tx(), compensation=ledger.comp()),
        Stage(name="charge", transaction=ledger.tx(), compensation=cleanup, retry=retry(5),
              fallback=0),
    ])
    async with Runtime([saga]) as rt:
        result = await rt.run("s", 1)
        assert result.status == "failed"
        assert rt.state(result.work_id).aborted
        assert types(rt, result.work_id) == [
            *START, *TX, "stage.transaction.started", "stage.transaction.failed",
            "stage.compensation.started", "stage.compensation.completed", "stage.failed",
            "work.compensating", "stage.compensation.started", "stage.compensation.completed",
            "work.failed"]
        # tried once, no retry and no fallback after the abort; 'a' is still compensated
        assert ledger.calls == [("tx", "a"), ("tx", "charge"), ("cleanup", "charge"),
                                ("comp", "a")]


async def test_clean_up_runs_after_each_failed_attempt_then_the_policy_decides() -> None:
    ledger = Ledger()
    ledger.fail("charge", times=1)

    async def cleanup(ctx: Any, value: Any, output: Any, reason: Any) -> None:
        ledger.calls.append(("cleanup", ctx.path))

    saga = Saga(name="s", stages=[
        Stage(name="charge", transaction=ledger.tx(), compensation=cleanup, retry=retry(3)),
        Stage(name="ship", transaction=ledger.fatal()),
    ])
    async with Runtime([saga]) as rt:
        result = await rt.run("s", 1)
        assert result.status == "failed"
        # the clean-up of attempt 1 does not stop attempt 2's success being undone later
        assert ledger.calls == [("tx", "charge"), ("cleanup", "charge"), ("tx", "charge"),
                                ("tx", "ship"), ("cleanup", "charge")]
        assert result.compensated == ("charge",)


async def test_nested_sagas_compensate_children_one_by_one_in_reverse() -> None:
    ledger = Ledger()
    inner = Saga(name="payment", stages=[
        Stage(name="authorize", transaction=ledger.tx(), compensation=ledger.comp()),
        Stage(name="capture", transaction=ledger.tx(), compensation=ledger.comp()),
    ])
    saga = Saga(name="order", stages=[
        Stage(name="reserve", transaction=ledger.tx(), compensation=ledger.comp()),
        inner,
        Stage(name="ship", transaction=ledger.fatal()),
    ])
    async with Runtime([saga]) as rt:
        result = await rt.run("order", 0)
        assert typed_paths(rt, result.work_id) == [
            ("work.created", ""), ("work.started", ""),
            ("stage.transaction.started", "reserve"), ("stage.transaction.completed", "reserve"),
            ("stage.started", "payment"),
            ("stage.transaction.started", "payment/authorize"),
            ("stage.transaction.completed", "payment/authorize"),
            ("stage.transaction.started", "payment/capture"),
            ("stage.transaction.completed", "payment/capture"),
            ("stage.completed", "payment"),
            ("stage.transaction.started", "ship"), ("stage.transaction.failed", "ship"),
            ("stage.failed", "ship"), ("work.compensating", ""),
            ("stage.compensation.started", "payment/capture"),
            ("stage.compensation.completed", "payment/capture"),
            ("stage.compensation.started", "payment/authorize"),
            ("stage.compensation.completed", "payment/authorize"),
            ("stage.compensation.started", "reserve"),
            ("stage.compensation.completed", "reserve"),
            ("work.failed", ""),
        ]


async def test_parallel_with_dependencies_failing_in_the_middle() -> None:
    # a and b run side by side; c needs a; d needs b and c. c fails: d never starts,
    # a and b are compensated, a only once c's failure is known (reversed dependencies)
    ledger = Ledger()
    saga = Saga(name="s", stages=[Parallel(
        name="p",
        branches=[
            Stage(name="a", transaction=ledger.tx(), compensation=ledger.comp()),
            Stage(name="b", transaction=ledger.tx(), compensation=ledger.comp()),
            Stage(name="c", transaction=ledger.fatal(), compensation=None),
            Stage(name="d", transaction=ledger.tx(), compensation=ledger.comp()),
        ],
        depends_on={"c": ["a"], "d": ["b", "c"]},
    )])
    async with Runtime([saga]) as rt:
        wid = await rt.start("s", 1, paused=True)
        report = await rt.mstep(wid)
        assert report.reason == "finished"
        assert typed_paths(rt, wid) == [
            ("work.created", ""), ("work.started", ""), ("stage.started", "p"),
            ("stage.transaction.started", "p/a"), ("stage.transaction.completed", "p/a"),
            ("stage.transaction.started", "p/b"), ("stage.transaction.completed", "p/b"),
            ("stage.transaction.started", "p/c"), ("stage.transaction.failed", "p/c"),
            ("stage.failed", "p/c"), ("stage.failed", "p"), ("work.compensating", ""),
            ("stage.compensation.started", "p/b"), ("stage.compensation.completed", "p/b"),
            ("stage.compensation.started", "p/a"), ("stage.compensation.completed", "p/a"),
            ("work.failed", ""),
        ]
        assert ("tx", "p/d") not in ledger.calls
        # the same saga run freely (concurrently) compensates the same stages
        result = await rt.run("s", 1)
        assert result.status == "failed" and sorted(result.compensated) == ["p/a", "p/b"]


async def test_parallel_branches_run_concurrently_and_output_by_name() -> None:
    both = anyio.Event()
    arrived: list[str] = []

    async def meet(ctx: Any, value: Any) -> Any:
        arrived.append(ctx.path)
        if len(arrived) == 2:
            both.set()
        await both.wait()  # deadlocks unless the two branches really run side by side
        return ctx.path

    saga = Saga(name="s", stages=[Parallel(name="p", branches=[
        Stage(name="x", transaction=meet), Stage(name="y", transaction=meet)])])
    async with Runtime([saga]) as rt:
        with anyio.fail_after(5):
            result = await rt.run("s", None)
        assert result.output == {"x": "p/x", "y": "p/y"}


async def test_map_over_100_items_with_concurrency_10() -> None:
    running = {"now": 0, "max": 0}

    async def double(ctx: Any, item: int) -> int:
        running["now"] += 1
        running["max"] = max(running["max"], running["now"])
        await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()
        running["now"] -= 1
        return item * 2

    saga = Saga(name="s", stages=[Map(name="m", stage=Stage(name="double", transaction=double),
                                      max_concurrency=10)])
    async with Runtime([saga]) as rt:
        result = await rt.run("s", list(range(100)))
        assert result.output == [i * 2 for i in range(100)]
        assert running["max"] == 10
        kinds = types(rt, result.work_id)
        assert kinds[:3] == ["work.created", "work.started", "stage.started"]
        assert kinds.count("stage.transaction.started") == 100
        assert kinds.count("stage.transaction.completed") == 100
        assert kinds[-2:] == ["stage.completed", "work.completed"]
        paths = {e.path for e in rt.events(result.work_id) if e.type.startswith("stage.trans")}
        assert paths == {f"m[{i}]/double" for i in range(100)}


async def test_map_item_failure_compensates_completed_items() -> None:
    ledger = Ledger()
    ledger.fail("m[3]/item")
    saga = Saga(name="s", stages=[Map(name="m", stage=Stage(
        name="item", transaction=ledger.tx(), compensation=ledger.comp()), max_concurrency=1)])
    async with Runtime([saga]) as rt:
        result = await rt.run("s", [0, 1, 2, 3, 4])
        assert result.status == "failed"
        # the failed item cleans up after itself, then the completed ones are undone
        assert ledger.compensated() == ["m[3]/item", "m[2]/item", "m[1]/item", "m[0]/item"]
        assert result.compensated == ("m[2]/item", "m[1]/item", "m[0]/item")


async def test_loop_until_condition() -> None:
    ledger = Ledger()
    saga = Saga(name="s", stages=[Loop(
        name="poll", body=Stage(name="check", transaction=ledger.tx()),
        until=lambda ctx, out: out >= 3, max_iterations=10)])
    async with Runtime([saga]) as rt:
        result = await rt.run("s", 0)
        assert (result.status, result.output) == ("completed", 3)
        until = ["stage.condition.started", "stage.condition.completed"]
        assert types(rt, result.work_id) == [
            *START, "stage.started", *TX, *until, *TX, *until, *TX, *until, "stage.completed",
            "work.completed"]
        assert [p for k, p in ledger.calls] == ["poll[0]/check", "poll[1]/check",
                                                "poll[2]/check"]


async def test_loop_reaching_its_maximum_fails_and_compensates_iterations() -> None:
    ledger = Ledger()
    saga = Saga(name="s", stages=[Loop(
        name="poll", body=Stage(name="check", transaction=ledger.tx(),
                                compensation=ledger.comp()),
        until=lambda ctx, out: False, max_iterations=2)])
    async with Runtime([saga]) as rt:
        result = await rt.run("s", 0)
        assert result.status == "failed"
        assert result.failure is not None and "maximum of 2" in result.failure["error"]["message"]
        assert ledger.compensated() == ["poll[1]/check", "poll[0]/check"]


async def test_wait_for_a_signal() -> None:
    ledger = Ledger()
    saga = Saga(name="s", stages=[
        Stage(name="a", transaction=ledger.tx()),
        Wait(name="approval", signal="approve", timeout=60),
        Stage(name="b", transaction=ledger.tx()),
    ])
    async with Runtime([saga], clock=ManualClock()) as rt:
        wid = await rt.start("s", 1)
        with anyio.fail_after(5):
            while "stage.wait.started" not in types(rt, wid):
                await anyio.lowlevel.checkpoint()
        await rt.signal(wid, "approve", 10)
        result = await rt.wait(wid)
        assert (result.status, result.output) == ("completed", 11)
        assert types(rt, wid) == [*START, *TX, "stage.wait.started", "signal.received",
                                  "stage.completed", *TX, "work.completed"]


async def test_signal_sent_before_the_wait_is_kept() -> None:
    saga = Saga(name="s", stages=[Wait(name="w", signal="go")])
    async with Runtime([saga]) as rt:
        wid = await rt.start("s", None, paused=True)
        await rt.signal(wid, "go", {"ok": True})
        await rt.resume(wid)
        result = await rt.wait(wid)
        assert result.output == {"ok": True}


async def test_wait_times_out() -> None:
    ledger = Ledger()
    saga = Saga(name="s", stages=[
        Stage(name="a", transaction=ledger.tx(), compensation=ledger.comp()),
        Wait(name="approval", signal="approve", timeout=60),
    ])
    async with Runtime([saga], clock=ManualClock(autojump=True)) as rt:
        result = await rt.run("s", 1)
        assert result.status == "failed"
        assert types(rt, result.work_id) == [
            *START, *TX, "stage.wait.started", "stage.wait.timed_out", "stage.failed",
            "work.compensating", "stage.compensation.started", "stage.compensation.completed",
            "work.failed"]
        timed_out = rt.events(result.work_id)[5]
        started = rt.events(result.work_id)[4]
        assert timed_out.time - started.time == pytest.approx(60)


async def test_wait_timeout_with_a_default_output() -> None:
    saga = Saga(name="s", stages=[Wait(name="w", signal="go", timeout=5, timeout_output="no")])
    async with Runtime([saga], clock=ManualClock(autojump=True)) as rt:
        result = await rt.run("s", None)
        assert (result.status, result.output) == ("completed", "no")
