"""OpenTelemetry spans of works and stage calls, through ``opentelemetry-api`` only: the
SDK (and so whether and where spans go) is the user's choice; without one (or with the
API's ``NoOpTracerProvider``) the engine opens no span at all (:func:`active` is None).

- A work records the trace context current when it was created (a ``createWork``
  request's span, a user's own span around :meth:`engine.Runtime.start`) in its
  ``work.created`` event, with the propagator the user configured (W3C traceparent by
  default). Every process that drives the work opens a ``work <saga>`` span under that
  context, so its spans join the trace of the request that made it, on any node.
- Each call of user code (transaction, compensation, guard, condition) is a span
  ``<kind> <path>`` under the work's span, current while the code runs: a user's own
  spans, and outgoing HTTP calls of instrumented clients, are its children.

Attributes: ``stepsaga.saga``, ``stepsaga.work_id``, ``stepsaga.path``,
``stepsaga.attempt``, ``stepsaga.kind`` and ``stepsaga.idempotency_key`` (a stage call),
``stepsaga.outcome`` (an event type); a failed call's span has status ERROR with the
error's message.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import StatusCode
from opentelemetry.util.types import AttributeValue

__all__ = ["Span", "active", "carrier", "enabled", "parent_context", "tracer"]

tracer = trace.get_tracer("stepsaga")
"""The engine's tracer (a proxy: a provider set later by the user takes effect)."""

_EMPTY = Context()


_SILENT = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


_found: tuple[Any, trace.Tracer | None] = (None, None)  # (provider, its tracer)


def active() -> trace.Tracer | None:
    """The engine's tracer of the provider set now, straight (not through the proxy:
    one layer less per span), or None while no provider records (see :func:`enabled`)."""
    global _found
    provider = trace.get_tracer_provider()
    if provider is not _found[0]:
        _found = (provider, None if isinstance(provider, _SILENT) else
                  provider.get_tracer("stepsaga"))
    return _found[1]


class Span:
    """A span current while its ``with`` block runs, under ``context`` (None: the
    current one), ended when it leaves; an exception leaving it is recorded and sets
    its status to ERROR. What ``start_as_current_span`` does, as a plain class: two
    generator-based context managers less per span, on the engine's hot path."""

    __slots__ = ("_span", "_token")

    def __init__(self, tracer: trace.Tracer, name: str,
                 attributes: Mapping[str, AttributeValue],
                 context: Context | None = None) -> None:
        self._span = tracer.start_span(name, context=context, attributes=attributes)
        self._token: object = None

    def __enter__(self) -> trace.Span:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        span = self._span
        try:
            if isinstance(exc, Exception):
                span.record_exception(exc)
                span.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
        finally:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            span.end()


def enabled() -> bool:
    """Whether a tracer provider that records is set (an SDK's, or any other but the
    API's no-op one). Until one is, every span would be a no-op (the invalid span, which
    carries no context either): the engine then opens none, which keeps its hot path as
    fast as without tracing (a no-op span and its context still cost a few
    microseconds each)."""
    return active() is not None


def carrier() -> dict[str, str] | None:
    """The current trace context as the configured propagator writes it (None when
    there is no span to carry, or no tracer provider)."""
    if not enabled() or not trace.get_current_span().get_span_context().is_valid:
        return None
    found: dict[str, str] = {}
    propagate.inject(found)
    return found or None


def parent_context(found: Any) -> Context:
    """The context a carrier holds (a work's), or an empty one: a new trace."""
    if not isinstance(found, dict) or not found:
        return _EMPTY
    return propagate.extract(found)
