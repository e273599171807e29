"""Retry policies: how many attempts, how long to wait between them, which errors retry.

The backoff itself is tenacity's (``wait_exponential_jitter`` by default, or any
tenacity wait strategy); the engine only records the delay it chose in an event,
so the random jitter never makes a replay diverge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import tenacity

__all__ = ["RetryPolicy"]


def _default_wait() -> Any:
    return tenacity.wait_exponential_jitter(multiplier=0.1, max=30.0, exp_base=2, jitter=0.1)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How a transaction (or a compensation) is retried.

    ``attempts`` counts every try, the first included. ``retry_on`` lists the
    exception types that may retry, ``give_up_on`` those that do not; an error
    carrying ``retryable=False`` (see :class:`engine.errors.StageFailure`) is not
    retried by the policy. The one exception: a failed stage's clean-up
    compensation that returns :class:`~engine.definitions.RetryTransaction` asks
    for another attempt whatever the error was, still within ``attempts`` and the
    retry budgets. ``wait`` is any tenacity wait strategy; a delay it chooses must
    be a finite number of seconds (tenacity's own strategies are tried once when
    the policy is made). When it raises or chooses NaN or infinity at run time, the
    stage fails for good with a ``RetryPolicyError``.

    >>> policy = RetryPolicy(attempts=3, wait=tenacity.wait_fixed(2))
    >>> policy.delay(attempt=1)
    2.0
    """

    attempts: int = 1
    wait: Any = field(default_factory=_default_wait)
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    give_up_on: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be an int >= 1, got {self.attempts!r}")
        if not callable(self.wait):
            raise TypeError(f"RetryPolicy.wait must be a tenacity wait strategy, got {self.wait!r}")
        if isinstance(self.wait, tenacity.wait.wait_base):
            try:
                chosen = self.wait(_state(1, None))
                ok = isinstance(chosen, int | float) and math.isfinite(chosen) and chosen >= 0
            except Exception as exc:
                raise ValueError(f"RetryPolicy.wait {self.wait!r} failed when tried: "
                                 f"{exc!r}") from exc
            if not ok:
                raise ValueError(f"RetryPolicy.wait must choose a finite delay >= 0 seconds; "
                                 f"{self.wait!r} chose {chosen!r}")

    def is_retryable(self, error: BaseException) -> bool:
        """Whether this error may be retried at all (attempts aside)."""
        flag = getattr(error, "retryable", None)
        if flag is False:
            return False
        if isinstance(error, self.give_up_on):
            return False
        return isinstance(error, self.retry_on)

    def delay(self, *, attempt: int, error: BaseException | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        chosen = float(self.wait(_state(attempt, error)))
        return chosen if math.isnan(chosen) else max(0.0, chosen)  # NaN: the caller refuses


def _state(attempt: int, error: BaseException | None) -> Any:
    state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    if error is not None:
        state.outcome = tenacity.Future.construct(attempt, error, True)
    return state


NO_RETRY = RetryPolicy()
