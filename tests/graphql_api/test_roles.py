"""Each role against each root query and mutation of the schema, on real SQLite stores:
a role whose policies give the field's action gets past the check (an answer, perhaps a
typed error about its arguments, never ``forbidden``); any other gets a ``forbidden``
error, no data, and nothing stored changes. The fields and their arguments are read
from the schema itself, so a field added later is in the matrix without editing it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    Undefined,
)

from engine import Runtime
from engine.store import SqlStore
from engine.store import policies as pol
from engine.store import principals as pr
from engine.store.feed import Feed
from graphql_api.access import ACTION_OF, QUERY_ACTIONS
from graphql_api.schema import Context, schema
from graphql_api.service import Service

from .app import sagas
from .wire import fingerprint

ROLES: dict[str, frozenset[str]] = {
    "nobody": frozenset(), "reader": frozenset({"read"}),
    "writer": frozenset({"read", "write"}), "operator": frozenset({"read", "steer"}),
    "debugger": frozenset({"read", "debug"}), "admin": frozenset(),
}
# plausible values by argument name; the rest by type
BY_NAME: dict[str, str] = {"saga": '"gate"', "name": '"gate"', "cron": '"* * * * *"',
                           "timezone": '"UTC"', "over": '"works"', "reducer": '"count"',
                           "path": '"a"', "principal": '"someone"', "policies": "[]",
                           "data": '{stages: []}', "node": '"n1"', "workerId": '"w1"'}


def _principal(role: str) -> pr.Principal:
    groups = {pr.ADMINS} if role == "admin" else {role}
    return pr.Principal(principal_id=role, name=role, kind="service",
                        groups=frozenset(groups))


def _value(name: str, kind: Any, work_id: str) -> str:
    while isinstance(kind, GraphQLNonNull):
        kind = kind.of_type
    if name == "workId":
        return f'"{work_id}"'
    if name in BY_NAME:
        return BY_NAME[name]
    if isinstance(kind, GraphQLList):
        return "[]"
    if isinstance(kind, GraphQLEnumType):
        return next(iter(kind.values))
    if isinstance(kind, GraphQLInputObjectType):
        fields = [f"{n}: {_value(n, f.type, work_id)}" for n, f in kind.fields.items()
                  if isinstance(f.type, GraphQLNonNull) and f.default_value is Undefined]
        return "{" + ", ".join(fields) + "}"
    assert isinstance(kind, GraphQLScalarType)
    return {"Int": "1", "Float": "1.0", "Boolean": "false", "JSON": "1",
            "ID": '"V29yazp4"'}.get(kind.name, '"t"')


def _selection(kind: Any) -> str:
    while isinstance(kind, GraphQLNonNull | GraphQLList):
        kind = kind.of_type
    return "" if isinstance(kind, GraphQLScalarType | GraphQLEnumType) else " { __typename }"


def _document(operation: str, name: str, field: GraphQLField, work_id: str) -> str:
    args = [f"{a}: {_value(a, arg.type, work_id)}" for a, arg in field.args.items()
            if isinstance(arg.type, GraphQLNonNull) and arg.default_value is Undefined]
    shown = f"({', '.join(args)})" if args else ""
    return f"{operation} {{ {name}{shown}{_selection(field.type)} }}"


def _copy(template: Path, copy: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{template}{suffix}").exists():
            shutil.copy(f"{template}{suffix}", f"{copy}{suffix}")


async def _template(path: Path) -> str:
    """A store with policies for each role and a paused work to steer: its work id."""
    async with SqlStore.open(f"sqlite+aiosqlite:///{path}") as store, \
            Runtime(sagas(), store=store) as runtime:
        await pol.replace(store, [{"subject": f"group:{role}", "actions": sorted(actions)}
                                  for role, actions in ROLES.items() if actions], by="test")
        work_id: str = await runtime.start("gate", 0, paused=True, run=False)
        await store.engine.dispose()
    return work_id


async def test_each_role_gets_what_its_policies_give_and_nothing_else(tmp_path: Path) -> None:
    template = tmp_path / "template.sqlite"
    work_id = await _template(template)
    graphql = schema._schema
    fields = [("mutation", n, f) for n, f in graphql.mutation_type.fields.items()] + \
        [("query", n, f) for n, f in graphql.query_type.fields.items()]
    checked = 0
    for i, (operation, name, field) in enumerate(fields):
        copy = tmp_path / f"s{i}.sqlite"
        _copy(template, copy)
        action = ACTION_OF.get(name, "admin") if operation == "mutation" \
            else QUERY_ACTIONS.get(name, "read")
        document = _document(operation, name, field, work_id)
        async with SqlStore.open(f"sqlite+aiosqlite:///{copy}") as store, \
                Feed.running(store) as feed, Runtime(sagas(), store=store) as runtime:
            service = Service(store, feed, runtime, command_timeout=0.1)
            # the refused first (nothing may change), then those let through
            order = sorted(ROLES, key=lambda r: r == "admin" or action in ROLES[r])
            for role in order:
                allowed = role == "admin" or action in ROLES[role]
                before = fingerprint(copy) if not allowed else ""
                result = await schema.execute(
                    document, context_value=Context(service, _principal(role)))
                codes = [(e.extensions or {}).get("code") for e in result.errors or []]
                if allowed:
                    assert "forbidden" not in codes, (role, document, result.errors)
                    assert codes != ["GRAPHQL_VALIDATION_FAILED"], (document, result.errors)
                else:
                    assert codes == ["forbidden"], (role, document, result.errors)
                    assert result.data is None, (role, document, result.data)
                    assert fingerprint(copy) == before, (role, document)
                checked += 1
    assert checked == len(fields) * len(ROLES)
