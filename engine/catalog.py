"""A saga's definition as data, and the hash every work records of it.

:func:`describe` turns a compiled saga (a :class:`~engine.plan.Plan`) into JSON-ready
data: per stage its path and template, kind, children, retry and timeout settings,
compensation, hooks, schemas, example, services, lock and rate-limit keys and the
parameters of composites. Functions appear by qualified name, never as code.

:func:`definition_hash` is a SHA-256 of that description in canonical JSON (sorted
keys, no spaces), 32 hex digits. It covers what the rules see when they go on with a
work: the stages' names, order and kinds and their parameters (attempts and which
errors retry, timeouts, whether there is a compensation or an items function,
fallbacks, hooks, schemas, services, keys, signals, durations, maxima, cases,
dependencies, concurrency). It leaves out what is cosmetic, and what a work that goes
on does not depend on: descriptions, examples, the names of functions (a function
moved or renamed is the same stage; what a function does is never in the hash), the
saga's ``version`` and ``continues``, and backoffs (the delay a retry waits is
recorded in its event when chosen; leaving them out also keeps the hash the same
when tenacity names its strategies' parameters otherwise).

>>> from engine import Saga, Stage, RetryPolicy, compile_saga
>>> async def reserve(ctx, order): return order
>>> def order(attempts, description=""):
...     return compile_saga(Saga(name="order", description=description, stages=[
...         Stage(name="reserve", transaction=reserve, retry=RetryPolicy(attempts=attempts))]))
>>> found = describe(order(3))
>>> [(s["path"], s["kind"]) for s in found["stages"]]
[('', 'Saga'), ('reserve', 'Stage')]
>>> found["stages"][1]["transaction"], found["stages"][1]["retry"]["attempts"]
('engine.catalog.reserve', 3)
>>> found["definition"] == definition_hash(order(3)) == definition_hash(order(3, "cosmetic"))
True
>>> definition_hash(order(3)) == definition_hash(order(4))
False
>>> len(found["definition"])
32
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from glob import escape as glob_escape
from typing import Any

import tenacity

from .definitions import (
    MISSING,
    Branch,
    Guard,
    Loop,
    Map,
    Observer,
    Parallel,
    Saga,
    Sleep,
    Stage,
    Wait,
)
from .errors import DefinitionError
from .plan import NodeInfo, Plan
from .retry import RetryPolicy

__all__ = ["HASH_DIGITS", "can_continue", "definition_hash", "describe", "fail_globs",
           "hash_description", "qualified_name"]

HASH_DIGITS = 32  # hex digits of the SHA-256 kept: 128 bits

# fields holding the qualified name of a function (or None): the hash keeps only whether
# there is one
_FUNCTIONS = frozenset({"transaction", "compensation", "items", "until", "choose", "check",
                        "notify"})
# fields of the saga and of its stages the hash leaves out (see the module docstring)
_COSMETIC = frozenset({"description", "example", "version", "continues", "definition"})
_RETRIES = ("retry", "compensation_retry")  # their "backoff" is left out too


def qualified_name(fn: Any) -> str:
    """``module.qualname`` of a function (of the function a ``functools.partial``
    wraps; of the class of a callable object)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(qualname, str):
        qualname = type(fn).__qualname__
    module = getattr(fn, "__module__", None) or type(fn).__module__
    return f"{module}.{qualname}"


def _function(fn: Any) -> str | None:
    return None if fn is None else qualified_name(fn)


def _type_name(kind: type) -> str:
    return kind.__qualname__ if kind.__module__ == "builtins" else \
        f"{kind.__module__}.{kind.__qualname__}"


def _number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def _wait(wait: Any) -> dict[str, Any]:
    """A tenacity wait strategy as data: its type and its parameters; a strategy that
    is a plain function (or an object without readable parameters) by name only."""
    if not isinstance(wait, tenacity.wait.wait_base):
        return {"type": "function", "name": qualified_name(wait)}
    kind = type(wait)
    name = kind.__qualname__ if kind.__module__.startswith("tenacity") else _type_name(kind)
    try:
        fields = vars(wait)
    except TypeError:  # slots: nothing to read
        return {"type": name}
    return {"type": name, "parameters": {key: _parameter(value) for key, value
                                         in sorted(fields.items()) if not key.startswith("_")}}


def _parameter(value: Any) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, list | tuple):
        return [_parameter(v) for v in value]
    if isinstance(value, tenacity.wait.wait_base) or callable(value):
        return _wait(value)
    return {"type": _type_name(type(value))}


def _retry(policy: RetryPolicy) -> dict[str, Any]:
    return {"attempts": policy.attempts,
            "retry_on": sorted(_type_name(t) for t in policy.retry_on),
            "give_up_on": sorted(_type_name(t) for t in policy.give_up_on),
            "backoff": _wait(policy.wait)}


def _json(value: Any) -> Any:
    """A schema, example or other static value as plain JSON data. A value that is not
    JSON (a definition's checks passed, then a mutable value changed; running the stage
    will say so) is shown as ``{"not_json": <its type>}``, never by a repr that could
    differ from one process to the next."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, Mapping):
        return {key if isinstance(key, str) else _key(key): _json(item)
                for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json(item) for item in value]
    return {"not_json": _type_name(type(value))}


def _key(key: Any) -> str:
    if key is None or isinstance(key, bool | int | float):
        return json.dumps(key)
    return f"<{_type_name(type(key))}>"


def _hook(hook: Guard | Observer) -> dict[str, Any]:
    if isinstance(hook, Guard):
        return {"kind": "Guard", "name": hook.name, "when": hook.when, "depth": hook.depth,
                "check": qualified_name(hook.check)}
    return {"kind": "Observer", "name": hook.name, "events": list(hook.events),
            "paths": list(hook.paths), "depth": hook.depth,
            "notify": qualified_name(hook.notify)}


def _paths(plan: Plan) -> dict[str, str]:
    """template -> path pattern: the stages below a Map or Loop carry ``[*]`` after its
    name, as their runs' paths carry the item or iteration (``pack[*]/box``)."""
    found: dict[str, str] = {}
    for template in plan.nodes:
        if not template:
            found[template] = ""
            continue
        parent, _, name = template.rpartition("/")
        head = found[parent] if parent else ""
        if parent and isinstance(plan.nodes[parent].node, Map | Loop):
            head += "[*]"
        found[template] = f"{head}/{name}" if parent else name
    return found


def fail_globs(plan: Plan, patterns: Sequence[str]) -> tuple[str, ...]:
    """The globs a dry run (:class:`engine.DryRun`) forces to fail for ``patterns``,
    each of which must name stages with a transaction of ``plan``'s saga: a stage's
    path as :func:`describe` shows it (``pay/charge``; ``pack[*]/box``: every item), the
    path of one run (``pack[1]/box``: only that item), or a glob over runs' paths
    (``pay/*``). A pattern that names none raises ``ValueError``, saying which stages
    there are: a typo would otherwise rehearse the path where nothing fails.

    >>> from engine import Map, Saga, Stage, compile_saga
    >>> async def box(ctx, item): return item
    >>> plan = compile_saga(Saga(name="pack", stages=[
    ...     Map(name="pack", items=lambda ctx, n: [n],
    ...         stage=Stage(name="box", transaction=box))]))
    >>> fail_globs(plan, ["pack[*]/box", "pack[1]/box", "pack*"])
    ('pack[[]*]/box', 'pack[[]1]/box', 'pack*')
    >>> fail_globs(plan, ["pack"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: fail pattern 'pack' names no stage of saga 'pack' with a transaction; ...
    """
    paths = _paths(plan)
    stages = [paths[t] for t, info in plan.nodes.items() if isinstance(info.node, Stage)]
    found: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"a fail pattern must be a non-empty string, got {pattern!r}")
        if pattern in stages:  # as the catalog shows it: [*] is any index
            found.append(glob_escape(pattern).replace("[[][*]]", "[[]*]"))
            continue
        if any(re.fullmatch(re.escape(path).replace(r"\[\*\]", r"\[\d+\]"), pattern)
               for path in stages):
            found.append(glob_escape(pattern))
            continue
        # a glob: tried on the path of each stage's first run
        if any(fnmatchcase(path.replace("[*]", "[0]"), pattern) for path in stages):
            found.append(pattern)
            continue
        shown = ", ".join(stages) or "none"
        raise ValueError(
            f"fail pattern {pattern!r} names no stage of saga {plan.name!r} with a "
            f"transaction; expected one of {shown} (under a map or loop [*] is every item "
            "or iteration, [1] one of them), or a glob over them")
    return tuple(found)


def _kind_and_parameters(plan: Plan, template: str, node: Any) -> tuple[str, dict[str, Any]]:
    where = f"stage {template or '(root)'!r} of saga {plan.name!r}"
    if isinstance(node, Stage):
        found: dict[str, Any] = {
            "transaction": qualified_name(node.transaction),
            "compensation": _function(node.compensation),
            "retry": _retry(node.retry), "timeout": node.timeout,
            "compensation_retry": _retry(node.compensation_retry),
            "compensation_timeout": node.compensation_timeout,
            "input_schema": _json(node.input_schema),
            "output_schema": _json(node.output_schema),
            "services": sorted(node.services), "lock_key": node.lock_key,
            "rate_limit_key": node.rate_limit_key,
        }
        if node.example is not MISSING:
            found["example"] = _json(node.example)
        if node.fallback is not MISSING:
            found["fallback"] = _json(node.fallback)
        return "Stage", found
    if isinstance(node, Saga):
        found = {"retry_budget": node.retry_budget, "description": node.description,
                 "input_schema": _json(node.input_schema)}
        ref = plan.refs.get(template)
        if ref is not None:
            return "SagaRef", {"saga": ref, "version": node.version, **found}
        return "Saga", found
    if isinstance(node, Parallel):
        return "Parallel", {"depends_on": {branch: sorted(needs) for branch, needs
                                           in sorted(node.depends_on.items())},
                            "max_concurrency": node.max_concurrency}
    if isinstance(node, Map):
        return "Map", {"items": _function(node.items), "max_concurrency": node.max_concurrency}
    if isinstance(node, Loop):
        return "Loop", {"until": qualified_name(node.until),
                        "max_iterations": node.max_iterations, "on_max": node.on_max}
    if isinstance(node, Branch):
        return "Branch", {"choose": qualified_name(node.choose),
                          "cases": [case.name for case in node.cases], "default": node.default}
    if isinstance(node, Wait):
        found = {"signal": node.signal, "timeout": node.timeout}
        if node.timeout_output is not MISSING:
            found["timeout_output"] = _json(node.timeout_output)
        return "Wait", found
    if isinstance(node, Sleep):
        return "Sleep", {"seconds": node.seconds}
    raise DefinitionError(f"{where} is a {type(node).__name__}, which is not a stage kind")


def _stage(plan: Plan, template: str, path: str, info: NodeInfo) -> dict[str, Any]:
    node = info.node
    kind, parameters = _kind_and_parameters(plan, template, node)
    children = [f"{template}/{c.name}" if template else c.name for c in node.children()]
    return {"path": path, "template": template, "name": node.name, "kind": kind,
            "children": children, **parameters,
            "hooks": [_hook(h) for h in node.hooks],
            "guards": {"pre": [g.name for g in info.pre_guards],
                       "post": [g.name for g in info.post_guards]},
            "observers": [o.name for o in info.observers]}


def describe(plan: Plan) -> dict[str, Any]:
    """The definition of ``plan``'s saga as JSON-ready data (see the module docstring):
    ``saga``, ``definition`` (its hash), ``version``, ``continues``, ``description``,
    ``services`` (each service the saga needs, with the stages that need it) and
    ``stages``, every stage in order (the root first, then depth first), each with
    ``path`` (``pack[*]/box``), ``template`` (``pack/box``), ``name``, ``kind``
    (``Stage``, ``Saga``, ``Parallel``, ``Map``, ``Loop``, ``Branch``, ``Wait``,
    ``Sleep``, or ``SagaRef`` with the registered ``saga`` it uses), ``children``
    (their templates), the parameters of its kind, its declared ``hooks`` and the
    ``guards`` and ``observers`` that reach it."""
    paths = _paths(plan)
    found: dict[str, Any] = {
        "saga": plan.name, "version": plan.saga.version,
        "continues": list(plan.saga.continues), "description": plan.saga.description,
        "services": {name: list(stages) for name, stages in sorted(plan.services.items())},
        "stages": [_stage(plan, template, paths[template], info)
                   for template, info in plan.nodes.items()],
    }
    return {"saga": plan.name, "definition": hash_description(found),
            **{k: v for k, v in found.items() if k != "saga"}}


def _replayed(description: Mapping[str, Any]) -> dict[str, Any]:
    """What of a description the hash covers. Only the fields of the saga, its stages,
    their retries and hooks are looked at: values (schemas, fallbacks) count whole."""
    found = {k: v for k, v in description.items() if k not in _COSMETIC}
    found["stages"] = [_replayed_stage(stage) for stage in description.get("stages", ())]
    return found


def _replayed_stage(stage: Mapping[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in stage.items():
        if key in _COSMETIC:
            continue
        if key in _FUNCTIONS:
            value = value is not None
        elif key in _RETRIES and isinstance(value, Mapping):
            value = {k: v for k, v in value.items() if k != "backoff"}
        elif key == "hooks":
            value = [{k: (v is not None if k in _FUNCTIONS else v) for k, v in hook.items()}
                     for hook in value]
        found[key] = value
    return found


def hash_description(description: Mapping[str, Any]) -> str:
    """The hash of a description made by :func:`describe` (its ``definition`` field,
    when present, is left out): a stored description hashes to the same value."""
    canonical = json.dumps(_replayed(description), sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_DIGITS]


def definition_hash(plan: Plan) -> str:
    """The hash of ``plan``'s definition (see the module docstring)."""
    return str(describe(plan)["definition"])


def can_continue(plan: Plan, definition: str | None, version: int | None, *,
                 current: str | None = None) -> bool:
    """Whether a work that recorded ``definition`` and ``version`` when it was created
    may go on under ``plan`` (``current``: ``plan``'s hash, if known): it recorded no
    hash (it is older than hashes), or the same hash, or a version ``plan``'s saga
    declares in ``continues``."""
    if definition is None:
        return True
    if definition == (current if current is not None else definition_hash(plan)):
        return True
    return version is not None and version in plan.saga.continues

