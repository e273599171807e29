"""``queries`` of ``benchmarks/api.py``: 100,000 works, two list requests timed against
the in-memory floor server and hand-written SQL (see that module's docstring)."""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import strawberry
from strawberry import relay
from strawberry.scalars import JSON

from benchmarks.api_common import (
    Processes,
    _log,
    _percentiles,
    _ratio,
    _ready,
    _serve,
    auth_headers,
)

# ------------------------------------------------------------------ list queries: the data

# what the 100,000 works are made of: (saga, how it ends, weight); each kind is one real
# work run by a Runtime, its events then copied under new ids and later times
MIX_SAGAS = {"order": 40, "signup": 25, "backup": 15, "refund": 20}
MIX_ENDS = {"completed": 60, "failed": 12, "compensation_failed": 3, "cancelled": 5,
            "running": 8, "paused": 4, "pending": 8}
_LAST = {"order": "ship", "signup": "welcome", "backup": "prune", "refund": "notify"}


async def _templates(rt: Any, store: Any) -> list[tuple[str, str, list[Any]]]:
    """One real work per (saga, end): ``(saga, end, its events)``."""
    from engine.state import replay

    found: list[tuple[str, str, list[Any]]] = []

    async def ended(work_id: str) -> None:
        for _ in range(500):
            state = replay(await store.read(work_id))
            if state.terminal:
                return
            await anyio.sleep(0.01)
        raise RuntimeError(f"template work {work_id} did not end")

    for saga in MIX_SAGAS:
        base: dict[str, Any] = {"files": 3} if saga == "backup" else {}
        for end in MIX_ENDS:
            if end == "pending":
                work_id = await rt.start(saga, base, run=False)
            elif end == "paused":
                work_id = await rt.start(saga, base, paused=True)
                for _ in range(3):  # paused mid-way, as a person stepping it leaves it
                    await rt.step(work_id)
            elif end == "cancelled":
                work_id = await rt.start(saga, base, paused=True)
                for _ in range(3):
                    await rt.step(work_id)
                await rt.cancel(work_id, by="ops", reason="duplicate order")
                await ended(work_id)
            else:
                inputs = {"completed": base, "running": base,
                          "failed": {**base, "fail": _LAST[saga]},
                          "compensation_failed": {**base, "fail": _LAST[saga],
                                                  "fail_compensation": True}}
                work_id = await rt.start(saga, inputs[end])
                if saga == "signup" and end != "running":
                    await anyio.sleep(0.05)
                    await rt.signal(work_id, "verified", {"ok": True})
                await ended(work_id) if end != "running" or saga != "signup" else \
                    await anyio.sleep(0.1)
            records = await store.read(work_id)
            if end == "running" and saga != "signup":
                # in the middle of its second stage: a prefix of a completed run
                cut = [i for i, r in enumerate(records)
                       if r.type == "stage.transaction.started"][1]
                records = records[:cut + 1]
            found.append((saga, end, records))
    return found


_TIMES = {"events": ("time",), "works": ("created_at", "updated_at", "started_at",
                                      "finished_at", "wake_at"),
          "stage_runs": ("started_at", "finished_at"), "leases": ()}


def _template_rows(records: list[Any]) -> dict[str, list[dict[str, Any]]]:
    """The rows the store writes for a work of these events (its own row functions)."""
    from engine.state import replay
    from engine.store.codec import EVENT_ROW, encode_event_row
    from engine.store.projection import stage_row, work_row

    state = replay(records)
    work_id = state.work_id
    paths = {r.event.path for r in records}
    rows: dict[str, list[dict[str, Any]]] = {
        "events": [dict(zip(EVENT_ROW, encode_event_row(r), strict=True)) for r in records],
        "works": [work_row(state, records[-1].event.path)],
        "stage_runs": [stage_row(work_id, state.stages[p], state.saga)
                       for p in sorted(paths) if p and p in state.stages],
        "leases": []}
    if not state.terminal:  # unfinished works have a lease row: free, or held by a node
        held = state.status == "running" or state.paused
        rows["leases"].append({
            "work_id": work_id, "saga": state.saga, "priority": 0,
            "owner": "bench-node" if held else None, "worker": "main" if held else None,
            "token": 1 if held else 0, "expires_at": time.time() + 86400 if held else 0.0,
            "claimed_at": time.time() if held else None, "waiting": None, "mail": 0})
    return rows


def _copies(kinds: list[tuple[str, str, list[Any]]], works: int, seed: int
            ) -> tuple[dict[str, list[tuple[Any, ...]]], dict[str, tuple[str, ...]],
                       dict[str, int]]:
    """The rows of ``works`` copies of the template works, as tuples per table."""
    rng = random.Random(seed)
    templates = [(f"{saga}/{end}", records[0].time, _template_rows(records))
                 for saga, end, records in kinds]
    weights = [MIX_SAGAS[s] * MIX_ENDS[e] for s, e, _ in kinds]
    columns = {table: tuple(rows[0]) for table in _TIMES
               for _, _, t in templates if (rows := t[table])}
    out: dict[str, list[tuple[Any, ...]]] = {table: [] for table in columns}
    counts: dict[str, int] = {}
    span = 30 * 86400.0  # a month of works, the newest an hour ago
    first = time.time() - span - 3600
    for index in range(works):
        name, created, rows = rng.choices(templates, weights)[0]
        counts[name] = counts.get(name, 0) + 1
        shift = first + span * index / works - created
        work_id = f"{index:08d}{rng.getrandbits(96):024x}"
        for table, names in columns.items():
            shifted = _TIMES[table]
            for row in rows[table]:
                out[table].append(tuple(
                    work_id if c == "work_id" else
                    (row[c] + shift if c in shifted and row[c] is not None else row[c])
                    for c in names))
    return out, columns, counts


async def populate(url: str, works: int, seed: int) -> dict[str, Any]:
    """``works`` works in the store at ``url``: copies of one real work per (saga, end)
    (run by a Runtime on that store), chosen at random by weight and created one after
    the other over a month; their rows (events, works, stage runs, leases, as the store's
    own row functions make them) are inserted in bulk, straight through the driver
    (COPY on PostgreSQL, one executemany per table on SQLite). Then ANALYZE."""
    from benchmarks.api_app import sagas
    from engine import Runtime
    from engine.store import SqlStore

    started = time.perf_counter()
    async with SqlStore.open(url) as store, Runtime(sagas(), store=store) as rt:
        kinds = await _templates(rt, store)
    rows, columns, counts = _copies(kinds, works, seed)
    import sqlalchemy as sa

    target = sa.make_url(url)
    if target.get_backend_name() == "postgresql":
        import asyncpg

        conn = await asyncpg.connect(target.set(drivername="postgresql")
                                     .render_as_string(hide_password=False))
        try:
            for table, names in columns.items():
                await conn.copy_records_to_table(table, records=rows[table], columns=names)
            await conn.execute("VACUUM ANALYZE")
        finally:
            await conn.close()
    else:
        import sqlite3

        assert target.database is not None
        db = sqlite3.connect(target.database)
        try:
            with db:
                for table, names in columns.items():
                    db.executemany(f"INSERT INTO {table} ({', '.join(names)}) VALUES "
                                   f"({', '.join('?' for _ in names)})", rows[table])
            db.execute("ANALYZE")
        finally:
            db.close()
    return {"works": works, "events": len(rows["events"]),
            "stage_runs": len(rows["stage_runs"]), "seconds": round(time.perf_counter() -
                                                                    started, 1),
            "by_kind": dict(sorted(counts.items()))}


# ------------------------------------------------------------------ list queries: timing

LIST_SAGAS = ["order", "refund"]
LIST_STATUSES = ["failed", "compensation_failed"]
WORK_FIELDS = ("id workId saga status paused phase input output error failure currentStage "
               "stagesDone stagesTotal lastSeq createdAt updatedAt priority startedAt "
               "finishedAt duration errorType worker node progress")
RUN_FIELDS = "path status attempts startedAt finishedAt duration error saga template"
LIST = ("query($saga: [String!], $status: [String!]) {\n"
        "  allWorks(first: 50, saga: $saga, status: $status) {\n"
        "    totalCount pageInfo { hasNextPage endCursor }\n"
        f"    edges {{ cursor node {{ {WORK_FIELDS} }} }}\n  }}\n}}")
ONE = ("query($id: String!) {\n"
       f"  work(workId: $id) {{ {WORK_FIELDS} stageRuns {{ {RUN_FIELDS} }} }}\n}}")


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


# The floor: a strawberry schema with the fields the two queries select, answering from
# memory what the real API answered. Its types live at module level: strawberry resolves
# the (postponed) annotations by name in the module.


@strawberry.type(name="StageRun")
class FloorStageRun:
    path: str
    status: str
    attempts: int
    started_at: float | None
    finished_at: float | None
    duration: float | None
    error: JSON | None
    saga: str
    template: str


@strawberry.type(name="Work")
class FloorWork(relay.Node):
    key: relay.NodeID[str]
    work_id: str
    saga: str
    status: str
    paused: bool
    phase: str
    input: JSON | None
    output: JSON | None
    error: JSON | None
    failure: JSON | None
    current_stage: str | None
    stages_done: int
    stages_total: int
    last_seq: int
    created_at: float
    updated_at: float
    priority: int
    started_at: float | None
    finished_at: float | None
    duration: float | None
    error_type: str | None
    worker: str | None
    node: str | None
    progress: float
    stage_runs: list[FloorStageRun]


@strawberry.type(name="WorkEdge")
class FloorWorkEdge:
    cursor: str
    node: FloorWork


@strawberry.type(name="WorkConnection")
class FloorWorkConnection:
    edges: list[FloorWorkEdge]
    page_info: relay.PageInfo
    total_count: int


_FLOOR: dict[str, Any] = {}  # what the floor answers: set by floor_schema


@strawberry.type(name="Query")
class FloorQuery:
    """The root fields are async, as any API over a database must be; the rest are
    plain attributes of objects built once."""

    @strawberry.field
    async def all_works(self, first: int = 50, after: str | None = None,
                        saga: list[str] | None = None, status: list[str] | None = None,
                        newest_first: bool = True) -> FloorWorkConnection:
        connection: FloorWorkConnection = _FLOOR["connection"]
        return connection

    @strawberry.field
    async def work(self, work_id: str) -> FloorWork | None:
        found: FloorWork | None = _FLOOR["works"].get(work_id)
        return found


def _floor_work(found: dict[str, Any], runs: list[dict[str, Any]] | None = None) -> FloorWork:
    fields = {_snake(k): v for k, v in found.items() if k not in ("id", "stageRuns")}
    return FloorWork(key=found["workId"], **fields, stage_runs=[
        FloorStageRun(**{_snake(k): v for k, v in r.items()}) for r in runs or []])


def floor_schema(data: dict[str, Any]) -> strawberry.Schema:
    """The floor schema answering ``data`` (the real API's two responses)."""
    page = data["list"]["allWorks"]
    edges = [FloorWorkEdge(cursor=e["cursor"], node=_floor_work(e["node"]))
             for e in page["edges"]]
    _FLOOR["connection"] = FloorWorkConnection(
        edges=edges, total_count=page["totalCount"], page_info=relay.PageInfo(
            has_next_page=page["pageInfo"]["hasNextPage"], has_previous_page=False,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=page["pageInfo"]["endCursor"]))
    one = data["one"]["work"]
    _FLOOR["works"] = {one["workId"]: _floor_work(one, one["stageRuns"])}
    return strawberry.Schema(query=FloorQuery, types=[FloorWork])


def serve_floor(data_file: str) -> None:
    """The floor server (``--floor-server FILE``): the floor schema served as stepsaga
    serves its own (a starlette route, strawberry's ASGI app, uvicorn with the same
    options); prints one JSON line with its URL once it listens, stops on SIGTERM."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Route
    from strawberry.asgi import GraphQL

    data = json.loads(Path(data_file).read_text())
    app = Starlette(routes=[Route("/graphql", GraphQL(floor_schema(data), graphql_ide=None),
                                  methods=["GET", "POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                            lifespan="off", ws="websockets-sansio")
    server = uvicorn.Server(config)

    async def main() -> None:
        async def announce() -> None:
            for _ in range(6000):  # a minute at most to bind
                if server.started:
                    port = server.servers[0].sockets[0].getsockname()[1]
                    print(json.dumps({"ready": True,
                                      "url": f"http://127.0.0.1:{port}/graphql"}), flush=True)
                    return
                await anyio.sleep(0.01)

        async with anyio.create_task_group() as tg:
            tg.start_soon(announce)
            await server.serve()

    anyio.run(main, backend="asyncio")


async def _post(client: Any, url: str, query: str, variables: dict[str, Any]
                ) -> dict[str, Any]:
    response = await client.post(url, json={"query": query, "variables": variables},
                                 headers=auth_headers(url))
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    if body.get("errors"):
        raise RuntimeError(f"{url} answered errors: {body['errors']}")
    return dict(body["data"])


async def _http_times(targets: dict[str, str], requests: dict[str, tuple[str, dict[str, Any]]],
                      rounds: int, warmup: int, seed: int) -> dict[str, dict[str, list[float]]]:
    """Per target and request, the time of each of ``rounds`` requests (ms), over one
    keep-alive connection each; targets and requests interleaved in a shuffled order."""
    import httpx

    rng = random.Random(seed)
    times: dict[str, dict[str, list[float]]] = {t: {r: [] for r in requests} for t in targets}
    pairs = [(t, r) for t in targets for r in requests]
    async with httpx.AsyncClient(timeout=30) as client:
        for n in range(rounds + warmup):
            rng.shuffle(pairs)
            for target, name in pairs:
                query, variables = requests[name]
                start = time.perf_counter()
                await _post(client, targets[target], query, variables)
                if n >= warmup:
                    times[target][name].append((time.perf_counter() - start) * 1000)
    return times


def _handwritten(dialect: str) -> dict[str, str]:
    """The same rows as the store's queries, in SQL written by hand."""
    if dialect == "postgresql":
        inside, one = "= ANY($1) AND w.status = ANY($2)", "$1"
        counted = "saga = ANY($1) AND status = ANY($2)"
    else:
        marks = lambda n: ", ".join("?" for _ in range(n))  # noqa: E731
        inside = (f"IN ({marks(len(LIST_SAGAS))}) AND w.status IN "
                  f"({marks(len(LIST_STATUSES))})")
        one = "?"
        counted = (f"saga IN ({marks(len(LIST_SAGAS))}) AND status IN "
                   f"({marks(len(LIST_STATUSES))})")
    joined = ("SELECT w.*, l.waiting AS held_back FROM works w "
              "LEFT JOIN leases l ON l.work_id = w.work_id ")
    return {"page": f"{joined}WHERE w.saga {inside} "
                    "ORDER BY w.created_at DESC, w.work_id DESC LIMIT 51",
            "count": f"SELECT count(*) FROM works WHERE {counted}",
            "work": f"{joined}WHERE w.work_id = {one}",
            "runs": f"SELECT * FROM stage_runs WHERE work_id = {one} ORDER BY path"}


async def _db_times(url: str, work_id: str, rounds: int, warmup: int, seed: int
                    ) -> dict[str, dict[str, list[float]]]:
    """The database part of each request, timed in this process: the store's query
    functions the resolvers call against the hand-written SQL through the same engine
    and driver (each a fresh connection from the pool, as the resolvers take)."""
    from engine.store import SqlStore, queries

    rng = random.Random(seed)
    async with SqlStore.open(url, create=False) as store:
        sql = _handwritten(store.dialect)
        pg = store.dialect == "postgresql"
        list_args: tuple[Any, ...] = (LIST_SAGAS, LIST_STATUSES) if pg else \
            (*LIST_SAGAS, *LIST_STATUSES)

        async def store_list() -> Any:
            rows, more = await queries.works_page(store, first=50, saga=LIST_SAGAS,
                                                  status=LIST_STATUSES)
            total = await queries.count_works(store, saga=LIST_SAGAS, status=LIST_STATUSES)
            return [r["work_id"] for r in rows], more, total

        async def hand_list() -> Any:
            async with store.engine.connect() as conn:
                rows = [dict(r) for r in
                        (await conn.exec_driver_sql(sql["page"], list_args)).mappings()]
                total = (await conn.exec_driver_sql(sql["count"], list_args)).scalar_one()
            return [r["work_id"] for r in rows[:50]], len(rows) > 50, int(total)

        async def store_one() -> Any:
            row = await store.work(work_id)
            runs = (await queries.stage_runs_of(store, [work_id]))[work_id]
            assert row is not None
            return row["work_id"], [r["path"] for r in runs]

        async def hand_one() -> Any:
            async with store.engine.connect() as conn:
                row = (await conn.exec_driver_sql(sql["work"], (work_id,))).mappings().one()
                runs = [dict(r) for r in
                        (await conn.exec_driver_sql(sql["runs"], (work_id,))).mappings()]
            return dict(row)["work_id"], [r["path"] for r in runs]

        calls = {("store", "list"): store_list, ("handwritten", "list"): hand_list,
                 ("store", "one"): store_one, ("handwritten", "one"): hand_one}
        if await store_list() != await hand_list() or await store_one() != await hand_one():
            raise RuntimeError("the hand-written SQL does not return the store's rows")
        times: dict[str, dict[str, list[float]]] = {"store": {"list": [], "one": []},
                                                    "handwritten": {"list": [], "one": []}}
        order = list(calls)
        for n in range(rounds + warmup):
            rng.shuffle(order)
            for key in order:
                start = time.perf_counter()
                await calls[key]()
                if n >= warmup:
                    times[key[0]][key[1]].append((time.perf_counter() - start) * 1000)
    return times



def query_figures(procs: Processes, url: str, args: argparse.Namespace, base: Path
                  ) -> dict[str, Any]:
    """Populate ``url``, then time both queries over HTTP (stepsaga serve --no-workers
    against the floor server) and their database part (store functions against
    hand-written SQL)."""
    _log(f"queries: {args.works} works into {url.split(':')[0]}")
    made = anyio.run(populate, url, args.works, args.seed)
    server, served = _serve(procs, url, "--no-workers")
    floor = None
    try:
        import httpx

        variables = {"saga": LIST_SAGAS, "status": LIST_STATUSES}

        async def answers() -> dict[str, Any]:
            async with httpx.AsyncClient(timeout=30) as client:
                page = await _post(client, served, LIST, variables)
                # a finished backup: a map's stage runs, a few more rows than most
                chosen = await _post(client, served, LIST.replace("first: 50", "first: 1"),
                                     {"saga": ["backup"], "status": ["completed"]})
                work_id = chosen["allWorks"]["edges"][0]["node"]["workId"]
                one = await _post(client, served, ONE, {"id": work_id})
            return {"list": page, "one": one, "work_id": work_id}

        data = anyio.run(answers)
        data_file = base / f"floor-{len(procs.started)}.json"
        data_file.write_text(json.dumps(data))
        floor = procs.start(sys.executable, str(Path(__file__).resolve().with_name("api.py")),
                            "--floor-server", str(data_file))
        floor_url = str(_ready(procs, floor, "the floor server")["url"])
        requests = {"list": (LIST, variables), "one": (ONE, {"id": data["work_id"]})}

        async def same() -> None:
            async with httpx.AsyncClient(timeout=30) as client:
                for name, (query, values) in requests.items():
                    if await _post(client, floor_url, query, values) != data[name]:
                        raise RuntimeError(f"the floor server answers {name} differently")

        anyio.run(same)
        _log(f"queries: {args.query_rounds} rounds over HTTP")
        http = anyio.run(_http_times, {"api": served, "floor": floor_url}, requests,
                         args.query_rounds, args.query_warmup, args.seed)
    finally:
        procs.stop([server] + ([floor] if floor is not None else []))
    _log(f"queries: {args.query_rounds} rounds of the database part")
    db = anyio.run(_db_times, url, data["work_id"], args.query_rounds, args.query_warmup,
                   args.seed)
    shapes: dict[str, Any] = {}
    for name in requests:
        api_ms = _percentiles(http["api"][name])
        floor_ms = _percentiles(http["floor"][name])
        store_ms = _percentiles(db["store"][name])
        hand_ms = _percentiles(db["handwritten"][name])
        shapes["allWorks" if name == "list" else "work"] = {
            "http_ms": api_ms, "floor_http_ms": floor_ms,
            "ratio_vs_floor": _ratio(api_ms["p50_ms"], floor_ms["p50_ms"]),
            "db_ms": store_ms, "handwritten_db_ms": hand_ms,
            "db_ratio_vs_handwritten": _ratio(store_ms["p50_ms"], hand_ms["p50_ms"])}
    total = data["list"]["allWorks"]["totalCount"]
    return {"ratio_vs_floor": max(s["ratio_vs_floor"] for s in shapes.values()),
            "db_ratio_vs_handwritten": max(s["db_ratio_vs_handwritten"]
                                           for s in shapes.values()),
            **shapes, "matching_works": total, "data": made}
