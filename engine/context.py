"""What user code receives: the stage context, and failures as data."""

from __future__ import annotations

import json
import logging
import traceback
from dataclasses import dataclass
from typing import Any

from .services import ServiceScope

__all__ = ["Failure", "StageContext", "error_data", "jsonable"]

_LOG = logging.getLogger("stepsaga.work")
_TRACE_LIMIT = 8_000


class StageContext:
    """Given to every transaction, compensation, guard and condition.

    ``idempotency_key`` is stable for an attempt (work id, stage path, attempt):
    a transaction that talks to the outside world passes it along so a repeat
    after a crash is deduplicated there.
    """

    __slots__ = ("_logger", "attempt", "dry_run", "idempotency_key", "kind", "path", "saga",
                 "services", "work_id")

    def __init__(self, *, work_id: str, saga: str, path: str, attempt: int, kind: str,
                 services: ServiceScope, dry_run: bool = False) -> None:
        self.work_id = work_id
        self.saga = saga
        self.path = path
        self.attempt = attempt
        self.kind = kind
        self.services = services
        self.dry_run = dry_run
        self.idempotency_key = f"{work_id}/{path}/{attempt}"
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        if self._logger is None:
            self._logger = logging.LoggerAdapter(_LOG, {
                "work_id": self.work_id, "stage": self.path, "attempt": self.attempt})
        return self._logger

    async def service(self, name: str) -> Any:
        """The work's instance of service ``name``, created on first use."""
        return await self.services.get(name)

    def __repr__(self) -> str:
        return f"StageContext({self.kind} {self.path!r} attempt {self.attempt} of {self.work_id})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """Why a stage failed, as compensations and results see it."""

    path: str
    type: str
    message: str
    retryable: bool = False
    traceback: str | None = None

    @classmethod
    def from_data(cls, path: str, data: dict[str, Any] | None) -> Failure:
        data = data or {}
        return cls(path=path, type=str(data.get("type", "Error")),
                   message=str(data.get("message", "")),
                   retryable=bool(data.get("retryable", False)),
                   traceback=data.get("traceback"))


def error_data(exc: BaseException, *, retryable: bool, timed_out: bool = False) -> dict[str, Any]:
    """An exception as JSON-serialisable data."""
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else \
        f"{kind.__module__}.{kind.__qualname__}"
    trace = "".join(traceback.format_exception(exc))
    data: dict[str, Any] = {
        "type": name, "message": str(exc), "retryable": retryable,
        "traceback": trace[-_TRACE_LIMIT:],
    }
    if timed_out:
        data["timed_out"] = True
    details = getattr(exc, "details", None)
    if details is not None and jsonable(details):
        data["details"] = details
    return data


def jsonable(value: Any) -> bool:
    """Whether ``value`` survives a round trip through JSON."""
    if value is None or type(value) in (int, float, str, bool):
        return True
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True
