"""OpenTelemetry plumbing that must cost nothing when tracing is off: trace context in and out
of an entry's reserved fields, the producer's ``send`` span, and spans of the built-ins' work.

Nothing here imports OpenTelemetry. Each function first looks whether this process has
imported the API (``sys.modules``) and whether there is a span to continue (a valid current
span context); if not, it returns at once. (redis-py 8 imports ``opentelemetry`` by itself
when it is installed, so "imported" alone does not mean "tracing": the current span decides.)

The trace context travels as the configured propagator writes it (W3C ``traceparent`` and
``tracestate`` by default, ``baggage`` too), each field under the reserved prefix
:data:`streamtasks.keys.TRACE_FIELD_PREFIX` (``_st_trace_traceparent`` ...).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from ._version import __version__
from .keys import TRACE_FIELD_PREFIX
from .message import RawFields, field_pairs

TRACER = "streamtasks"
SYSTEM = "redis"
_PREFIX_BYTES = TRACE_FIELD_PREFIX.encode()


def _api() -> Any:
    """``opentelemetry.trace`` if this process imported it, else None (nothing is imported)."""
    return sys.modules.get("opentelemetry.trace")


def tracer() -> Any:
    from opentelemetry import trace

    return trace.get_tracer(TRACER, __version__)


class _Setter:
    def set(self, carrier: dict[str, Any], key: str, value: str) -> None:
        carrier[TRACE_FIELD_PREFIX + key] = value


class _Getter:
    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(TRACE_FIELD_PREFIX + key)
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return [k[len(TRACE_FIELD_PREFIX) :] for k in carrier if k.startswith(TRACE_FIELD_PREFIX)]


_SETTER: Any = _Setter()  # the API's Setter/Getter protocols, duck-typed (no import here)
_GETTER: Any = _Getter()


def inject(fields: dict[str, Any], context: Any = None) -> None:
    """Write the current (or the given) trace context into ``fields``, if there is one."""
    trace = _api()
    if trace is None:
        return
    if context is None and not trace.get_current_span().get_span_context().is_valid:
        return
    from opentelemetry import propagate

    propagate.inject(fields, context=context, setter=_SETTER)


def extract(fields: Mapping[str, str]) -> Any:
    """The producer's context of an entry (its decoded fields), or None without one."""
    if not any(k.startswith(TRACE_FIELD_PREFIX) for k in fields):
        return None
    from opentelemetry import propagate, trace

    context = propagate.extract(fields, getter=_GETTER)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def trace_fields(raw: RawFields) -> dict[str, str]:
    """The trace fields of a raw entry (bytes), decoded: for :func:`extract`."""
    return {
        name.decode(): value.decode("utf-8", "replace")
        for name, value in field_pairs(raw)
        if name.startswith(_PREFIX_BYTES)
    }


def send_span(stream: str, fields: dict[str, Any]) -> Any:
    """A started ``send <stream>`` span (kind PRODUCER) whose context is written into
    ``fields``, when the caller is being traced; else None and nothing is written."""
    trace = _api()
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return None
    span = tracer().start_span(
        f"send {stream}",
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": stream,
        },
    )
    inject(fields, trace.set_span_in_context(span))
    return span


def end_send(span: Any, entry_id: str | None, error: BaseException | None = None) -> None:
    if entry_id is not None:
        span.set_attribute("messaging.message.id", entry_id)
    if error is not None:
        span.record_exception(error)
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, str(error)))
    span.end()


def work_span(name: str, attributes: Mapping[str, Any]) -> AbstractContextManager[Any]:
    """A child span of the current one (e.g. the built-ins' ``COPY``), only when the current
    span is recording; otherwise a context manager that does nothing."""
    trace = _api()
    if trace is None or not trace.get_current_span().is_recording():
        return nullcontext()
    span: AbstractContextManager[Any] = tracer().start_as_current_span(
        name, kind=trace.SpanKind.CLIENT, attributes=dict(attributes)
    )
    return span


def valid_contexts(contexts: Iterable[Any]) -> Iterator[Any]:
    """The span contexts of those producer ``contexts`` that are valid."""
    from opentelemetry import trace

    for context in contexts:
        if context is not None:
            span_context = trace.get_current_span(context).get_span_context()
            if span_context.is_valid:
                yield span_context
