"""Services: the resources a work's stages share (clients, connections).

A :class:`Service` is declared once with a factory, an optional ``close`` and
the services it needs. Each work gets a :class:`ServiceScope`: a service is
created on first use within that work and closed, in reverse order of creation,
when the work leaves the process. :func:`check_services` runs when a saga is
started: every service a stage declares must be provided, and the services'
dependencies on each other must have no cycle.

>>> db = Service(name="db", factory=lambda scope: {"connected": True})
>>> check_services({"db": db}, {"db": ["charge"]})
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from .errors import ServiceError

__all__ = ["Service", "ServiceScope", "check_services", "dependency_order"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    name: str
    factory: Callable[[ServiceScope], Awaitable[Any] | Any]
    close: Callable[[Any], Awaitable[None] | None] | None = None
    depends_on: tuple[str, ...] = ()


def check_services(provided: Mapping[str, Service], required: Mapping[str, Sequence[str]]) -> None:
    """Raise :class:`ServiceError` for a missing service or a dependency cycle."""
    missing = {name: stages for name, stages in required.items() if name not in provided}
    if missing:
        detail = "; ".join(
            f"{name!r} (required by {', '.join(repr(s) for s in stages)})"
            for name, stages in sorted(missing.items())
        )
        raise ServiceError(f"missing services: {detail}; provided: {sorted(provided)}")
    for service in provided.values():
        for dep in service.depends_on:
            if dep not in provided:
                raise ServiceError(
                    f"service {service.name!r} depends on {dep!r}, which is not provided"
                )
    dependency_order({name: s.depends_on for name, s in provided.items()})


def dependency_order(depends_on: Mapping[str, Sequence[str]]) -> list[str]:
    """The services named in ``depends_on`` (name -> the names it needs, all of them
    keys), each after what it needs; :class:`ServiceError` names a cycle."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1: being visited, 2: done
    stack: list[str] = []

    def visit(name: str) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*stack[stack.index(name):], name]
            raise ServiceError(f"service dependency cycle: {' -> '.join(cycle)}")
        state[name] = 1
        stack.append(name)
        for dep in depends_on[name]:
            visit(dep)
        stack.pop()
        state[name] = 2
        order.append(name)

    for name in sorted(depends_on):
        visit(name)
    return order


class ServiceScope:
    """The services of one work, created lazily and closed together; ``store`` is the
    store the work is kept in (None without one), for a pack that keeps tables of its
    own beside the works (a channel's state, a counter shared by every node)."""

    def __init__(self, services: Mapping[str, Service], store: Any = None) -> None:
        self._services = services
        self.store = store
        self._values: dict[str, Any] = {}
        self._order: list[str] = []
        self._locks: dict[str, anyio.Lock] = {}

    async def get(self, name: str) -> Any:
        if name in self._values:
            return self._values[name]
        service = self._services.get(name)
        if service is None:
            raise ServiceError(f"service {name!r} is not provided (have {sorted(self._services)})")
        lock = self._locks.setdefault(name, anyio.Lock())
        async with lock:
            if name not in self._values:
                for dep in service.depends_on:
                    await self.get(dep)
                value = service.factory(self)
                if inspect.isawaitable(value):
                    value = await value
                self._values[name] = value
                self._order.append(name)
        return self._values[name]

    async def aclose(self) -> None:
        """Close what was created, newest first; a failing close does not stop the others."""
        errors: list[BaseException] = []
        while self._order:
            name = self._order.pop()
            value = self._values.pop(name)
            close = self._services[name].close
            if close is None:
                continue
            try:
                with anyio.CancelScope(shield=True):
                    result = close(value)
                    if inspect.isawaitable(result):
                        await result
            except Exception as exc:  # closing is best effort; report the first failure
                errors.append(exc)
        if errors:
            raise ServiceError(f"closing services failed: {errors[0]!r}") from errors[0]
