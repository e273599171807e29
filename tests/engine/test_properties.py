"""Property tests: random saga shapes against the compensation, replay and stepping rules.

Hypothesis draws a saga shape: a root saga whose stages are leaf stages or
nested sagas, parallels (with a random ``depends_on`` DAG and
``max_concurrency``) and small maps, at most three composites deep. Every
transaction logs ``("tx", path)``; the one drawn failure point (if any) raises a
non-retryable ``StageFailure``; every compensation logs ``("comp", path)``.

Properties: (1) exactly the stages whose transaction completed are compensated,
each once; (2) compensation runs in reverse causal order, and stepped one action
at a time in exactly reversed completion order; (3) replaying the events (all of
them, every prefix, one ``apply`` at a time) rebuilds the state; (4) stepping past
breakpoints, or pausing at stored ones and resuming, changes nothing the work does.

The tests are plain functions that call ``anyio.run``: hypothesis drives
synchronous tests, so each example gets its own event loop.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import anyio
import anyio.lowlevel
import tenacity
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import (
    Breakpoint,
    ManualClock,
    Map,
    Parallel,
    RecordedEvent,
    RetryPolicy,
    Runtime,
    Saga,
    Stage,
    StageFailure,
    StepReport,
    WorkResult,
    WorkState,
    apply,
    replay,
)

SAGA = "shape"
MAX_DEPTH = 3  # composites nested at most this deep, the root saga included
# attempts > 1 so that a retried non-retryable failure would show in the log
RETRY = RetryPolicy(attempts=3, wait=tenacity.wait_fixed(0))
ENDS = frozenset({"work.completed", "work.failed", "work.compensation_failed",
                  "work.cancelled"})
PROPERTY = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------ shapes


@dataclass(frozen=True)
class LeafShape:
    compensated: bool  # whether the stage has a compensation
    name: str = ""


@dataclass(frozen=True)
class SagaShape:
    children: tuple[Shape, ...]
    name: str = ""


@dataclass(frozen=True)
class ParallelShape:
    children: tuple[Shape, ...]
    depends_on: tuple[tuple[int, ...], ...]  # per branch: the indices of the branches it needs
    max_concurrency: int | None
    name: str = ""

    def needs(self, branch: str) -> set[str]:
        """Every branch that ``branch`` waits for, directly or through others."""
        names = [c.name for c in self.children]
        found: set[str] = set()
        todo = [names.index(branch)]
        while todo:
            for j in self.depends_on[todo.pop()]:
                if names[j] not in found:
                    found.add(names[j])
                    todo.append(j)
        return found


@dataclass(frozen=True)
class MapShape:
    child: Shape
    items: int
    max_concurrency: int | None
    name: str = ""


Shape: TypeAlias = LeafShape | SagaShape | ParallelShape | MapShape


def describe(shape: Shape) -> str:
    """A one-line picture of a shape, so shrunk examples read at a glance."""
    if isinstance(shape, LeafShape):
        return shape.name + ("+comp" if shape.compensated else "")
    if isinstance(shape, SagaShape):
        return f"saga {shape.name}[{', '.join(describe(c) for c in shape.children)}]"
    if isinstance(shape, ParallelShape):
        names = [c.name for c in shape.children]
        deps = {names[i]: [names[j] for j in d] for i, d in enumerate(shape.depends_on) if d}
        return (f"par {shape.name}(deps={deps}, max={shape.max_concurrency})"
                f"[{', '.join(describe(c) for c in shape.children)}]")
    return (f"map {shape.name}(items={shape.items}, max={shape.max_concurrency})"
            f"[{describe(shape.child)}]")


@dataclass(frozen=True, repr=False)
class Scenario:
    root: SagaShape
    failing: str | None  # the path of the one transaction that fails, if any
    yields: frozenset[str]  # paths whose user code awaits a checkpoint (other tasks run)

    def __repr__(self) -> str:
        return (f"Scenario({describe(self.root)}, failing={self.failing!r}, "
                f"yields={sorted(self.yields)})")


@dataclass(frozen=True)
class Leaf:
    path: str
    shape: LeafShape
    trail: tuple[tuple[str, Any], ...]  # (container path, key in it), root first


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def layout(root: SagaShape) -> tuple[list[Leaf], dict[str, Shape]]:
    """The concrete leaf paths of a shape (map items expanded), and its composites by path."""
    leaves: list[Leaf] = []
    containers: dict[str, Shape] = {}

    def walk(shape: Shape, path: str, trail: tuple[tuple[str, Any], ...]) -> None:
        if isinstance(shape, LeafShape):
            leaves.append(Leaf(path, shape, trail))
            return
        containers[path] = shape
        if isinstance(shape, SagaShape):
            for i, child in enumerate(shape.children):
                walk(child, join(path, child.name), (*trail, (path, i)))
        elif isinstance(shape, ParallelShape):
            for child in shape.children:
                walk(child, join(path, child.name), (*trail, (path, child.name)))
        else:
            for i in range(shape.items):
                walk(shape.child, f"{path}[{i}]/{shape.child.name}", (*trail, (path, i)))

    walk(root, "", ())
    return leaves, containers


def causally_before(a: Leaf, b: Leaf, containers: dict[str, Shape]) -> bool:
    """Whether ``b`` can only start once ``a`` completed, by the structure of the saga."""
    for (container, key_a), (_, key_b) in zip(a.trail, b.trail, strict=False):
        if key_a == key_b:
            continue
        shape = containers[container]
        if isinstance(shape, SagaShape):
            return bool(key_a < key_b)
        if isinstance(shape, ParallelShape):
            return key_a in shape.needs(key_b)
        return False  # the items of a map are independent
    return False


# ------------------------------------------------------------------ strategies

leaf_shapes = st.builds(LeafShape, compensated=st.booleans())


@st.composite
def parallel_shapes(draw: st.DrawFn, children: st.SearchStrategy[Shape]) -> ParallelShape:
    branches = draw(st.lists(children, min_size=1, max_size=5))
    n = len(branches)
    # a random topological order; each branch may need any branches before it in that order
    order = draw(st.permutations(range(n)))
    depends_on: list[tuple[int, ...]] = [() for _ in range(n)]
    for k in range(1, n):
        needs = draw(st.sets(st.sampled_from(order[:k])))
        depends_on[order[k]] = tuple(sorted(needs))
    return ParallelShape(tuple(branches), tuple(depends_on),
                         draw(st.none() | st.integers(1, n)))


def shapes(depth: int) -> st.SearchStrategy[Shape]:
    """Shapes of a stage ``depth`` composites down (the root saga is depth 1)."""
    if depth > MAX_DEPTH:
        return leaf_shapes
    inner = st.deferred(lambda: shapes(depth + 1))
    return st.one_of(
        leaf_shapes,
        st.lists(inner, min_size=1, max_size=5).map(lambda cs: SagaShape(tuple(cs))),
        parallel_shapes(inner),
        st.builds(MapShape, child=inner, items=st.integers(0, 3),
                  max_concurrency=st.none() | st.integers(1, 3)),
    )


def named(shape: Shape, counter: itertools.count[int]) -> Shape:
    """Give every stage a unique name: leaves ``s0, s1, ...``, composites ``c0, ...``."""
    if isinstance(shape, LeafShape):
        return dataclasses.replace(shape, name=f"s{next(counter)}")
    name = shape.name or f"c{next(counter)}"
    if isinstance(shape, MapShape):
        return dataclasses.replace(shape, name=name, child=named(shape.child, counter))
    children = tuple(named(c, counter) for c in shape.children)
    return dataclasses.replace(shape, name=name, children=children)


def uncompensated(shape: Shape, name: str) -> Shape:
    """``shape`` with the compensation of leaf ``name`` taken away."""
    if isinstance(shape, LeafShape):
        return dataclasses.replace(shape, compensated=False) if shape.name == name else shape
    if isinstance(shape, MapShape):
        return dataclasses.replace(shape, child=uncompensated(shape.child, name))
    return dataclasses.replace(shape, children=tuple(uncompensated(c, name)
                                                     for c in shape.children))


@st.composite
def scenarios(draw: st.DrawFn, *, yields: bool = True) -> Scenario:
    children = draw(st.lists(shapes(2), min_size=1, max_size=5))
    root = named(SagaShape(tuple(children), name=SAGA), itertools.count())
    assert isinstance(root, SagaShape)
    paths = [leaf.path for leaf in layout(root)[0]]
    # mostly a failing run: that is where compensation happens
    failing = draw(st.sampled_from([*paths, None]))
    if failing is not None and "[" not in failing:
        # the failing stage's own clean-up would add a compensation that is no rollback;
        # outside maps take it away. In a map the stage definition is shared by every
        # item, so there the tests account for the clean-up instead.
        shrunk = uncompensated(root, failing.rsplit("/", 1)[-1])
        assert isinstance(shrunk, SagaShape)
        root = shrunk
    chosen = draw(st.sets(st.sampled_from(paths))) if yields and paths else set()
    return Scenario(root, failing, frozenset(chosen))


EVENT_GLOBS = [
    "*", "stage.*", "stage.transaction.*", "stage.transaction.started",
    "stage.transaction.completed", "stage.transaction.failed", "stage.started",
    "stage.completed", "stage.failed", "stage.compensation.*", "stage.compensation.started",
    "stage.compensation.completed", "stage.condition.*", "work.*", "work.started",
    "work.compensating", "work.completed", "work.failed",
]
CONDITIONS = [None, None, "event.attempt >= 1", "state.phase == 'compensating'"]


@st.composite
def with_breakpoints(draw: st.DrawFn, base: st.SearchStrategy[Scenario],
                     most: int = 2) -> tuple[Scenario, list[Breakpoint]]:
    """A scenario and 1..``most`` breakpoints on its event types and stage paths."""
    scenario = draw(base)
    leaves, containers = layout(scenario.root)
    paths = ["*", *(leaf.path for leaf in leaves), *containers,
             *(f"{p}*" for p in containers if p)]
    count = draw(st.integers(1, most))
    bps = [Breakpoint(id=f"bp{i}", event=draw(st.sampled_from(EVENT_GLOBS)),
                      path=draw(st.sampled_from(paths)),
                      when=draw(st.sampled_from(["after", "before"])),
                      condition=draw(st.sampled_from(CONDITIONS)))
           for i in range(count)]
    return scenario, bps


# ------------------------------------------------------------------ running


class Log:
    """The user code of every stage: logs its calls per work, fails on cue."""

    def __init__(self, scenario: Scenario) -> None:
        self.failing = scenario.failing
        self.yields = scenario.yields
        self.calls: dict[str, list[tuple[str, str]]] = defaultdict(list)

    async def transaction(self, ctx: Any, value: Any) -> Any:
        self.calls[ctx.work_id].append(("tx", ctx.path))
        if ctx.path in self.yields:
            await anyio.lowlevel.checkpoint()
        if ctx.path == self.failing:
            raise StageFailure(f"{ctx.path} refused", retryable=False)
        return ctx.path

    async def compensation(self, ctx: Any, value: Any, output: Any, reason: Any) -> None:
        self.calls[ctx.work_id].append(("comp", ctx.path))
        if ctx.path in self.yields:
            await anyio.lowlevel.checkpoint()


def _items(n: int) -> Any:
    def items(ctx: Any, value: Any) -> list[int]:
        return list(range(n))

    return items


def definition(scenario: Scenario, log: Log) -> Saga:
    def build(shape: Shape) -> Any:
        if isinstance(shape, LeafShape):
            return Stage(name=shape.name, transaction=log.transaction,
                         compensation=log.compensation if shape.compensated else None,
                         retry=RETRY, compensation_retry=RETRY)
        if isinstance(shape, SagaShape):
            return Saga(name=shape.name, stages=[build(c) for c in shape.children])
        if isinstance(shape, ParallelShape):
            names = [c.name for c in shape.children]
            deps = {names[i]: [names[j] for j in d]
                    for i, d in enumerate(shape.depends_on) if d}
            return Parallel(name=shape.name, branches=[build(c) for c in shape.children],
                            depends_on=deps, max_concurrency=shape.max_concurrency)
        return Map(name=shape.name, stage=build(shape.child), items=_items(shape.items),
                   max_concurrency=shape.max_concurrency)

    saga = build(scenario.root)
    assert isinstance(saga, Saga)
    return saga


class Recorder:
    """The runtime's ``on_event``: wakes the test at pauses and ends; keeps live states."""

    def __init__(self, *, snapshots: bool = False) -> None:
        self.runtime: Runtime | None = None
        # per work: the live state by its seq, as seen whenever the runtime reports events
        self.snapshots: dict[str, dict[int, WorkState]] | None = (
            defaultdict(dict) if snapshots else None)
        self._gate: anyio.Event | None = None

    def __call__(self, recorded: RecordedEvent) -> None:
        if self.snapshots is not None:
            assert self.runtime is not None
            # events may be reported in batches, after the state took in the whole batch;
            # deep: the live state is changed in place by the events that follow
            live = self.runtime.state(recorded.work_id)
            self.snapshots[recorded.work_id][live.seq] = copy.deepcopy(live)
        if (recorded.type == "work.paused" or recorded.type in ENDS) and self._gate:
            self._gate.set()

    async def paused_or_ended(self) -> None:
        self._gate = anyio.Event()
        await self._gate.wait()


def runtime(scenario: Scenario, log: Log, recorder: Recorder) -> Runtime:
    rt = Runtime(sagas=[definition(scenario, log)], clock=ManualClock(autojump=True),
                 on_event=recorder)
    recorder.runtime = rt
    return rt


async def run_free(rt: Runtime, recorder: Recorder,
                   breakpoints: Sequence[Breakpoint] = ()) -> tuple[str, int]:
    """Run a work freely, resuming it each time a stored breakpoint pauses it."""
    wid = await rt.start(SAGA, None, breakpoints=breakpoints)
    resumes = 0
    with anyio.fail_after(10):
        for _ in range(5_000):
            state = rt.state(wid)
            if state.terminal:
                return wid, resumes
            if state.paused:
                await rt.resume(wid)
                resumes += 1
            else:
                # no await since the state was read: no pause can slip past unseen
                await recorder.paused_or_ended()
    raise AssertionError(f"work {wid} did not end after {resumes} resumes")


async def run_stepped(rt: Runtime, until: Sequence[Breakpoint] = (),
                      limit: int = 5_000) -> tuple[str, list[StepReport]]:
    """Start a work paused and ``mstep`` it to its end, past every breakpoint it stops at."""
    wid = await rt.start(SAGA, None, paused=True)
    reports: list[StepReport] = []
    with anyio.fail_after(10):
        for _ in range(limit):
            report = await rt.mstep(wid, until=until)
            reports.append(report)
            if report.reason == "finished":
                return wid, reports
            assert report.reason == "breakpoint", f"mstep stopped: {report.reason}"
    raise AssertionError(f"work {wid} did not end after {limit} msteps: "
                         f"{[(r.reason, r.when, r.pending) for r in reports[-3:]]}")


def completions(events: Sequence[RecordedEvent], mode: str) -> list[RecordedEvent]:
    """The ``stage.compensation.completed`` events of ``mode`` (rollback or cleanup).

    The mode is read from the completed event's payload when it carries one, else
    from the ``stage.compensation.started`` event that opened the call.
    """
    opened: dict[str, str] = {}
    found = []
    for e in events:
        if e.type == "stage.compensation.started":
            opened[e.path] = e.event.payload["mode"]
        elif e.type == "stage.compensation.completed":
            if e.event.payload.get("mode", opened.get(e.path)) == mode:
                found.append(e)
    return found


def keyed(events: Sequence[RecordedEvent]) -> list[tuple[str, str, int, dict[str, Any]]]:
    return [(e.type, e.path, e.event.attempt, dict(e.event.payload)) for e in events]


def anonymous(value: WorkState | WorkResult) -> Any:
    """``value`` without its work id, to compare two works of the same saga."""
    return dataclasses.replace(value, work_id="")


# ------------------------------------------------------------------ 1: what is compensated


@PROPERTY
@given(scenario=scenarios(), stepped=st.booleans())
def test_exactly_the_completed_stages_are_compensated_once(scenario: Scenario,
                                                           stepped: bool) -> None:
    anyio.run(_compensated_once, scenario, stepped)


async def _compensated_once(scenario: Scenario, stepped: bool) -> None:
    log, recorder = Log(scenario), Recorder()
    async with runtime(scenario, log, recorder) as rt:
        wid = (await run_stepped(rt))[0] if stepped else (await run_free(rt, recorder))[0]
        result = await rt.wait(wid)
        events = rt.events(wid)
    leaves, _ = layout(scenario.root)
    has_comp = {leaf.path: leaf.shape.compensated for leaf in leaves}
    calls = log.calls[wid]
    tx = Counter(path for kind, path in calls if kind == "tx")
    comps = Counter(path for kind, path in calls if kind == "comp")
    completed = {e.path for e in events if e.type == "stage.transaction.completed"}

    # nothing retries: the only failure is not retryable
    assert all(n == 1 for n in tx.values()), tx
    assert set(tx) - {scenario.failing} == completed
    if scenario.failing is None:
        assert result.status == "completed", result
        assert completed == set(has_comp)
        assert not comps
        assert not [e for e in events if e.type.startswith("stage.compensation.")]
        assert "work.compensating" not in {e.type for e in events}
        return

    assert result.status == "failed", result
    assert result.failure is not None and result.failure["path"] == scenario.failing
    assert scenario.failing not in completed
    expected = {path for path in completed if has_comp[path]}
    rollbacks = Counter(e.path for e in completions(events, "rollback"))
    assert set(rollbacks) == expected
    assert all(n == 1 for n in rollbacks.values()), rollbacks
    cleanups = [e.path for e in completions(events, "cleanup")]
    cleaned = [scenario.failing] if has_comp[scenario.failing] else []
    assert cleanups == cleaned
    assert comps == Counter(expected) + Counter(cleaned)
    assert sorted(result.compensated) == sorted(expected)


# ------------------------------------------------------------------ 2: in which order


# cheap, and the shapes that break it (a chain of dependencies) are rare: more examples
@settings(PROPERTY, max_examples=300)
@given(scenario=scenarios())
def test_compensation_reverses_causal_order(scenario: Scenario) -> None:
    anyio.run(_reverses_causal_order, scenario)


async def _reverses_causal_order(scenario: Scenario) -> None:
    log, recorder = Log(scenario), Recorder()
    async with runtime(scenario, log, recorder) as rt:
        wid, _ = await run_free(rt, recorder)
        events = rt.events(wid)
    started = {e.path: e.seq for e in events if e.type == "stage.compensation.started"
               and e.event.payload.get("mode") == "rollback"}
    ended = {e.path: e.seq for e in completions(events, "rollback")}
    leaves, containers = layout(scenario.root)
    undone = [leaf for leaf in leaves if leaf.path in ended]
    for a, b in itertools.permutations(undone, 2):
        if causally_before(a, b, containers):
            # b ran after a completed, so b is undone before a's undoing starts
            assert ended[b.path] < started[a.path], (
                f"{b.path} (after {a.path}) was compensated at seq {ended[b.path]}, "
                f"{a.path} started compensating at seq {started[a.path]}")


@PROPERTY
@given(scenario=scenarios())
def test_stepped_compensation_is_completion_order_reversed(scenario: Scenario) -> None:
    anyio.run(_stepped_reverse, scenario)


async def _stepped_reverse(scenario: Scenario) -> None:
    log, recorder = Log(scenario), Recorder()
    async with runtime(scenario, log, recorder) as rt:
        wid, _ = await run_stepped(rt)
        events = rt.events(wid)
    undone = [e.path for e in completions(events, "rollback")]
    done = [e.path for e in events
            if e.type == "stage.transaction.completed" and e.path in set(undone)]
    assert undone == done[::-1]


# ------------------------------------------------------------------ 3: replay


@PROPERTY
@given(case=with_breakpoints(scenarios()), pause=st.booleans())
def test_replay_rebuilds_every_state(case: tuple[Scenario, list[Breakpoint]],
                                     pause: bool) -> None:
    scenario, bps = case
    anyio.run(_replays, scenario, bps if pause else [])


async def _replays(scenario: Scenario, bps: list[Breakpoint]) -> None:
    log, recorder = Log(scenario), Recorder(snapshots=True)
    async with runtime(scenario, log, recorder) as rt:
        wid, _ = await run_free(rt, recorder, bps)
        events = rt.events(wid)
        final = rt.state(wid)
        prefixes = [rt.state_at(wid, k) for k in range(len(events) + 1)]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert replay(events) == final
    assert recorder.snapshots is not None
    live = recorder.snapshots[wid]
    assert live and max(live) == len(events)
    state = WorkState()
    assert prefixes[0] == state
    for k, recorded in enumerate(events, start=1):
        assert prefixes[k] == replay(events[:k])
        if k in live:
            assert live[k] == prefixes[k], f"live state differs from replay after seq {k}"
        # deep, since WorkState.copy shares nested values, which apply must not change either
        before = copy.deepcopy(state)
        after = apply(state, recorded)
        assert state == before, f"apply changed its input at seq {k} ({recorded.type})"
        assert after is not state
        assert after == prefixes[k]
        state = after


# ------------------------------------------------------------------ 4: breakpoints


@PROPERTY
@given(case=with_breakpoints(scenarios(), most=1))
def test_mstep_past_breakpoints_records_the_same_events(
        case: tuple[Scenario, list[Breakpoint]]) -> None:
    anyio.run(_mstep_same_events, *case)


async def _mstep_same_events(scenario: Scenario, bps: list[Breakpoint]) -> None:
    log, recorder = Log(scenario), Recorder()
    async with runtime(scenario, log, recorder) as rt:
        plain, _ = await run_stepped(rt)
        reference = rt.events(plain)
        wid, reports = await run_stepped(rt, bps, limit=2 * len(reference) + 5)
        assert keyed(rt.events(wid)) == keyed(reference)
        assert anonymous(rt.state(wid)) == anonymous(rt.state(plain))
        assert anonymous(await rt.wait(wid)) == anonymous(await rt.wait(plain))
    assert log.calls[wid] == log.calls[plain]
    # every stop is at an event the breakpoint matches, in the state of that moment
    (bp,) = bps
    seen = 1  # work.created is recorded by start, not by a step
    for report in reports[:-1]:
        seen += len(report.events)
        assert report.breakpoint is not None and report.breakpoint.id == bp.id
        assert report.when == bp.when
        if bp.when == "before":
            assert report.pending is not None
            assert bp.matches("before", report.pending, replay(reference[:seen]))
        else:
            assert report.events, "an 'after' stop without an event"
            assert bp.matches("after", report.events[-1].event, replay(reference[:seen]))


@PROPERTY
@given(case=with_breakpoints(scenarios(yields=False)))
def test_stored_breakpoints_do_not_change_a_free_run(
        case: tuple[Scenario, list[Breakpoint]]) -> None:
    # No user code awaits here: with yields, pausing changes which concurrent calls
    # finish before a failure is seen, and so legitimately which stages ran at all.
    anyio.run(_free_same_events, *case)


def _steps(events: Sequence[RecordedEvent]) -> Counter[tuple[str, str]]:
    return Counter((e.type, e.path) for e in events
                   if e.type not in ("work.paused", "work.resumed"))


async def _free_same_events(scenario: Scenario, bps: list[Breakpoint]) -> None:
    log, recorder = Log(scenario), Recorder()
    async with runtime(scenario, log, recorder) as rt:
        plain, _ = await run_free(rt, recorder)
        wid, resumes = await run_free(rt, recorder, bps)
        events, reference = rt.events(wid), rt.events(plain)
        result, expected = await rt.wait(wid), await rt.wait(plain)
        state, plain_state = rt.state(wid), rt.state(plain)
    assert _steps(events) == _steps(reference)
    pauses = [e for e in events if e.type == "work.paused"]
    assert len(pauses) == resumes == sum(e.type == "work.resumed" for e in events)
    assert all(e.event.payload["reason"] == "breakpoint" for e in pauses)
    # independent compensations run concurrently: the order they end in is not fixed;
    # the stream with breakpoints is longer by its pauses and resumes
    assert result.events == expected.events + 2 * resumes
    assert dataclasses.replace(anonymous(result), compensated=sorted(result.compensated),
                               events=0) == \
        dataclasses.replace(anonymous(expected), compensated=sorted(expected.compensated),
                            events=0)
    assert state.status == plain_state.status and state.output == plain_state.output
    assert {p: (s.status, s.output) for p, s in state.stages.items()} == {
        p: (s.status, s.output) for p, s in plain_state.stages.items()}
    assert Counter(log.calls[wid]) == Counter(log.calls[plain])
