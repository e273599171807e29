"""How a pack (``workers.actions.*``) adds to the API: an :class:`ApiPart` in its
``WorkerApp``'s ``api`` gives root fields of its own (queries, mutations,
subscriptions), the types they name, the action each field needs under the policies,
the fields an anonymous client may call (a sign-up, a login) and HTTP routes served
beside ``/graphql`` (the file pack's asset routes), all behind the server's
authentication, guards and tracing like the core's.

A pack's operations are sagas, so the policies over saga names cover them: a field's
resolver checks what it touches with :func:`graphql_api.access.require` as the core's
do. A server with parts gets a schema of its own (:func:`schema_for`); the core's
``graphql_api.schema.schema`` is the one without.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

from engine.store.policies import ACTIONS  # the one list of actions, the policies'

__all__ = ["ApiPart", "actions_of", "anonymous_fields", "bodies_of", "own_fields", "parts_of",
           "public_paths", "routes_of", "run_saga", "schema_for", "sign_in_ways"]



@dataclass(frozen=True, kw_only=True, eq=False)  # a part is itself: hashed by identity
class ApiPart:
    """What one pack adds to the API.

    ``query``, ``mutation`` and ``subscription``: strawberry types whose fields join
    the root types (their names must not clash with the core's or another part's);
    ``types``: types a field returns only through an interface (as ``Node``);
    ``actions``: a field's GraphQL name to the action it needs (``read``, ``write``,
    ``steer``, ``debug``, ``admin``); a mutation not named needs ``admin``, a query
    ``read``; ``anonymous``: the fields a client that has not signed in may call (and
    nothing else); ``own``: the fields any signed-in principal may call whatever its
    policies (its own account: the users pack's ``me``, ``logout``; each touches the
    caller's own rows only); ``routes``: called with the server's
    :class:`graphql_api.service.Service`, the starlette routes to serve; ``public``:
    paths among them reachable without signing in."""

    name: str
    query: type | None = None
    mutation: type | None = None
    subscription: type | None = None
    types: Sequence[type] = ()
    actions: Mapping[str, str] = field(default_factory=dict)
    anonymous: frozenset[str] = frozenset()
    own: frozenset[str] = frozenset()
    routes: Callable[[Any], Sequence[Any]] | None = None
    public: Sequence[str] = ()
    # the bound on a request's body under a path prefix of its routes, in bytes (None:
    # unbounded, for a route that streams what it takes); others have the server's
    bodies: Mapping[str, int | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, action in self.actions.items():
            if action not in ACTIONS:
                raise ValueError(f"API part {self.name!r}: field {name!r} needs action "
                                 f"{action!r}, not one of {', '.join(ACTIONS)}")
        object.__setattr__(self, "anonymous", frozenset(self.anonymous))
        object.__setattr__(self, "own", frozenset(self.own))
        for path in self.public:
            if not path.startswith("/") or path in ("/graphql", "/"):
                raise ValueError(f"API part {self.name!r}: public path {path!r} must be a "
                                 f"route of its own (starting with /, not /graphql)")


@cache
def _resolved(ref: Any) -> Any:
    """The part a pack's ``workers.node.ApiRef`` names, made once per reference."""
    import importlib

    module, _, name = ref.factory.partition(":")
    return getattr(importlib.import_module(module), name)(*ref.args)


def parts_of(app: Any) -> tuple[ApiPart, ...]:
    """The parts a ``WorkerApp`` (or anything with an ``api``) brings, those it names by
    a ``workers.node.ApiRef`` made; checked."""
    from workers.node import ApiRef

    parts = tuple(_resolved(p) if isinstance(p, ApiRef) else p
                  for p in getattr(app, "api", ()) or ())
    for part in parts:
        if not isinstance(part, ApiPart):
            raise ValueError(f"an app's api holds graphql_api.extensions.ApiPart values, "
                             f"not {part!r}")
    return parts


def actions_of(parts: Iterable[ApiPart]) -> dict[str, str]:
    """Each field's action, the core's and the parts' (a name given twice is refused)."""
    from .access import ACTION_OF, QUERY_ACTIONS

    found = {**ACTION_OF, **QUERY_ACTIONS}
    for part in parts:
        for name, action in part.actions.items():
            if name in found:
                raise ValueError(f"API part {part.name!r}: field {name!r} is the core's "
                                 f"or another part's already")
            found[name] = action
    return found


def anonymous_fields(parts: Iterable[ApiPart]) -> frozenset[str]:
    return frozenset().union(*(part.anonymous for part in parts))


def own_fields(parts: Iterable[ApiPart]) -> frozenset[str]:
    """The fields any signed-in principal may call (see :class:`ApiPart`)."""
    return frozenset().union(*(part.own for part in parts))


def public_paths(parts: Iterable[ApiPart]) -> tuple[str, ...]:
    return tuple(path for part in parts for path in part.public)


def sign_in_ways(parts: Iterable[ApiPart]) -> tuple[str, ...]:
    """How a person signs in on the login page where ``parts`` are served: with a token
    always; with an email and password when a part lets anonymous clients call
    ``login``; with OpenID Connect when a part serves ``/auth/oidc/start``."""
    parts = list(parts)
    return ("token", *(["password"] if "login" in anonymous_fields(parts) else []),
            *(["oidc"] if "/auth/oidc/start" in public_paths(parts) else []))


def bodies_of(parts: Iterable[ApiPart]) -> dict[str, int | None]:
    found: dict[str, int | None] = {}
    for part in parts:
        for prefix, bound in part.bodies.items():
            if prefix == "/graphql" or not prefix.startswith("/") or prefix in ("/", "/g"):
                raise ValueError(f"API part {part.name!r}: a body bound is for a route of "
                                 f"its own, not {prefix!r}")
            found[prefix] = bound
    return found


def routes_of(parts: Iterable[ApiPart], service: Any) -> list[Any]:
    return [route for part in parts if part.routes is not None
            for route in part.routes(service)]


def _merged(name: str, core: type, extra: Sequence[type]) -> type:
    """``core`` with the fields of ``extra``: a root type of the schema."""
    from strawberry.tools import merge_types

    if not extra:
        return core
    seen: dict[str, str] = {}
    for kind in (core, *extra):
        definition = kind.__strawberry_definition__  # type: ignore[attr-defined]
        for f in definition.fields:
            if f.name in seen:
                raise ValueError(f"{name} field {f.name!r} is in both {seen[f.name]} and "
                                 f"{kind.__name__}")
            seen[f.name] = kind.__name__
    return merge_types(name, (core, *extra))  # type: ignore[no-any-return]


def _query(extra: Sequence[type]) -> type:
    from . import schema as core

    _merged("Query", core.Query, extra)  # the names checked
    return core.query_type(*extra)


@lru_cache(maxsize=16)
def schema_for(parts: tuple[ApiPart, ...]) -> Any:
    """The schema of a server with these parts (the core's when there are none)."""
    from . import schema as core

    if not parts:
        return core.schema
    return core.build(
        query=_query([p.query for p in parts if p.query]),
        mutation=_merged("Mutation", core.Mutation, [p.mutation for p in parts
                                                       if p.mutation]),
        subscription=_merged("Subscription", core.Subscription,
                             [p.subscription for p in parts if p.subscription]),
        types=[t for p in parts for t in p.types],
        actions=actions_of(parts), anonymous=anonymous_fields(parts),
        own=own_fields(parts))


async def run_saga(info: Any, saga: str, input: Any, *, check: bool = True,
                   request_id: str | None = None, wait: float = 30.0) -> dict[str, Any]:
    """What a pack's field does for an operation that is a saga: a work of ``saga``
    made (the request's principal needs ``write`` on it unless ``check`` is off: an
    anonymous field, which is its own grant), charged to its client's quotas
    (graphql_api.limits; spent: ApiError quota_exceeded, its headers on the response)
    and waited for; its row once it ended.
    ``graphql_api.service.ApiError`` when it cannot be made or has not ended in time."""
    from .access import require
    from .context import client_of, service_of
    from .results import quota_exceeded
    from .service import ApiError

    if check:
        await require(info, "write", {"saga": saga, "input": input})
    try:
        return await service_of(info).run_work(saga, input, request_id=request_id,
                                               wait=wait, client=client_of(info))
    except ApiError as exc:
        if exc.kind == "quota_exceeded":
            quota_exceeded(exc, info)  # its headers on the response
        raise
