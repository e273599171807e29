"""What every response and request of the server passes through besides auth: security
headers on every response (and Strict-Transport-Security over HTTPS), a bound on a
request's body (a GraphQL document and its variables; a pack's route may set its own,
as the file pack's uploads do), refused early with 413 rather than read whole, and a
time bound on a GraphQL request over HTTP (503, code ``timeout``, when it is over
before an answer began)."""

from __future__ import annotations

from collections.abc import Mapping

import anyio
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HEADERS", "MAX_BODY", "QUERY_TIMEOUT", "Guards"]

QUERY_TIMEOUT = 30.0  # seconds a GraphQL request over HTTP may take (serve.query_timeout)

MAX_BODY = 1024 * 1024  # bytes of a request's body, and of a WebSocket message
HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
           (b"referrer-policy", b"same-origin"),
           (b"cross-origin-opener-policy", b"same-origin")]


class _TooLarge(Exception):
    pass


class Guards:
    """ASGI middleware: the headers on every HTTP response; a body over ``max_body``
    bytes refused (by its Content-Length, or as it streams in), or over the bound of
    the longest path prefix in ``bodies`` that the path starts with (None: unbounded, a
    route that streams what it takes); a GraphQL request over HTTP cut after
    ``query_timeout`` seconds (None: never)."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY,
                 bodies: Mapping[str, int | None] | None = None,
                 query_timeout: float | None = QUERY_TIMEOUT) -> None:
        self.app = app
        self.max_body = max_body
        self.bodies = sorted((bodies or {}).items(), key=lambda kv: -len(kv[0]))
        self.query_timeout = query_timeout

    def _bound(self, path: str) -> int | None:
        for prefix, bound in self.bodies:
            if path.startswith(prefix):
                return bound
        return self.max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        bound = self._bound(scope["path"])
        if scope.get("scheme") == "https":  # browsers keep to HTTPS for this host from now on
            send = self._strict(send)
        if bound is None:
            await self.app(scope, receive, self._headed(send))
            return
        refusal = JSONResponse({"errors": [{
            "message": f"a request's body is {bound} bytes at most",
            "extensions": {"code": "too_large"}}]}, status_code=413)
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > bound:
                await refusal(scope, receive, self._headed(send))
                return
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > bound:
                    raise _TooLarge
            return message

        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await self._headed(send)(message)

        timeout = self.query_timeout if scope["path"] == "/graphql" else None
        try:
            with anyio.move_on_after(timeout) as timed:
                await self.app(scope, bounded, tracked)
        except _TooLarge:
            if not started:
                await refusal(scope, receive, self._headed(send))
            return
        if timed.cancelled_caught and not started:
            await JSONResponse({"errors": [{
                "message": f"the request took longer than {timeout:g} s, the server's "
                           "bound (serve.query_timeout): ask for less at once (a smaller "
                           "page)", "extensions": {"code": "timeout"}}]},
                status_code=503, headers={"Retry-After": "1"})(
                    scope, receive, self._headed(send))

    @staticmethod
    def _strict(send: Send) -> Send:
        async def with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      (b"strict-transport-security", b"max-age=31536000")]
            await send(message)
        return with_hsts

    @staticmethod
    def _headed(send: Send) -> Send:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                have = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *[(n, v) for n, v in HEADERS if n not in have]]
            await send(message)
        return with_headers
