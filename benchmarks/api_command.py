"""``command_latency`` of ``benchmarks/api.py``: a pause sent to one API node until
``work.paused`` reaches a subscriber of another (see that module's docstring)."""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Sequence
from typing import Any

import anyio

from benchmarks.api_common import (
    CREATE,
    EVENTS,
    PAUSE,
    RESUME,
    TRIVIAL,
    Processes,
    _ask,
    _gql,
    _http,
    _percentiles,
    _serve,
    _worker,
    _ws,
)

# ------------------------------------------------------------------ command latency


async def _pause_samples(send_url: str, watch_url: str, samples: int, warmup: int,
                         seed: int, store_url: str) -> dict[str, Any]:
    """Pause a running ``ms`` work through ``send_url`` and time until its
    ``work.paused`` reaches a subscriber of ``watch_url``; resume it; again, until the
    work nears its end (its last stages are never paused: a pause racing the work's
    end measures something else), then a fresh work. Before each pause, the same
    client's round trip of a trivial query to ``send_url`` is the baseline."""
    from gql import GraphQLRequest

    from benchmarks.api_app import MS_STAGES

    gql = _gql()
    create, pause, resume, follow = gql(CREATE), gql(PAUSE), gql(RESUME), gql(EVENTS)
    trivial = gql(TRIVIAL)
    rng = random.Random(seed)
    total: list[float] = []  # sent -> received, ms
    to_commit: list[float] = []  # sent -> the event's commit time (wall clocks), ms
    delivery: list[float] = []  # commit time -> received, ms
    answers: list[float] = []  # sent -> the mutation's answer, ms
    floor: list[float] = []  # a trivial query's round trip, ms
    sent_walls: list[tuple[str, float, float]] = []  # (work, sent, event time) per sample
    refused: list[str] = []  # pauses answered with an error (the work had ended)
    pending: list[float] = []  # pauses no holder took within the API's wait, ms
    works = 0
    async with _http(send_url) as client, _ws(watch_url) as watcher:
        async def fresh(tg: Any) -> tuple[str, Any, anyio.CancelScope]:
            """A new work, and a subscription to its pauses (from cursor 0: nothing is
            missed even before the subscription is live)."""
            nonlocal works
            found = await _ask(client, create, {"saga": "ms", "input": 0})
            work_id = found["createWork"]["work"]["workId"]
            send, receive = anyio.create_memory_object_stream[Any](100)
            scope = anyio.CancelScope()
            request = GraphQLRequest(follow, variable_values={
                "id": work_id, "after": "0", "types": ["work.paused"]})

            async def run() -> None:
                with scope:
                    async for item in watcher.subscribe(request):
                        send.send_nowait((time.perf_counter(), item["workEvents"]))

            tg.start_soon(run)
            works += 1
            return work_id, receive, scope

        async with anyio.create_task_group() as tg:
            work_id, receive, scope = await fresh(tg)
            taken = 0
            with anyio.fail_after(120 + samples * 5):
                while taken < samples + warmup:
                    await anyio.sleep(rng.uniform(0.02, 0.04))  # running, mid-stage
                    start = time.perf_counter()
                    await _ask(client, trivial, {})
                    trivial_ms = (time.perf_counter() - start) * 1000
                    wall, start = time.time(), time.perf_counter()
                    answer = (await _ask(client, pause, {"id": work_id}))["pauseWork"]
                    answered = time.perf_counter()
                    if answer["__typename"] != "CommandTaken" or \
                            answer["outcome"] != "applied":
                        if answer.get("outcome") == "pending":
                            pending.append((answered - start) * 1000)
                            # taken later, it would keep a worker slot paused
                            tg.start_soon(_ask, client, resume, {"id": work_id})
                        else:
                            refused.append(answer.get("message", answer["__typename"]))
                        scope.cancel()
                        work_id, receive, scope = await fresh(tg)
                        continue
                    with anyio.fail_after(30):
                        received, event = await receive.receive()
                    if taken >= warmup:
                        total.append((received - start) * 1000)
                        to_commit.append((event["time"] - wall) * 1000)
                        delivery.append(total[-1] - to_commit[-1])
                        answers.append((answered - start) * 1000)
                        floor.append(trivial_ms)
                        sent_walls.append((work_id, wall, event["time"]))
                    taken += 1
                    resumed = (await _ask(client, resume, {"id": work_id}))["resumeWork"]
                    if resumed["__typename"] != "CommandTaken":
                        raise RuntimeError(f"resume refused: {resumed}")
                    done = answer["work"]["stagesDone"]
                    if done >= MS_STAGES - 50:  # ~25 stages run before the next pause
                        scope.cancel()
                        work_id, receive, scope = await fresh(tg)
            scope.cancel()
    figures = _percentiles(total)
    figures["trivial_query_round_trip"] = _percentiles(floor)  # the baseline
    figures["sent_to_commit"] = _percentiles(to_commit)
    figures["commit_to_received"] = _percentiles(delivery)
    figures["mutation_answer"] = _percentiles(answers)
    figures["works_used"] = works
    figures["pauses_refused"] = len(refused)
    figures["pauses_not_taken_in_time_ms"] = [round(x, 1) for x in pending]
    figures["phases"] = await _command_phases(store_url, sent_walls)
    return figures


async def _command_phases(store_url: str, samples: Sequence[tuple[str, float, float]]
                          ) -> dict[str, Any]:
    """Where a command's time goes, from the store's own records: the client's send to
    the inbox row's ``sent_at`` (the API node's checks before sending), ``sent_at`` to
    the holder's ``work.command`` event (noticing and taking it at a step boundary)."""
    import sqlalchemy as sa

    from engine.store import SqlStore
    from engine.store.schema import commands, events

    before: list[float] = []
    taken: list[float] = []
    async with SqlStore.open(store_url, create=False) as store, \
            store.engine.connect() as conn:
        for work_id, wall, _ in samples:
            row = (await conn.execute(
                sa.select(commands.c.number, commands.c.sent_at)
                .where(commands.c.work_id == work_id, commands.c.kind == "pause",
                       commands.c.sent_at >= wall - 0.001)
                .order_by(commands.c.number).limit(1))).first()
            if row is None:
                continue
            number, sent_at = int(row[0]), float(row[1])
            took = None
            for payload, at in (await conn.execute(
                    sa.select(events.c.payload, events.c.time).where(
                        events.c.work_id == work_id, events.c.type == "work.command"))):
                if json.loads(payload).get("number") == number:
                    took = float(at)
            before.append((sent_at - wall) * 1000)
            if took is not None:
                taken.append((took - sent_at) * 1000)
    return {"client_to_inbox": _percentiles(before),
            "inbox_to_taken": _percentiles(taken)}


def command_latency_postgres(procs: Processes, url: str, args: argparse.Namespace
                             ) -> dict[str, Any]:
    """Two API-only nodes and a worker process on one PostgreSQL: pause sent to A,
    followed on B, the work run by the worker."""
    api_a, url_a = _serve(procs, url, "--no-workers")  # the first migrates the database
    api_b, url_b = _serve(procs, url, "--no-workers")
    worker = _worker(procs, url, "cmd-worker", 4)
    try:
        return anyio.run(_pause_samples, url_a, url_b, args.samples, args.warmup,
                         args.seed, url)
    finally:
        procs.stop([api_a, api_b, worker])


def command_latency_sqlite(procs: Processes, url: str, args: argparse.Namespace
                           ) -> dict[str, Any]:
    """One ``stepsaga serve`` with its own worker node on a SQLite file: pause sent to it
    and followed on it."""
    server, served = _serve(procs, url, "--worker", "main=4")
    try:
        return anyio.run(_pause_samples, served, served, args.samples, args.warmup,
                         args.seed, url)
    finally:
        procs.stop([server])
