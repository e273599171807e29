"""The error tree drawn in engine/errors.py is the tree the classes form."""

from __future__ import annotations

import re

import engine.errors
import workers.errors
from engine.errors import EngineError

_LINE = re.compile(r"^(?P<indent>[ │├└─]*)(?P<name>[A-Z][A-Za-z]+)(?: \((?P<builtin>[A-Za-z]+)\))?")


def drawn_tree() -> dict[str, tuple[str | None, str | None]]:
    """name -> (drawn parent, drawn builtin base) from the module docstring."""
    doc = engine.errors.__doc__ or ""
    block = doc.split("::", 1)[1].split("\n\n", 2)[1]
    parents: dict[int, str] = {}
    drawn: dict[str, tuple[str | None, str | None]] = {}
    for line in block.splitlines():
        text = line[4:]  # the block's indentation
        found = _LINE.match(text)
        if found is None or not found.group("name").endswith(("Error", "Failure", "Call")):
            continue
        depth = len(found.group("indent")) // 4
        parents[depth] = found.group("name")
        drawn[found.group("name")] = (parents.get(depth - 1) if depth else None,
                                      found.group("builtin"))
    return drawn


def classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module in (engine.errors, workers.errors):
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type) and issubclass(value, EngineError):
                found[name] = value
    return found


def test_every_error_is_drawn_where_it_sits_in_the_tree() -> None:
    drawn = drawn_tree()
    real = classes()
    assert set(drawn) == set(real), set(drawn) ^ set(real)
    for name, kind in real.items():
        parent, builtin = drawn[name]
        ours = [b for b in kind.__bases__ if issubclass(b, EngineError)]
        assert [b.__name__ for b in ours] == ([parent] if parent else []), name
        others = [b.__name__ for b in kind.__bases__ if not issubclass(b, EngineError)
                  and b is not Exception]
        assert others == ([builtin] if builtin else []), name


def test_the_store_and_the_workers_raise_errors_of_the_tree() -> None:
    import engine.store
    import workers.locks

    for name in ("ConflictError", "CorruptEventError", "LeaseLostError", "StoreError"):
        assert getattr(engine.store, name) is getattr(engine.errors, name)
    assert workers.locks.LockTimeoutError is workers.errors.LockTimeoutError
    assert issubclass(workers.errors.LockTimeoutError, TimeoutError)
