"""What user code receives: the stage context, and failures as data."""

from __future__ import annotations

import json
import logging
import math
import reprlib
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import StageFailure
from .services import ServiceScope
from .worklogs import WorkLogger

if TYPE_CHECKING:
    from .worklogs import WorkLogs

__all__ = ["MAX_DEPTH", "Failure", "StageContext", "engine_failure", "error_data",
           "json_problem", "jsonable", "shown"]

_LOG = logging.getLogger("stepsaga.work")
_TRACE_LIMIT = 8_000


class StageContext:
    """Given to every transaction, compensation, guard and condition.

    ``idempotency_key`` is stable for a call across crashes, and different for every
    call that must have its own effect: ``<work id>/<stage path>/<attempt>`` for a
    transaction (and its guards), ``<work id>/<stage path>/<attempt>/cleanup/<n>`` for
    the n-th try of the clean-up after the failed attempt, and
    ``<work id>/<stage path>/rollback/<n>`` for the n-th try of its rollback
    (``.../cleanup/<round>.<n>`` and ``.../rollback/<round>.<n>`` once a person
    retried a failed compensation). Pass
    it to whatever the call changes, and a repeat after a crash is deduplicated there.
    """

    __slots__ = ("_logger", "_logs", "attempt", "dry_run", "idempotency_key", "kind", "path",
                 "saga", "services", "work_id")

    def __init__(self, *, work_id: str, saga: str, path: str, attempt: int, kind: str,
                 services: ServiceScope, dry_run: bool = False,
                 idempotency_key: str | None = None, logs: WorkLogs | None = None) -> None:
        self.work_id = work_id
        self.saga = saga
        self.path = path
        self.attempt = attempt
        self.kind = kind
        self.services = services
        self.dry_run = dry_run
        self.idempotency_key = idempotency_key or f"{work_id}/{path}/{attempt}"
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None
        self._logs = logs

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger (``stepsaga.work``) whose records carry the work id, the stage path
        and the attempt, and are kept with the work in the store (DEBUG ones only if
        the work fails; see :mod:`engine.worklogs`)."""
        if self._logger is None:
            logs = self._logs
            self._logger = WorkLogger(_LOG, {
                "work_id": self.work_id, "stage": self.path, "attempt": self.attempt,
                "saga": self.saga},
                None if logs is None or self.dry_run else
                logs.sink(self.work_id, self.path, self.attempt))
        return self._logger

    @property
    def store(self) -> Any:
        """The store this work is kept in (an :class:`engine.store.SqlStore`, or None
        when the runtime has none): for a pack's own tables, read and written by its
        stages (each write its own short transaction, outside the work's events)."""
        return self.services.store

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


MAX_DEPTH = 128
"""How deeply a stored value (an input, an output, a payload) may nest lists and dicts."""

_SCALARS = (str, bool, type(None))


def json_problem(value: Any) -> str | None:
    """Why ``value`` cannot be stored as JSON and read back the same, or None if it can.

    Besides what JSON has no form for (sets, objects, NaN and infinities), a value may
    not nest deeper than :data:`MAX_DEPTH` levels nor hold an integer too long for
    Python's int-to-string limit (both would break every later read of the stream), nor
    a dict key that is not a string (read back, it would be one).
    """
    kind = type(value)
    if kind in _SCALARS:
        return None
    if kind is int:
        return None if value.bit_length() < 1000 else _long_int(value)
    if kind is float:
        return None if math.isfinite(value) else f"{value!r} (JSON has no NaN or infinity)"
    if kind is dict or kind is list or kind is tuple:
        problem = _shape_problem(value)
        if problem is not None:
            return problem
    try:
        _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        return str(exc)
    return None


_ENCODER = json.JSONEncoder(allow_nan=False)


def _long_int(value: int) -> str | None:
    try:
        str(value)
    except ValueError:
        return "an integer longer than Python's limit of digits for conversion to text"
    return None


def _shape_problem(value: Any) -> str | None:
    """Nesting past MAX_DEPTH, or a dict key that is not a string (JSON would make it one,
    and a replay would then see another value than the live run did)."""
    stack = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        item, depth = pop()
        if depth > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels"
        if type(item) is dict:
            for key in item:
                if type(key) is not str:
                    return f"a dict key {shown(key)} is not a string"
            children = item.values()
        else:
            children = item
        for child in children:
            kind = type(child)
            if kind is dict or kind is list or kind is tuple:
                push((child, depth + 1))
    return None


_SHOWN = reprlib.Repr()  # keyword arguments only from Python 3.12
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlong = 4, 80, 80, 60


def shown(value: Any) -> str:
    """A short repr of any value, for messages (never fails, however big or deep)."""
    try:
        text = _SHOWN.repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 200 else text[:197] + "..."


def engine_failure(error: StageFailure) -> dict[str, Any]:
    """A failure the engine itself records, as data: its type is the class name."""
    return {"type": type(error).__name__, "message": str(error), "retryable": error.retryable}


def jsonable(value: Any) -> bool:
    """Whether ``value`` survives a round trip through JSON (see :func:`json_problem`)."""
    return json_problem(value) is None
