"""Spans of works and stage calls through the SDK's in-memory exporter: parentage from a
user's span around start() to the work, its calls and the user's own spans inside stage
code, compensations included, and the context carried through the store to a worker
node that adopts the work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import StatusCode

from engine import Runtime, Saga, Stage, StageFailure
from tests.tracing import by_name, spans
from workers.node import WorkerNode, WorkerSpec

__all__ = ["spans"]  # the fixture

user = trace.get_tracer("user code")


async def charge(ctx: Any, n: int) -> int:
    with user.start_as_current_span("charge the card"):
        return n + 1


async def refund(ctx: Any, value: Any, output: Any, reason: Any) -> None:
    with user.start_as_current_span("refund the card"):
        pass


async def ship(ctx: Any, n: int) -> int:
    raise StageFailure("no truck", retryable=False)


SAGA = Saga(name="order", stages=[Stage(name="charge", transaction=charge,
                                        compensation=refund),
                                  Stage(name="ship", transaction=ship)])


async def test_a_work_s_spans_nest_under_the_span_it_was_started_in(
        spans: Any, tmp_path: Path) -> None:
    from engine.store import SqlStore

    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store, \
            Runtime([SAGA], store=store) as runtime:
        with user.start_as_current_span("checkout") as outer:
            work_id = await runtime.start("order", 1)
        result = await runtime.wait(work_id)
    assert result.status == "failed"
    found = by_name(spans.get_finished_spans())
    assert set(found) == {"checkout", "work order", "transaction charge", "charge the card",
                          "transaction ship", "compensation charge", "refund the card"}
    trace_id = outer.get_span_context().trace_id
    assert {s.context.trace_id for s in found.values()} == {trace_id}

    def parent(name: str) -> str:
        span = found[name]
        assert span.parent is not None, f"{name} has no parent"
        return next(n for n, s in found.items() if s.context.span_id == span.parent.span_id)

    assert parent("work order") == "checkout"
    for call in ("transaction charge", "transaction ship", "compensation charge"):
        assert parent(call) == "work order"
    assert parent("charge the card") == "transaction charge"
    assert parent("refund the card") == "compensation charge"
    work = found["work order"].attributes
    assert work is not None
    assert (work["stepsaga.saga"], work["stepsaga.work_id"], work["stepsaga.outcome"]) == \
        ("order", work_id, "failed")
    charged = found["transaction charge"].attributes
    assert charged is not None and dict(charged) == {
        "stepsaga.saga": "order", "stepsaga.work_id": work_id, "stepsaga.path": "charge",
        "stepsaga.attempt": 1, "stepsaga.kind": "transaction",
        "stepsaga.idempotency_key": f"{work_id}/charge/1",
        "stepsaga.outcome": "stage.transaction.completed"}
    shipped = found["transaction ship"]
    assert shipped.status.status_code is StatusCode.ERROR
    assert shipped.status.description == "no truck"
    refunded = found["compensation charge"].attributes
    assert refunded is not None
    assert refunded["stepsaga.idempotency_key"] == f"{work_id}/charge/rollback/1"
    assert refunded["stepsaga.outcome"] == "stage.compensation.completed"


async def test_the_context_travels_with_the_work_to_the_node_that_runs_it(
        spans: Any, tmp_path: Path) -> None:
    from engine.store import SqlStore

    async with SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/s.sqlite") as store:
        async with Runtime([SAGA], store=store) as client:
            with user.start_as_current_span("request") as outer:
                work_id = await client.start("order", 1, run=False)  # for a worker node
        # no span is current here: only the stored context links the node's spans
        node = WorkerNode(store, [SAGA], [WorkerSpec(name="w", concurrency=2)],
                          node_id="n", lease_ttl=5.0)
        import anyio

        async with anyio.create_task_group() as tg:
            await tg.start(node.run)
            for _ in range(500):
                row = await store.work(work_id)
                if row is not None and row["status"] == "failed":
                    break
                await anyio.sleep(0.02)
            await node.drain()
    found = by_name(spans.get_finished_spans())
    work = found["work order"]
    assert work.parent is not None
    assert work.parent.span_id == outer.get_span_context().span_id
    assert found["charge the card"].context.trace_id == outer.get_span_context().trace_id
