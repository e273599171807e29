"""The policies (engine.store.policies) applied to GraphQL: every root field is an
action (``ACTION_OF``) a request's principal must have on something (the schema
extension :class:`Authorize`, before anything runs), and what a field touches is
checked per work: a mutation on a work needs the action on that work, a list and a
subscription show only the works its principal may read, with the policies as they
are at each event (a change is in force within a second).

A request without a principal is Python in this process (trusted); the server gives
every request of its clients one (graphql_api.auth).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any

from graphql import GraphQLError, OperationDefinitionNode
from strawberry.extensions import SchemaExtension
from strawberry.types import Info

__all__ = ["ACTION_OF", "ANONYMOUS_KIND", "Authorize", "forbidden", "may_read",
           "readable_sagas", "reads_all", "reads_by_condition", "require"]

# each mutation's action (queries and subscriptions read)
ACTION_OF: dict[str, str] = {
    **dict.fromkeys(("createWork", "updateWork", "updateOrCreateWork", "signalWork",
                     "dryRun"), "write"),
    **dict.fromkeys(("pauseWork", "resumeWork", "stepWork", "multiStepWork", "cancelWork",
                     "retryCompensation", "resolveWork"), "steer"),
    **dict.fromkeys(("editWorkState", "setBreakpoint", "clearBreakpoint", "rewindWork"),
                    "debug"),
    **dict.fromkeys(("deleteWork", "createSaga", "enableSaga", "disableSaga", "deleteSaga",
                     "addWorkers", "updateWorkers", "removeWorkers", "createSchedule",
                     "updateSchedule", "pauseSchedule", "resumeSchedule", "triggerSchedule",
                     "deleteSchedule", "createToken", "revokeToken", "createPrincipal",
                     "deletePrincipal", "setGroups", "setPolicies"), "admin"),
}
# the queries that need more than read
QUERY_ACTIONS = {"credentials": "admin", "principals": "admin", "policies": "admin",
                 "auditLog": "admin"}


# the kind of the principal of a client that has not signed in (graphql_api.auth's
# ANONYMOUS): it may call only the fields a pack lets anonymous clients call
ANONYMOUS_KIND = "anonymous"


def forbidden(who: Any, action: str, what: str) -> GraphQLError:
    return GraphQLError(f"forbidden: {who.name!r} may not {action} {what}",
                        extensions={"code": "forbidden", "action": action})


def _principal(context: Any) -> Any:
    return getattr(context, "principal", None)


class Authorize(SchemaExtension):
    """Each root field of an operation needs its action on something; refused whole,
    before anything runs, when one is not granted at all. ``actions``: each field's
    (the core's by default, graphql_api.extensions adds a pack's); ``anonymous``: the
    fields a client that has not signed in may call, and it nothing else; ``own``: the
    fields any signed-in principal may call whatever its policies (its own account: a
    pack's ``me``, ``logout``), which check what they touch themselves."""

    def __init__(self, *, actions: Mapping[str, str] | None = None,
                 anonymous: frozenset[str] = frozenset(),
                 own: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.actions = {**ACTION_OF, **QUERY_ACTIONS} if actions is None else actions
        self.anonymous = anonymous
        self.own = own

    async def on_execute(self) -> AsyncIterator[None]:  # type: ignore[override]
        context = self.execution_context.context
        who = _principal(context)
        document = self.execution_context.graphql_document
        if who is not None and document is not None:
            policies = None if who.kind == ANONYMOUS_KIND \
                else await context.service.policies()
            for definition in document.definitions:
                if not isinstance(definition, OperationDefinitionNode):
                    continue
                kind = definition.operation.value
                for selection in definition.selection_set.selections:
                    name = getattr(getattr(selection, "name", None), "value", "")
                    if name.startswith("__"):
                        continue
                    if policies is None:  # not signed in
                        if name not in self.anonymous:
                            raise GraphQLError(
                                f"sign in first: {name} needs a bearer token or a session",
                                extensions={"code": "unauthenticated"})
                        continue
                    if name in self.own:
                        continue
                    action = self.actions.get(name, "admin" if kind == "mutation"
                                              else "read")
                    if not policies.may(who, action):
                        raise forbidden(who, action, f"anything ({name})")
        yield


async def require(info: Info, action: str, work: Mapping[str, Any]) -> None:
    """``forbidden`` unless the request's principal may ``action`` this work (a row, or
    the saga and input of one to be made)."""
    who = _principal(info.context)
    if who is None:
        return
    if not (await info.context.service.policies()).allows(who, action, work):
        raise forbidden(who, action, f"works of saga {work.get('saga')!r}")


async def reads_all(context: Any) -> bool:
    """Whether the request may read every work (no need to look at one to know)."""
    who = _principal(context)
    return who is None or (await context.service.policies()).sagas(who, "read") is None


async def reads_by_condition(context: Any) -> bool:
    """Whether a policy letting the request read has a condition (then each work's
    row as it is now decides; else its saga alone, which never changes)."""
    who = _principal(context)
    if who is None:
        return False
    policies = await context.service.policies()
    return any(p.compiled is not None for p in policies.policies
               if "read" in p.actions and p.names(who))


async def may_read(context: Any, work: Mapping[str, Any]) -> bool:
    who = _principal(context)
    return who is None or (await context.service.policies()).allows(who, "read", work)


async def readable_sagas(info: Info, asked: Iterable[str] | None,
                         known: Iterable[str]) -> tuple[list[str] | None, bool]:
    """The saga filter a list of works gets (None: any saga), and whether its rows
    must each be checked too (a policy with a condition)."""
    who = _principal(info.context)
    policies = await info.context.service.policies()
    globs = policies.sagas(who, "read") if who is not None else None
    if globs is None:
        return (list(asked) if asked else None), False
    names = sorted({n for n in (asked or known) if any(fnmatchcase(n, g) for g in globs)})
    return names, await reads_by_condition(info.context)
