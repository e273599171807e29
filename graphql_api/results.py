"""The typed errors a mutation answers with instead of raising: ``NotFound``,
``WrongState``, ``InvalidInput`` and ``Conflict``. Each family's result unions (e.g.
``CommandResult``, ``SagaResult``) are its payload or one of these; nothing stored
changes on an error."""

from __future__ import annotations

import strawberry

from .service import ApiError

__all__ = ["Conflict", "InvalidInput", "NotFound", "WrongState", "error_result"]


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


def error_result(error: ApiError) -> NotFound | WrongState | InvalidInput | Conflict:
    """The typed error for a service's :class:`ApiError` (by its ``kind``)."""
    if error.kind == "not_found":
        return NotFound(message=error.message, field=error.field)
    if error.kind == "wrong_state":
        return WrongState(message=error.message, status=error.status)
    if error.kind == "conflict":
        return Conflict(message=error.message, field=error.field)
    return InvalidInput(message=error.message, field=error.field)
