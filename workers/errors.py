"""The worker layer's errors; the whole tree is drawn in :mod:`engine.errors`.

::

    WorkersError (engine.errors.EngineError)
    └── LockTimeoutError (TimeoutError)   a global lock was not acquired in time
"""

from __future__ import annotations

from engine.errors import EngineError

__all__ = ["LockTimeoutError", "WorkersError"]


class WorkersError(EngineError):
    """Root of the errors the worker layer raises."""


class LockTimeoutError(WorkersError, TimeoutError):
    """A lock was not acquired within the wait timeout (the holders are named)."""
