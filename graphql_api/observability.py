"""What operators point their tools at: ``/metrics`` (Prometheus, see
:mod:`engine.metrics` for every metric and its labels), ``/healthz`` (the process
lives: 200) and ``/readyz`` (200 when the store answers, its schema is current and
workers run, else 503; the checks as JSON, see :func:`workers.health.readiness`), for
``stepsaga serve`` and a worker-only node's small HTTP server alike. Point StatusCake
or any uptime checker at ``/readyz``; the services' health history is the ``services``
query of the GraphQL API."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.abc
import uvicorn
from opentelemetry import propagate, trace
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from strawberry.extensions import SchemaExtension

from engine import metrics, tracing
from engine.store import SqlStore

__all__ = ["OperationTimer", "QuietServer", "TraceRequests", "healthz", "metrics_endpoint",
           "node_app", "readyz_endpoint", "serve_http", "setup_logging"]

_LOG = logging.getLogger("stepsaga.serve")


class OperationTimer(SchemaExtension):
    """Times each GraphQL operation into ``stepsaga_api_request_seconds`` by its name
    (``anonymous`` without one) and type, in a span ``graphql <name>``."""

    def on_operation(self) -> Iterator[None]:
        began = time.perf_counter()
        context = self.execution_context
        # a span per operation: a work it creates carries this span's context
        with tracing.tracer.start_as_current_span("graphql") as span:
            yield
            name = (context.operation_name or "anonymous")[:100]  # known once parsed
            try:
                kind = context.operation_type.value
            except Exception:  # a document that did not parse has no type
                kind = "unknown"
            span.update_name(f"graphql {name}")
            span.set_attribute("graphql.operation.name", name)
            span.set_attribute("graphql.operation.type", kind)
        metrics.API_SECONDS.labels(name, kind).observe(time.perf_counter() - began)


class TraceRequests:
    """ASGI middleware: each HTTP request a span (``HTTP <method> <path>``, a server
    span) under the trace context its headers carry (``traceparent``), current while
    it is handled; a WebSocket's messages are left alone."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        parent = propagate.extract(headers)
        with tracing.tracer.start_as_current_span(
                f"HTTP {scope['method']} {scope['path']}", context=parent,
                kind=trace.SpanKind.SERVER,
                attributes={"http.request.method": scope["method"],
                            "url.path": scope["path"]}):
            await self.app(scope, receive, send)


def metrics_endpoint(store: SqlStore | None) -> Any:
    """The ``/metrics`` route's handler: the gauges read from ``store`` (if given)
    refreshed, then this process's metrics. A store that does not answer within two
    seconds leaves those gauges as they were (logged); the rest is served anyway."""

    async def handler(request: Request) -> Response:
        if store is not None:
            try:
                with anyio.fail_after(2):
                    await metrics.refresh_from_store(store)
            except Exception as exc:
                _LOG.warning("/metrics could not read the store's figures: %s", exc)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return handler


async def healthz(request: Request) -> Response:
    """The process lives and its event loop answers."""
    return JSONResponse({"ok": True})


def readyz_endpoint(store: SqlStore, node: Any = None) -> Any:
    """The ``/readyz`` route's handler: 200 when ready, else 503, with the checks as
    JSON (see :func:`workers.health.readiness`)."""
    from workers.health import readiness

    async def handler(request: Request) -> Response:
        found = await readiness(store, node)
        return JSONResponse(found, status_code=200 if found["ready"] else 503)

    return handler


def node_app(store: SqlStore, node: Any) -> Starlette:
    """The HTTP side of a worker-only node (``stepsaga worker --http HOST:PORT``):
    ``/metrics``, ``/healthz`` and ``/readyz``."""
    return Starlette(routes=[Route("/metrics", metrics_endpoint(store)),
                             Route("/healthz", healthz),
                             Route("/readyz", readyz_endpoint(store, node))])


class QuietServer(uvicorn.Server):
    """uvicorn's server without its own signal handling (it re-raises the signal once
    it has stopped, which would end the process before the node hands its works on):
    SIGTERM and SIGINT are handled by whoever runs it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_http(app: Any, host: str, port: int, *,
                     task_status: anyio.abc.TaskStatus[tuple[str, int]]
                     = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` until cancelled; ``task_status.started((host, port))`` once it
    listens (``port`` 0: the one the system chose)."""
    server = QuietServer(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                        lifespan="off"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(60):
            while not server.started:
                if server.should_exit:
                    raise OSError(f"could not listen on {host}:{port}")
                await anyio.sleep(0.01)
        sockets = [s for srv in server.servers for s in srv.sockets]
        found = sockets[0].getsockname()[:2] if sockets else (host, port)
        task_status.started((str(found[0]), int(found[1])))
        try:
            await anyio.sleep_forever()
        finally:
            server.should_exit = True


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    """How ``stepsaga serve`` and ``stepsaga worker`` log: to stderr, as text or one
    JSON object a line (:class:`engine.worklogs.JsonFormatter`), from ``level`` on."""
    from engine.worklogs import JsonFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
