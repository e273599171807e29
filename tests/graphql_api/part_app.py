"""A pack as the API tests load it: an ApiPart with a query, a mutation that runs a saga
and waits for it, an anonymous mutation, a route behind sign-in and a public one."""

from __future__ import annotations

from typing import Any

import anyio
import strawberry
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from strawberry.types import Info

from engine import Saga, Stage
from graphql_api.auth import principal_of
from graphql_api.extensions import ApiPart, run_saga
from graphql_api.service import ApiError
from workers.node import WorkerApp


async def shout(ctx: Any, text: str) -> str:
    if text == "fail":
        raise ValueError("asked to fail")
    return text.upper()


@strawberry.type
class Echoed:
    status: str
    output: str | None


@strawberry.type
class PartQuery:
    @strawberry.field
    def greeting(self, name: str) -> str:
        return f"hello {name}"

    @strawberry.field
    async def slow(self, seconds: float) -> float:
        """Answers after ``seconds`` (the server's query timeout cuts it)."""
        await anyio.sleep(min(seconds, 30.0))
        return seconds


@strawberry.type
class PartMutation:
    @strawberry.mutation
    async def echo(self, info: Info, text: str) -> Echoed:
        """Runs saga parts.echo and answers with its output."""
        try:
            row = await run_saga(info, "parts.echo", text, wait=20)
        except ApiError as exc:
            raise ValueError(exc.message) from None
        return Echoed(status=row["status"], output=row.get("output"))

    @strawberry.mutation
    def ping(self) -> str:
        """Anyone may call it, signed in or not."""
        return "pong"


async def mine(request: Request) -> Response:
    who = principal_of(request.scope)
    return JSONResponse({"name": None if who is None else who.name})


async def open_door(request: Request) -> Response:
    return JSONResponse({"open": True})


async def take(request: Request) -> Response:
    """Counts the bytes of a body streamed in (its route has no bound on them)."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    return JSONResponse({"bytes": size})


def app() -> WorkerApp:
    part = ApiPart(name="parts", query=PartQuery, mutation=PartMutation,
                   actions={"echo": "write"}, anonymous=frozenset({"ping"}),
                   routes=lambda service: [Route("/parts/mine", mine),
                                           Route("/parts/open", open_door),
                                           Route("/parts/take", take, methods=["POST"])],
                   public=["/parts/open"], bodies={"/parts/take": None})
    return WorkerApp(sagas=[Saga(name="parts.echo",
                                 stages=[Stage(name="shout", transaction=shout)])],
                     api=[part])
