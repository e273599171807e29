"""The functions an app offers to sagas given as data, by name.

A saga given as data (:func:`engine.sagadata.saga_from_data`) names its transactions,
compensations, the callables its composites need (a Map's ``items``, a Loop's
``until``, a Branch's ``choose``), its guards' checks and observers' notifications,
and the exception classes its retries look at, by the name the app registered them
under. Nothing is registered at import time: an app makes its :class:`Functions` and
passes it on (``WorkerApp(functions=...)``).

>>> functions = Functions()
>>> @functions.register
... async def reserve(ctx, order): return order
>>> @functions.register(name="orders.refund")
... async def refund(ctx, order, output, reason): return None
>>> sorted(functions)
['orders.refund', 'reserve']
>>> functions["reserve"] is reserve
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, overload

from .definitions import validate_name
from .errors import DefinitionError

__all__ = ["Functions"]

_F = TypeVar("_F", bound=Callable[..., Any])


class Functions(Mapping[str, Callable[..., Any]]):
    """Name -> function (or exception class, for retries), each name given once.

    ``Functions({"reserve": reserve})`` or the :meth:`register` decorator; a name is
    letters, digits, ``_ . -`` (as stage names are). Registering a name twice with
    another function is a :class:`~engine.errors.DefinitionError`.
    """

    __slots__ = ("_functions",)

    def __init__(self, functions: Mapping[str, Callable[..., Any]] | None = None) -> None:
        self._functions: dict[str, Callable[..., Any]] = {}
        if functions is not None:
            if not isinstance(functions, Mapping):
                raise DefinitionError("functions must be a mapping of name -> function, got "
                                      f"{type(functions).__name__}")
            for name, fn in functions.items():
                self.add(name, fn)

    def add(self, name: str, fn: _F) -> _F:
        """Register ``fn`` as ``name``; returns ``fn``."""
        validate_name(name, "function")
        if not callable(fn):
            raise DefinitionError(f"function {name!r}: expected a callable, got {fn!r}")
        known = self._functions.get(name)
        if known is not None and known is not fn:
            raise DefinitionError(f"function name {name!r} is registered already (as "
                                  f"{known!r}); each name is given once")
        self._functions[name] = fn
        return fn

    @overload
    def register(self, fn: _F, /) -> _F: ...

    @overload
    def register(self, fn: None = None, /, *, name: str) -> Callable[[_F], _F]: ...

    def register(self, fn: _F | None = None, /, *, name: str | None = None
                 ) -> _F | Callable[[_F], _F]:
        """Decorator: register a function under its ``__name__``, or under ``name=``."""
        if fn is not None:
            return self.add(getattr(fn, "__name__", ""), fn)

        def decorate(fn: _F) -> _F:
            assert name is not None
            return self.add(name, fn)

        if name is None:
            raise DefinitionError("register() needs a function, or name=")
        return decorate

    def __getitem__(self, name: str) -> Callable[..., Any]:
        return self._functions[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._functions)

    def __len__(self) -> int:
        return len(self._functions)

    def __repr__(self) -> str:
        return f"Functions({sorted(self._functions)})"
