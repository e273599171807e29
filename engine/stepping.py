"""``decide``: given a saga and a work's state, what may happen next.

``decide(plan, state)`` is pure. It returns the actions that are possible now,
preferred first; a runner executes one (``step``) or all of them concurrently,
and records each result as an event that ``apply`` folds into the state:

- :class:`Emit`: record this event (no user code runs), not before ``not_before``;
- :class:`Call`: run user code (a transaction, guard, condition or compensation)
  whose started event is already recorded; its result becomes the next event;
- :class:`ScheduleRetry`: pick a backoff delay (random jitter) and record it.

An empty list means the work is finished, or waits for something from outside
(a signal).
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from . import events as ev
from .context import engine_failure, json_problem
from .definitions import MISSING, Branch, Loop, Map, Parallel, Saga, Sleep, Stage, Wait
from .errors import OutputError
from .events import Event
from .plan import Plan
from .state import StageState, WorkState, item_index, join_path

__all__ = ["Action", "Call", "Emit", "ScheduleRetry", "decide", "open_call"]


@dataclass(frozen=True, slots=True)
class Emit:
    event: Event
    not_before: float | None = None


@dataclass(frozen=True, slots=True)
class Call:
    kind: str  # transaction, guard, condition, compensation
    path: str
    attempt: int
    final: bool = False  # a transaction whose success completes the stage (no post-guards)


@dataclass(frozen=True, slots=True)
class ScheduleRetry:
    path: str
    what: str  # transaction or compensation
    attempt: int  # the attempt that failed
    budgets: tuple[str, ...] = ()  # the retry budgets it draws on, innermost first


Action = Emit | Call | ScheduleRetry


def _emit(kind: str, path: str, attempt: int = 0, payload: dict[str, Any] | None = None,
          not_before: float | None = None) -> Emit:
    return Emit(Event(type=kind, path=path, attempt=attempt, payload=payload or {}), not_before)


def _error(message: str, type_: str = "StageError", retryable: bool = False) -> dict[str, Any]:
    return {"type": type_, "message": message, "retryable": retryable}


def open_call(plan: Plan, state: WorkState, path: str) -> Call | None:
    """The call ``decide`` would return for a user call opened at ``path`` (or None)."""
    st = state.stages.get(path)
    if st is None or st.call is None:
        return None
    if st.call == "compensation":
        return Call("compensation", path, st.comp_attempt)
    if st.call == "condition":
        return Call("condition", path, st.attempt)
    return Call(st.call, path, st.attempt, final=not plan.info(path).post_guards)


def decide(plan: Plan, state: WorkState, busy: Container[str] = ()) -> list[Action]:
    """The actions possible now for this work, the preferred one first.

    ``busy`` holds the stage paths whose user call a runner is executing already;
    their calls are left out.
    """
    status = state.status
    if status == "pending":
        return [_emit(ev.WORK_STARTED, "")]
    if status != "running":
        return []
    if state.phase == "forward":
        return _forward(plan, state, busy, "", plan.saga, state.input)
    return _compensating(plan, state, busy)


def _root_failure(state: WorkState) -> dict[str, Any]:
    # the first stage that failed for good, deepest first: that is the original reason
    failed = [s for s in state.stages.values() if s.status == "failed" and s.path]
    failed.sort(key=lambda s: (s.order, -s.path.count("/")))
    origin = failed[0] if failed else state.stages[""]
    error = origin.error or _error("the saga failed")
    return {"path": origin.path, "error": error}


# ----------------------------------------------------------------- forward


def _forward(plan: Plan, state: WorkState, busy: Container[str],
             path: str, node: Any, inp: Any) -> list[Action]:
    st = state.stages.get(path)
    if st is not None and st.status != "running":
        return []
    if isinstance(node, Stage):
        return _leaf(plan, state, busy, path, node, st, inp)
    if st is None:
        if path in state.input_overrides:
            inp = state.input_overrides[path]
        if isinstance(node, Wait):
            return [_emit(ev.WAIT_STARTED, path, payload={
                "input": inp, "signal": node.signal, "timeout": node.timeout})]
        if isinstance(node, Sleep):
            return [_emit(ev.SLEEP_STARTED, path, payload={"input": inp, "seconds": node.seconds})]
        return [_emit(ev.STAGE_STARTED, path, payload={"input": inp})]
    if st.call is not None:
        return [] if path in busy else [Call("condition", path, st.attempt)]
    if isinstance(node, Saga):
        return _saga(plan, state, busy, path, node, st)
    if isinstance(node, Parallel):
        return _parallel(plan, state, busy, path, node, st)
    if isinstance(node, Map):
        return _map(plan, state, busy, path, node, st)
    if isinstance(node, Loop):
        return _loop(plan, state, busy, path, node, st)
    if isinstance(node, Branch):
        return _branch(plan, state, busy, path, node, st)
    if isinstance(node, Wait):
        return _wait(state, path, node, st)
    if isinstance(node, Sleep):
        return [_emit(ev.STAGE_COMPLETED, path, payload={"output": st.input},
                      not_before=st.deadline)]
    raise TypeError(f"cannot run stage {path!r} of type {type(node).__name__}")


def _fail_with_child(path: str, state: WorkState, child: str) -> Emit:
    cst = state.stages[child]
    return _emit(ev.STAGE_FAILED, path, payload={"error": cst.error, "child": child})


def _saga(plan: Plan, state: WorkState, busy: Container[str],
             path: str, node: Saga, st: StageState) -> list[Action]:
    # the root saga's end is the work's end: it is recorded as such, not as a stage event
    if st.failed_child is not None:
        if not path:
            return [_emit(ev.WORK_COMPENSATING, "", payload={"failure": _root_failure(state)})]
        return [_fail_with_child(path, state, st.failed_child)]
    k = st.completed_children
    children = node.stages
    if k == len(children):
        last = state.stages[join_path(path, children[-1].name)]
        kind = ev.STAGE_COMPLETED if path else ev.WORK_COMPLETED
        return [_emit(kind, path, payload={"output": last.output})]
    child = children[k]
    cpath = join_path(path, child.name)
    if k == 0:
        inp = st.input
    else:
        inp = state.stages[join_path(path, children[k - 1].name)].output
    return _forward(plan, state, busy, cpath, child, inp)


def _parallel(plan: Plan, state: WorkState, busy: Container[str], path: str, node: Parallel,
              st: StageState) -> list[Action]:
    if st.failed_child is not None:
        return [_fail_with_child(path, state, st.failed_child)]
    stages = state.stages
    if st.completed_children == len(node.branches):
        out = {b.name: stages[join_path(path, b.name)].output for b in node.branches}
        return [_emit(ev.STAGE_COMPLETED, path, payload={"output": out})]
    # branches under way first, so a failure is recorded before anything new starts
    acts: list[Action] = []
    for bpath in st.running:
        if bpath not in busy:
            branch = node.branches[_branch_index(node, bpath)]
            acts.extend(_forward(plan, state, busy, bpath, branch, stages[bpath].input))
    slots = (node.max_concurrency or len(node.branches)) - len(st.running)
    for branch in node.branches:
        if slots <= 0:
            break
        bpath = join_path(path, branch.name)
        if bpath in stages:
            continue
        needs = node.depends_on.get(branch.name, ())
        if needs:
            done = [stages.get(join_path(path, n)) for n in needs]
            if not all(d is not None and d.status == "completed" for d in done):
                continue
            inp: Any = {n: d.output for n, d in zip(needs, done, strict=True) if d}
        else:
            inp = st.input
        slots -= 1
        acts.extend(_forward(plan, state, busy, bpath, branch, inp))
    return acts


def _branch_index(node: Parallel, bpath: str) -> int:
    name = bpath.rsplit("/", 1)[-1]
    for i, branch in enumerate(node.branches):
        if branch.name == name:
            return i
    raise KeyError(bpath)


def _map(plan: Plan, state: WorkState, busy: Container[str],
             path: str, node: Map, st: StageState) -> list[Action]:
    if st.error is not None:
        return [_emit(ev.STAGE_FAILED, path, payload={"error": st.error})]
    if node.items is not None:
        if st.items is None:
            return [_emit(ev.CONDITION_STARTED, path, payload={"what": "items"})]
        items = st.items
    else:
        items = st.input
        if not isinstance(items, list):
            return [_emit(ev.STAGE_FAILED, path, payload={"error": _error(
                f"map {path!r} expected a list as its input, got {type(items).__name__}")})]
    if st.failed_child is not None:
        return [_fail_with_child(path, state, st.failed_child)]
    child = node.stage
    n = len(items)
    if st.completed_children == n:
        out = [state.stages[join_path(path, child.name, i)].output for i in range(n)]
        return [_emit(ev.STAGE_COMPLETED, path, payload={"output": out})]
    acts: list[Action] = []
    for cpath in st.running:
        if cpath not in busy:
            acts.extend(_forward(plan, state, busy, cpath, child, items[item_index(cpath)]))
    limit = node.max_concurrency or n
    nxt = st.started_children
    while nxt < n and len(st.running) + (nxt - st.started_children) < limit:
        cpath = join_path(path, child.name, nxt)
        acts.extend(_forward(plan, state, busy, cpath, child, items[nxt]))
        nxt += 1
    return acts


def _loop(plan: Plan, state: WorkState, busy: Container[str],
             path: str, node: Loop, st: StageState) -> list[Action]:
    if st.error is not None:
        return [_emit(ev.STAGE_FAILED, path, payload={"error": st.error})]
    body = node.body
    if st.started_children == 0:
        return _forward(plan, state, busy, join_path(path, body.name, 0), body, st.input)
    cur = st.started_children - 1
    bpath = join_path(path, body.name, cur)
    bst = state.stages[bpath]
    if bst.status == "running":
        return _forward(plan, state, busy, bpath, body, bst.input)
    if bst.status == "failed":
        return [_fail_with_child(path, state, bpath)]
    if st.checked <= cur:
        return [_emit(ev.CONDITION_STARTED, path, payload={"what": "until", "iteration": cur})]
    if st.until:
        return [_emit(ev.STAGE_COMPLETED, path, payload={"output": bst.output})]
    if cur + 1 >= (node.max_iterations or 0):
        if node.on_max == "complete":
            return [_emit(ev.STAGE_COMPLETED, path, payload={"output": bst.output})]
        return [_emit(ev.STAGE_FAILED, path, payload={"error": _error(
            f"loop {path!r} reached its maximum of {node.max_iterations} iterations "
            "before its condition held")})]
    return _forward(plan, state, busy, join_path(path, body.name, cur + 1), body, bst.output)


def _branch(plan: Plan, state: WorkState, busy: Container[str], path: str, node: Branch,
            st: StageState) -> list[Action]:
    if st.error is not None:
        return [_emit(ev.STAGE_FAILED, path, payload={"error": st.error})]
    if st.choice is None:
        return [_emit(ev.CONDITION_STARTED, path, payload={"what": "choose"})]
    case = node.case(st.choice) if isinstance(st.choice, str) else None
    if case is None and node.default is not None:
        case = node.case(node.default)
    if case is None:
        return [_emit(ev.STAGE_FAILED, path, payload={"error": _error(
            f"branch {path!r} chose {st.choice!r}, which is not one of its cases "
            f"{[c.name for c in node.cases]} and it has no default")})]
    cpath = join_path(path, case.name)
    cst = state.stages.get(cpath)
    if cst is not None and cst.status == "completed":
        return [_emit(ev.STAGE_COMPLETED, path, payload={"output": cst.output})]
    if cst is not None and cst.status == "failed":
        return [_fail_with_child(path, state, cpath)]
    return _forward(plan, state, busy, cpath, case, st.input)


def _wait(state: WorkState, path: str, node: Wait, st: StageState) -> list[Action]:
    if st.timed_out:
        if node.timeout_output is not MISSING:
            return [_emit(ev.STAGE_COMPLETED, path, payload={"output": node.timeout_output})]
        return [_emit(ev.STAGE_FAILED, path, payload={"error": st.error})]
    for signal in state.signals:
        if signal["name"] == node.signal:
            return [_emit(ev.STAGE_COMPLETED, path, payload={
                "output": signal["payload"], "signal_seq": signal["seq"]})]
    if st.deadline is not None:
        return [_emit(ev.WAIT_TIMED_OUT, path, payload={"error": _error(
            f"wait {path!r} timed out after {node.timeout}s without signal {node.signal!r}",
            "WaitTimeout")}, not_before=st.deadline)]
    return []


def _leaf(plan: Plan, state: WorkState, busy: Container[str], path: str, node: Stage,
          st: StageState | None, inp: Any) -> list[Action]:
    info = plan.info(path)
    if st is None:
        if path in state.input_overrides:
            inp = state.input_overrides[path]
        if info.pre_guards:
            return [_emit(ev.GUARD_STARTED, path, 1, {
                "input": inp, "when": "pre", "guard": 0, "name": info.pre_guards[0].name})]
        return [_emit(ev.TRANSACTION_STARTED, path, 1, {"input": inp})]
    if st.call is not None:
        if path in busy:
            return []
        opened = open_call(plan, state, path)  # a compensation's own attempt, not the tx's
        assert opened is not None
        return [opened]
    if st.error is None and not st.vetoed:
        # between guards, or after the transaction with post-guards to run
        if not st.done:
            nxt = st.guard + 1
            if st.guard_when == "pre" and nxt < len(info.pre_guards):
                return [_emit(ev.GUARD_STARTED, path, st.attempt, {
                    "when": "pre", "guard": nxt, "name": info.pre_guards[nxt].name})]
            return [_emit(ev.TRANSACTION_STARTED, path, max(st.attempt, 1), {"input": st.input})]
        nxt = st.guard + 1 if st.guard_when == "post" else 0
        if nxt < len(info.post_guards):
            return [_emit(ev.GUARD_STARTED, path, st.attempt, {
                "when": "post", "guard": nxt, "name": info.post_guards[nxt].name})]
        return [_emit(ev.STAGE_COMPLETED, path, st.attempt, {"output": st.output})]
    return _leaf_failure(plan, state, path, node, st)


def _retry_allowed(plan: Plan, state: WorkState, path: str, node: Stage,
                   st: StageState) -> tuple[bool, tuple[str, ...]]:
    if state.aborted or st.attempt >= node.retry.attempts:
        return False, ()
    budgets = plan.info(path).budgets
    used = state.retries_used
    for budget, limit in budgets:  # innermost first: the first one exhausted stops it
        if used.get(budget, 0) >= limit:
            return False, ()
    return True, tuple(budget for budget, _ in budgets)


def _leaf_failure(plan: Plan, state: WorkState, path: str, node: Stage,
                  st: StageState) -> list[Action]:
    # A failed attempt: the stage's compensation (if any) cleans up first and says what
    # next: finish (then the retry policy decides), retry, abort, or forward.
    error = st.error or _error("stage failed")
    if st.comp_mode == "cleanup" and st.comp_error is not None:
        return _compensation_retry(state, path, node, st)
    if st.not_before is not None:  # a retry is scheduled
        return [_emit(ev.TRANSACTION_STARTED, path, st.attempt + 1, {"input": st.input},
                      not_before=st.not_before)]
    if node.compensation is not None and (st.comp_mode != "cleanup" or st.comp_outcome is None):
        return [_emit(ev.COMPENSATION_STARTED, path, 1, {"mode": "cleanup"})]
    outcome = st.comp_outcome
    if outcome == "forward":
        return [_emit(ev.STAGE_COMPLETED, path, st.attempt,
                      {"output": st.comp_output, "forward": True})]
    if outcome == "retry" or (outcome != "abort" and error.get("retryable") and not st.vetoed):
        allowed, budgets = _retry_allowed(plan, state, path, node, st)
        if allowed:
            return [ScheduleRetry(path, "transaction", st.attempt, budgets)]
    if node.fallback is not MISSING and not state.aborted:
        problem = json_problem(node.fallback)  # checked when defined; a list may change
        if problem is not None:
            return [_emit(ev.STAGE_FAILED, path, st.attempt, {"error": engine_failure(
                OutputError(f"fallback of stage {path!r} is not JSON-serialisable: "
                            f"{problem}"))})]
        return [_emit(ev.STAGE_COMPLETED, path, st.attempt,
                      {"output": node.fallback, "fallback": True})]
    return [_emit(ev.STAGE_FAILED, path, st.attempt, {"error": error})]


def _compensation_retry(state: WorkState, path: str, node: Stage,
                        st: StageState) -> list[Action]:
    if st.not_before is not None:
        return [_emit(ev.COMPENSATION_STARTED, path, st.comp_attempt + 1,
                      {"mode": st.comp_mode}, not_before=st.not_before)]
    error = st.comp_error or {}
    if st.comp_attempt < node.compensation_retry.attempts and error.get("retryable", True):
        return [ScheduleRetry(path, "compensation", st.comp_attempt)]
    # in a clean-up the work has not compensated anything yet: the original failure is
    # the stage's own
    failure = state.failure or {"path": path, "error": st.error}
    return [_emit(ev.WORK_COMPENSATION_FAILED, "", payload={
        "path": path, "error": st.comp_error, "failure": failure})]


# ------------------------------------------------------------ compensating


def _compensating(plan: Plan, state: WorkState, busy: Container[str]) -> list[Action]:
    # calls of user code still in flight finish first; nothing new starts forward
    forward = [Call(kind, path, state.stages[path].attempt,
                    final=not plan.info(path).post_guards)
               for path, kind in state.open_calls.items()
               if kind != "compensation" and path not in busy]
    if forward or any(k != "compensation" for k in state.open_calls.values()):
        return list(forward)
    acts, done = _undo(plan, state, busy, "", plan.saga)
    if done:
        failure = state.failure or {}
        payload = {"error": failure.get("error"), "path": failure.get("path"),
                   "compensated": list(state.compensated)}
        kind = ev.WORK_CANCELLED if state.cancelling else ev.WORK_FAILED
        return [_emit(kind, "", payload=payload)]
    stages = state.stages
    acts.sort(key=lambda a: -stages[_path_of(a)].order)
    return acts


def _path_of(action: Action) -> str:
    return action.event.path if isinstance(action, Emit) else action.path


def _undo(plan: Plan, state: WorkState, busy: Container[str],
             path: str, node: Any) -> tuple[list[Action], bool]:
    st = state.stages.get(path)
    if st is None:
        return [], True
    if isinstance(node, Stage):
        return _undo_leaf(state, busy, path, node, st)
    if isinstance(node, Saga | Loop):
        if isinstance(node, Saga):
            paths = [(join_path(path, c.name), c) for c in node.stages]
        else:
            paths = [(join_path(path, node.body.name, i), node.body)
                     for i in range(st.started_children)]
        for cpath, child in reversed(paths):
            child_acts, done = _undo(plan, state, busy, cpath, child)
            if not done:
                return child_acts, False
        return [], True
    if isinstance(node, Branch):
        for case in node.cases:
            cpath = join_path(path, case.name)
            if cpath in state.stages:
                return _undo(plan, state, busy, cpath, case)
        return [], True
    if isinstance(node, Parallel):
        results = {b.name: _undo(plan, state, busy, join_path(path, b.name), b)
                   for b in node.branches}
        acts: list[Action] = []
        for name, (branch_acts, done) in results.items():
            if done:
                continue
            # every branch that ran after this one (through any chain of dependencies,
            # even via branches with nothing to undo) is undone first
            if all(results[d][1] for d in _dependents(node, name)):
                acts.extend(branch_acts)
        return acts, all(done for _, done in results.values())
    if isinstance(node, Map):
        acts = []
        done_all = True
        limit = node.max_concurrency
        taken = 0
        for i in reversed(range(st.started_children)):
            cpath = join_path(path, node.stage.name, i)
            item_acts, done = _undo(plan, state, busy, cpath, node.stage)
            if not done:
                done_all = False
                if limit is None or taken < limit:
                    taken += 1
                    acts.extend(item_acts)
        return acts, done_all
    return [], True  # Wait and Sleep have nothing to undo


def _dependents(node: Parallel, name: str) -> set[str]:
    """The branches that depend on ``name``, directly or through others."""
    found: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        for branch, needs in node.depends_on.items():
            if current in needs and branch not in found:
                found.add(branch)
                todo.append(branch)
    return found


def _undo_leaf(state: WorkState, busy: Container[str], path: str, node: Stage,
               st: StageState) -> tuple[list[Action], bool]:
    if not st.done or st.cleaned or st.status == "compensated" or node.compensation is None:
        return [], True
    if st.call == "compensation":
        return ([] if path in busy else [Call("compensation", path, st.comp_attempt)]), False
    if st.comp_mode == "rollback" and st.comp_error is not None:
        return _compensation_retry(state, path, node, st), False
    return [_emit(ev.COMPENSATION_STARTED, path, 1, {"mode": "rollback"})], False
