"""The HTTP side: a starlette app serving GraphQL at ``/graphql`` (queries and mutations
over HTTP, subscriptions over WebSocket with graphql-transport-ws), and ``stepsaga
serve``, which runs it with uvicorn beside the worker node, the event feed and the
runtime that creates works, all on one store."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import ASGIApp
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from engine import Runtime
from engine.store import SqlStore
from engine.store import principals as pr
from engine.store.feed import Feed

from .auth import PENDING_KEY, Auth, graphql_principal, login_routes
from .explorer import NoExplorer, WithExplorer, app_page, explorer_files
from .extensions import (
    anonymous_fields,
    bodies_of,
    parts_of,
    public_paths,
    routes_of,
    schema_for,
    sign_in_ways,
)
from .guards import MAX_BODY, QUERY_TIMEOUT, Guards
from .limits import LimitsSource, RateLimits, settle
from .observability import QuietServer as _Server
from .observability import TraceRequests, metrics_endpoint, readyz_endpoint
from .redaction import choose
from .schema import Context, schema
from .service import Service

__all__ = ["Api", "make_app", "running_api"]

_LOG = logging.getLogger("stepsaga.serve")


class Api(GraphQL[Context, None]):
    """strawberry's ASGI app with our context: one :class:`Context` per request."""

    def __init__(self, service: Service, introspection: bool = False,
                 schema: Any = schema) -> None:
        super().__init__(schema, graphql_ide=None)  # the bundled explorer serves /graphql
        self.service = service
        self.introspection = introspection
        # checks a token a WebSocket's connection_init carries (graphql_api.auth.Auth's)
        self.check: Any = None

    async def on_ws_connect(self, context: Context) -> Any:
        """A WebSocket let in without a credential signs in with its connection_init's
        ``authorization`` (``Bearer <token>``); one without a good token is closed."""
        from strawberry.exceptions import ConnectionRejectionError
        from strawberry.types.unset import UNSET

        holder = context.ws_pending
        if holder is None or self.check is None:
            return UNSET  # signed in with its handshake
        params = getattr(context, "connection_params", None) or {}
        given = params.get("authorization") or params.get("Authorization") \
            if isinstance(params, dict) else None
        kind, _, token = str(given or "").partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise ConnectionRejectionError({"message": "sign in first: a bearer token in "
                                            "the connection_init's authorization"})
        try:
            principal = await self.check(token.strip(), ("token",))
        except pr.CredentialError as exc:
            raise ConnectionRejectionError({"message": str(exc)}) from None
        holder["credential"] = token.strip()  # watched from now on: revoked, closed
        context.principal = principal
        may = principal.admin or (await self.service.policies()).may(principal, "secrets")
        choose(principal, may, self.service.secrets)
        return UNSET

    async def get_context(self, request: Request | WebSocket, response: Any = None
                          ) -> Context:
        context = Context(self.service, graphql_principal(request.scope))
        context.introspection = self.introspection
        context.address = request.client.host if request.client else None
        context.secure = request.url.scheme in ("https", "wss")
        if context.principal is not None:  # how its answers show secrets
            may = context.principal.admin or (await self.service.policies()).may(
                context.principal, "secrets")
            choose(context.principal, may, self.service.secrets)
        if isinstance(response, Response):  # HTTP: strawberry's response to add headers to
            context.response = response
        context.ws_pending = request.scope.get(PENDING_KEY)
        return context


def make_app(service: Service, *, auth: bool = True, node: Any = None,
             explorer: bool = False, query_timeout: float | None = QUERY_TIMEOUT) -> ASGIApp:
    """The server's routes behind :class:`graphql_api.auth.Auth` (``auth=False``: local
    development, every request an administrator), with the fields and routes of the
    packs its service's app brings (graphql_api.extensions)."""
    parts = parts_of(service.app)
    # clients get the schema with its limits; introspection (and the explorer, which
    # needs it) only when asked for
    api = Api(service, introspection=explorer, schema=schema_for(parts))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    pack_routes = list(routes_of(parts, service))
    # plain routes, not a mount: a mount redirects /graphql to /graphql/; a browser
    # opening /graphql gets the explorer, whose files are under /ui
    routes = [Route("/", app_page, methods=["GET"]),
              Route("/healthz", healthz),
              Route("/metrics", metrics_endpoint(service.store)),
              Route("/readyz", readyz_endpoint(service.store, node)),
              Route("/graphql", WithExplorer(api) if explorer else NoExplorer(api),
                    methods=["GET", "POST"]),
              WebSocketRoute("/graphql", api),
              *login_routes(service.store, app_page, sign_in_ways(parts)),
              *pack_routes,
              Mount("/ui", explorer_files())]
    inner: ASGIApp = Starlette(routes=routes)
    if service.limits is not None:  # the clients' rate limits, once auth knows who they are
        inner = RateLimits(inner, service.store, service.limits)
    # each request a span, under the trace context its headers carry
    own = [p for p in (route.path.split("{", 1)[0] for route in pack_routes
                       if hasattr(route, "path")) if p not in ("", "/")]
    checking = Auth(inner, service.store, enabled=auth, policies=service.policies,
                    own_checks=own, public=public_paths(parts),
                    anonymous_graphql=bool(anonymous_fields(parts)))
    api.check = checking.check
    return TraceRequests(Guards(checking, bodies=bodies_of(parts),
                                query_timeout=query_timeout))


@asynccontextmanager
async def running_api(store: SqlStore, app: Any, *, node: Any = None,
                      command_timeout: float = 10.0, limits: LimitsSource | None = None,
                      secrets: Any = None) -> AsyncIterator[Service]:
    """A feed, a runtime for the app's sagas and the service over them, for the block;
    ``node`` (a worker node in this process) is woken directly by commands sent;
    ``limits``: the clients' rate limits and quotas (graphql_api.limits), whose charges
    for works that ended it settles each second; ``secrets``: the key that seals the
    secret fields of works it creates (engine.secrets)."""
    from workers.sagas import SagaFollower

    follower = SagaFollower(store, code_sagas=list(app.sagas),
                            functions=getattr(app, "functions", None), owner="the API")
    await follower.refresh()
    async with Feed.running(store) as feed, Runtime(follower.sagas, store=store,
                                                   services=list(app.services),
                                                   secrets=secrets) as runtime, \
            anyio.create_task_group() as tg:
        follower.attach(runtime)  # sagas given as data, enabled and disabled, kept in step
        tg.start_soon(follower.follow, 1.0 if store.dialect == "postgresql" else 0.25)
        if limits is not None:
            tg.start_soon(_settling, store)
        yield Service(store, feed, runtime, wake=None if node is None else node.mail,
                      local=None if node is None else node.driven_state,
                      command_timeout=command_timeout, app=app, follower=follower,
                      limits=limits, secrets=secrets)
        tg.cancel_scope.cancel()


async def _settling(store: SqlStore, every: float = 1.0) -> None:
    """Settle the quota charges of works that ended, each second (graphql_api.limits);
    a store that fails for a while is tried again the next second."""
    while True:
        await anyio.sleep(every)
        try:
            while await settle(store, batch=200) == 200:  # a full batch: more may wait
                pass
        except Exception:  # the store is down: the readiness check says so, not this
            _LOG.debug("settling quota charges failed; trying again", exc_info=True)


def check_loopback(host: str) -> None:
    """``ValueError`` unless ``host`` is a loopback address (where auth may be off)."""
    import ipaddress

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"auth may be off on a loopback address only (127.0.0.1, ::1), "
                         f"not on {host!r}: anyone who reaches it could steer every work")


async def first_admin(store: SqlStore) -> str | None:
    """On a store without principals, its administrator (``admin``, a person in
    ``admins``) and a one-time sign-in link for it: the link's path. None when the
    store has principals already."""
    from engine.store import principals as pr

    if await pr.count(store):
        return None
    try:
        await pr.create(store, "admin", kind="person", groups=[pr.ADMINS])
    except ValueError:  # another node made it meanwhile: it printed the link
        return None
    link, _ = await pr.issue(store, "admin", kind="link", label="first sign-in",
                             seconds=15 * 60)
    return f"/login?once={link}"


async def _stop_on_signal(server: Any) -> None:
    import signal

    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:  # held until the process ends: a second signal waits too
            if server.should_exit:
                _LOG.warning("stopping already; the node is handing its works on")
                continue
            _LOG.warning("stopping: no new requests; the node hands its works on")
            server.should_exit = True


async def serve(*, store_url: str, app: Any, host: str, port: int, workers: Sequence[Any],
                no_workers: bool = False, node_options: dict[str, Any] | None = None,
                ready: Any = None, command_timeout: float = 10.0, auth: bool = True,
                explorer: bool = False, query_timeout: float | None = QUERY_TIMEOUT,
                limits: LimitsSource | None = None, secrets: Any = None,
                tls: tuple[str | None, str | None] = (None, None)) -> None:
    """``stepsaga serve``: API and (unless ``no_workers``) a worker node on one store,
    until SIGTERM or SIGINT; then the server stops taking requests, closes its
    subscriptions and the node hands its works on. ``ready(server, login)`` is called
    once it serves; ``login``: the path of a one-time sign-in link for the administrator
    it made, on the first start of a fresh store (else None).

    ``auth=False`` (local development) is refused on any address but loopback;
    ``explorer``: GraphiQL at /graphql, and introspection (both off by default);
    ``limits``: the clients' rate limits and quotas (graphql_api.limits); ``secrets``:
    the deployment's key for fields schemas mark secret (engine.secrets); ``tls``: a
    certificate chain and its key (PEM files) to serve HTTPS and WSS with, through
    uvicorn (cookies are Secure then)."""
    if not auth:
        check_loopback(host)
        _LOG.warning("AUTH IS OFF (--no-auth): every request to http://%s:%s is an "
                     "administrator's, unauthenticated. For local development only.",
                     host, port)
    async with SqlStore.open(store_url) as store:
        login = await first_admin(store) if auth else None
        node = None if no_workers else app.node(store, workers, secrets=secrets,
                                                **(node_options or {}))
        async with anyio.create_task_group() as tg:
            if node is not None:
                await tg.start(node.run)
            async with running_api(store, app, node=node, command_timeout=command_timeout,
                                   limits=limits, secrets=secrets) as service:
                config = uvicorn.Config(make_app(service, auth=auth, node=node,
                                                 explorer=explorer,
                                                 query_timeout=query_timeout), host=host,
                                        port=port,
                                        log_level="warning", lifespan="off",
                                        ws="websockets-sansio",
                                        # small JSON messages: compressing costs more CPU
                                        # than it saves on loopback and LANs
                                        ws_per_message_deflate=False,
                                        ws_max_size=MAX_BODY, ssl_certfile=tls[0],
                                        ssl_keyfile=tls[1])
                server = _Server(config)
                stopped = anyio.Event()

                async def run_server() -> None:
                    try:
                        await server.serve()
                    finally:
                        stopped.set()

                tg.start_soon(run_server)
                tg.start_soon(_stop_on_signal, server)
                for _ in range(6000):  # a minute at most to bind and start
                    if server.started or stopped.is_set():
                        break
                    await anyio.sleep(0.01)
                if ready is not None and server.started:
                    ready(server, login)
                await stopped.wait()  # until a signal stops it
            if node is not None:
                await node.drain()
            tg.cancel_scope.cancel()
