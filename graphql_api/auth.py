"""Who a request comes from: every HTTP request and WebSocket the server takes is
authenticated here before anything else sees it (ASGI middleware around the app).

- Machines send ``Authorization: Bearer <token>`` (tokens from ``stepsaga token create``
  or the API), on HTTP requests and on the WebSocket's opening handshake, or, where a
  client cannot set headers on a WebSocket (a browser), in its ``connection_init``
  message's payload (``{"authorization": "Bearer <token>"}``): until that message the
  socket is anonymous, and a payload without a good token closes it (4403).
- People sign in on the UI's login page (``/login``): with a token, or with a one-time
  link (the first start of a fresh store prints one for its administrator). Signing in
  makes a session: an HttpOnly, SameSite=Strict cookie, and a second cookie the page
  reads to send its CSRF token. An HTTP request made with the session cookie must carry
  that token in ``X-CSRF-Token`` unless it is a GET; a WebSocket made with the cookie
  must come from this server's own origin (its ``Origin`` is checked).
- Anonymous requests reach only what must work before signing in: the health routes,
  the login page and its files, signing in itself, the routes a pack declares public,
  and on ``/graphql`` the fields a pack lets anonymous clients call (a sign-up, a
  login: graphql_api.extensions), as :data:`ANONYMOUS`. Anything else gets 401 (a
  page: a redirect to the login page).
- A signed-in principal reaches ``/graphql`` (each field checks its policies) and
  signing out; any other route (``/metrics``, the UI) only as the policies' ``routes``
  give it (engine.store.policies ``Policies.reaches``), else 403. A pack's routes check
  the policies over their sagas themselves.
- Credentials checked are remembered for ``cache_seconds`` (half a second): a revoked
  token is refused on every node within a second.

With auth off (``stepsaga serve --no-auth``, for local development only, refused on
any address but loopback) every request is the local developer, an administrator.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.store import SqlStore
from engine.store import principals as pr

from .access import ANONYMOUS_KIND

__all__ = [
    "ANONYMOUS",
    "CSRF_COOKIE",
    "DEVELOPER",
    "SESSION_COOKIE",
    "Auth",
    "clear_session_cookies",
    "graphql_principal",
    "login_routes",
    "principal_of",
    "set_session_cookies",
    "start_session",
]

_LOG = logging.getLogger("stepsaga.auth")
SESSION_COOKIE = "stepsaga_session"
CSRF_COOKIE = "stepsaga_csrf"
SESSION_SECONDS = 12 * 3600
SCOPE_KEY = "stepsaga.principal"
ANONYMOUS_KEY = "stepsaga.anonymous"  # set when the middleware let a request in without one
# a WebSocket let in without a credential, to sign in with its connection_init: the
# credential the API found there (graphql_api.server.Api.on_ws_connect), for the watch
PENDING_KEY = "stepsaga.pending"
# reachable without signing in
PUBLIC = ("/healthz", "/readyz", "/login", "/auth/login", "/auth/whoami", "/auth/ways")
PUBLIC_PREFIXES = ("/ui/assets/",)
# what any signed-in principal reaches (a GraphQL field checks its own policies)
_SIGNED_IN = ("/graphql", "/auth/logout")
# a GraphQL request of a client that has not signed in: it may call a pack's anonymous
# fields (graphql_api.extensions.ApiPart.anonymous) and nothing else
ANONYMOUS = pr.Principal(principal_id="", name="(anonymous)", kind=ANONYMOUS_KIND,
                         groups=frozenset())
DEVELOPER = pr.Principal(principal_id="local", name="local developer", kind="person",
                         groups=frozenset({pr.ADMINS}))


def principal_of(scope: Scope) -> pr.Principal | None:
    """The principal the middleware found for this request (None: anonymous)."""
    found: pr.Principal | None = scope.get(SCOPE_KEY)
    return found


def graphql_principal(scope: Scope) -> pr.Principal | None:
    """Who a GraphQL request is from: its principal, :data:`ANONYMOUS` when the
    middleware let it in without one, None when no middleware saw it (Python in this
    process, trusted)."""
    found = principal_of(scope)
    return ANONYMOUS if found is None and scope.get(ANONYMOUS_KEY) else found


def _cookies(scope: Scope) -> dict[str, str]:
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # a broken cookie header is no credential
                return {}
            return {k: m.value for k, m in jar.items()}
    return {}


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", []):
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Auth:
    """The middleware: finds the principal of each request (``scope`` carries it on),
    refuses what an anonymous request may not reach."""

    def __init__(self, app: ASGIApp, store: SqlStore, *, enabled: bool = True,
                 cache_seconds: float = 0.5, public: Sequence[str] = (),
                 anonymous_graphql: bool = False,
                 policies: Callable[[], Awaitable[Any]] | None = None,
                 own_checks: Sequence[str] = ()) -> None:
        self.app = app
        # the policies in force (the service's, cached), for the routes a principal may
        # reach; the path prefixes of routes that check what they touch themselves
        self.policies = policies
        self.own_checks = tuple(own_checks)
        # paths besides PUBLIC reachable without signing in (a pack's, such as a
        # sign-up's confirmation link), and whether /graphql takes requests without a
        # credential (a pack has fields anonymous clients may call: only those)
        self.public = frozenset(public)
        self.anonymous_graphql = anonymous_graphql
        self.store = store
        self.enabled = enabled
        self.cache_seconds = cache_seconds
        self._checked: dict[str, tuple[float, pr.Principal | pr.CredentialError]] = {}
        self._deployment: str | None = None

    async def check(self, credential: str, kinds: tuple[str, ...]) -> pr.Principal:
        """The principal of a credential, remembered for ``cache_seconds``."""
        now = time.monotonic()
        key = f"{','.join(kinds)}:{credential}"
        seen = self._checked.get(key)
        if seen is not None and now - seen[0] < self.cache_seconds:
            if isinstance(seen[1], pr.CredentialError):
                raise seen[1]
            return seen[1]
        if self._deployment is None:
            self._deployment = await pr.deployment_id(self.store)
        try:
            found: pr.Principal | pr.CredentialError = await pr.verify(
                self.store, credential, kinds=kinds, deployment=self._deployment)
        except pr.CredentialError as exc:
            found = exc
        if len(self._checked) > 10_000:
            self._checked.clear()
        self._checked[key] = (now, found)
        if isinstance(found, pr.CredentialError):
            raise found
        return found

    async def session_csrf_ok(self, principal: pr.Principal, given: str | None) -> bool:
        if not given or principal.credential_id is None:
            return False
        stored = await pr.csrf_hash_of(self.store, principal.credential_id)
        return stored is not None and hmac.compare_digest(stored, _hash(given))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if not self.enabled:
            scope[SCOPE_KEY] = DEVELOPER
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        bearer = _header(scope, b"authorization")
        session = _cookies(scope).get(SESSION_COOKIE)
        # without a credential, /graphql may take the anonymous fields (never a
        # request that carries one: that one is checked as it is, CSRF and all)
        anonymous = (self.anonymous_graphql and path == "/graphql" and bearer is None
                     and session is None and scope["type"] == "http")
        public = anonymous or path in PUBLIC or path in self.public \
            or path.startswith(PUBLIC_PREFIXES)
        problem: tuple[int, str, str] | None = None  # status, code, message
        stale = False
        principal: pr.Principal | None = None
        try:
            if bearer is not None:
                kind, _, credential = bearer.partition(" ")
                if kind.lower() != "bearer" or not credential.strip():
                    raise pr.CredentialError("malformed", "Authorization must be 'Bearer "
                                             "<token>'")
                principal = await self.check(credential.strip(), ("token",))
            elif session is not None:
                principal = await self.check(session, ("session",))
                if not public:
                    problem = await self._cookie_rules(scope, principal)
        except pr.CredentialError as exc:
            problem = (401, "unauthenticated", str(exc))
            principal = None
            # a browser cannot drop an HttpOnly cookie itself: a refused session's
            # cookies are cleared with the refusal, so it may sign in again
            stale = bearer is None
        pending = (problem is None and principal is None and scope["type"] == "websocket"
                   and path == "/graphql" and bearer is None and session is None)
        if pending:  # it signs in with its connection_init: anonymous till then
            scope[SCOPE_KEY] = None
            scope[ANONYMOUS_KEY] = True
            holder: dict[str, str] = {}
            scope[PENDING_KEY] = holder
            await self._watched(scope, receive, send, lambda: holder.get("credential"),
                                ("token",))
            return
        if problem is None and principal is None and not public:
            problem = (401, "unauthenticated", "sign in first: a bearer token or a session")
        if problem is None and principal is not None and not public:
            problem = await self._route_rules(path, principal)
        if problem is not None and not public:
            await self._refuse(scope, receive, send, *problem, stale=stale)
            return
        scope[SCOPE_KEY] = principal
        scope[ANONYMOUS_KEY] = principal is None
        if scope["type"] == "websocket" and principal is not None:
            credential = bearer.partition(" ")[2].strip() if bearer is not None else session
            kinds = ("token",) if bearer is not None else ("session",)
            assert credential is not None
            await self._watched(scope, receive, send, lambda: credential, kinds)
            return
        await self.app(scope, receive, send)

    async def _watched(self, scope: Scope, receive: Receive, send: Send,
                       credential: Callable[[], str | None], kinds: tuple[str, ...]) -> None:
        """A WebSocket closed (code 4401, the reason said) as soon as its credential
        (none yet: nothing to check) is refused: revoked, expired, its principal disabled
        or removed. Checked every ``cache_seconds``: within a second."""
        import anyio

        async def watch(scope_: Any) -> None:
            while True:
                await anyio.sleep(self.cache_seconds)
                given = credential()
                if given is None:
                    continue
                try:
                    await self.check(given, kinds)
                except pr.CredentialError as exc:
                    _LOG.info("closing a WebSocket: its credential is refused (%s)", exc)
                    try:
                        await send({"type": "websocket.close", "code": 4401,
                                    "reason": f"signed out: {exc}"[:120]})
                    finally:
                        scope_.cancel()
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, tg.cancel_scope)
            await self.app(scope, receive, send)
            tg.cancel_scope.cancel()

    async def _route_rules(self, path: str, principal: pr.Principal
                           ) -> tuple[int, str, str] | None:
        if self.policies is None or path in _SIGNED_IN or path.startswith(self.own_checks) \
                or principal.admin:
            return None
        if (await self.policies()).reaches(principal, path):
            return None
        return (403, "forbidden", f"forbidden: {principal.name!r} may not reach {path} "
                "(no policy gives it that route)")

    async def _cookie_rules(self, scope: Scope, principal: pr.Principal
                            ) -> tuple[int, str, str] | None:
        """A request made with the session cookie: a WebSocket from this origin only, a
        request that may change something with the page's CSRF token."""
        if scope["type"] == "websocket":
            origin = _header(scope, b"origin")
            host = _header(scope, b"host")
            if origin is None or host is None or origin.split("://", 1)[-1] != host:
                return (403, "forbidden", f"a WebSocket with a session must come from this "
                        f"server's own pages, not from {origin!r}")
            return None
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return None
        if not await self.session_csrf_ok(principal, _header(scope, b"x-csrf-token")):
            return (403, "forbidden", "a request made with a session needs its CSRF token "
                    "in X-CSRF-Token")
        return None

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int,
                      code: str, message: str, *, stale: bool = False) -> None:
        if scope["type"] == "websocket":
            # refused before the handshake completes: the client sees 403
            await send({"type": "websocket.close", "code": 4401 if status == 401 else 4403,
                        "reason": message[:120]})
            return
        request = Request(scope)
        accept = request.headers.get("accept", "")
        if status == 401 and scope["method"] == "GET" and "text/html" in accept:
            target = scope["path"] + (f"?{scope['query_string'].decode()}"
                                      if scope.get("query_string") else "")
            response: Response = RedirectResponse(f"/login?next={quote(target)}", 303)
        else:
            response = JSONResponse(
                {"errors": [{"message": message, "extensions": {"code": code}}]},
                status_code=status, headers={"WWW-Authenticate": "Bearer"}
                if status == 401 else None)
        if stale:
            clear_session_cookies(response)
        await response(scope, receive, send)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


async def start_session(store: SqlStore, name: str, *, label: str = "browser",
                        seconds: float = SESSION_SECONDS) -> tuple[str, str, dict[str, Any]]:
    """A new session of principal ``name``: the session credential (the cookie's value),
    its CSRF token (the page sends it back in ``X-CSRF-Token``) and its row. What
    signing in on the login page and a pack's login (the users pack's) both do."""
    session, row = await pr.issue(store, name, kind="session", label=label,
                                  seconds=seconds)
    csrf = secrets.token_urlsafe(24)
    await pr.set_csrf_hash(store, row["credential_id"], _hash(csrf))
    _LOG.info("signed in: %s", name)
    return session, csrf, row


def set_session_cookies(response: Response, session: str, csrf: str, *, seconds: float,
                        secure: bool) -> None:
    """The session's cookies on ``response``: the session HttpOnly, the CSRF token
    readable by the page, both SameSite=Strict (Secure when served over TLS)."""
    response.set_cookie(SESSION_COOKIE, session, max_age=int(seconds), httponly=True,
                        samesite="strict", secure=secure, path="/")
    response.set_cookie(CSRF_COOKIE, csrf, max_age=int(seconds), httponly=False,
                        samesite="strict", secure=secure, path="/")


def clear_session_cookies(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")


async def _start_session(store: SqlStore, principal: pr.Principal, request: Request,
                         target: str) -> Response:
    """A session for ``principal``: its cookies on a response going to ``target``."""
    session, csrf, _ = await start_session(store, principal.name)
    wants_json = "application/json" in request.headers.get("accept", "")
    response: Response = JSONResponse({"ok": True, "next": target, "name": principal.name}) \
        if wants_json else RedirectResponse(target, 303)
    set_session_cookies(response, session, csrf, seconds=SESSION_SECONDS,
                        secure=_secure(request))
    return response


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this server only."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def login_routes(store: SqlStore, page: Callable[[Request], Awaitable[Response]],
                 ways: Sequence[str] = ("token",)) -> list[Any]:
    """``/login`` (the page; with ``?once=`` a one-time link signs in at once),
    ``POST /auth/login`` (a token in, a session out), ``POST /auth/logout``,
    ``GET /auth/whoami`` (whether the request is signed in, and as whom) and
    ``GET /auth/ways`` (how a person may sign in here, for the page: ``ways``, each of
    ``token``, ``password`` (a pack's ``login`` mutation) and ``oidc``)."""
    from starlette.routing import Route

    async def sign_in_ways(request: Request) -> Response:
        return JSONResponse({"ways": list(ways)})

    async def login_page(request: Request) -> Response:
        once = request.query_params.get("once")
        if once is None:
            return await page(request)
        try:
            who = await pr.verify(store, once, kinds=("link",), consume=True)
        except pr.CredentialError as exc:
            return JSONResponse({"errors": [{"message": f"this sign-in link is refused: "
                                             f"{exc}", "extensions": {"code": exc.reason}}]},
                                status_code=401)
        return await _start_session(store, who, request,
                                    _safe_next(request.query_params.get("next")))

    async def login(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token.strip():
            return JSONResponse({"errors": [{"message": "give a token: {\"token\": \"ss1...\"}",
                                             "extensions": {"code": "invalid_input"}}]},
                                status_code=400)
        try:
            who = await pr.verify(store, token.strip(), kinds=("token",))
        except pr.CredentialError as exc:
            return JSONResponse({"errors": [{"message": str(exc),
                                             "extensions": {"code": exc.reason}}]},
                                status_code=401)
        return await _start_session(store, who, request, _safe_next(
            body.get("next") if isinstance(body, dict) else None))

    async def logout(request: Request) -> Response:
        who = principal_of(request.scope)
        if who is not None and who.credential_id is not None:
            await pr.revoke(store, who.credential_id)
        response = JSONResponse({"ok": True})
        clear_session_cookies(response)
        return response

    async def whoami(request: Request) -> Response:
        who = principal_of(request.scope)
        return JSONResponse({"signedIn": who is not None,
                             "name": None if who is None else who.name})

    return [Route("/login", login_page, methods=["GET"]),
            Route("/auth/whoami", whoami, methods=["GET"]),
            Route("/auth/ways", sign_in_ways, methods=["GET"]),
            Route("/auth/login", login, methods=["POST"]),
            Route("/auth/logout", logout, methods=["POST"])]

