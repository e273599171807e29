"""Saga definitions: stages and the composites that nest them.

A definition is a tree of frozen, keyword-only dataclasses:

- :class:`Stage`: a transaction with an optional compensation, retries, timeout,
  hooks, schemas and an example output (leaf);
- :class:`Saga`: children run one after the other, each one's output the next
  one's input;
- :class:`Parallel`: branches, optionally depending on each other (a DAG), with
  bounded concurrency; a branch without dependencies gets the Parallel's input,
  one with dependencies gets ``{dependency name: its output}``; the output is
  ``{branch name: output}``;
- :class:`Map`: one copy of a stage per item of a list known only at run time,
  with bounded concurrency; the output is the list of the copies' outputs;
- :class:`Loop`: the body again and again (each iteration's output is the next
  one's input) until a condition holds, at most ``max_iterations`` times; paths
  look like ``poll[3]/check``;
- :class:`Branch`: one of several stages, picked by a condition at run time;
- :class:`Wait`: a durable wait for a named signal, with an optional timeout;
- :class:`Sleep`: a durable timer; the input passes through;
- :class:`SagaRef`: a registered saga used as a stage by its name.

Definitions are checked when they are built: a duplicate stage name, a cycle, a
dependency on a missing branch, a loop without a maximum all raise
:class:`~engine.errors.DefinitionError` naming the stage.

>>> async def reserve(ctx, order): return {**order, "reserved": True}
>>> saga = Saga(name="order", stages=[Stage(name="reserve", transaction=reserve)])
>>> [s.name for s in saga.stages]
['reserve']
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from .context import json_problem
from .errors import DefinitionError
from .retry import RetryPolicy

__all__ = [
    "MISSING",
    "Abort",
    "Branch",
    "Forward",
    "Guard",
    "Loop",
    "Map",
    "Node",
    "Observer",
    "Parallel",
    "RetryTransaction",
    "Saga",
    "SagaRef",
    "Sleep",
    "Stage",
    "Wait",
    "validate_name",
]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")


def _seconds(value: object, what: str, *, zero: bool = False) -> None:
    """A duration in seconds: a finite number > 0 (or >= 0 when ``zero``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and \
        math.isfinite(value) and (value >= 0 if zero else value > 0)
    if not ok:
        expected = ">= 0" if zero else "> 0"
        raise DefinitionError(f"{what} must be a finite number of seconds {expected}, "
                              f"got {value!r}")


def _static_json(value: Any, what: str) -> None:
    if value is not MISSING:
        problem = json_problem(value)
        if problem is not None:
            raise DefinitionError(f"{what} is not JSON-serialisable: {problem}")


def validate_name(name: object, what: str) -> str:
    """Check a stage name: letters, digits, ``_ . -``; it becomes a path segment."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise DefinitionError(
            f"{what} name {name!r} is invalid: expected a letter or '_' followed by letters, "
            "digits, '_', '.' or '-' (at most 128 characters)"
        )
    return name


# ---------------------------------------------------------------- outcomes


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryTransaction:
    """Returned by a failed stage's compensation: try the transaction again after the clean-up.

    The retry stays within the stage's retry policy: when no attempt is left, the
    stage fails as if the compensation had simply finished.
    """

    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Abort:
    """Returned by a compensation: no more retries anywhere in the work.

    Completed stages are still compensated.
    """

    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Forward:
    """Returned by a failed stage's compensation: go on forward with this output instead."""

    output: Any = None


# ------------------------------------------------------------------- hooks


@dataclass(frozen=True, slots=True, kw_only=True)
class Guard:
    """A pre- or post-condition of a stage; a falsy result (or an error) fails the stage.

    Declared on a composite, a guard applies to the stages below it, down to
    ``depth`` levels (``None``: all of them). Guards run for :class:`Stage`s only.
    A pre-guard gets ``(ctx, input)``, a post-guard ``(ctx, output)``; a vetoed
    post-guard's stage is compensated with that output.
    """

    name: str
    check: Callable[[Any, Any], Awaitable[Any] | Any]
    when: Literal["pre", "post"] = "pre"
    depth: int | None = 0

    def __post_init__(self) -> None:
        validate_name(self.name, "guard")
        if self.when not in ("pre", "post"):
            raise DefinitionError(f"guard {self.name!r}: when must be 'pre' or 'post'")
        if self.depth is not None and self.depth < 0:
            raise DefinitionError(f"guard {self.name!r}: depth must be >= 0 or None")


@dataclass(frozen=True, slots=True, kw_only=True)
class Observer:
    """Called after each recorded event that matches its filters; never fatal.

    ``events`` and ``paths`` are glob patterns over the event type and the
    stage path. Declared on a stage, it sees that stage's events and its
    descendants' down to ``depth`` levels (``None``: all). It is recorded only
    when it fails or returns something other than ``None`` (then the value is
    kept in the work's state under the observer's name).

    An observer runs after the event it observes is committed, so its own event
    (``stage.observer.produced`` or ``stage.observer.failed``) may follow the
    work's terminal event: those two are the only events that may come after the
    end, and they change no status (see :mod:`engine.events`). Two hooks with one
    name may not reach the same stage (a :class:`~engine.errors.DefinitionError`).
    """

    name: str
    notify: Callable[[Any, Any], Awaitable[Any] | Any]
    events: tuple[str, ...] = ("*",)
    paths: tuple[str, ...] = ("*",)
    depth: int | None = None

    def __post_init__(self) -> None:
        validate_name(self.name, "observer")
        if self.depth is not None and self.depth < 0:
            raise DefinitionError(f"observer {self.name!r}: depth must be >= 0 or None")


Hook: TypeAlias = Guard | Observer


# ------------------------------------------------------------------- nodes


@dataclass(frozen=True, slots=True, kw_only=True)
class _NodeBase:
    name: str
    hooks: tuple[Hook, ...] = ()

    def _check_common(self, kind: str) -> None:
        validate_name(self.name, kind)
        object.__setattr__(self, "hooks", tuple(self.hooks))
        for hook in self.hooks:
            if not isinstance(hook, Guard | Observer):
                raise DefinitionError(
                    f"{kind} {self.name!r}: hooks must be Guard or Observer, got {hook!r}"
                )

    def children(self) -> Sequence[Node]:
        return ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Stage(_NodeBase):
    """A transaction ``async (ctx, input) -> output`` and its optional compensation.

    The compensation ``async (ctx, input, output, reason)`` undoes a completed
    transaction when a later stage fails for good (``reason`` is the original
    failure). When this stage itself fails for good, its compensation is called
    first to clean up (``output`` is ``None``, or the output a post-guard vetoed)
    and may return :class:`RetryTransaction`, :class:`Abort` or :class:`Forward`.
    ``fallback``, when given, is the output used instead of failing.

    ``timeout`` (seconds) cancels the transaction at an await point: blocking code,
    or code that swallows the cancellation, runs on, and when it returns after the
    timeout the attempt is recorded as timed out and its result discarded. A
    compensation returns ``None`` or :class:`Abort` (in a clean-up also
    :class:`RetryTransaction` or :class:`Forward`); anything else fails it with a
    :class:`~engine.errors.CompensationResultError`.
    """

    transaction: Callable[[Any, Any], Awaitable[Any]]
    compensation: Callable[[Any, Any, Any, Any], Awaitable[Any]] | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    compensation_retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(attempts=3))
    timeout: float | None = None
    compensation_timeout: float | None = None
    input_schema: Mapping[str, Any] | None = None
    output_schema: Mapping[str, Any] | None = None
    example: Any = MISSING
    fallback: Any = MISSING
    services: tuple[str, ...] = ()
    rate_limit_key: str | None = None
    lock_key: str | None = None

    def __post_init__(self) -> None:
        self._check_common("stage")
        if not callable(self.transaction):
            raise DefinitionError(f"stage {self.name!r}: transaction must be an async callable")
        if self.compensation is not None and not callable(self.compensation):
            raise DefinitionError(f"stage {self.name!r}: compensation must be callable or None")
        for label, value in (("timeout", self.timeout), ("compensation_timeout",
                                                          self.compensation_timeout)):
            if value is not None:
                _seconds(value, f"stage {self.name!r}: {label}")
        _static_json(self.fallback, f"stage {self.name!r}: fallback")
        _static_json(self.example, f"stage {self.name!r}: example")
        if not isinstance(self.retry, RetryPolicy) or not isinstance(
            self.compensation_retry, RetryPolicy
        ):
            raise DefinitionError(f"stage {self.name!r}: retry policies must be RetryPolicy")
        object.__setattr__(self, "services", tuple(self.services))


def _check_children(kind: str, name: str, children: Sequence[Node]) -> tuple[Node, ...]:
    result = tuple(children)
    seen: set[str] = set()
    for child in result:
        if not isinstance(child, _NodeBase):
            raise DefinitionError(f"{kind} {name!r}: {child!r} is not a stage definition")
        if child.name in seen:
            raise DefinitionError(
                f"{kind} {name!r}: duplicate stage name {child.name!r}; names must be unique "
                "among siblings"
            )
        seen.add(child.name)
    return result


@dataclass(frozen=True, slots=True, kw_only=True)
class Saga(_NodeBase):
    """Stages run one after the other; ``retry_budget`` caps the retries of all of them.

    ``version`` and ``continues`` say which works a registered saga may go on with.
    Every work records the hash of the definition it was started on
    (:func:`engine.catalog.definition_hash`, which changes with the stages' names,
    order, kinds and parameters, not with descriptions, examples or the names of
    functions) and the version of the saga. A runtime or worker node goes on with a
    work only when the work has no recorded hash (it is older than hashes), when the
    hash is the one of its own definition, or when the work's version is one of
    ``continues``: so declare there the versions whose works this definition can
    continue (``continues=(1,)`` on version 2: works of version 1 still fit it). Any
    other work is left in the store, unfinished and shown as waiting with the reason,
    for a node that runs its definition; or a person rewinds it onto this one
    (:meth:`engine.Runtime.rewind`). A version says nothing by itself: a changed
    definition that keeps its version does not continue its old works unless
    ``continues`` names that version. Only the version of the saga a work runs counts,
    not those of the sagas it uses by name (their changes change its hash).

    >>> async def step(ctx, x): return x
    >>> v2 = Saga(name="order", version=2, continues=(1,),
    ...           stages=[Stage(name="reserve", transaction=step)])
    >>> v2.version, v2.continues
    (2, (1,))
    """

    stages: Sequence[Node]
    retry_budget: int | None = None
    input_schema: Mapping[str, Any] | None = None
    description: str = ""
    version: int = 1
    continues: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self._check_common("saga")
        object.__setattr__(self, "stages", _check_children("saga", self.name, self.stages))
        if not self.stages:
            raise DefinitionError(f"saga {self.name!r}: expected at least one stage")
        if self.retry_budget is not None and self.retry_budget < 0:
            raise DefinitionError(f"saga {self.name!r}: retry_budget must be >= 0")
        if not _is_version(self.version):
            raise DefinitionError(f"saga {self.name!r}: version must be a whole number >= 1, "
                                  f"got {self.version!r}")
        if isinstance(self.continues, str | bytes) or not isinstance(self.continues,
                                                                     Sequence):
            raise DefinitionError(f"saga {self.name!r}: continues must be a tuple of "
                                  f"versions (whole numbers >= 1), got {self.continues!r}")
        continues = tuple(self.continues)
        for version in continues:
            if not _is_version(version):
                raise DefinitionError(f"saga {self.name!r}: continues must hold versions "
                                      f"(whole numbers >= 1), got {version!r} in it")
        object.__setattr__(self, "continues", tuple(sorted(set(continues))))

    def children(self) -> Sequence[Node]:
        return self.stages


def _is_version(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_concurrency(kind: str, name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise DefinitionError(f"{kind} {name!r}: max_concurrency must be an int >= 1 or None")


@dataclass(frozen=True, slots=True, kw_only=True)
class Parallel(_NodeBase):
    """Branches run concurrently; ``depends_on`` maps a branch to the branches it waits for."""

    branches: Sequence[Node]
    depends_on: Mapping[str, Sequence[str]] = field(default_factory=dict)
    max_concurrency: int | None = None

    def __post_init__(self) -> None:
        self._check_common("parallel")
        branches = _check_children("parallel", self.name, self.branches)
        object.__setattr__(self, "branches", branches)
        if not branches:
            raise DefinitionError(f"parallel {self.name!r}: expected at least one branch")
        _check_concurrency("parallel", self.name, self.max_concurrency)
        names = {b.name for b in branches}
        deps = {k: tuple(v) for k, v in self.depends_on.items()}
        for branch, needs in deps.items():
            if branch not in names:
                raise DefinitionError(
                    f"parallel {self.name!r}: depends_on names branch {branch!r}, which does not "
                    f"exist (branches: {sorted(names)})"
                )
            for need in needs:
                if need not in names:
                    raise DefinitionError(
                        f"parallel {self.name!r}: branch {branch!r} depends on missing branch "
                        f"{need!r} (branches: {sorted(names)})"
                    )
                if need == branch:
                    raise DefinitionError(
                        f"parallel {self.name!r}: branch {branch!r} depends on itself"
                    )
        cycle = _find_cycle(deps)
        if cycle:
            raise DefinitionError(
                f"parallel {self.name!r}: dependency cycle {' -> '.join(cycle)}; "
                "expected the dependencies to form a DAG"
            )
        object.__setattr__(self, "depends_on", deps)

    def children(self) -> Sequence[Node]:
        return self.branches


def _find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str]:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str]:
        if node in done:
            return []
        if node in visiting:
            return [*visiting[visiting.index(node):], node]
        visiting.append(node)
        for nxt in graph.get(node, ()):
            found = visit(nxt)
            if found:
                return found
        visiting.pop()
        done.add(node)
        return []

    for start in sorted(graph):
        found = visit(start)
        if found:
            return found
    return []


@dataclass(frozen=True, slots=True, kw_only=True)
class Map(_NodeBase):
    """One copy of ``stage`` per item; ``items(ctx, input)`` picks the list (default: the input)."""

    stage: Node
    items: Callable[[Any, Any], Awaitable[Any] | Any] | None = None
    max_concurrency: int | None = None

    def __post_init__(self) -> None:
        self._check_common("map")
        _check_children("map", self.name, [self.stage])
        _check_concurrency("map", self.name, self.max_concurrency)

    def children(self) -> Sequence[Node]:
        return (self.stage,)


@dataclass(frozen=True, slots=True, kw_only=True)
class Loop(_NodeBase):
    """``body`` again and again until ``until(ctx, output)`` holds, at most ``max_iterations``.

    When the maximum is reached without the condition holding, the loop fails
    (``on_max="fail"``) or completes with the last output (``on_max="complete"``).
    """

    body: Node
    until: Callable[[Any, Any], Awaitable[Any] | Any]
    max_iterations: int | None
    on_max: Literal["fail", "complete"] = "fail"

    def __post_init__(self) -> None:
        self._check_common("loop")
        _check_children("loop", self.name, [self.body])
        if self.max_iterations is None:
            raise DefinitionError(
                f"loop {self.name!r} has no maximum: expected max_iterations >= 1"
            )
        if not isinstance(self.max_iterations, int) or self.max_iterations < 1:
            raise DefinitionError(
                f"loop {self.name!r}: expected max_iterations >= 1, got {self.max_iterations!r}"
            )
        if not callable(self.until):
            raise DefinitionError(f"loop {self.name!r}: until must be callable")
        if self.on_max not in ("fail", "complete"):
            raise DefinitionError(f"loop {self.name!r}: on_max must be 'fail' or 'complete'")

    def children(self) -> Sequence[Node]:
        return (self.body,)


@dataclass(frozen=True, slots=True, kw_only=True)
class Branch(_NodeBase):
    """``choose(ctx, input)`` returns the name of the case to run (or ``default``)."""

    choose: Callable[[Any, Any], Awaitable[Any] | Any]
    cases: Sequence[Node]
    default: str | None = None

    def __post_init__(self) -> None:
        self._check_common("branch")
        cases = _check_children("branch", self.name, self.cases)
        object.__setattr__(self, "cases", cases)
        if not cases:
            raise DefinitionError(f"branch {self.name!r}: expected at least one case")
        if self.default is not None and self.default not in {c.name for c in cases}:
            raise DefinitionError(
                f"branch {self.name!r}: default {self.default!r} is not one of its cases"
            )

    def children(self) -> Sequence[Node]:
        return self.cases

    def case(self, name: str) -> Node | None:
        for c in self.cases:
            if c.name == name:
                return c
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Wait(_NodeBase):
    """Wait durably for the signal ``signal``; its payload becomes the output.

    On timeout the stage fails, or, when ``timeout_output`` is given, completes
    with that output.
    """

    signal: str
    timeout: float | None = None
    timeout_output: Any = MISSING

    def __post_init__(self) -> None:
        self._check_common("wait")
        if not isinstance(self.signal, str) or not self.signal:
            raise DefinitionError(f"wait {self.name!r}: signal must be a non-empty string")
        if self.timeout is not None:
            _seconds(self.timeout, f"wait {self.name!r}: timeout")
        _static_json(self.timeout_output, f"wait {self.name!r}: timeout_output")


@dataclass(frozen=True, slots=True, kw_only=True)
class Sleep(_NodeBase):
    """A durable timer of ``seconds``; the input passes through as the output."""

    seconds: float

    def __post_init__(self) -> None:
        self._check_common("sleep")
        _seconds(self.seconds, f"sleep {self.name!r}: seconds", zero=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class SagaRef(_NodeBase):
    """The registered saga called ``saga``, used here as a stage named ``name``."""

    saga: str

    def __post_init__(self) -> None:
        self._check_common("saga reference")
        if not isinstance(self.saga, str) or not self.saga:
            raise DefinitionError(f"saga reference {self.name!r}: saga must be a saga name")


Node: TypeAlias = Stage | Saga | Parallel | Map | Loop | Branch | Wait | Sleep | SagaRef
