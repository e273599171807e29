"""The in-memory cost of the saga model, per stage and per event, against a hand-written saga.

Three scenarios, each run through :class:`engine.Runtime` (in memory, ``SystemClock``)
and, in the same run, through a hand-written asyncio baseline that awaits the very
same transaction and compensation functions and appends a small ``(kind, name,
time.time())`` record to a list before and after each call:

- ``saga_5_stages``: five stages in a row, each adding one to its input;
- ``map``: one Map over a list of ``--map-items`` ints, the child adding one to
  its item, with ``max_concurrency=--map-concurrency``;
- ``saga_5_stages_failing``: the fifth stage raises ``StageFailure(retryable=False)``,
  the first four are compensated in reverse order.

A measurement runs ``--works`` works one after the other (``start`` then ``wait``)
in one fresh Runtime, timed with ``time.perf_counter``; each figure is the median
of ``--repeats`` measurements, engine and baseline interleaved, after a warm-up.
``overhead_ratio`` is the 5-stage saga's time per stage over the baseline's.

By default the user functions never suspend, so the baseline is little more than
function calls and the ratio shows the model's whole cost; ``--checkpoint`` makes
every call yield to the event loop once, as real I/O would, in both.

Run from the repository root::

    python benchmarks/model_overhead.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

try:
    from engine import Map, Runtime, Saga, Stage, StageFailure, SystemClock
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from engine import Map, Runtime, Saga, Stage, StageFailure, SystemClock

STAGES = 5
GOAL = "overhead_ratio <= 5"
GOAL_RATIO = 5.0

# ------------------------------------------------------------------ user code
# Shared by the engine's sagas and the baselines: both await exactly these.

Transaction = Callable[[Any, Any], Awaitable[Any]]
Compensation = Callable[[Any, Any, Any, Any], Awaitable[Any]]
Step = tuple[str, Transaction, Compensation | None]


class UserCode:
    """The transactions and the compensation; with ``checkpoint`` each one yields to the
    event loop once (``await asyncio.sleep(0)``), as a call doing real I/O would."""

    def __init__(self, checkpoint: bool) -> None:
        if checkpoint:
            async def add_one(ctx: Any, value: int) -> int:
                await asyncio.sleep(0)
                return value + 1

            async def undo(ctx: Any, inp: Any, output: Any, reason: Any) -> None:
                await asyncio.sleep(0)

            async def decline(ctx: Any, value: int) -> int:
                await asyncio.sleep(0)
                raise StageFailure("the last stage fails", retryable=False)
        else:
            async def add_one(ctx: Any, value: int) -> int:
                return value + 1

            async def undo(ctx: Any, inp: Any, output: Any, reason: Any) -> None:
                return None

            async def decline(ctx: Any, value: int) -> int:
                raise StageFailure("the last stage fails", retryable=False)

        self.add_one: Transaction = add_one
        self.five: list[Step] = [(f"s{i}", add_one, undo) for i in range(STAGES)]
        self.failing: list[Step] = [*self.five[:-1], (f"s{STAGES - 1}", decline, None)]


def engine_saga(name: str, steps: Sequence[Step]) -> Saga:
    return Saga(name=name, stages=[Stage(name=n, transaction=t, compensation=c)
                                   for n, t, c in steps])


def map_saga(child: Transaction, concurrency: int | None) -> Saga:
    return Saga(name="map", stages=[Map(name="m", stage=Stage(name="inc", transaction=child),
                                        max_concurrency=concurrency)])


# ------------------------------------------------------------------ baselines


async def baseline_saga(steps: Sequence[Step], value: Any) -> tuple[str, Any, list[Any]]:
    """A saga by hand: the steps in a loop, a record before and after each call,
    the completed steps' compensations in reverse order when one fails."""
    log: list[Any] = []
    done: list[tuple[str, Compensation | None, Any, Any]] = []
    for name, transaction, compensation in steps:
        log.append(("started", name, time.time()))
        try:
            output = await transaction(None, value)
        except Exception as exc:
            log.append(("failed", name, time.time()))
            for cname, ccomp, cinput, coutput in reversed(done):
                if ccomp is None:
                    continue
                log.append(("compensation.started", cname, time.time()))
                await ccomp(None, cinput, coutput, exc)
                log.append(("compensation.completed", cname, time.time()))
            return "failed", None, log
        log.append(("completed", name, time.time()))
        done.append((name, compensation, value, output))
        value = output
    return "completed", value, log


async def _baseline_item(child: Transaction, index: int, item: int, out: list[Any],
                         log: list[Any]) -> None:
    log.append(("started", index, time.time()))
    out[index] = await child(None, item)
    log.append(("completed", index, time.time()))


async def baseline_map_sequential(child: Transaction,
                                  items: list[int]) -> tuple[str, Any, list[Any]]:
    log: list[Any] = []
    out: list[Any] = [None] * len(items)
    for i, item in enumerate(items):
        await _baseline_item(child, i, item, out, log)
    return "completed", out, log


async def baseline_map_concurrent(child: Transaction, items: list[int],
                                  concurrency: int | None) -> tuple[str, Any, list[Any]]:
    log: list[Any] = []
    out: list[Any] = [None] * len(items)
    gate = asyncio.Semaphore(concurrency or len(items) or 1)

    async def one(i: int, item: int) -> None:
        async with gate:
            await _baseline_item(child, i, item, out, log)

    async with asyncio.TaskGroup() as tg:
        for i, item in enumerate(items):
            tg.create_task(one(i, item))
    return "completed", out, log


# ------------------------------------------------------------------ measuring


class _Collector:
    """``gc.collect()`` on entry; with ``off``, the collector is disabled until exit."""

    def __init__(self, off: bool) -> None:
        self.off = off

    def __enter__(self) -> None:
        gc.collect()
        if self.off:
            gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.off:
            gc.enable()


class Scenario:
    """One saga run through the engine and through a baseline with the same input."""

    def __init__(self, key: str, saga: Saga, value: Any, expect: tuple[str, Any],
                 baselines: dict[str, Callable[[], Awaitable[tuple[str, Any, list[Any]]]]],
                 works: int, units: int, unit: str, gc_off: bool = False) -> None:
        self.key = key
        self.saga = saga
        self.value = value
        self.expect = expect
        self.baselines = baselines
        self.works = works
        self.units = units  # stages (or map items) per work
        self.unit = unit
        self.engine_times: list[float] = []
        self.baseline_times: dict[str, list[float]] = {k: [] for k in baselines}
        self.events: list[str] = []
        self.records: dict[str, int] = {}
        self.collector = _Collector(gc_off)

    async def run_engine(self, works: int) -> float:
        async with Runtime(sagas=[self.saga], clock=SystemClock()) as rt:
            wid = ""
            with self.collector:
                start = time.perf_counter()
                for _ in range(works):
                    wid = await rt.start(self.saga.name, self.value)
                    result = await rt.wait(wid)
                    if result.status != self.expect[0] or result.output != self.expect[1]:
                        raise AssertionError(
                            f"{self.key}: engine ended {result.status} with "
                            f"{result.output!r:.80}, expected {self.expect}")
                elapsed = time.perf_counter() - start
            events = [e.type for e in rt.events(wid)]
        if self.events and events != self.events:
            raise AssertionError(f"{self.key}: works recorded different event streams")
        self.events = events
        return elapsed

    async def run_baseline(self, kind: str, works: int) -> float:
        body = self.baselines[kind]
        log: list[Any] = []
        with self.collector:
            start = time.perf_counter()
            for _ in range(works):
                status, output, log = await body()
                if status != self.expect[0] or output != self.expect[1]:
                    raise AssertionError(f"{self.key}: baseline {kind} ended {status} "
                                         f"with {output!r:.80}, expected {self.expect}")
            elapsed = time.perf_counter() - start
        self.records[kind] = len(log)
        return elapsed

    async def warm_up(self) -> None:
        n = max(1, min(self.works, 20))
        await self.run_engine(n)
        for kind in self.baselines:
            await self.run_baseline(kind, n)
        self.events = []

    async def measure(self) -> None:
        self.engine_times.append(await self.run_engine(self.works))
        for kind in self.baselines:
            self.baseline_times[kind].append(await self.run_baseline(kind, self.works))

    def ratio(self, kind: str = "main") -> float:
        """Engine time over baseline time (per work, hence per stage or item too)."""
        return statistics.median(self.engine_times) / statistics.median(self.baseline_times[kind])

    def report(self) -> dict[str, Any]:
        per_unit = f"per_{self.unit}_us"
        eng = statistics.median(self.engine_times)
        n_events = len(self.events)
        engine: dict[str, Any] = {
            "median_s": round(eng, 6),
            "per_work_us": round(eng / self.works * 1e6, 2),
            per_unit: round(eng / (self.works * self.units) * 1e6, 3),
            "per_event_us": round(eng / (self.works * n_events) * 1e6, 3),
            "works_per_s": round(self.works / eng, 1),
            "events_per_work": n_events,
            "events_per_" + self.unit: round(n_events / self.units, 3),
            "event_types": dict(Counter(self.events)),
            "all_s": [round(t, 6) for t in self.engine_times],
        }
        out: dict[str, Any] = {"works_per_measurement": self.works,
                               f"{self.unit}s_per_work": self.units, "engine": engine}
        for kind, times in self.baseline_times.items():
            base = statistics.median(times)
            name = "baseline" if kind == "main" else f"baseline_{kind}"
            out[name] = {
                "median_s": round(base, 6),
                "per_work_us": round(base / self.works * 1e6, 3),
                per_unit: round(base / (self.works * self.units) * 1e6, 4),
                "records_per_work": self.records[kind],
                "works_per_s": round(self.works / base, 1),
                "all_s": [round(t, 6) for t in times],
            }
            ratio_key = "ratio" if kind == "main" else f"ratio_vs_{kind}"
            out[ratio_key] = round(self.ratio(kind), 2)
        return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats and Map works (a few seconds)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="measurements per scenario; the median is reported "
                             "(default 15, quick 5)")
    parser.add_argument("--works", type=int, default=500,
                        help="sagas run one after the other per measurement, all kept by the "
                             "Runtime (more works: more garbage-collector work per work)")
    parser.add_argument("--map-items", type=int, default=1000, help="items of the Map")
    parser.add_argument("--map-concurrency", type=int, default=10,
                        help="max_concurrency of the Map and of the concurrent baseline "
                             "(0: unbounded)")
    parser.add_argument("--map-works", type=int, default=None,
                        help="Map works per measurement (default 3, quick 1)")
    parser.add_argument("--checkpoint", action="store_true",
                        help="transactions and compensations yield to the event loop once "
                             "(await asyncio.sleep(0)), in the engine and the baselines alike")
    parser.add_argument("--no-gc", action="store_true",
                        help="disable the cyclic garbage collector while measuring")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 5 if args.quick else 15
    if args.map_works is None:
        args.map_works = 1 if args.quick else 3
    for knob in ("repeats", "works", "map_items", "map_works"):
        if getattr(args, knob) < 1:
            parser.error(f"--{knob.replace('_', '-')} must be >= 1")
    if args.map_concurrency < 0:
        parser.error("--map-concurrency must be >= 0")
    return args


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    code = UserCode(args.checkpoint)
    five, failing, child = code.five, code.failing, code.add_one
    items = list(range(args.map_items))
    concurrency = args.map_concurrency or None
    return [
        Scenario("saga_5_stages", engine_saga("five", five), 0, ("completed", STAGES),
                 {"main": lambda: baseline_saga(five, 0)}, args.works, STAGES, "stage",
                 args.no_gc),
        Scenario("map", map_saga(child, concurrency), items,
                 ("completed", [i + 1 for i in items]),
                 {"main": lambda: baseline_map_concurrent(child, items, concurrency),
                  "sequential": lambda: baseline_map_sequential(child, items)},
                 args.map_works, len(items), "item", args.no_gc),
        Scenario("saga_5_stages_failing", engine_saga("failing", failing), 0,
                 ("failed", None), {"main": lambda: baseline_saga(failing, 0)},
                 args.works, STAGES, "stage", args.no_gc),
    ]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    runs = scenarios(args)
    for scenario in runs:
        await scenario.warm_up()
    for _ in range(args.repeats):
        for scenario in runs:
            await scenario.measure()
    results = {s.key: s.report() for s in runs}
    ratio = runs[0].ratio()  # saga_5_stages: engine per stage over baseline per stage
    results["map"]["baseline_mode"] = (
        f"asyncio tasks, one per item, gated by asyncio.Semaphore({args.map_concurrency or 'n'})"
        " (same concurrency as the Map); baseline_sequential awaits the items in a loop")
    results["saga_5_stages_failing"]["note"] = (
        "per_stage_us divides by the 5 stages; each work runs 5 transactions and 4 "
        "compensations; the baseline records started/completed for compensations too")
    return {
        "benchmark": "model_overhead",
        "goal": GOAL,
        "overhead_ratio": round(ratio, 2),
        "goal_met": ratio <= GOAL_RATIO,
        "params": {"quick": args.quick, "repeats": args.repeats, "works": args.works,
                   "map_items": args.map_items, "map_concurrency": args.map_concurrency,
                   "map_works": args.map_works, "checkpoint": args.checkpoint,
                   "gc": not args.no_gc, "stages": STAGES},
        "method": ("per measurement: N works started and awaited one after the other in a fresh "
                   "in-memory Runtime (SystemClock), timed with time.perf_counter; medians of "
                   "the repeats, engine and baselines interleaved, after a warm-up; "
                   "gc.collect() before each measurement"),
        "baseline": ("hand-written asyncio saga awaiting the same async functions, appending a "
                     "(kind, name, time.time()) tuple to a list before and after each call, "
                     "compensating in reverse on failure; with checkpoint=false the user "
                     "functions never suspend, so the baseline is close to bare function calls"),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "backend": "asyncio (anyio.run)",
        "scenarios": results,
        "elapsed_s": round(time.perf_counter() - started, 2),
    }


if __name__ == "__main__":
    arguments = parse_args()
    print(json.dumps(anyio.run(main, arguments, backend="asyncio"), indent=2))
