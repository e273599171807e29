"""What every response and request of the server passes through besides auth: security
headers on every response, and a bound on a request's body (a GraphQL document and its
variables), refused early with 413 rather than read whole."""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HEADERS", "MAX_BODY", "Guards"]

MAX_BODY = 1024 * 1024  # bytes of a request's body, and of a WebSocket message
HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
           (b"referrer-policy", b"same-origin"),
           (b"cross-origin-opener-policy", b"same-origin")]


class _TooLarge(Exception):
    pass


class Guards:
    """ASGI middleware: the headers on every HTTP response; a body over ``max_body``
    bytes refused (by its Content-Length, or as it streams in)."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = JSONResponse({"errors": [{
            "message": f"a request's body is {self.max_body} bytes at most",
            "extensions": {"code": "too_large"}}]}, status_code=413)
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                await refusal(scope, receive, self._headed(send))
                return
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _TooLarge
            return message

        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await self._headed(send)(message)

        try:
            await self.app(scope, bounded, tracked)
        except _TooLarge:
            if not started:
                await refusal(scope, receive, self._headed(send))

    @staticmethod
    def _headed(send: Send) -> Send:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                have = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *[(n, v) for n, v in HEADERS if n not in have]]
            await send(message)
        return with_headers
