"""A createWork request's trace context carried into the work it starts: the request's
span (under the caller's traceparent header), the GraphQL operation's, the work's on the
worker node, the stage call's and the user's span inside it, all one trace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
from opentelemetry import trace

from engine import Saga, Stage
from engine.store import SqlStore
from graphql_api.server import make_app, running_api
from tests.tracing import by_name, spans
from workers.node import WorkerApp, WorkerSpec

__all__ = ["spans"]  # the fixture

user = trace.get_tracer("user code")


async def send(ctx: Any, n: int) -> int:
    with user.start_as_current_span("send the mail"):
        return n + 1


APP = WorkerApp(sagas=[Saga(name="mail", stages=[Stage(name="send", transaction=send)])])
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


async def test_a_create_work_request_s_trace_reaches_the_stage_code(
        spans: Any, tmp_path: Path) -> None:
    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        node = APP.node(store, [WorkerSpec(name="w", concurrency=2)], node_id="n")
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)
            async with running_api(store, APP, node=node) as service:
                app = make_app(service, auth=False, node=node)
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                             base_url="http://test") as client:
                    made = await client.post("/graphql", headers={
                        "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}, json={
                        "query": "mutation Order { createWork(saga: \"mail\", input: 1) "
                                 "{ ... on WorkCreated { work { workId } } } }"})
                    work_id = made.json()["data"]["createWork"]["work"]["workId"]
                for _ in range(500):
                    row = await store.work(work_id)
                    if row is not None and row["status"] == "completed":
                        break
                    await anyio.sleep(0.02)
                assert row is not None and row["status"] == "completed"
            await node.drain()
    found = by_name([s for s in spans.get_finished_spans()
                     if s.context.trace_id == int(CALLER_TRACE, 16)])
    assert set(found) == {"HTTP POST /graphql", "graphql Order", "work mail",
                          "transaction send", "send the mail"}

    def parent(name: str) -> str:
        span = found[name]
        assert span.parent is not None
        return next((n for n, s in found.items() if s.context.span_id == span.parent.span_id),
                    f"{span.parent.span_id:016x}")

    assert parent("HTTP POST /graphql") == CALLER_SPAN  # the caller's, from its header
    assert found["HTTP POST /graphql"].kind is trace.SpanKind.SERVER
    assert parent("graphql Order") == "HTTP POST /graphql"
    assert parent("work mail") == "graphql Order"
    assert parent("transaction send") == "work mail"
    assert parent("send the mail") == "transaction send"
    attributes = found["graphql Order"].attributes
    assert attributes is not None and attributes["graphql.operation.type"] == "mutation"
