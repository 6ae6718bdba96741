"""OpenTelemetry in the test process: ONE SDK tracer provider with an in-memory exporter,
installed on first use (a process' global provider can be set once), and the ``spans``
fixture that empties it around a test. This is also the setup the tracing guide shows users
for their own tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

_exporter: Any = None


def memory_exporter() -> Any:
    """The process' in-memory span exporter (installing the provider the first time)."""
    global _exporter
    if _exporter is None:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        _exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        trace.set_tracer_provider(provider)
    return _exporter


@pytest.fixture
def spans() -> Iterator[Any]:
    """The in-memory exporter, empty at the start of the test: ``spans.get_finished_spans()``."""
    exporter = memory_exporter()
    exporter.clear()
    yield exporter
    exporter.clear()
