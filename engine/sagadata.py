"""Sagas given as data: a JSON object built into a :class:`~engine.definitions.Saga`
from the composites and the functions an app registered by name.

The saga::

    {"name": "order", "description": "...", "version": 2, "continues": [1],
     "input_schema": {...}, "retry_budget": 5, "hooks": [...], "stages": [...]}

Each stage is an object with its ``kind`` and ``name`` and the fields of that kind
(any other field is refused, naming it):

- ``Stage``: ``transaction`` (a function's name), ``compensation``, ``retry``,
  ``compensation_retry``, ``timeout``, ``compensation_timeout``, ``input_schema``,
  ``output_schema``, ``example``, ``fallback``, ``services`` (names), ``lock_key``,
  ``rate_limit_key``;
- ``Saga``: ``stages``, ``retry_budget``, ``input_schema``, ``description``;
- ``Parallel``: ``branches`` (stages), ``depends_on`` ({branch: [branches]}),
  ``max_concurrency``;
- ``Map``: ``stage`` (one stage), ``items`` (a function's name; absent: the input is
  the list), ``max_concurrency``;
- ``Loop``: ``body`` (one stage), ``until`` (a function's name), ``max_iterations``,
  ``on_max`` (``"fail"`` or ``"complete"``);
- ``Branch``: ``choose`` (a function's name), ``cases`` (stages), ``default``;
- ``Wait``: ``signal``, ``timeout``, ``timeout_output``;
- ``Sleep``: ``seconds``;
- ``SagaRef``: ``saga`` (the name of a registered saga).

Every kind takes ``hooks``: ``{"kind": "Guard", "name", "check", "when": "pre" |
"post", "depth"}`` and ``{"kind": "Observer", "name", "notify", "events", "paths",
"depth"}`` (``check`` and ``notify`` are functions' names; ``depth`` a number or
null for all levels). Absent fields take the defaults the classes have in code.

A retry (``retry``, ``compensation_retry``) is what :class:`~engine.retry.RetryPolicy`
takes as plain data: ``{"attempts": 3, "backoff": {...}, "retry_on": [...],
"give_up_on": [...]}``. Left out, a field takes RetryPolicy's default (one attempt,
the default backoff, every ``Exception`` retries), as ``RetryPolicy(...)`` does in
code; a stage without ``compensation_retry`` has the Stage's default of 3 attempts.
``retry_on`` and ``give_up_on`` name exception classes: one registered in the
functions under that name, or a builtin one (``"TimeoutError"``), or one of
:mod:`engine.errors` (``"StageFailure"``). ``backoff`` is one of::

    {"type": "exponential_jitter", "multiplier": 0.1, "max": 30, "exp_base": 2,
     "jitter": 0.1, "min": 0}                     # the default, with these defaults
    {"type": "exponential", "multiplier": 1, "min": 0, "max": 3600, "exp_base": 2}
    {"type": "fixed", "seconds": 2}
    {"type": "random", "min": 0, "max": 1}
    {"type": "none"}

A malformed saga, or a function name the functions do not have, is a
:class:`~engine.errors.DefinitionError` naming the stage's path and the field::

    stage 'pay/charge': transaction 'charge2' is not registered (registered: charge, refund)

>>> async def reserve(ctx, order): return order
>>> saga = saga_from_data({"name": "order", "stages": [
...     {"kind": "Stage", "name": "reserve", "transaction": "reserve",
...      "retry": {"attempts": 3, "backoff": {"type": "fixed", "seconds": 1}}}]},
...     {"reserve": reserve})
>>> saga.stages[0].transaction is reserve, saga.stages[0].retry.attempts
(True, 3)
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import tenacity

from . import errors as engine_errors
from .definitions import (
    MISSING,
    Branch,
    Guard,
    Loop,
    Map,
    Node,
    Observer,
    Parallel,
    Saga,
    SagaRef,
    Sleep,
    Stage,
    Wait,
)
from .errors import DefinitionError
from .retry import RetryPolicy

__all__ = ["KINDS", "saga_from_data", "saga_refs"]

KINDS = ("Stage", "Saga", "Parallel", "Map", "Loop", "Branch", "Wait", "Sleep", "SagaRef")

_COMMON = ("kind", "name", "hooks")
_FIELDS: dict[str, tuple[str, ...]] = {
    "Stage": ("transaction", "compensation", "retry", "compensation_retry", "timeout",
              "compensation_timeout", "input_schema", "output_schema", "example",
              "fallback", "services", "lock_key", "rate_limit_key"),
    "Saga": ("stages", "retry_budget", "input_schema", "description"),
    "Parallel": ("branches", "depends_on", "max_concurrency"),
    "Map": ("stage", "items", "max_concurrency"),
    "Loop": ("body", "until", "max_iterations", "on_max"),
    "Branch": ("choose", "cases", "default"),
    "Wait": ("signal", "timeout", "timeout_output"),
    "Sleep": ("seconds",),
    "SagaRef": ("saga",),
}
_ROOT = ("name", "kind", "hooks", "stages", "retry_budget", "input_schema", "description",
         "version", "continues")
_RETRY = ("attempts", "backoff", "retry_on", "give_up_on")
_HOOKS = {"Guard": ("kind", "name", "check", "when", "depth"),
          "Observer": ("kind", "name", "notify", "events", "paths", "depth")}
# backoff type -> its parameters and their defaults (the first is the engine's default)
_BACKOFFS: dict[str, dict[str, float]] = {
    "exponential_jitter": {"multiplier": 0.1, "max": 30.0, "exp_base": 2, "jitter": 0.1,
                           "min": 0.0},
    "exponential": {"multiplier": 1.0, "min": 0.0, "max": 3600.0, "exp_base": 2},
    "fixed": {"seconds": 1.0},
    "random": {"min": 0.0, "max": 1.0},
    "none": {},
}


def _listed(names: Sequence[str]) -> str:
    return ", ".join(names) or "none"


class _Reader:
    """Builds one saga; ``where`` is how errors name the place (a stage's path)."""

    def __init__(self, functions: Mapping[str, Callable[..., Any]]) -> None:
        if not isinstance(functions, Mapping):
            raise DefinitionError("functions must be a mapping of name -> function, got "
                                  f"{type(functions).__name__}")
        self.functions = functions

    # ------------------------------------------------------------ values

    @staticmethod
    def fail(where: str, message: str) -> NoReturn:
        raise DefinitionError(f"{where}: {message}")

    def object(self, value: Any, where: str, what: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            self.fail(where, f"{what} must be a JSON object, got {_shown(value)}")
        for key in value:
            if not isinstance(key, str):
                self.fail(where, f"{what} has a key that is not a string: {key!r}")
        return value

    def fields(self, data: Mapping[str, Any], allowed: Sequence[str], where: str,
               what: str) -> None:
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            self.fail(where, f"{what} has no field {unknown[0]!r} (its fields: "
                             f"{_listed(sorted(allowed))})")

    def text(self, data: Mapping[str, Any], key: str, where: str, *, required: bool = False,
             default: str | None = None, empty: bool = False) -> str | None:
        if key not in data or data[key] is None:
            if required:
                self.fail(where, f"{key!r} is missing (expected a string)")
            return default
        value = data[key]
        if not isinstance(value, str) or (not value and not empty):
            self.fail(where, f"{key} must be a {'' if empty else 'non-empty '}string, got "
                             f"{_shown(value)}")
        return value

    def whole(self, data: Mapping[str, Any], key: str, where: str, *, minimum: int,
              required: bool = False) -> int | None:
        if key not in data or data[key] is None:
            if required:
                self.fail(where, f"{key!r} is missing (expected a whole number >= {minimum})")
            return None
        value = data[key]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(where, f"{key} must be a whole number >= {minimum}, got {_shown(value)}")
        return value

    def seconds(self, data: Mapping[str, Any], key: str, where: str, *,
                required: bool = False, zero: bool = False) -> float | None:
        if key not in data or data[key] is None:
            if required:
                self.fail(where, f"{key!r} is missing (expected a number of seconds)")
            return None
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                not math.isfinite(value) or not (value >= 0 if zero else value > 0):
            self.fail(where, f"{key} must be a finite number of seconds "
                             f"{'>= 0' if zero else '> 0'}, got {_shown(value)}")
        return value

    def names(self, data: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
        if key not in data or data[key] is None:
            return None
        value = data[key]
        if not isinstance(value, list | tuple) or \
                not all(isinstance(v, str) and v for v in value):
            self.fail(where, f"{key} must be a list of non-empty strings, got {_shown(value)}")
        return tuple(value)

    def schema(self, data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any] | None:
        if key not in data or data[key] is None:
            return None
        return self.object(data[key], where, key)

    def function(self, data: Mapping[str, Any], key: str, where: str, *,
                 required: bool = False) -> Callable[..., Any] | None:
        if key not in data or data[key] is None:
            if required:
                self.fail(where, f"{key!r} is missing (expected the name of a registered "
                                 "function)")
            return None
        name = data[key]
        if not isinstance(name, str) or not name:
            self.fail(where, f"{key} must be the name of a registered function, got "
                             f"{_shown(name)}")
        if name not in self.functions:
            self.fail(where, f"{key} {name!r} is not registered (registered: "
                             f"{_listed(sorted(self.functions))})")
        fn = self.functions[name]
        if not callable(fn):
            self.fail(where, f"{key} {name!r} is registered as {fn!r}, which is not callable")
        return fn

    def exception(self, name: Any, where: str, key: str) -> type[BaseException]:
        if not isinstance(name, str) or not name:
            self.fail(where, f"{key} must list exception class names, got {_shown(name)}")
        found = self.functions.get(name)
        if found is None:
            found = getattr(builtins, name, None)
        if found is None and name in engine_errors.__all__:
            found = getattr(engine_errors, name)
        if not (isinstance(found, type) and issubclass(found, BaseException)):
            self.fail(where, f"{key} names {name!r}, which is neither an exception class "
                             "registered in the functions, a builtin exception nor one of "
                             "engine.errors")
        return found

    # ------------------------------------------------------------ parts

    def retry(self, data: Mapping[str, Any], key: str, where: str) -> RetryPolicy | None:
        if key not in data or data[key] is None:
            return None
        value = self.object(data[key], where, key)
        self.fields(value, _RETRY, where, key)
        options: dict[str, Any] = {}
        attempts = self.whole(value, "attempts", f"{where}: {key}", minimum=1)
        if attempts is not None:
            options["attempts"] = attempts
        if value.get("backoff") is not None:
            options["wait"] = self.backoff(value["backoff"], f"{where}: {key}")
        for listed in ("retry_on", "give_up_on"):
            names = value.get(listed)
            if names is None:
                continue
            if not isinstance(names, list | tuple):
                self.fail(where, f"{key}: {listed} must be a list of exception class names, "
                                 f"got {_shown(names)}")
            options[listed] = tuple(self.exception(n, f"{where}: {key}", listed)
                                    for n in names)
        try:
            return RetryPolicy(**options)
        except (ValueError, TypeError) as exc:
            self.fail(where, f"{key}: {exc}")

    def backoff(self, data: Any, where: str) -> Any:
        value = self.object(data, where, "backoff")
        kind = value.get("type")
        if kind not in _BACKOFFS:
            self.fail(where, f"backoff type must be one of {_listed(sorted(_BACKOFFS))}, got "
                             f"{_shown(kind)}")
        defaults = _BACKOFFS[kind]
        self.fields(value, ("type", *defaults), where, f"backoff {kind!r}")
        numbers: dict[str, float] = {}
        for name, default in defaults.items():
            number = value.get(name, default)
            if isinstance(number, bool) or not isinstance(number, int | float) or \
                    not math.isfinite(number) or number < 0:
                self.fail(where, f"backoff {kind!r}: {name} must be a finite number >= 0, "
                                 f"got {_shown(number)}")
            numbers[name] = number
        if kind == "exponential_jitter":
            return tenacity.wait_exponential_jitter(**numbers)
        if kind == "exponential":
            return tenacity.wait_exponential(**numbers)
        if kind == "fixed":
            return tenacity.wait_fixed(numbers["seconds"])
        if kind == "random":
            return tenacity.wait_random(numbers["min"], numbers["max"])
        return tenacity.wait_none()

    def hooks(self, data: Mapping[str, Any], where: str) -> tuple[Guard | Observer, ...]:
        value = data.get("hooks")
        if value is None:
            return ()
        if not isinstance(value, list | tuple):
            self.fail(where, f"hooks must be a list of objects, got {_shown(value)}")
        found: list[Guard | Observer] = []
        for index, item in enumerate(value):
            at = f"{where}: hooks[{index}]"
            hook = self.object(item, at, "a hook")
            kind = hook.get("kind")
            if kind not in _HOOKS:
                self.fail(at, f"kind must be 'Guard' or 'Observer', got {_shown(kind)}")
            self.fields(hook, _HOOKS[kind], at, f"a {kind}")
            name = self.text(hook, "name", at, required=True)
            assert name is not None
            options: dict[str, Any] = {"name": name}
            if "depth" in hook:
                options["depth"] = None if hook["depth"] is None else \
                    self.whole(hook, "depth", at, minimum=0)
            make: Callable[..., Guard | Observer]
            if kind == "Guard":
                make = Guard
                options["check"] = self.function(hook, "check", at, required=True)
                if hook.get("when") is not None:
                    options["when"] = self.text(hook, "when", at)
            else:
                make = Observer
                options["notify"] = self.function(hook, "notify", at, required=True)
                for listed in ("events", "paths"):
                    names = self.names(hook, listed, at)
                    if names is not None:
                        options[listed] = names
            try:
                found.append(make(**options))
            except (DefinitionError, ValueError, TypeError) as exc:
                self.fail(at, str(exc))
        return tuple(found)

    # ------------------------------------------------------------ stages

    def children(self, data: Mapping[str, Any], key: str, path: str, where: str
                 ) -> list[Node]:
        value = data.get(key)
        if value is None:
            self.fail(where, f"{key!r} is missing (expected a list of stages)")
        if not isinstance(value, list | tuple):
            self.fail(where, f"{key} must be a list of stages, got {_shown(value)}")
        return [self.stage(item, path, f"{key}[{index}]") for index, item in enumerate(value)]

    def child(self, data: Mapping[str, Any], key: str, path: str, where: str) -> Node:
        if data.get(key) is None:
            self.fail(where, f"{key!r} is missing (expected a stage)")
        return self.stage(data[key], path, key)

    def stage(self, value: Any, parent: str, slot: str) -> Node:
        """One stage below ``parent`` (its path); ``slot`` names its place when it has no
        usable name (``stages[2]``)."""
        unnamed = f"stage {f'{parent}/{slot}' if parent else slot!r}"
        data = self.object(value, unnamed, "a stage")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            self.fail(unnamed, "'name' is missing" if name is None else
                      f"name must be a non-empty string, got {_shown(name)}")
        path = f"{parent}/{name}" if parent else name
        where = f"stage {path!r}"
        kind = data.get("kind")
        if kind not in _FIELDS:
            self.fail(where, f"'kind' is missing (expected one of {_listed(list(KINDS))})"
                      if kind is None else
                      f"kind must be one of {_listed(list(KINDS))}, got {_shown(kind)}")
        self.fields(data, (*_COMMON, *_FIELDS[kind]), where, f"a {kind}")
        hooks = self.hooks(data, where)
        make, options = self.build(kind, data, path, where)
        try:
            return make(name=name, hooks=hooks, **options)
        except (DefinitionError, ValueError, TypeError) as exc:
            self.fail(where, str(exc))

    def build(self, kind: str, data: Mapping[str, Any], path: str, where: str
              ) -> tuple[Callable[..., Node], dict[str, Any]]:
        """The class of a stage of ``kind`` and its fields read from ``data``."""
        if kind == "Stage":
            options: dict[str, Any] = {
                "transaction": self.function(data, "transaction", where, required=True),
                "compensation": self.function(data, "compensation", where),
                "timeout": self.seconds(data, "timeout", where),
                "compensation_timeout": self.seconds(data, "compensation_timeout", where),
                "input_schema": self.schema(data, "input_schema", where),
                "output_schema": self.schema(data, "output_schema", where),
                "services": self.names(data, "services", where) or (),
                "lock_key": self.text(data, "lock_key", where),
                "rate_limit_key": self.text(data, "rate_limit_key", where),
            }
            for key in ("retry", "compensation_retry"):
                policy = self.retry(data, key, where)
                if policy is not None:
                    options[key] = policy
            for key in ("example", "fallback"):
                if key in data:
                    options[key] = data[key]
            return Stage, options
        if kind == "Saga":
            return Saga, {"stages": self.children(data, "stages", path, where),
                          "retry_budget": self.whole(data, "retry_budget", where, minimum=0),
                          "input_schema": self.schema(data, "input_schema", where),
                          "description": self.text(data, "description", where, default="",
                                                   empty=True) or ""}
        if kind == "Parallel":
            return Parallel, {"branches": self.children(data, "branches", path, where),
                              "depends_on": self.depends_on(data, where),
                              "max_concurrency": self.whole(data, "max_concurrency", where,
                                                            minimum=1)}
        if kind == "Map":
            return Map, {"stage": self.child(data, "stage", path, where),
                         "items": self.function(data, "items", where),
                         "max_concurrency": self.whole(data, "max_concurrency", where,
                                                       minimum=1)}
        if kind == "Loop":
            until = self.function(data, "until", where, required=True)
            maximum = self.whole(data, "max_iterations", where, minimum=1, required=True)
            on_max = self.text(data, "on_max", where, default="fail")
            if on_max not in ("fail", "complete"):
                self.fail(where, f"on_max must be 'fail' or 'complete', got {_shown(on_max)}")
            return Loop, {"body": self.child(data, "body", path, where), "until": until,
                          "max_iterations": maximum, "on_max": on_max}
        if kind == "Branch":
            return Branch, {"choose": self.function(data, "choose", where, required=True),
                            "cases": self.children(data, "cases", path, where),
                            "default": self.text(data, "default", where)}
        if kind == "Wait":
            return Wait, {"signal": self.text(data, "signal", where, required=True),
                          "timeout": self.seconds(data, "timeout", where),
                          "timeout_output": data["timeout_output"] if "timeout_output" in data
                          else MISSING}
        if kind == "Sleep":
            return Sleep, {"seconds": self.seconds(data, "seconds", where, required=True,
                                                   zero=True)}
        return SagaRef, {"saga": self.text(data, "saga", where, required=True)}

    def depends_on(self, data: Mapping[str, Any], where: str) -> dict[str, tuple[str, ...]]:
        if data.get("depends_on") is None:
            return {}
        value = self.object(data["depends_on"], where, "depends_on")
        found: dict[str, tuple[str, ...]] = {}
        for branch in value:
            needs = self.names(value, branch, f"{where}: depends_on")
            found[branch] = needs or ()
        return found

    def saga(self, value: Any) -> Saga:
        data = self.object(value, "saga", "a saga")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            self.fail("saga", "'name' is missing" if name is None else
                      f"name must be a non-empty string, got {_shown(name)}")
        where = f"saga {name!r}"
        self.fields(data, _ROOT, where, "a saga")
        if data.get("kind", "Saga") != "Saga":
            self.fail(where, f"kind must be 'Saga' (or left out), got {_shown(data['kind'])}")
        hooks = self.hooks(data, where)
        stages = self.children(data, "stages", "", where)
        continues = data.get("continues")
        if continues is not None and (not isinstance(continues, list | tuple) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in continues)):
            self.fail(where, f"continues must be a list of versions (whole numbers >= 1), "
                             f"got {_shown(continues)}")
        options: dict[str, Any] = {
            "retry_budget": self.whole(data, "retry_budget", where, minimum=0),
            "input_schema": self.schema(data, "input_schema", where),
            "description": self.text(data, "description", where, default="",
                                     empty=True) or "",
            "version": self.whole(data, "version", where, minimum=1) or 1,
            "continues": tuple(continues or ())}
        try:
            return Saga(name=name, hooks=hooks, stages=stages, **options)
        except (DefinitionError, ValueError, TypeError) as exc:
            self.fail(where, str(exc))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def saga_from_data(data: Any, functions: Mapping[str, Callable[..., Any]]) -> Saga:
    """The saga ``data`` describes (see the module docstring), its functions taken from
    ``functions`` by name. A :class:`~engine.errors.DefinitionError` names the stage's
    path and the field of what is malformed or not registered. The saga's own checks
    (unique names, dependencies, maxima) run as for a saga built in code; its
    :class:`~engine.definitions.SagaRef` stages resolve when it is compiled or
    registered."""
    return _Reader(functions).saga(data)


def saga_refs(data: Any) -> set[str]:
    """The names of the sagas a saga given as data uses by name (its SagaRef stages),
    read without building it: for checks that have no functions at hand. Data that is
    not shaped like a saga has none."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            if node.get("kind") == "SagaRef" and isinstance(node.get("saga"), str):
                found.add(node["saga"])
            for key in ("stages", "branches", "cases"):
                if isinstance(node.get(key), list | tuple):
                    for child in node[key]:
                        walk(child)
            for key in ("stage", "body"):
                walk(node.get(key))

    walk(data)
    return found
