"""The GraphQL explorer: GraphiQL from npm, bundled into the ``ui`` package (``ui/dist``,
see ui/README.md) and served from here, so that it loads nothing from another host.

A browser opening ``/graphql`` (GET, ``Accept: text/html``, no ``query`` parameter) gets
the explorer's page; every other request there (POST, GET with a query, the WebSocket)
is the API's. The page's files are served under ``/ui/``.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

import ui

__all__ = ["APP_POLICY", "DIST", "NoExplorer", "WithExplorer", "app_page", "explorer_files",
           "wants_explorer"]

DIST = Path(ui.__file__).resolve().parent / "dist"

# The browser itself refuses anything from another host, should a later bundle ask.
# Monaco sets inline styles and starts its workers from this origin; 'self' covers
# the page's own WebSocket (ws: or wss: to the same host) as well.
POLICY = ("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
          "font-src 'self' data:; worker-src 'self'; connect-src 'self'")
# The UI's start form checks an input against its saga's JSON schema in the browser with
# ajv (@rjsf/validator-ajv8), which compiles each schema, read from the API at run time,
# into a function with `new Function`: the UI's page allows that ('unsafe-eval', still
# only scripts from this origin); the explorer's page does not need it.
APP_POLICY = POLICY.replace("default-src 'self';",
                            "default-src 'self'; script-src 'self' 'unsafe-eval';")


def wants_explorer(scope: Scope) -> bool:
    """Whether a request to /graphql is a browser asking for a page, not an operation."""
    if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
        return False
    request = Request(scope)
    return ("query" not in request.query_params
            and "text/html" in request.headers.get("accept", ""))


class WithExplorer:
    """``api`` at /graphql, except that a browser asking for a page gets the explorer."""

    def __init__(self, api: ASGIApp, dist: Path = DIST) -> None:
        self.api = api
        self.dist = dist

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if wants_explorer(scope):
            await self.page()(scope, receive, send)
        else:
            await self.api(scope, receive, send)

    def page(self) -> Response:
        return _page(self.dist / "index.html", "The GraphQL explorer")


class NoExplorer:
    """``api`` at /graphql with the explorer off (the default): a browser asking for a
    page is told how to turn it on."""

    def __init__(self, api: ASGIApp) -> None:
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if wants_explorer(scope):
            await PlainTextResponse(
                "The GraphQL explorer is off (and introspection with it): start the server "
                "with --explorer, or explorer = true in [serve]. The API answers POST "
                "/graphql.", status_code=404)(scope, receive, send)
        else:
            await self.api(scope, receive, send)


def _page(file: Path, what: str, policy: str = POLICY) -> Response:
    if not file.is_file():
        return PlainTextResponse(
            f"{what} was not built: {file} is missing. Install the package with npm on "
            "PATH (pip install runs npm ci and npm run build in ui/), or run python3 "
            "scripts/build_ui.py in a clone. The API itself answers POST /graphql.",
            status_code=503)
    # no-cache: the page names this build's files, which change with each build
    return FileResponse(file, headers={"Cache-Control": "no-cache",
                                       "Content-Security-Policy": policy})


async def app_page(request: Request) -> Response:
    """The UI (``ui/app.html``), at /."""
    return _page(DIST / "app.html", "The UI", APP_POLICY)


class _Files(StaticFiles):
    """The bundle's files; those under ``assets/`` have hashed names (a new build names
    new files), so browsers keep them for a year without asking again."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200 and path.startswith("assets/"):
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response


def explorer_files(dist: Path = DIST) -> StaticFiles:
    """The pages' scripts, styles and fonts, to mount at /ui."""
    # check_dir=False: a server without a built bundle still starts (the page says why)
    return _Files(directory=dist, check_dir=False)
