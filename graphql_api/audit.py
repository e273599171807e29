"""Which API requests are operator actions, and their record in the audit log
(engine.store.audit): every mutation whose action is ``steer``, ``debug`` or ``admin``
(pausing, stepping, editing, rewinding a work, changes to sagas, workers, schedules,
tokens, principals, policies, and a pack's own such mutations) is recorded once it
succeeded, with the principal who asked, what it named and the reason it gave. The rule
lives here once: the schema puts :class:`Audited` on each such field when it is built.

``actor`` is who a steering command says it is from in the work's own events: the
principal's name (a client's ``by`` may add on whose behalf, never replace it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from strawberry.extensions import FieldExtension
from strawberry.types import Info

from engine.store import audit

from .results import Conflict, InvalidInput, NotFound, WrongState

__all__ = ["AUDITED_ACTIONS", "Audited", "actor"]

_LOG = logging.getLogger("stepsaga.audit")
AUDITED_ACTIONS = frozenset({"steer", "debug", "admin"})
# the arguments that name what a mutation acts on, in the order they are looked for
_TARGETS = ("work_id", "credential_id", "principal", "saga", "name", "node", "node_id",
            "job", "bucket", "channel", "worker_id")
# arguments never copied into the log (values a client sends that may be secret or big)
_HIDDEN = frozenset({"input", "data", "value", "payload", "output", "policies", "token",
                     "password", "secret"})
_FAILED = (NotFound, WrongState, InvalidInput, Conflict)


def actor(info: Info, by: str) -> str:
    """Who a command is from: the request's principal, with the ``by`` a client gave
    kept as on whose behalf; ``by`` alone for Python in this process."""
    who = getattr(info.context, "principal", None)
    if who is None:
        return by
    return who.name if not by or by == who.name else f"{who.name} (for {by})"


def _details(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in _HIDDEN or value is None:
            continue
        if isinstance(value, bool | int | float) or (isinstance(value, str)
                                                     and len(value) <= 200):
            found[key] = value
        else:
            found[key] = "(given)"
    return found


def _target(field_name: str, kwargs: Mapping[str, Any]) -> tuple[str, str]:
    for key in _TARGETS:
        value = kwargs.get(key)
        if isinstance(value, str) and value:
            if key in ("name", "node", "node_id"):
                # createSchedule(name) names a schedule, addWorkers(node) a node
                kind = re.sub(r"^[a-z]+", "", field_name).lower() or key
                return (kind.removesuffix("s") if kind.endswith("s") else kind), value
            return key.removesuffix("_id"), value
    return re.sub(r"^[a-z]+", "", field_name).lower() or field_name, ""


class Audited(FieldExtension):
    """Records the mutation it is on in the audit log once it succeeded (an answer
    that is not a typed error, nothing raised)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name  # the field's GraphQL name: the entry's action

    async def _record(self, info: Info, kwargs: Mapping[str, Any], result: Any) -> None:
        if isinstance(result, _FAILED):
            return
        who = getattr(info.context, "principal", None)
        principal = who.name if who is not None else str(kwargs.get("by") or "python")
        kind, target = _target(self.name, kwargs)
        reason = kwargs.get("reason")
        try:
            await audit.record(info.context.service.store, principal=principal,
                               action=self.name, target_kind=kind, target=target,
                               reason=reason if isinstance(reason, str) else "",
                               details=_details(kwargs))
        except Exception:  # the action is done: its answer is not lost for its record
            _LOG.exception("could not record %s by %s in the audit log", self.name,
                           principal)

    def resolve(self, next_: Callable[..., Any], source: Any, info: Info,
                **kwargs: Any) -> Any:
        raise TypeError(f"{self.name}: an audited mutation must be async")

    async def resolve_async(self, next_: Callable[..., Awaitable[Any]], source: Any,
                            info: Info, **kwargs: Any) -> Any:
        result = next_(source, info, **kwargs)
        if isinstance(result, Awaitable):
            result = await result
        await self._record(info, kwargs, result)
        return result
