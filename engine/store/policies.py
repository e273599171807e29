"""Who may do what: the deployment's policies, one document in the store.

A policy gives a subject (``group:NAME`` or ``principal:NAME``) some actions over the
works of some sagas (globs), optionally only where a CEL condition over the work holds
(``work.saga``, ``work.input.tenant``, ...: the language of breakpoints):

    {"subject": "group:operators", "actions": ["read", "steer"],
     "sagas": ["backup*"], "condition": "work.input.tenant == 'acme'"}

Actions: ``read`` (works, their events, the catalog, workers, schedules, locks,
services), ``write`` (create, update, signal, dry-run works), ``steer`` (pause, resume,
step, cancel, retry a compensation, resolve), ``debug`` (breakpoints, edits, rewinds),
``admin`` (sagas, workers, schedules, principals, policies, deleting works). The group
``admins`` may do everything; a principal no policy names may do nothing.

``routes`` (path globs) are the HTTP routes besides ``/graphql`` a policy's subject may
reach (``/metrics``; the UI, ``/`` and ``/ui/*``, is open to any principal some policy
names); a policy may give routes only, without actions::

    {"subject": "principal:prometheus", "routes": ["/metrics"]}

The whole set is one JSON document replaced at once (a version counts the changes), so
no request ever sees half of a change; every rule about policies lives here, once, and
the API calls it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import sqlalchemy as sa

from ..expressions import Expression, parse_expression
from .aggregates import plain_row
from .principals import Principal
from .schema import settings
from .sql import SqlStore

__all__ = ["ACTIONS", "Policies", "Policy", "forget_in", "load", "replace"]

ACTIONS = ("read", "write", "steer", "debug", "admin")
_KEY = "policies"


@dataclass(frozen=True, slots=True)
class Policy:
    subject: str
    actions: frozenset[str]
    sagas: tuple[str, ...] = ("*",)
    condition: str | None = None
    compiled: Expression | None = field(default=None, compare=False, repr=False)
    routes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: Any, where: str) -> Policy:
        """A policy from its JSON form, or ``ValueError`` naming what is wrong."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: a policy is an object, got {raw!r:.60}")
        unknown = sorted(set(raw) - {"subject", "actions", "sagas", "condition", "routes"})
        if unknown:
            raise ValueError(f"{where}: no setting {unknown[0]!r} (subject, actions, sagas, "
                             "condition, routes)")
        subject = raw.get("subject")
        kind, _, name = subject.partition(":") if isinstance(subject, str) else ("", "", "")
        if kind not in ("group", "principal") or not name:
            raise ValueError(f"{where}: subject must be 'group:NAME' or 'principal:NAME', "
                             f"got {subject!r:.60}")
        routes = raw.get("routes", [])
        if not isinstance(routes, list) or \
                not all(isinstance(r, str) and r.startswith("/") for r in routes):
            raise ValueError(f"{where}: routes must be a list of paths or globs starting "
                             f"with '/', got {routes!r:.80}")
        actions = raw.get("actions", None if not routes else [])
        if not isinstance(actions, list) or (not actions and not routes) or \
                not all(a in ACTIONS for a in actions):
            raise ValueError(f"{where}: actions must be a list of {', '.join(ACTIONS)} "
                             f"(or routes given), got {actions!r:.80}")
        sagas = raw.get("sagas", ["*"])
        if not isinstance(sagas, list) or not sagas or \
                not all(isinstance(s, str) and s for s in sagas):
            raise ValueError(f"{where}: sagas must be a list of names or globs, got "
                             f"{sagas!r:.80}")
        condition = raw.get("condition")
        compiled = None
        if condition is not None:
            if not isinstance(condition, str):
                raise ValueError(f"{where}: condition must be a CEL expression over work")
            try:
                compiled = parse_expression(condition, names={"work"})
            except ValueError as exc:
                raise ValueError(f"{where}: condition: {exc}") from None
        return cls(subject=str(subject), actions=frozenset(actions), sagas=tuple(sagas),
                   condition=condition, compiled=compiled, routes=tuple(routes))

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"subject": self.subject, "actions": sorted(self.actions),
                                 "sagas": list(self.sagas)}
        if self.condition is not None:
            found["condition"] = self.condition
        if self.routes:
            found["routes"] = list(self.routes)
        return found

    def names(self, who: Principal) -> bool:
        kind, _, name = self.subject.partition(":")
        return name == who.name if kind == "principal" else name in who.groups


@dataclass(frozen=True, slots=True)
class Policies:
    """The deployment's policies at one version."""

    policies: tuple[Policy, ...] = ()
    version: int = 0

    def _mine(self, who: Principal, action: str) -> list[Policy]:
        return [p for p in self.policies if action in p.actions and p.names(who)]

    def reaches(self, who: Principal | None, path: str) -> bool:
        """Whether ``who`` may reach the HTTP route at ``path`` (besides /graphql, whose
        fields are checked each): a policy's route glob; the UI (``/``, ``/ui/...``) for
        any principal a policy names."""
        if who is None or who.admin:
            return True
        mine = [p for p in self.policies if p.names(who)]
        if (path == "/" or path.startswith("/ui/")) and mine:
            return True
        return any(fnmatchcase(path, r) for p in mine for r in p.routes)

    def may(self, who: Principal | None, action: str) -> bool:
        """Whether ``who`` may do ``action`` on anything at all (None: Python in this
        process, trusted)."""
        return who is None or who.admin or bool(self._mine(who, action))

    def sagas(self, who: Principal | None, action: str) -> tuple[str, ...] | None:
        """The saga globs ``who`` may ``action`` works of (None: any saga, no condition
        to check per work)."""
        if who is None or who.admin:
            return None
        mine = self._mine(who, action)
        if any(p.sagas == ("*",) and p.compiled is None for p in mine):
            return None
        return tuple(g for p in mine for g in p.sagas)

    def allows(self, who: Principal | None, action: str, work: Mapping[str, Any]) -> bool:
        """Whether ``who`` may do ``action`` on this work (a row: saga, input, ...; its
        JSON columns read as a CEL condition sees them, as aggregate's expressions do)."""
        if who is None or who.admin:
            return True
        for policy in self._mine(who, action):
            if not any(fnmatchcase(str(work.get("saga", "")), g) for g in policy.sagas):
                continue
            if policy.compiled is None:
                return True
            try:
                if policy.compiled.evaluate({"work": plain_row(work)}) is True:
                    return True
            except Exception:  # a condition that cannot be evaluated on it gives nothing
                continue
        return False

    def to_json(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.policies]


def parse(raw: Any) -> tuple[Policy, ...]:
    if not isinstance(raw, list):
        raise ValueError(f"policies are a list of objects, got {type(raw).__name__}")
    return tuple(Policy.parse(p, f"policy {i + 1}") for i, p in enumerate(raw))


async def load(store: SqlStore) -> Policies:
    async with store.reader.connect() as conn:
        found = (await conn.execute(sa.select(settings.c.value).where(
            settings.c.key == _KEY))).scalar()
    if found is None:
        return Policies()
    document = json.loads(found)
    return Policies(policies=parse(document["policies"]), version=int(document["version"]))


def _stored(conn: Any) -> tuple[int, list[dict[str, Any]], bool]:
    """The version and policies stored (in the caller's transaction), and whether any."""
    row = conn.execute(sa.select(settings.c.value).where(settings.c.key == _KEY)).scalar()
    if row is None:
        return 0, [], False
    document = json.loads(row)
    return int(document["version"]), list(document["policies"]), True


def _write(conn: Any, version: int, chosen: Sequence[Policy], by: str, exists: bool) -> int:
    document = json.dumps({"version": version + 1, "by": by, "at": time.time(),
                           "policies": [p.to_dict() for p in chosen]})
    if exists:
        conn.execute(sa.update(settings).where(settings.c.key == _KEY).values(
            value=document))
    else:
        conn.execute(sa.insert(settings).values(key=_KEY, value=document))
    return version + 1


async def replace(store: SqlStore, raw: Any, *, by: str,
                  expected_version: int | None = None) -> Policies:
    """The whole set replaced at once (``ValueError`` naming a bad policy, nothing
    changed; with ``expected_version``, refused if it changed meanwhile)."""
    chosen = parse(raw)

    def run(conn: Any) -> int:
        version, _, exists = _stored(conn)
        if expected_version is not None and version != expected_version:
            raise ValueError(f"the policies are at version {version}, not "
                             f"{expected_version}: read them again")
        return _write(conn, version, chosen, by, exists)

    version = await store.transaction(run)
    return Policies(policies=chosen, version=int(version))


def forget_in(conn: Any, *, by: str, principal: str | None = None,
              group: str | None = None, saga: str | None = None) -> int:
    """In the transaction that deletes a principal, a group or a saga: the policies
    naming it go with it (a saga leaves the lists of sagas that name it, not the globs
    that happen to match it; a policy left with no saga goes). How many changed."""
    version, raw, exists = _stored(conn)
    subject = f"principal:{principal}" if principal is not None else (
        f"group:{group}" if group is not None else None)
    kept: list[dict[str, Any]] = []
    changed = 0
    for policy in raw:
        if subject is not None and policy["subject"] == subject:
            changed += 1
            continue
        if saga is not None and saga in policy.get("sagas", ["*"]):
            changed += 1
            rest = [s for s in policy["sagas"] if s != saga]
            if not rest:
                continue
            policy = {**policy, "sagas": rest}
        kept.append(policy)
    if changed:
        _write(conn, version, parse(kept), by, exists)
    return changed
