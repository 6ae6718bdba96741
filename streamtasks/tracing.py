"""OpenTelemetry tracing of the worker: :class:`Tracing`, a middleware (:mod:`streamtasks.hooks`).

``registry.middleware(Tracing())`` turns it on (``pip install 'streamtasks[otel]'``); without
it nothing of this module or of OpenTelemetry is imported for tracing, and nothing costs.
Spans follow OpenTelemetry's messaging conventions:

* one ``process <stream>`` span per batch (kind CONSUMER), linked to each entry's producer
  context; it is the producer context's child when every entry of the batch carries the same
  trace (a batch of one, or a request that sent many entries), else a new trace with links;
  a batch handler runs inside it, so the spans it makes (the built-ins' ``COPY``, asyncpg and
  redis-py instrumentation) nest under it;
* for a per-entry handler, one ``process <stream>`` span per entry (kind CONSUMER), a child of
  the entry's producer context, linked to its batch span; the handler runs inside it (on its
  thread, or in its task on the process' loop for an async handler);
* attributes: ``messaging.system`` = ``redis``, ``messaging.destination.name`` (the stream),
  ``messaging.consumer.group.name``, ``messaging.message.id`` (the entry id),
  ``streamtasks.delivery.attempt``, ``streamtasks.outcome`` (``done``, ``retry``, ``dead``);
  the retry and dead-letter decisions are span events (``retry`` with its delay,
  ``dead_letter`` with its reason); decisions the worker takes without running the handler
  (a batch over its deadline, the delivery limit) get a span of their own from the settle step.

Which tracer provider: the process' global one (the user's own ``TracerProvider``). In a
process that has none (an actor, a Ray task), ``Tracing(configure=True)`` (the default) sets
one up from the standard ``OTEL_*`` variables, if ``OTEL_TRACES_EXPORTER`` or an
``OTEL_EXPORTER_OTLP_*ENDPOINT`` is set and ``opentelemetry-sdk`` is installed (exporters by
their entry-point names: ``otlp_proto_http``, ``otlp``, ``console`` ...). ``OTEL_*`` variables
are forwarded to the Ray processes like ``STREAMTASKS_*``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from . import otel
from .hooks import BatchInfo, CallInfo, SettleEvent
from .retry import Dead, Failure, RetryLater

log = logging.getLogger("streamtasks.tracing")
#: Links a batch span keeps (the SDK's default span limit).
MAX_LINKS = 128
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_setup_lock = threading.Lock()
_setup_done = False


class Tracing:
    """The worker's spans (see the module). ``configure``: set up the SDK from ``OTEL_*``
    variables in a process without a tracer provider."""

    def __init__(self, *, configure: bool = True) -> None:
        self.configure = configure
        self._cached: Any = None  # this process' tracer (never pickled)

    def _tracer(self) -> Any:
        if self._cached is None:
            if self.configure:
                configure_from_env()
            self._cached = otel.tracer()
        return self._cached

    # -- the handler's process -------------------------------------------------------------

    def before_batch(self, batch: BatchInfo) -> None:
        from opentelemetry import trace

        contexts = [otel.extract(m.fields) for m in batch.messages]
        valid = list(otel.valid_contexts(contexts))
        one_trace = len(valid) == len(contexts) > 0 and len({c.trace_id for c in valid}) == 1
        span = self._tracer().start_span(
            f"process {batch.stream}",
            context=contexts[0] if one_trace else None,
            kind=trace.SpanKind.CONSUMER,
            links=[trace.Link(c) for c in valid[:MAX_LINKS]],
            attributes={**_common(batch), "messaging.batch.message_count": len(batch.messages)},
        )
        batch.state[self] = _BatchSpans(
            span, {m.id: c for m, c in zip(batch.messages, contexts, strict=True)}
        )

    @contextlib.contextmanager
    def around_call(self, call: CallInfo) -> Iterator[None]:
        from opentelemetry import trace

        spans: _BatchSpans | None = call.batch.state.get(self)
        if spans is None:
            yield
            return
        if call.whole_batch:
            with trace.use_span(spans.batch, end_on_exit=False):
                yield
            return
        msg = call.messages[0]
        span = self._tracer().start_span(
            f"process {call.batch.stream}",
            context=spans.contexts.get(msg.id),
            kind=trace.SpanKind.CONSUMER,
            links=[trace.Link(spans.batch.get_span_context())],
            attributes={
                **_common(call.batch),
                "messaging.message.id": msg.id,
                "streamtasks.delivery.attempt": msg.attempt,
            },
        )
        spans.entries[msg.id] = span
        with trace.use_span(span, end_on_exit=False, record_exception=True, set_status_on_exception=False):
            yield

    def after_batch(self, batch: BatchInfo, failed: Mapping[str, Failure]) -> None:
        spans: _BatchSpans | None = batch.state.pop(self, None)
        if spans is None:
            return
        for entry_id, span in spans.entries.items():
            _decided(span, entry_id, failed.get(entry_id))
            span.end()
        counts = {"done": len(batch.messages) - sum(1 for m in batch.messages if m.id in failed)}
        for entry_id, outcome in failed.items():
            _event(spans.batch, entry_id, outcome)
            kind = _outcome(outcome)
            counts[kind] = counts.get(kind, 0) + 1
        spans.batch.set_attribute(
            "streamtasks.outcome", ",".join(f"{k}={v}" for k, v in sorted(counts.items()))
        )
        spans.batch.end()

    # -- where settle runs: decisions taken without running the handler ---------------------

    def on_retry(self, event: SettleEvent) -> None:
        if not event.ran:
            self._settle_span(event, RetryLater(event.delay or 0.0, event.error))

    def on_dead_letter(self, event: SettleEvent) -> None:
        if not event.ran:
            self._settle_span(event, Dead(event.error))

    def _settle_span(self, event: SettleEvent, outcome: Failure) -> None:
        from opentelemetry import trace

        span = self._tracer().start_span(
            f"settle {event.stream}",
            context=otel.extract(otel.trace_fields(event.fields)),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": otel.SYSTEM,
                "messaging.operation.type": "settle",
                "messaging.destination.name": event.stream,
                "messaging.consumer.group.name": event.group,
                "messaging.message.id": event.entry_id,
                "streamtasks.delivery.attempt": event.attempt,
            },
        )
        _decided(span, event.entry_id, outcome)
        span.end()

    def __getstate__(self) -> dict[str, Any]:
        return {"configure": self.configure}  # nothing of a process travels to another

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.configure = state["configure"]
        self._cached = None


class _BatchSpans:
    """A batch's span, its entries' producer contexts and their spans (per-entry handlers)."""

    def __init__(self, batch: Any, contexts: dict[str, Any]) -> None:
        self.batch = batch
        self.contexts = contexts
        self.entries: dict[str, Any] = {}


def _common(batch: BatchInfo) -> dict[str, Any]:
    return {
        "messaging.system": otel.SYSTEM,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": batch.stream,
        "messaging.consumer.group.name": batch.group,
        "streamtasks.handler": batch.handler,
    }


def _outcome(outcome: Failure | None) -> str:
    if outcome is None:
        return "done"
    return "retry" if isinstance(outcome, RetryLater) else "dead"


def _event(span: Any, entry_id: str, outcome: Failure) -> None:
    error = outcome.error
    attributes: dict[str, Any] = {
        "messaging.message.id": entry_id,
        "exception.type": error.type,
        "exception.message": error.message,
    }
    if isinstance(outcome, RetryLater):
        span.add_event("retry", {**attributes, "streamtasks.retry.delay": outcome.delay})
    else:
        span.add_event("dead_letter", {**attributes, "streamtasks.dead_letter.reason": error.reason})


def _decided(span: Any, entry_id: str, outcome: Failure | None) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("streamtasks.outcome", _outcome(outcome))
    if outcome is not None:
        _event(span, entry_id, outcome)
        span.set_status(Status(StatusCode.ERROR, f"{outcome.error.type}: {outcome.error.message}"))


def configure_from_env(environ: Mapping[str, str] = os.environ) -> bool:
    """Set up the SDK from ``OTEL_*`` once in this process, unless a tracer provider is set or
    nothing asks for an exporter; True when this call set one up."""
    global _setup_done
    with _setup_lock:
        if _setup_done:
            return False
        _setup_done = True
        from opentelemetry import trace

        if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            return False  # the application's own provider
        wanted = environ.get("OTEL_TRACES_EXPORTER") or (
            "otlp" if any(environ.get(e) for e in _ENDPOINTS) else ""
        )
        if not wanted or wanted == "none" or environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
            return False
        try:
            provider = _provider(wanted)
        except Exception as exc:  # not installed, an unknown exporter: tracing stays off here
            log.warning("tracing: could not set up the OpenTelemetry SDK from OTEL_* (%s)", exc)
            return False
        trace.set_tracer_provider(provider)
        return True


def _provider(exporters: str) -> Any:
    from importlib.metadata import entry_points

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()  # sampler, resource (OTEL_SERVICE_NAME ...) from the environment
    found = {e.name: e for e in entry_points(group="opentelemetry_traces_exporter")}
    for name in (n.strip() for n in exporters.split(",") if n.strip()):
        if name == "otlp" and name not in found:
            name = "otlp_proto_http"
        if name not in found:
            raise LookupError(f"no trace exporter named {name!r} is installed ({', '.join(sorted(found))})")
        provider.add_span_processor(BatchSpanProcessor(found[name].load()()))
    return provider
