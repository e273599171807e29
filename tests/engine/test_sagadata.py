"""Sagas given as data (engine.sagadata): every kind built from data, every malformed
case refused naming the stage's path and the field, and the definition of a saga built
from data the same, by engine.catalog.describe, as the same saga built in code."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import tenacity

from engine import (
    DefinitionError,
    Functions,
    Guard,
    Loop,
    Map,
    Parallel,
    RetryPolicy,
    Runtime,
    Saga,
    SagaRef,
    Sleep,
    Stage,
    StageFailure,
    UnknownSagaError,
    Wait,
    compile_saga,
    saga_from_data,
)
from engine.catalog import describe
from engine.sagadata import saga_refs

from .test_catalog import (
    CardDeclined,
    composite,
    done,
    items,
    payment,
    pick,
    positive,
    step,
    undo,
    watch,
)

FUNCTIONS = Functions({"step": step, "undo": undo, "items": items, "done": done, "pick": pick,
                       "positive": positive, "watch": watch, "CardDeclined": CardDeclined})


def payment_data(*, attempts: int = 4, version: int = 3) -> dict[str, Any]:
    """tests.engine.test_catalog.payment() as data."""
    return {"name": "payment", "version": version, "stages": [
        {"kind": "Stage", "name": "charge", "transaction": "step", "compensation": "undo",
         "retry": {"attempts": attempts, "backoff": {"type": "fixed", "seconds": 2},
                   "retry_on": ["ConnectionError", "CardDeclined"],
                   "give_up_on": ["ValueError"]},
         "timeout": 5.0, "compensation_timeout": 7.0,
         "compensation_retry": {"attempts": 2, "backoff": {"type": "fixed", "seconds": 1}},
         "hooks": [{"kind": "Guard", "name": "positive", "check": "positive"}],
         "input_schema": {"type": "object"}, "output_schema": {"type": "object"},
         "example": {"charged": True}, "services": ["bank"], "lock_key": "card:{card}",
         "rate_limit_key": "bank:{bank}"}]}


def composite_data() -> dict[str, Any]:
    """tests.engine.test_catalog.composite() as data: every kind of stage."""
    return {
        "name": "order", "retry_budget": 6,
        "hooks": [{"kind": "Observer", "name": "audit", "notify": "watch",
                   "events": ["stage.*"]}],
        "stages": [
            {"kind": "Parallel", "name": "prepare", "max_concurrency": 2,
             "depends_on": {"pack": ["reserve", "check"]},
             "branches": [{"kind": "Stage", "name": "reserve", "transaction": "step",
                           "example": 1},
                          {"kind": "Stage", "name": "check", "transaction": "step"},
                          {"kind": "Stage", "name": "pack", "transaction": "step"}]},
            {"kind": "Map", "name": "boxes", "items": "items", "max_concurrency": 3,
             "stage": {"kind": "Loop", "name": "poll", "max_iterations": 5, "until": "done",
                       "on_max": "complete",
                       "body": {"kind": "Stage", "name": "look", "transaction": "step"}}},
            {"kind": "Branch", "name": "speed", "choose": "pick", "default": "slow",
             "cases": [{"kind": "Wait", "name": "fast", "signal": "go", "timeout": 60,
                        "timeout_output": {"late": True}},
                       {"kind": "Sleep", "name": "slow", "seconds": 30}]},
            {"kind": "SagaRef", "name": "pay", "saga": "payment"},
        ]}


def described(saga: Saga, *others: Saga) -> dict[str, Any]:
    return describe(compile_saga(saga, {s.name: s for s in (saga, *others)}))


def test_a_saga_built_from_data_is_described_as_the_same_saga_built_in_code() -> None:
    pay = saga_from_data(payment_data(), FUNCTIONS)
    order = saga_from_data(composite_data(), FUNCTIONS)
    assert described(pay) == described(payment())
    assert described(order, pay) == described(composite(), payment())
    # and the data is not changed by the building
    assert composite_data() == composite_data() and copy.deepcopy(composite_data()) == \
        composite_data()


def test_every_kind_is_built_with_its_fields() -> None:
    saga = saga_from_data(composite_data(), FUNCTIONS)
    prepare, boxes, speed, pay = saga.stages
    assert isinstance(prepare, Parallel) and prepare.depends_on == {
        "pack": ("reserve", "check")}
    assert isinstance(boxes, Map) and boxes.items is items and boxes.max_concurrency == 3
    assert isinstance(boxes.stage, Loop) and boxes.stage.until is done
    assert boxes.stage.on_max == "complete" and boxes.stage.max_iterations == 5
    assert isinstance(boxes.stage.body, Stage) and boxes.stage.body.transaction is step
    assert speed.choose is pick and speed.default == "slow"  # type: ignore[union-attr]
    fast, slow = speed.children()
    assert isinstance(fast, Wait) and (fast.signal, fast.timeout, fast.timeout_output) == (
        "go", 60, {"late": True})
    assert isinstance(slow, Sleep) and slow.seconds == 30
    assert isinstance(pay, SagaRef) and pay.saga == "payment"
    charge = saga_from_data(payment_data(), FUNCTIONS).stages[0]
    assert isinstance(charge, Stage) and charge.compensation is undo
    assert charge.retry.retry_on == (ConnectionError, CardDeclined)
    assert charge.retry.give_up_on == (ValueError,)
    assert charge.hooks == (Guard(name="positive", check=positive),)
    nested = saga_from_data({"name": "n", "description": "outer", "version": 2,
                             "continues": [1], "input_schema": {"type": "integer"},
                             "stages": [{"kind": "Saga", "name": "inner", "retry_budget": 1,
                                         "description": "in", "stages": [
                                             {"kind": "Stage", "name": "a",
                                              "transaction": "step", "fallback": None}]}]},
                            FUNCTIONS)
    assert (nested.description, nested.version, nested.continues, nested.input_schema) == (
        "outer", 2, (1,), {"type": "integer"})
    inner = nested.stages[0]
    assert isinstance(inner, Saga) and inner.retry_budget == 1 and inner.description == "in"
    assert inner.stages[0].fallback is None  # type: ignore[union-attr]


@pytest.mark.parametrize(("backoff", "wait"), [
    ({"type": "fixed", "seconds": 2}, tenacity.wait_fixed(2)),
    ({"type": "exponential_jitter"},
     tenacity.wait_exponential_jitter(multiplier=0.1, max=30.0, exp_base=2, jitter=0.1)),
    ({"type": "exponential_jitter", "multiplier": 1, "max": 5, "jitter": 0},
     tenacity.wait_exponential_jitter(multiplier=1, max=5, exp_base=2, jitter=0)),
    ({"type": "exponential", "multiplier": 0.5, "max": 10},
     tenacity.wait_exponential(multiplier=0.5, max=10)),
    ({"type": "random", "min": 1, "max": 3}, tenacity.wait_random(1, 3)),
    ({"type": "none"}, tenacity.wait_none()),
])
def test_each_backoff_is_the_tenacity_strategy_code_would_give(backoff: dict[str, Any],
                                                               wait: Any) -> None:
    data = {"name": "s", "stages": [{"kind": "Stage", "name": "a", "transaction": "step",
                                     "retry": {"attempts": 2, "backoff": backoff}}]}
    code = Saga(name="s", stages=[Stage(name="a", transaction=step,
                                        retry=RetryPolicy(attempts=2, wait=wait))])
    assert described(saga_from_data(data, FUNCTIONS)) == described(code)


def test_defaults_are_those_of_code() -> None:
    data = {"name": "s", "stages": [{"kind": "Stage", "name": "a", "transaction": "step"},
                                    {"kind": "Stage", "name": "b", "transaction": "step",
                                     "compensation_retry": {"attempts": 1}}]}
    code = Saga(name="s", stages=[Stage(name="a", transaction=step),
                                  Stage(name="b", transaction=step,
                                        compensation_retry=RetryPolicy(attempts=1))])
    assert described(saga_from_data(data, FUNCTIONS)) == described(code)
    a = saga_from_data(data, FUNCTIONS).stages[0]
    assert isinstance(a, Stage) and a.compensation_retry.attempts == 3


def test_engine_errors_and_registered_exceptions_are_named_in_retries() -> None:
    data = {"name": "s", "stages": [{"kind": "Stage", "name": "a", "transaction": "step",
                                     "retry": {"retry_on": ["StageFailure", "CardDeclined",
                                                            "TimeoutError"]}}]}
    stage = saga_from_data(data, FUNCTIONS).stages[0]
    assert isinstance(stage, Stage)
    assert stage.retry.retry_on == (StageFailure, CardDeclined, TimeoutError)


def _stage(**fields: Any) -> dict[str, Any]:
    return {"name": "s", "stages": [{"kind": "Saga", "name": "pay", "stages": [
        {"kind": "Stage", "name": "charge", "transaction": "step", **fields}]}]}


def _nested(stage: Any) -> dict[str, Any]:
    return {"name": "s", "stages": [{"kind": "Saga", "name": "pay", "stages": [stage]}]}


MALFORMED: list[tuple[Any, str]] = [
    ("not an object", "saga: a saga must be a JSON object, got 'not an object'"),
    ({"stages": []}, "saga: 'name' is missing"),
    ({"name": "s", "stages": []}, "saga 's': saga 's': expected at least one stage"),
    ({"name": "s"}, "saga 's': 'stages' is missing (expected a list of stages)"),
    ({"name": "s", "stages": {}}, "saga 's': stages must be a list of stages, got {}"),
    ({"name": "s", "kind": "Map", "stages": [{}]}, "saga 's': kind must be 'Saga'"),
    ({"name": "s", "owner": "me", "stages": []}, "saga 's': a saga has no field 'owner' "
                                                 "(its fields: continues, description"),
    ({"name": "s", "version": 0, "stages": []},
     "saga 's': version must be a whole number >= 1, got 0"),
    ({"name": "s", "continues": [0], "stages": []},
     "saga 's': continues must be a list of versions (whole numbers >= 1), got [0]"),
    ({"name": "bad name", "stages": [{"kind": "Sleep", "name": "z", "seconds": 0}]},
     "saga 'bad name': saga name 'bad name' is invalid"),
    (_stage(transaction="charge2"),
     "stage 'pay/charge': transaction 'charge2' is not registered (registered: CardDeclined, "
     "done, items, pick, positive, step, undo, watch)"),
    (_stage(transaction=None), "stage 'pay/charge': 'transaction' is missing"),
    (_stage(transaction=3),
     "stage 'pay/charge': transaction must be the name of a registered function, got 3"),
    (_stage(compensation="refund"), "stage 'pay/charge': compensation 'refund' is not "
                                    "registered"),
    (_stage(colour="red"), "stage 'pay/charge': a Stage has no field 'colour' (its fields: "),
    (_stage(timeout=-1), "stage 'pay/charge': timeout must be a finite number of seconds > 0, "
                         "got -1"),
    (_stage(timeout="5"), "stage 'pay/charge': timeout must be a finite number of seconds"),
    (_stage(compensation_timeout=0), "stage 'pay/charge': compensation_timeout must be"),
    (_stage(input_schema=[1]), "stage 'pay/charge': input_schema must be a JSON object, got "
                               "[1]"),
    (_stage(services="bank"), "stage 'pay/charge': services must be a list of non-empty "
                              "strings, got 'bank'"),
    (_stage(lock_key=""), "stage 'pay/charge': lock_key must be a non-empty string, got ''"),
    (_stage(rate_limit_key=5), "stage 'pay/charge': rate_limit_key must be a non-empty"),
    (_stage(retry=3), "stage 'pay/charge': retry must be a JSON object, got 3"),
    (_stage(retry={"attempts": 0}), "stage 'pay/charge': retry: attempts must be a whole "
                                    "number >= 1, got 0"),
    (_stage(retry={"tries": 2}), "stage 'pay/charge': retry has no field 'tries' (its "
                                 "fields: attempts, backoff, give_up_on, retry_on)"),
    (_stage(retry={"retry_on": "ValueError"}),
     "stage 'pay/charge': retry: retry_on must be a list of exception class names"),
    (_stage(retry={"retry_on": ["step"]}),
     "stage 'pay/charge': retry: retry_on names 'step', which is neither an exception class"),
    (_stage(compensation_retry={"give_up_on": ["NoSuchError"]}),
     "stage 'pay/charge': compensation_retry: give_up_on names 'NoSuchError'"),
    (_stage(retry={"backoff": {"type": "fibonacci"}}),
     "stage 'pay/charge': retry: backoff type must be one of exponential, "
     "exponential_jitter, fixed, none, random, got 'fibonacci'"),
    (_stage(retry={"backoff": {"type": "fixed", "seconds": -1}}),
     "stage 'pay/charge': retry: backoff 'fixed': seconds must be a finite number >= 0"),
    (_stage(retry={"backoff": {"type": "fixed", "wait": 1}}),
     "stage 'pay/charge': retry: backoff 'fixed' has no field 'wait' (its fields: seconds, "
     "type)"),
    (_stage(example=float("nan")), "stage 'pay/charge': stage 'charge': example is not "
                                   "JSON-serialisable"),
    (_stage(hooks={}), "stage 'pay/charge': hooks must be a list of objects"),
    (_stage(hooks=[{"kind": "Guard", "name": "g", "check": "nope"}]),
     "stage 'pay/charge': hooks[0]: check 'nope' is not registered"),
    (_stage(hooks=[{"kind": "Guard", "name": "g"}]),
     "stage 'pay/charge': hooks[0]: 'check' is missing"),
    (_stage(hooks=[{"kind": "Guard", "name": "g", "check": "positive", "when": "later"}]),
     "stage 'pay/charge': hooks[0]: guard 'g': when must be 'pre' or 'post'"),
    (_stage(hooks=[{"kind": "Guard", "name": "g", "check": "positive", "depth": -1}]),
     "stage 'pay/charge': hooks[0]: depth must be a whole number >= 0, got -1"),
    (_stage(hooks=[{"kind": "Spy", "name": "g"}]),
     "stage 'pay/charge': hooks[0]: kind must be 'Guard' or 'Observer', got 'Spy'"),
    (_stage(hooks=[{"kind": "Observer", "name": "o", "notify": "watch", "events": "x"}]),
     "stage 'pay/charge': hooks[0]: events must be a list of non-empty strings"),
    (_stage(hooks=[{"kind": "Observer", "name": "o", "notify": "watch", "check": "x"}]),
     "stage 'pay/charge': hooks[0]: a Observer has no field 'check'"),
    (_nested({"kind": "Stage", "transaction": "step"}),
     "stage 'pay/stages[0]': 'name' is missing"),
    (_nested({"kind": "Stage", "name": 7, "transaction": "step"}),
     "stage 'pay/stages[0]': name must be a non-empty string, got 7"),
    (_nested({"kind": "Stage", "name": "a b", "transaction": "step"}),
     "stage 'pay/a b': stage name 'a b' is invalid"),
    (_nested({"name": "x"}), "stage 'pay/x': 'kind' is missing (expected one of Stage, Saga, "
                             "Parallel, Map, Loop, Branch, Wait, Sleep, SagaRef)"),
    (_nested({"name": "x", "kind": "Task"}), "stage 'pay/x': kind must be one of Stage"),
    (_nested("x"), "stage 'pay/stages[0]': a stage must be a JSON object, got 'x'"),
    ({"name": "s", "stages": [{"kind": "Sleep", "name": "a", "seconds": 1},
                              {"kind": "Sleep", "name": "a", "seconds": 1}]},
     "saga 's': saga 's': duplicate stage name 'a'"),
    (_nested({"kind": "Saga", "name": "inner", "stages": []}),
     "stage 'pay/inner': saga 'inner': expected at least one stage"),
    (_nested({"kind": "Saga", "name": "inner", "version": 2, "stages": []}),
     "stage 'pay/inner': a Saga has no field 'version'"),
    (_nested({"kind": "Saga", "name": "inner", "retry_budget": -1, "stages": [
        {"kind": "Sleep", "name": "z", "seconds": 0}]}),
     "stage 'pay/inner': retry_budget must be a whole number >= 0, got -1"),
    (_nested({"kind": "Parallel", "name": "p", "branches": []}),
     "stage 'pay/p': parallel 'p': expected at least one branch"),
    (_nested({"kind": "Parallel", "name": "p"}),
     "stage 'pay/p': 'branches' is missing (expected a list of stages)"),
    (_nested({"kind": "Parallel", "name": "p", "branches": [
        {"kind": "Sleep", "name": "a", "seconds": 0}], "depends_on": {"a": ["b"]}}),
     "stage 'pay/p': parallel 'p': branch 'a' depends on missing branch 'b'"),
    (_nested({"kind": "Parallel", "name": "p", "branches": [
        {"kind": "Sleep", "name": "a", "seconds": 0}], "depends_on": {"a": "b"}}),
     "stage 'pay/p': depends_on: a must be a list of non-empty strings, got 'b'"),
    (_nested({"kind": "Parallel", "name": "p", "max_concurrency": 0, "branches": [
        {"kind": "Sleep", "name": "a", "seconds": 0}]}),
     "stage 'pay/p': max_concurrency must be a whole number >= 1, got 0"),
    (_nested({"kind": "Parallel", "name": "p", "branches": [
        {"kind": "Stage", "name": "a", "transaction": "gone"}]}),
     "stage 'pay/p/a': transaction 'gone' is not registered"),
    (_nested({"kind": "Map", "name": "m"}), "stage 'pay/m': 'stage' is missing (expected a "
                                            "stage)"),
    (_nested({"kind": "Map", "name": "m", "items": "list", "stage": {
        "kind": "Sleep", "name": "z", "seconds": 0}}),
     "stage 'pay/m': items 'list' is not registered"),
    (_nested({"kind": "Map", "name": "m", "stage": {"kind": "Stage", "name": "box",
                                                    "transaction": "box"}}),
     "stage 'pay/m/box': transaction 'box' is not registered"),
    (_nested({"kind": "Loop", "name": "l", "until": "done", "body": {
        "kind": "Sleep", "name": "z", "seconds": 0}}),
     "stage 'pay/l': 'max_iterations' is missing (expected a whole number >= 1)"),
    (_nested({"kind": "Loop", "name": "l", "max_iterations": 3, "body": {
        "kind": "Sleep", "name": "z", "seconds": 0}}),
     "stage 'pay/l': 'until' is missing (expected the name of a registered function)"),
    (_nested({"kind": "Loop", "name": "l", "until": "done", "max_iterations": 3,
              "on_max": "stop", "body": {"kind": "Sleep", "name": "z", "seconds": 0}}),
     "stage 'pay/l': on_max must be 'fail' or 'complete', got 'stop'"),
    (_nested({"kind": "Loop", "name": "l", "until": "done", "max_iterations": 3}),
     "stage 'pay/l': 'body' is missing (expected a stage)"),
    (_nested({"kind": "Branch", "name": "b", "choose": "pick", "cases": []}),
     "stage 'pay/b': branch 'b': expected at least one case"),
    (_nested({"kind": "Branch", "name": "b", "cases": [
        {"kind": "Sleep", "name": "z", "seconds": 0}]}),
     "stage 'pay/b': 'choose' is missing"),
    (_nested({"kind": "Branch", "name": "b", "choose": "pick", "default": "y", "cases": [
        {"kind": "Sleep", "name": "z", "seconds": 0}]}),
     "stage 'pay/b': branch 'b': default 'y' is not one of its cases"),
    (_nested({"kind": "Wait", "name": "w"}), "stage 'pay/w': 'signal' is missing (expected "
                                             "a string)"),
    (_nested({"kind": "Wait", "name": "w", "signal": "go", "timeout": 0}),
     "stage 'pay/w': timeout must be a finite number of seconds > 0, got 0"),
    (_nested({"kind": "Sleep", "name": "z"}), "stage 'pay/z': 'seconds' is missing"),
    (_nested({"kind": "Sleep", "name": "z", "seconds": -1}),
     "stage 'pay/z': seconds must be a finite number of seconds >= 0, got -1"),
    (_nested({"kind": "Sleep", "name": "z", "seconds": 1, "signal": "x"}),
     "stage 'pay/z': a Sleep has no field 'signal' (its fields: hooks, kind, name, seconds)"),
    (_nested({"kind": "SagaRef", "name": "r"}), "stage 'pay/r': 'saga' is missing"),
    (_nested({"kind": "SagaRef", "name": "r", "saga": ""}),
     "stage 'pay/r': saga must be a non-empty string, got ''"),
]


@pytest.mark.parametrize(("data", "message"), MALFORMED,
                         ids=[str(i) for i in range(len(MALFORMED))])
def test_malformed_data_is_refused_naming_the_stage_and_the_field(data: Any,
                                                                  message: str) -> None:
    with pytest.raises(DefinitionError) as raised:
        saga_from_data(data, FUNCTIONS)
    assert str(raised.value).startswith(message), str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_functions_must_be_a_mapping_of_callables() -> None:
    with pytest.raises(DefinitionError, match="functions must be a mapping"):
        saga_from_data(_stage(), [step])  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="transaction 'step' is registered as 5, which "
                                              "is not callable"):
        saga_from_data(_stage(), {"step": 5})  # type: ignore[dict-item]


def test_a_function_registry_takes_each_name_once() -> None:
    functions = Functions()

    @functions.register
    async def reserve(ctx: Any, value: Any) -> Any:
        return value

    functions.register(name="orders.reserve")(reserve)
    assert functions["reserve"] is functions["orders.reserve"] is reserve
    functions.add("reserve", reserve)  # the same function again: fine
    with pytest.raises(DefinitionError, match="function name 'reserve' is registered already"):
        functions.add("reserve", step)
    with pytest.raises(DefinitionError, match="function name 'a b' is invalid"):
        functions.add("a b", step)
    with pytest.raises(DefinitionError, match="function 'x': expected a callable, got 3"):
        functions.add("x", 3)  # type: ignore[type-var]
    with pytest.raises(DefinitionError, match="functions must be a mapping"):
        Functions([step])  # type: ignore[arg-type]
    assert len(functions) == 2 and "Functions(['orders.reserve', 'reserve'])" == repr(functions)


def test_saga_refs_are_read_without_functions() -> None:
    assert saga_refs(composite_data()) == {"payment"}
    assert saga_refs(_nested({"kind": "Map", "name": "m", "stage": {
        "kind": "SagaRef", "name": "r", "saga": "inner"}})) == {"inner"}
    assert saga_refs("not a saga") == set()


async def test_a_saga_from_data_runs_and_its_refs_resolve_when_registered() -> None:
    async def add(ctx: Any, value: int) -> int:
        return value + 1

    async def enough(ctx: Any, value: int) -> bool:
        return value >= 3

    functions = Functions({"add": add, "enough": enough})
    inc = saga_from_data({"name": "inc", "stages": [
        {"kind": "Stage", "name": "a", "transaction": "add"}]}, functions)
    count = saga_from_data({"name": "count", "stages": [
        {"kind": "Loop", "name": "up", "until": "enough", "max_iterations": 10,
         "body": {"kind": "SagaRef", "name": "step", "saga": "inc"}}]}, functions)
    with pytest.raises(UnknownSagaError, match="refers to saga 'inc', which is not registered"):
        compile_saga(count)
    async with Runtime(sagas=[inc, count]) as runtime:
        result = await runtime.run("count", 0)
    assert (result.status, result.output) == ("completed", 3)
