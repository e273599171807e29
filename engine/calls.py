"""A work's user calls: its transactions, guards, conditions and compensations, each
run with its timeout and checked against its schemas, and the event that records how
it went (a result, a failure as data, a retry scheduled). User code never escapes:
every exception it raises is recorded as data, and a timeout cancels the user
coroutine and records that it did. :class:`engine.runner.WorkRunner` makes the calls.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

import anyio
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from . import events as ev
from . import tracing
from .clock import Clock
from .context import Failure, StageContext, engine_failure, error_data, json_problem, shown
from .definitions import MISSING, Abort, Branch, Forward, Loop, Map, RetryTransaction, Stage
from .errors import (
    CompensationResultError,
    DefinitionError,
    InterruptedCall,
    OutputError,
    RetryPolicyError,
    StageFailure,
    StageTimeoutError,
)
from .events import Event, RecordedEvent
from .gate import Admission, Gate, fill_key
from .plan import Plan
from .secrets import SecretError, Secrets, has_secrets, open_with
from .services import ServiceScope
from .state import WorkState
from .stepping import Call, ScheduleRetry

if TYPE_CHECKING:
    from .worklogs import WorkLogs

__all__ = ["DryRun", "UserCalls", "cancel_requested", "schema_problem"]

_FAILURES = frozenset({ev.TRANSACTION_FAILED, ev.COMPENSATION_FAILED, ev.CONDITION_FAILED,
                       ev.STAGE_FAILED, ev.WORK_COMPENSATION_FAILED, ev.GUARD_COMPLETED})


def cancel_requested() -> bool:
    """Whether the current task is being cancelled (by a cancel scope of the engine or by
    whoever runs it), as opposed to user code raising ``CancelledError`` on its own."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # not on asyncio
        task = None
    if task is not None and task.cancelling():
        return True
    return anyio.current_effective_deadline() == -math.inf


@dataclass(frozen=True, slots=True, kw_only=True)
class DryRun:
    """Run with each stage's example output instead of its transaction.

    Stages whose path matches one of ``fail`` (globs) fail instead, so people can
    rehearse compensation paths. Compensations are not called (they are recorded
    as done); guards and conditions run for real, since they decide the path.
    """

    fail: tuple[str, ...] = ()


def schema_problem(schema: Any, value: Any) -> str | None:
    """The first way ``value`` breaks the JSON schema, or None."""
    import jsonschema  # imported lazily: only sagas with schemas pay for it

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
    if not errors:
        return None
    first = errors[0]
    where = "/".join(str(p) for p in first.path) or "(root)"
    return f"{where}: {first.message}"


class UserCalls:
    """The calls of one work's user code (a part of :class:`engine.runner.WorkRunner`,
    which holds the state they read)."""

    plan: Plan
    work_id: str
    clock: Clock
    state: WorkState
    services: ServiceScope
    dry_run: DryRun | None
    gate: Gate | None
    logs: WorkLogs | None
    secrets: Secrets | None
    # the exceptions user code raised here, latest last: (kind, path) -> exception
    raised: dict[tuple[str, str], BaseException]

    if TYPE_CHECKING:
        async def record(self, event: Event, *, observe: bool = True,
                         flush: bool = True) -> RecordedEvent: ...

    def _context(self, path: str, attempt: int, kind: str,
                 idempotency_key: str | None = None) -> StageContext:
        return StageContext(work_id=self.work_id, saga=self.plan.name, path=path,
                            attempt=attempt, kind=kind, services=self.services,
                            dry_run=self.dry_run is not None, idempotency_key=idempotency_key,
                            logs=self.logs)

    def _schedule(self, action: ScheduleRetry) -> Event:
        node = self.plan.info(action.path).node
        policy = node.retry if action.what == "transaction" else node.compensation_retry
        try:
            delay = 0.0 if self.dry_run is not None else policy.delay(attempt=action.attempt)
        except Exception as exc:  # a user-supplied wait strategy: its failure is data
            return self._policy_failed(action, f"its wait strategy raised {exc!r:.200}")
        if not math.isfinite(delay):
            return self._policy_failed(action, f"its wait strategy chose {delay!r} seconds")
        payload: dict[str, Any] = {"what": action.what, "delay": delay,
                                   "not_before": self.clock.now() + delay}
        if action.budgets:
            payload["budgets"] = list(action.budgets)
        return Event(type=ev.RETRY_SCHEDULED, path=action.path, attempt=action.attempt,
                     payload=payload)

    def _policy_failed(self, action: ScheduleRetry, why: str) -> Event:
        """The retry policy could not schedule a retry: the stage fails for good (or, for
        a compensation, the work stops in compensation_failed), the cause recorded."""
        what = "compensation" if action.what == "compensation" else "transaction"
        error = engine_failure(RetryPolicyError(
            f"the {what} retry policy of stage {action.path!r} failed after attempt "
            f"{action.attempt}: {why}"))
        if action.what == "compensation":
            st = self.state.stages[action.path]
            failure = self.state.failure or {"path": action.path, "error": st.error}
            return Event(type=ev.WORK_COMPENSATION_FAILED, payload={
                "path": action.path, "error": error, "failure": failure})
        return Event(type=ev.STAGE_FAILED, path=action.path, attempt=action.attempt,
                     payload={"error": error})

    async def _execute(self, call: Call) -> Event:
        tracer = tracing.active()
        if tracer is None:
            return await self._call(call)
        path = call.path
        with tracing.Span(tracer, f"{call.kind} {path}", {
                "stepsaga.saga": self.plan.name, "stepsaga.work_id": self.work_id,
                "stepsaga.path": path, "stepsaga.attempt": call.attempt,
                "stepsaga.kind": call.kind,
                # a compensation's own key is set where it is made
                "stepsaga.idempotency_key": f"{self.work_id}/{path}/{call.attempt}"}) as span:
            event = await self._call(call)
            span.set_attribute("stepsaga.outcome", event.type)
            error = event.payload.get("error")
            if error is not None and event.type in _FAILURES:
                span.set_status(StatusCode.ERROR, str(error.get("message", ""))[:500])
            return event

    async def _call(self, call: Call) -> Event:
        st = self.state.stages[call.path]
        node = self.plan.info(call.path).node
        if call.kind == "transaction":
            return await self._transaction(call, node, st.input)
        if call.kind == "guard":
            return await self._guard(call, st)
        if call.kind == "condition":
            return await self._condition(call, node, st)
        return await self._compensation(call, node, st)

    async def _invoke(self, fn: Callable[..., Any], args: tuple[Any, ...],
                      limit: float | None) -> tuple[Any, BaseException | None, bool]:
        """Run user code: (result, exception, timed_out). Never raises for user errors.

        A timeout cancels the call at an await point; a call that returns only after
        its timeout (blocking code, or code that swallows the cancellation) timed out
        too: its result is discarded. A ``BaseException`` raised by user code is that
        call's failure, unless a cancellation of the engine's own is under way.
        """
        try:
            # user code gets the secrets opened (events keep them sealed)
            args = (args[0], *(open_with(self.secrets, a) for a in args[1:]))
            if limit is None:
                result = fn(*args)
                if inspect.isawaitable(result):
                    result = await result
                return result, None, False
            started = anyio.current_time()
            with anyio.move_on_after(limit) as scope:
                result = fn(*args)
                if inspect.isawaitable(result):
                    result = await result
                elapsed = anyio.current_time() - started
                if not scope.cancel_called and elapsed <= limit:
                    return result, None, False
                return None, StageTimeoutError(
                    f"timed out after {limit}s: the call returned only after "
                    f"{elapsed:.3f}s (a timeout cancels at an await point; blocking code "
                    "or code that swallows the cancellation runs on), its result is "
                    "discarded", retryable=True), True
            return None, StageTimeoutError(f"timed out after {limit}s", retryable=True), True
        except Exception as exc:
            return None, exc, False
        except BaseException as exc:
            if cancel_requested():
                raise  # the engine's own cancellation (a shutdown, a cancelled work)
            interrupted = InterruptedCall(
                f"user code raised {type(exc).__name__}"
                + (f": {exc}" if str(exc) else "")
                + " (a BaseException fails its call, never retried)")
            interrupted.__cause__ = exc
            return None, interrupted, False

    async def _transaction(self, call: Call, node: Stage, inp: Any) -> Event:
        path, attempt = call.path, call.attempt
        if self.dry_run is None:
            try:  # stage code gets the secrets opened; events keep them sealed
                inp = open_with(self.secrets, inp)
            except SecretError as unopened:
                return self._failed(call, error_data(unopened, retryable=False))
        if node.input_schema is not None:
            problem = schema_problem(node.input_schema, inp)
            if problem is not None:
                return self._failed(call, {"type": "InputSchemaError", "retryable": False,
                                           "message": f"input of stage {path!r} does not match "
                                                      f"its schema: {problem}"})
        if self.dry_run is not None:
            if any(fnmatchcase(path, p) for p in self.dry_run.fail):
                return self._failed(call, error_data(
                    StageFailure(f"forced failure of {path!r} (dry run)"), retryable=False))
            output = node.example if node.example is not MISSING else inp
        else:
            ctx = self._context(path, attempt, "transaction")
            if self.gate is not None and (node.services or node.lock_key
                                          or node.rate_limit_key):
                state = self.state
                try:
                    request = Admission(
                        work_id=self.work_id, saga=state.saga, path=path, attempt=attempt,
                        stage=node, lock_key=node.lock_key and fill_key(
                            node.lock_key, inp, work_id=self.work_id, saga=state.saga),
                        rate_limit_key=node.rate_limit_key and fill_key(
                            node.rate_limit_key, inp, work_id=self.work_id, saga=state.saga))
                except DefinitionError as bad_key:
                    return self._failed(call, error_data(bad_key, retryable=False))
                reasons: list[str] = []

                async def waiting(reason: str) -> None:
                    if reason not in reasons[-1:]:  # once per reason in a row
                        reasons.append(reason)
                        await self.record(Event(type=ev.STAGE_WAITING, path=path,
                                                attempt=attempt, payload={"reason": reason}))

                try:
                    async with self.gate.admit(request, waiting):
                        output, exc, timed_out = await self._invoke(
                            node.transaction, (ctx, inp), node.timeout)
                except Exception as gate_error:  # the gate failed (a lock wait timed out)
                    return self._failed(call, error_data(gate_error, retryable=True))
            else:
                output, exc, timed_out = await self._invoke(node.transaction, (ctx, inp),
                                                            node.timeout)
            if exc is not None:
                self.raised[("transaction", path)] = exc  # for the error-report hook
                retryable = True if timed_out else node.retry.is_retryable(exc)
                return self._failed(call, error_data(exc, retryable=retryable,
                                                     timed_out=timed_out))
        problem = json_problem(output)
        if problem is not None:
            return self._failed(call, engine_failure(OutputError(
                f"output of stage {path!r} is not JSON-serialisable: {problem}: "
                f"{shown(output)}")))
        if node.output_schema is not None:
            problem = schema_problem(node.output_schema, output)
            if problem is not None:
                return self._failed(call, {"type": "OutputSchemaError", "retryable": False,
                                           "message": f"output of stage {path!r} does not "
                                                      f"match its schema: {problem}"})
            if has_secrets(node.output_schema) and self.dry_run is None:
                if self.secrets is None:
                    return self._failed(call, error_data(SecretError(
                        f"the output schema of stage {path!r} marks secret fields and this "
                        f"node has no key to seal them ([secrets] key)"), retryable=False))
                output = self.secrets.seal(output, node.output_schema)
        payload: dict[str, Any] = {"output": output}
        if call.final:
            payload["final"] = True
        return Event(type=ev.TRANSACTION_COMPLETED, path=path, attempt=attempt, payload=payload)

    @staticmethod
    def _failed(call: Call, error: dict[str, Any]) -> Event:
        return Event(type=ev.TRANSACTION_FAILED, path=call.path, attempt=call.attempt,
                     payload={"error": error})

    async def _guard(self, call: Call, st: Any) -> Event:
        info = self.plan.info(call.path)
        pre = st.guard_when == "pre"
        guard = (info.pre_guards if pre else info.post_guards)[st.guard]
        ctx = self._context(call.path, call.attempt, "guard")
        result, exc, _ = await self._invoke(guard.check, (ctx, st.input if pre else st.output),
                                            None)
        payload: dict[str, Any] = {"guard": st.guard, "name": guard.name, "passed": bool(result)}
        if exc is not None:
            payload["passed"] = False
            payload["error"] = error_data(exc, retryable=False)
        elif not result:
            payload["error"] = {"type": "GuardVeto", "retryable": False,
                                "message": f"{st.guard_when}-guard {guard.name!r} vetoed "
                                           f"stage {call.path!r}"}
        return Event(type=ev.GUARD_COMPLETED, path=call.path, attempt=call.attempt,
                     payload=payload)

    async def _condition(self, call: Call, node: Any, st: Any) -> Event:
        ctx = self._context(call.path, call.attempt, "condition")
        what = st.cond_what
        if what == "items":
            assert isinstance(node, Map) and node.items is not None
            fn, arg = node.items, st.input
        elif what == "choose":
            assert isinstance(node, Branch)
            fn, arg = node.choose, st.input
        else:
            assert isinstance(node, Loop)
            body = self.state.stages[f"{call.path}[{st.started_children - 1}]/{node.body.name}"]
            fn, arg = node.until, body.output
        result, exc, _ = await self._invoke(fn, (ctx, arg), None)
        problem: dict[str, Any] | None = None
        if exc is not None:
            problem = error_data(exc, retryable=False)
        elif what == "items":
            if not isinstance(result, list | tuple) or json_problem(list(result)) is not None:
                problem = {"type": "ConditionError", "retryable": False,
                           "message": f"items of map {call.path!r} must be a JSON-serialisable "
                                      f"list, got {shown(result)}"}
            else:
                result = list(result)
        elif what == "choose":
            if not isinstance(result, str):
                problem = {"type": "ConditionError", "retryable": False,
                           "message": f"branch {call.path!r} must choose a case name (str), "
                                      f"got {result!r:.100}"}
        else:
            result = bool(result)
        if problem is not None:
            return Event(type=ev.CONDITION_FAILED, path=call.path, attempt=call.attempt,
                         payload={"what": what, "error": problem})
        return Event(type=ev.CONDITION_COMPLETED, path=call.path, attempt=call.attempt,
                     payload={"what": what, "result": result})

    async def _compensation(self, call: Call, node: Stage, st: Any) -> Event:
        assert node.compensation is not None
        cleanup = st.comp_mode == "cleanup"
        if cleanup:
            reason = Failure.from_data(call.path, st.error)
            output = st.output if st.done else None
        else:
            failure = self.state.failure or {}
            reason = Failure.from_data(str(failure.get("path", "")), failure.get("error"))
            output = st.output
        if self.dry_run is not None:
            return Event(type=ev.COMPENSATION_COMPLETED, path=call.path, attempt=call.attempt,
                         payload={"mode": st.comp_mode, "outcome": "done", "dry_run": True})
        # one key per try; a person's retry of a failed compensation starts a new round
        rounds = self.state.compensation_retries
        tries = f"{rounds}.{call.attempt}" if rounds else str(call.attempt)
        if cleanup:  # and per failed attempt of the transaction
            key = f"{self.work_id}/{call.path}/{st.attempt}/cleanup/{tries}"
        else:
            key = f"{self.work_id}/{call.path}/rollback/{tries}"
        ctx = self._context(call.path, call.attempt, "compensation", key)
        trace.get_current_span().set_attribute("stepsaga.idempotency_key", key)
        result, exc, timed_out = await self._invoke(
            node.compensation, (ctx, st.input, output, reason), node.compensation_timeout)
        if exc is not None:
            self.raised[("compensation", call.path)] = exc
            retryable = True if timed_out else node.compensation_retry.is_retryable(exc)
            return Event(type=ev.COMPENSATION_FAILED, path=call.path, attempt=call.attempt,
                         payload={"error": error_data(exc, retryable=retryable,
                                                      timed_out=timed_out)})
        payload: dict[str, Any] = {"outcome": "done"}
        if result is None:
            pass
        elif isinstance(result, Abort):
            payload = {"outcome": "abort", "reason": result.reason}
        elif cleanup and isinstance(result, RetryTransaction):
            payload = {"outcome": "retry", "reason": result.reason}
        elif cleanup and isinstance(result, Forward):
            problem = json_problem(result.output)
            if problem is not None:
                return Event(type=ev.COMPENSATION_FAILED, path=call.path, attempt=call.attempt,
                             payload={"error": engine_failure(OutputError(
                                 f"forward output of {call.path!r} is not JSON-serialisable: "
                                 f"{problem}: {shown(result.output)}"))})
            payload = {"outcome": "forward", "output": result.output}
        else:
            allowed = "None, Abort, RetryTransaction or Forward" if cleanup else \
                "None or Abort (RetryTransaction and Forward mean something only in a " \
                "clean-up)"
            wrong = CompensationResultError(
                f"the {st.comp_mode} compensation of stage {call.path!r} returned "
                f"{shown(result)}; expected {allowed}")
            data = engine_failure(wrong)
            data["retryable"] = node.compensation_retry.is_retryable(wrong)
            return Event(type=ev.COMPENSATION_FAILED, path=call.path, attempt=call.attempt,
                         payload={"error": data})
        return Event(type=ev.COMPENSATION_COMPLETED, path=call.path, attempt=call.attempt,
                     payload={"mode": st.comp_mode, **payload})
