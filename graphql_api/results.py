"""The typed errors a mutation answers with instead of raising: ``NotFound``,
``WrongState``, ``InvalidInput`` and ``Conflict``. Each family's result unions (e.g.
``CommandResult``, ``SagaResult``) are its payload or one of these; nothing stored
changes on an error."""

from __future__ import annotations

from typing import Any

import strawberry

from .service import ApiError

__all__ = ["Conflict", "InvalidInput", "NotFound", "QuotaExceeded", "WrongState",
           "error_result", "quota_exceeded"]


@strawberry.type
class NotFound:
    message: str
    field: str | None = None


@strawberry.type
class WrongState:
    message: str
    status: str | None = None


@strawberry.type
class InvalidInput:
    message: str
    field: str | None = None


@strawberry.type
class Conflict:
    message: str
    field: str | None = None


@strawberry.type
class QuotaExceeded:
    """The client's quota of works (graphql_api.limits) is spent for now."""

    message: str
    retry_after: float | None = None  # seconds until it may start one again


def quota_exceeded(error: ApiError, info: Any = None) -> QuotaExceeded:
    """The typed answer to a spent quota; over HTTP its headers (``Retry-After``,
    ``RateLimit``) go on the response."""
    response = getattr(getattr(info, "context", None), "response", None)
    if response is not None:
        for name, value in error.headers.items():
            response.headers[name] = value
    wait = error.headers.get("Retry-After")
    return QuotaExceeded(message=error.message,
                         retry_after=None if wait is None else float(wait))


def error_result(error: ApiError) -> NotFound | WrongState | InvalidInput | Conflict:
    """The typed error for a service's :class:`ApiError` (by its ``kind``)."""
    if error.kind == "not_found":
        return NotFound(message=error.message, field=error.field)
    if error.kind == "wrong_state":
        return WrongState(message=error.message, status=error.status)
    if error.kind == "conflict":
        return Conflict(message=error.message, field=error.field)
    return InvalidInput(message=error.message, field=error.field)
