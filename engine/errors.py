"""Errors: the whole tree, for the engine and the layers above it.

Every error stepsaga raises or records descends from :class:`EngineError`; each
package above the engine has one root of its own under it. The tree, with where
each error is defined (``engine.errors`` unless said)::

    EngineError
    ├── DefinitionError (ValueError)     a saga definition is malformed
    ├── ExpressionError (ValueError)     a CEL condition is malformed, fails on the data,
    │                                    or was recorded before CEL and has no CEL form
    ├── ServiceError (ValueError)        missing services, or a cycle between them
    ├── WorkStateError (RuntimeError)    an operation does not fit the work's status
    │   └── DefinitionMismatchError      the work started on a definition of its saga
    │                                    this runtime does not continue
    ├── UnknownWorkError (LookupError)   no work has that id
    ├── UnknownSagaError (LookupError)   no saga is registered under that name
    ├── SagaDisabledError (RuntimeError) the saga is disabled: no new works of it
    ├── CorruptEventError (ValueError)   a stored event cannot be read or applied:
    │                                    names the work, the seq and what is wrong
    ├── StoreError                       the store could not take an append
    │   ├── ConflictError                another writer took the seq first
    │   └── LeaseLostError               the appender's lease is held by another worker
    ├── SchemaTooNewError (RuntimeError) the store's schema is newer than this code knows
    ├── StageFailure                     a stage's failure, with a retryable flag;
    │   │                                raised by user code, or recorded by the engine:
    │   ├── OutputError                  a result is not JSON (NaN, a set, too deep...)
    │   ├── RetryPolicyError             a retry policy's wait strategy failed
    │   ├── CompensationResultError (TypeError)  a compensation returned what it may not
    │   ├── StageTimeoutError (TimeoutError)     a call overran its stage's timeout
    │   └── InterruptedCall              user code raised a BaseException (SystemExit,
    │                                    KeyboardInterrupt, CancelledError, ...)
    └── WorkersError                     workers.errors: root of the worker layer
        └── LockTimeoutError (TimeoutError)  a global lock was not acquired in time

User code may raise any exception; the engine records it as data (type, message,
traceback, retryable) and never lets it escape. ``StageFailure`` lets a
transaction say explicitly whether its failure is worth retrying. The failures
the engine records itself are recorded under their class name (``"OutputError"``,
``"RetryPolicyError"``...), which is the ``type`` of the recorded error.
The store's errors are also exported by :mod:`engine.store`.
"""

from __future__ import annotations

__all__ = [
    "CompensationResultError",
    "ConflictError",
    "CorruptEventError",
    "DefinitionError",
    "DefinitionMismatchError",
    "EngineError",
    "ExpressionError",
    "InterruptedCall",
    "LeaseLostError",
    "OutputError",
    "RetryPolicyError",
    "SagaDisabledError",
    "SchemaTooNewError",
    "ServiceError",
    "StageFailure",
    "StageTimeoutError",
    "StoreError",
    "UnknownSagaError",
    "UnknownWorkError",
    "WorkStateError",
]


class EngineError(Exception):
    """Root of every error stepsaga raises."""


class DefinitionError(EngineError, ValueError):
    """A saga definition is malformed; the message names the stage and what was expected."""


class ExpressionError(EngineError, ValueError):
    """A CEL condition is not valid (the message gives the source and the column), could
    not be evaluated on the data (it names the problem: a missing key...), or was
    written before conditions were CEL and cannot be carried over (it names the
    breakpoint)."""


class ServiceError(EngineError, ValueError):
    """Services declared by stages are missing, or their dependencies form a cycle."""


class WorkStateError(EngineError, RuntimeError):
    """The operation does not fit the work's current status (e.g. resume a running work)."""


class DefinitionMismatchError(WorkStateError):
    """A work was started on another definition of its saga than the one this runtime
    has, and this one does not declare the work's version in ``continues`` (see
    :class:`engine.Saga`): the work is left in the store for a node that runs its
    definition. The attributes name both definitions."""

    def __init__(self, message: str, *, work_id: str, saga: str, definition: str,
                 version: int | None, current: str, current_version: int) -> None:
        super().__init__(message)
        self.work_id = work_id
        self.saga = saga
        self.definition = definition  # the hash the work recorded
        self.version = version  # the version it recorded (None: not recorded)
        self.current = current  # the hash of this runtime's definition
        self.current_version = current_version


class UnknownWorkError(EngineError, LookupError):
    """No work has the given id."""


class UnknownSagaError(EngineError, LookupError):
    """No saga is registered under the given name."""


class SagaDisabledError(EngineError, RuntimeError):
    """The saga is disabled: new works of it are refused (its works already started go
    on). ``by``, ``reason`` and ``at`` (a Unix time) say who disabled it, why and when,
    when known."""

    def __init__(self, message: str, *, saga: str, by: str | None = None, reason: str = "",
                 at: float | None = None) -> None:
        super().__init__(message)
        self.saga = saga
        self.by = by
        self.reason = reason
        self.at = at


class CorruptEventError(EngineError, ValueError):
    """A stored event cannot be read back or applied: names the work, the seq and what is
    wrong."""


class StoreError(EngineError):
    """The database could not take an append (it is away, or refused it): the runner stops
    the work here; its events up to the last durable commit are in the store for whoever
    goes on. ``transient`` says whether trying again later may succeed (a lock held too
    long, a lost connection)."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class SchemaTooNewError(EngineError, RuntimeError):
    """The store's schema is at a revision this version of stepsaga does not know (a
    newer version migrated it): the node does not start, rather than run on tables it
    does not understand. Names the revision found and the one this code needs."""

    def __init__(self, found: str, needed: str) -> None:
        super().__init__(
            f"the store's schema is at revision {found}, newer than this version of "
            f"stepsaga knows: it needs revision {needed} (its newest migration). Upgrade "
            "stepsaga on this node to the version that migrated the store")
        self.found = found
        self.needed = needed


class ConflictError(StoreError):
    """Another writer appended to this work first: the seq is taken. Nothing was written."""


class LeaseLostError(StoreError):
    """The appender's lease on the work expired and another worker holds it now: it must
    stop running the work. Nothing was written."""


class StageFailure(EngineError):
    """Raised by a transaction or compensation to fail with an explicit retryable flag.

    >>> raise StageFailure("card declined", retryable=False)
    Traceback (most recent call last):
    ...
    engine.errors.StageFailure: card declined
    """

    retryable_default = True

    def __init__(self, message: str, *, retryable: bool | None = None,
                 details: object = None) -> None:
        super().__init__(message)
        self.retryable = self.retryable_default if retryable is None else retryable
        self.details = details


class OutputError(StageFailure):
    """Recorded when a result cannot be stored: not JSON, a NaN or infinity, an integer
    too long, a value nested too deep. Never retried."""

    retryable_default = False


class RetryPolicyError(StageFailure):
    """Recorded when a retry policy's wait strategy raised or chose no finite delay: the
    stage fails for good (its compensation runs as usual)."""

    retryable_default = False


class CompensationResultError(StageFailure, TypeError):
    """Recorded when a compensation returns something other than ``None`` or ``Abort``
    (``RetryTransaction`` and ``Forward`` too, in a clean-up only): the compensation
    counts as failed, and its retry policy decides what next."""


class StageTimeoutError(StageFailure, TimeoutError):
    """Recorded when a call ran out of its stage's time: cancelled at an await point, or
    returned only after its timeout (blocking code cannot be cancelled)."""


class InterruptedCall(StageFailure):
    """Recorded when user code raised a ``BaseException`` that is not an ``Exception``
    (``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``, a ``CancelledError`` that
    no cancellation asked for): that call fails, never retried, and no other work
    notices."""

    retryable_default = False
