"""The OpenTelemetry SDK for the tracing tests: one tracer provider for the test process
(the API allows one), exporting to an in-memory exporter the tests read and clear."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

__all__ = ["by_name", "exported", "spans"]

exported = InMemorySpanExporter()
_installed = False


def _install() -> None:
    global _installed
    if not _installed:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exported))
        trace.set_tracer_provider(provider)
        _installed = True


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The exporter, empty at the start of the test."""
    _install()
    exported.clear()
    yield exported
    exported.clear()


def by_name(found: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> dict[str, ReadableSpan]:
    names = [s.name for s in found]
    assert len(names) == len(set(names)), f"spans of the same name: {sorted(names)}"
    return {s.name: s for s in found}
