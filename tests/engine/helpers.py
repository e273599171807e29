"""Small builders shared by the engine tests: transactions that log, fail on cue."""

from __future__ import annotations

from typing import Any

import tenacity

from engine import RetryPolicy, Runtime, StageFailure

NO_WAIT = tenacity.wait_fixed(0)


def retry(attempts: int) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, wait=NO_WAIT)


class Ledger:
    """Records every call of user code, in order, so tests can assert on it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.failures: dict[str, int] = {}  # path -> how many more attempts fail

    def fail(self, path: str, times: int = 10**9) -> None:
        self.failures[path] = times

    def tx(self, delta: int = 1) -> Any:
        async def transaction(ctx: Any, value: Any) -> Any:
            self.calls.append(("tx", ctx.path))
            left = self.failures.get(ctx.path, 0)
            if left:
                self.failures[ctx.path] = left - 1
                raise RuntimeError(f"{ctx.path} failed (attempt {ctx.attempt})")
            return value + delta if isinstance(value, int) else value

        return transaction

    def fatal(self) -> Any:
        async def transaction(ctx: Any, value: Any) -> Any:
            self.calls.append(("tx", ctx.path))
            raise StageFailure(f"{ctx.path} refused", retryable=False)

        return transaction

    def comp(self) -> Any:
        async def compensation(ctx: Any, value: Any, output: Any, reason: Any) -> None:
            self.calls.append(("comp", ctx.path))

        return compensation

    def compensated(self) -> list[str]:
        return [path for kind, path in self.calls if kind == "comp"]


def types(runtime: Runtime, work_id: str) -> list[str]:
    return [e.type for e in runtime.events(work_id)]


def typed_paths(runtime: Runtime, work_id: str) -> list[tuple[str, str]]:
    return [(e.type, e.path) for e in runtime.events(work_id)]
