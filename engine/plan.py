"""A saga definition compiled for the rules: every node indexed by its template path.

A template path is a stage path without its ``[i]`` indices (``poll[3]/check``
has the template ``poll/check``). The plan resolves :class:`SagaRef` nodes
against the registered sagas, and works out once which guards and observers
apply to each node, which saga's retry budget it draws on, and which services
the whole saga needs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .definitions import Guard, Node, Observer, Saga, SagaRef, Stage
from .errors import DefinitionError, UnknownSagaError

__all__ = ["NodeInfo", "Plan", "compile_saga", "template_of"]

_INDEX = re.compile(r"\[\d+\]")


def template_of(path: str) -> str:
    """``poll[3]/check`` -> ``poll/check``."""
    return _INDEX.sub("", path) if "[" in path else path


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInfo:
    node: Any
    template: str
    depth: int
    pre_guards: tuple[Guard, ...] = ()
    post_guards: tuple[Guard, ...] = ()
    observers: tuple[Observer, ...] = ()
    # the retry budgets that apply, innermost first: (template path of the saga, limit)
    budgets: tuple[tuple[str, int], ...] = ()


class Plan:
    """The compiled form of one registered saga.

    ``refs`` maps the template path of each stage that was a :class:`SagaRef` to the
    name of the registered saga it uses (the plan holds that saga's stages there).
    """

    __slots__ = ("_by_path", "has_observers", "name", "nodes", "refs", "saga", "services")

    def __init__(self, saga: Saga, nodes: dict[str, NodeInfo],
                 refs: Mapping[str, str] | None = None) -> None:
        self.saga = saga
        self.name = saga.name
        self.nodes = nodes
        self.refs: Mapping[str, str] = dict(refs or {})
        self._by_path: dict[str, NodeInfo] = {}
        self.has_observers = any(info.observers for info in nodes.values())
        services: dict[str, list[str]] = {}
        for template, info in nodes.items():
            if isinstance(info.node, Stage):
                for service in info.node.services:
                    services.setdefault(service, []).append(template)
        self.services: Mapping[str, Sequence[str]] = services

    def info(self, path: str) -> NodeInfo:
        found = self._by_path.get(path)
        if found is None:
            found = self.nodes[template_of(path)]
            if len(self._by_path) < 100_000:
                self._by_path[path] = found
        return found


def _join(template: str, name: str) -> str:
    return f"{template}/{name}" if template else name


def _resolve(node: Node, registry: Mapping[str, Saga], chain: tuple[str, ...],
             template: str, refs: dict[str, str]) -> Node:
    if isinstance(node, SagaRef):
        target = registry.get(node.saga)
        if target is None:
            raise UnknownSagaError(
                f"stage {node.name!r} refers to saga {node.saga!r}, which is not registered "
                f"(registered: {sorted(registry)})"
            )
        if node.saga in chain:
            raise DefinitionError(
                f"saga reference cycle: {' -> '.join((*chain, node.saga))} "
                f"(at stage {node.name!r})"
            )
        refs[template] = node.saga
        resolved = _resolve(target, registry, (*chain, node.saga), template, refs)
        return dataclasses.replace(resolved, name=node.name, hooks=(*resolved.hooks, *node.hooks))
    fields: dict[str, Any] = {}
    for attr in ("stages", "branches", "cases"):
        if hasattr(node, attr):
            fields[attr] = tuple(_resolve(c, registry, chain, _join(template, c.name), refs)
                                 for c in getattr(node, attr))
    for attr in ("stage", "body"):
        if hasattr(node, attr):
            child = getattr(node, attr)
            fields[attr] = _resolve(child, registry, chain, _join(template, child.name), refs)
    return dataclasses.replace(node, **fields) if fields else node


def compile_saga(saga: Saga, registry: Mapping[str, Saga] | None = None) -> Plan:
    """Resolve references and index the nodes of ``saga``."""
    if not isinstance(saga, Saga):
        raise DefinitionError(f"expected a Saga at the root, got {type(saga).__name__}")
    registry = dict(registry or {})
    registry.setdefault(saga.name, saga)
    refs: dict[str, str] = {}
    root = _resolve(saga, registry, (saga.name,), "", refs)
    assert isinstance(root, Saga)
    nodes: dict[str, NodeInfo] = {}
    # ancestors: (depth, template, hooks) of each enclosing node, outermost first
    def walk(node: Node, template: str, depth: int,
             ancestors: tuple[tuple[int, str, tuple[Any, ...]], ...],
             budgets: tuple[tuple[str, int], ...]) -> None:
        chain = (*ancestors, (depth, template, node.hooks))
        pre: list[Guard] = []
        post: list[Guard] = []
        observers: list[Observer] = []
        owners: dict[str, str] = {}  # hook name -> where the hook reaching here is declared
        for owner_depth, owner, hooks in chain:
            distance = depth - owner_depth
            for hook in hooks:
                reach = hook.depth
                if reach is not None and distance > reach:
                    continue
                where = owners.setdefault(hook.name, owner)
                if where != owner or sum(h.name == hook.name for h in hooks) > 1:
                    places = f"declared on {where or '(root)'!r} and on " \
                        f"{owner or '(root)'!r}" if where != owner else \
                        f"both declared on {owner or '(root)'!r}"
                    raise DefinitionError(
                        f"saga {saga.name!r}: two hooks named {hook.name!r} reach stage "
                        f"{template or '(root)'!r}, {places}; hook names must be unique "
                        "where they apply (each observer's value is kept under its name)")
                if isinstance(hook, Observer):
                    observers.append(hook)
                elif isinstance(node, Stage):
                    (pre if hook.when == "pre" else post).append(hook)
        if isinstance(node, Saga) and node.retry_budget is not None:
            budgets = ((template, node.retry_budget), *budgets)
        nodes[template] = NodeInfo(
            node=node, template=template, depth=depth, pre_guards=tuple(pre),
            post_guards=tuple(post), observers=tuple(observers),
            budgets=budgets,
        )
        for child in node.children():
            child_template = f"{template}/{child.name}" if template else child.name
            walk(child, child_template, depth + 1, chain, budgets)

    walk(root, "", 0, (), ())
    return Plan(root, nodes, refs)
