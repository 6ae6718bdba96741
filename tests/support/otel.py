"""OpenTelemetry in the test process: ONE SDK tracer provider with an in-memory exporter,
installed on first use (a process' global provider can be set once: if one is set already,
the exporter is added to it), and the ``spans`` fixture that empties it around a test. This
is also the setup the tracing guide shows users for their own tests."""

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
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):  # the first: set it
            provider = TracerProvider()
            trace.set_tracer_provider(provider)
        # else one was set already (the tracing guide's example, run in this process by the docs
        # test): the global provider cannot be replaced, so the exporter joins it
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
    return _exporter


@pytest.fixture
def spans() -> Iterator[Any]:
    """The in-memory exporter, empty at the start of the test: ``spans.get_finished_spans()``."""
    exporter = memory_exporter()
    exporter.clear()
    yield exporter
    exporter.clear()
