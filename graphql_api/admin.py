"""Principals, policies and the audit log through GraphQL, for administrators: made,
changed and read as ``stepsaga token`` and ``stepsaga policy`` do (engine.store's
principals, policies and audit modules, the one place of each rule). Deleting a
principal removes the policies naming it, in the same transaction."""

from __future__ import annotations

from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from engine.store import audit
from engine.store import policies as pol
from engine.store import principals as pr

from .audit import actor
from .context import service_of
from .results import Conflict, InvalidInput, NotFound

__all__ = ["audit_log", "create_principal", "delete_principal", "policies", "principals",
           "set_groups", "set_policies"]


@strawberry.type
class Principal:
    """A person or a service, in groups (customers of an app and operators alike)."""

    name: str
    kind: str
    email: str | None
    groups: list[str]
    created_at: float
    disabled_at: float | None

    @classmethod
    def of(cls, row: dict[str, Any]) -> Principal:
        return cls(name=row["name"], kind=row["kind"], email=row.get("email"),
                   groups=list(row.get("groups", [])), created_at=float(row["created_at"]),
                   disabled_at=row.get("disabled_at"))


@strawberry.type
class PolicySet:
    """The deployment's policies at one version (each: subject, actions, sagas,
    condition, routes)."""

    version: int
    policies: JSON


@strawberry.type
class AuditEntry:
    """An operator action: who did what, on what, when and why."""

    position: int
    time: float
    principal: str
    action: str
    target_kind: str
    target: str
    reason: str
    details: JSON


@strawberry.type
class AuditPage:
    entries: list[AuditEntry]
    # the cursor of the next (older) page: pass it as ``after``; None: no more
    next: int | None


PrincipalResult = Annotated[Principal | NotFound | InvalidInput,
                            strawberry.union("PrincipalResult")]
PolicyResult = Annotated[PolicySet | InvalidInput | Conflict, strawberry.union("PolicyResult")]


@strawberry.field
async def principals(info: Info) -> list[Principal]:
    """Every principal, by name."""
    return [Principal.of(r) for r in await pr.list_all(service_of(info).store)]


@strawberry.field
async def policies(info: Info) -> PolicySet:
    found = await pol.load(service_of(info).store)
    return PolicySet(version=found.version, policies=found.to_json())


@strawberry.field
async def audit_log(info: Info, first: int = 50, after: int | None = None,
                    principal: str | None = None, action: str | None = None,
                    target_kind: str | None = None, target: str | None = None) -> AuditPage:
    """Operator actions, newest first, filtered by who, what or on what."""
    rows = await audit.entries(service_of(info).store, first=min(max(first, 1), 1000),
                               after=after, principal=principal, action=action,
                               target_kind=target_kind, target=target)
    entries = [AuditEntry(**r) for r in rows]
    return AuditPage(entries=entries,
                     next=entries[-1].position if len(entries) == first and entries else None)


@strawberry.mutation
async def create_principal(info: Info, name: str, kind: str = "service",
                           groups: list[str] | None = None, email: str | None = None,
                           reason: str = "") -> PrincipalResult:
    """A new principal (a ``service`` or a ``person``) in ``groups``; it may do nothing
    until a policy names it or one of its groups."""
    try:
        row = await pr.create(service_of(info).store, name, kind=kind, groups=groups or [],
                              email=email)
    except ValueError as exc:
        return InvalidInput(message=str(exc), field="kind" if "kind" in str(exc) else "name")
    return Principal.of(row)


@strawberry.mutation
async def delete_principal(info: Info, name: str, reason: str = "") -> PrincipalResult:
    """A principal gone with its credentials (refused on every node within a second),
    its groups and the policies naming it."""
    store = service_of(info).store
    row = await pr.find(store, name)
    if row is None:
        return NotFound(message=f"no principal is named {name!r}", field="name")
    await pr.remove(store, name, by=actor(info, ""))
    service_of(info).policies_changed()
    return Principal.of(row)


@strawberry.mutation
async def set_groups(info: Info, name: str, add: list[str] | None = None,
                     remove: list[str] | None = None, reason: str = "") -> PrincipalResult:
    """A principal joins ``add`` and leaves ``remove``."""
    store = service_of(info).store
    if await pr.find(store, name) is None:
        return NotFound(message=f"no principal is named {name!r}", field="name")
    try:
        if add:
            await pr.add_to_groups(store, name, add)
        if remove:
            await pr.remove_from_groups(store, name, remove)
    except ValueError as exc:
        return InvalidInput(message=str(exc), field="add")
    found = await pr.find(store, name)
    assert found is not None
    return Principal.of(found)


@strawberry.mutation
async def set_policies(info: Info, policies: JSON, expected_version: int | None = None,
                       reason: str = "") -> PolicyResult:
    """Every policy replaced at once (no request sees half of it; in force on every
    node within a second); with ``expectedVersion``, refused if they changed since."""
    try:
        done = await pol.replace(service_of(info).store, policies, by=actor(info, ""),
                                 expected_version=expected_version)
    except ValueError as exc:
        if "read them again" in str(exc):
            return Conflict(message=str(exc), field="expectedVersion")
        return InvalidInput(message=str(exc), field="policies")
    service_of(info).policies_changed()
    return PolicySet(version=done.version, policies=done.to_json())
