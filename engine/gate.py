"""The gate a stage's transaction passes before it runs: what the engine asks of the
outside world (locks, rate limits, service health) without knowing how it is kept.

A runtime given a :class:`Gate` asks it to admit every transaction of a stage that
declares ``services``, a ``lock_key`` or a ``rate_limit_key``. The gate's context
manager returns once the call may run and is left when it has ended (a lock is
held that long). While it makes the call wait it says why through ``waiting``:
the runtime records a ``stage.waiting`` event, so the work shows status
``waiting`` and the reason, and retries are not spent waiting. The worker layer
implements it (:mod:`workers.gate`).

Keys are templates filled from the stage's input: ``"customer:{customer}"`` with
input ``{"customer": 7}`` is ``"customer:7"``; ``{input}`` is the whole input,
``{work_id}`` and ``{saga}`` the work's.

>>> fill_key("customer:{customer}", {"customer": 7}, work_id="w", saga="s")
'customer:7'
>>> fill_key("sms:{input}", "+33 6", work_id="w", saga="s")
'sms:+33 6'
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from .definitions import Stage
from .errors import DefinitionError

__all__ = ["Admission", "Gate", "fill_key"]


def fill_key(template: str, value: Any, *, work_id: str, saga: str) -> str:
    fields: dict[str, Any] = {}
    if isinstance(value, Mapping):
        fields.update(value)
    fields.update(input=value, work_id=work_id, saga=saga)
    try:
        return template.format_map(fields)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise DefinitionError(f"key template {template!r} cannot be filled from the "
                              f"stage's input: {exc!r}") from None


@dataclass(frozen=True, slots=True)
class Admission:
    """One transaction call asking to run."""

    work_id: str
    saga: str
    path: str
    attempt: int
    stage: Stage
    lock_key: str | None  # filled in
    rate_limit_key: str | None  # filled in


class Gate(Protocol):
    def admit(self, request: Admission, waiting: Callable[[str], Awaitable[None]]
              ) -> AbstractAsyncContextManager[None]: ...
