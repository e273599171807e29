"""What every resolver gets: the :class:`Context` of a request, with the service and the
DataLoaders that batch the request's reads (a page of works loads its stage runs and
events in one query each, not one per work)."""

from __future__ import annotations

from typing import Any

from strawberry.dataloader import DataLoader
from strawberry.types import Info

from engine.store import queries

from .service import Service

__all__ = ["Context", "client_of", "context_of", "service_of"]


class Context:
    """What every resolver gets: the service, and loaders that batch per request."""

    def __init__(self, service: Service, principal: Any = None) -> None:
        self.service = service
        # who asks (engine.store.principals.Principal; None: in-process Python, trusted)
        self.principal = principal
        self.introspection = True  # whether it may ask for the schema (__schema, __type)
        self.address: str | None = None  # the client's network address, when served
        self.secure = False  # served over TLS (cookies set then are Secure)
        self.response: Any = None  # an HTTP request's response, for headers to set
        # a WebSocket's connection_init payload (strawberry sets it), and where one let in
        # without a credential keeps the token it signed in with (graphql_api.auth)
        self.connection_params: Any = None
        self.ws_pending: dict[str, str] | None = None
        store = service.store

        async def load_runs(keys: list[str]) -> list[list[dict[str, Any]]]:
            found = await queries.stage_runs_of(store, keys)
            return [found[k] for k in keys]

        async def load_works(keys: list[str]) -> list[dict[str, Any] | None]:
            rows = await queries.works_by_id(store, keys)
            return [rows.get(k) for k in keys]

        Page = tuple[int, int, tuple[str, ...] | None]  # after, first, types

        async def load_events(keys: list[tuple[str, Page]]) -> list[list[Any]]:
            pages: dict[Page, dict[str, list[Any]]] = {}
            for page in {p for _, p in keys}:
                after, first, types = page
                pages[page] = await queries.events_of(
                    store, [w for w, p in keys if p == page], after=after, first=first,
                    types=types)
            return [pages[p][w] for w, p in keys]

        async def load_pending(keys: list[str]) -> list[list[Any]]:
            found = await queries.pending_commands_of(store, keys)
            return [found[k] for k in keys]

        # cache=False: a WebSocket connection keeps one context for all its operations
        # (strawberry's graphql-transport-ws), so a cache would answer a page's later
        # queries with the first one's rows; the loaders batch the loads of one tick
        self.stage_runs: DataLoader[str, list[dict[str, Any]]] = DataLoader(load_runs,
                                                                            cache=False)
        self.pending: DataLoader[str, list[Any]] = DataLoader(load_pending, cache=False)
        self.events: DataLoader[tuple[str, Page], list[Any]] = DataLoader(load_events,
                                                                          cache=False)
        self.works: DataLoader[str, dict[str, Any] | None] = DataLoader(load_works,
                                                                        cache=False)


def context_of(info: Info) -> Context:
    found: Context = info.context
    return found


def service_of(info: Info) -> Service:
    return context_of(info).service


def client_of(info: Info) -> tuple[Any, str | None] | None:
    """Who an API client is, for its quotas: its principal and address (None: Python in
    this process, which no quota counts)."""
    context = context_of(info)
    if context.principal is None:
        return None
    return context.principal, context.address
