"""Errors raised by the engine.

The tree::

    EngineError
    ├── DefinitionError (ValueError)     a saga definition is malformed
    ├── ExpressionError (ValueError)     a breakpoint expression is malformed
    ├── ServiceError (ValueError)        missing services, or a cycle between them
    ├── WorkStateError (RuntimeError)    an operation does not fit the work's status
    ├── UnknownWorkError (LookupError)   no work has that id
    ├── UnknownSagaError (LookupError)   no saga is registered under that name
    └── StageFailure                     raised by user code: a failure with a retryable flag

User code may raise any exception; the engine records it as data (type, message,
traceback, retryable) and never lets it escape. ``StageFailure`` lets a
transaction say explicitly whether its failure is worth retrying, and
``StageTimeout`` is what the engine records when a call ran out of time.
"""

from __future__ import annotations

__all__ = [
    "DefinitionError",
    "EngineError",
    "ExpressionError",
    "ServiceError",
    "StageFailure",
    "UnknownSagaError",
    "UnknownWorkError",
    "WorkStateError",
]


class EngineError(Exception):
    """Root of every error the engine raises."""


class DefinitionError(EngineError, ValueError):
    """A saga definition is malformed; the message names the stage and what was expected."""


class ExpressionError(EngineError, ValueError):
    """A breakpoint expression could not be parsed; the message gives the position."""


class ServiceError(EngineError, ValueError):
    """Services declared by stages are missing, or their dependencies form a cycle."""


class WorkStateError(EngineError, RuntimeError):
    """The operation does not fit the work's current status (e.g. resume a running work)."""


class UnknownWorkError(EngineError, LookupError):
    """No work has the given id."""


class UnknownSagaError(EngineError, LookupError):
    """No saga is registered under the given name."""


class StageFailure(EngineError):
    """Raised by a transaction or compensation to fail with an explicit retryable flag.

    >>> raise StageFailure("card declined", retryable=False)
    Traceback (most recent call last):
    ...
    engine.errors.StageFailure: card declined
    """

    def __init__(self, message: str, *, retryable: bool = True, details: object = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.details = details
