"""Tracing on the in-memory app with the SDK's in-memory exporter: the producer's send span and
trace context, per-entry and batch process spans with the messaging attributes, retry and
dead-letter events, context inside async handlers, spans the handler makes nesting under the
worker's, decisions taken without the handler, and a dead-letter replay in the same trace."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from opentelemetry import trace
from support.otel import spans

from streamtasks import Message, Registry, Retry
from streamtasks.keys import TRACE_FIELD_PREFIX
from streamtasks.otel import work_span
from streamtasks.testing import InMemoryApp
from streamtasks.tracing import Tracing

__all__ = ["spans"]
tracer = trace.get_tracer("tests")
registry = Registry(group="traced-memory")
registry.middleware(Tracing())
inside: dict[str, Any] = {}


@registry.stream_handler("each", max_retries=1, backoff_base=0.01)
def each(msg: Message) -> None:
    if msg.get("fail") == "once" and msg.attempt == 1:
        raise Retry(after=0.5)
    if msg.get("fail") == "always":
        raise ValueError("always fails")


@registry.stream_handler("async_each")
async def async_each(msg: Message) -> None:
    inside["async"] = trace.get_current_span().get_span_context()


@registry.stream_handler("rows", batch=True)
async def rows(msgs: list[Message]) -> None:
    with work_span("COPY rows", {"db.operation.name": "COPY"}):
        pass


@registry.stream_handler("sync_rows", batch=True)
def sync_rows(msgs: list[Message]) -> None:
    with work_span("COPY sync_rows", {"db.operation.name": "COPY"}):
        pass


@registry.stream_handler("slow_each", max_retries=0, timeout=0.01)
def slow_each(msg: Message) -> None:
    raise AssertionError("never run: the delivery limit decides first")


def by_name(exported: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for span in exported.get_finished_spans():
        out.setdefault(span.name, []).append(span)
    return out


def entry_spans(exported: Any, stream: str) -> list[Any]:
    return [
        s for s in by_name(exported).get(f"process {stream}", []) if "messaging.message.id" in s.attributes
    ]


def batch_spans(exported: Any, stream: str) -> list[Any]:
    return [
        s
        for s in by_name(exported).get(f"process {stream}", [])
        if "messaging.batch.message_count" in s.attributes
    ]


async def send_traced(app: InMemoryApp, stream: str, fields: dict[str, Any]) -> Any:
    with tracer.start_as_current_span("caller") as caller:
        await app.send(stream, fields)
    return caller.get_span_context()


async def test_a_per_entry_span_is_the_child_of_the_entrys_send_span(spans: Any) -> None:
    app = InMemoryApp(registry)
    caller = await send_traced(app, "each", {"n": 1})
    [(_, fields)] = app.entries("each")
    assert f"{TRACE_FIELD_PREFIX}traceparent" in fields
    await app.run_until_idle()
    named = by_name(spans)
    [send] = named["send each"]
    [batch], [entry] = batch_spans(spans, "each"), entry_spans(spans, "each")
    assert send.parent.span_id == caller.span_id and send.kind == trace.SpanKind.PRODUCER
    assert entry.parent.span_id == send.context.span_id and entry.kind == trace.SpanKind.CONSUMER
    assert entry.context.trace_id == caller.trace_id == batch.context.trace_id
    assert [link.context.span_id for link in entry.links] == [batch.context.span_id]
    assert dict(entry.attributes) == {
        "messaging.system": "redis",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "each",
        "messaging.consumer.group.name": "traced-memory",
        "streamtasks.handler": "test_tracing_memory.each",
        "messaging.message.id": app.handled("each")[0],
        "streamtasks.delivery.attempt": 1,
        "streamtasks.outcome": "done",
    }
    assert batch.attributes["messaging.batch.message_count"] == 1


async def test_a_retry_is_an_event_and_the_next_attempt_stays_in_the_trace(spans: Any) -> None:
    app = InMemoryApp(registry)
    caller = await send_traced(app, "each", {"fail": "once"})
    await app.drain()
    entries = entry_spans(spans, "each")
    first, second = sorted(entries, key=lambda s: s.attributes["streamtasks.delivery.attempt"])
    assert {s.context.trace_id for s in entries} == {caller.trace_id}
    assert first.attributes["streamtasks.outcome"] == "retry"
    exception, event = first.events  # the handler's exception, recorded, then the decision
    assert exception.attributes["exception.type"] == "streamtasks.errors.Retry"
    assert event.name == "retry" and event.attributes["streamtasks.retry.delay"] == 0.5
    assert (second.attributes["streamtasks.delivery.attempt"], second.attributes["streamtasks.outcome"]) == (
        2,
        "done",
    )


async def test_a_dead_letter_is_an_event_and_its_replay_continues_the_trace(spans: Any) -> None:
    app = InMemoryApp(registry)
    caller = await send_traced(app, "each", {"fail": "always"})
    await app.drain()
    [dead] = app.dead_letters("each")
    flat = dead.replay_fields()
    await app.send_raw("each", dict(zip(flat[0::2], flat[1::2], strict=True)))  # as `dlq replay` does
    await app.drain()
    entries = entry_spans(spans, "each")
    assert len(entries) == 4 and {s.context.trace_id for s in entries} == {caller.trace_id}
    last = max(entries, key=lambda s: s.end_time)
    _, event = last.events
    assert (
        event.name == "dead_letter" and event.attributes["streamtasks.dead_letter.reason"] == "handler_error"
    )


async def test_an_async_handler_runs_inside_its_entry_span(spans: Any) -> None:
    app = InMemoryApp(registry)
    await send_traced(app, "async_each", {"n": 1})
    await app.run_until_idle()
    [entry] = entry_spans(spans, "async_each")
    assert inside["async"].span_id == entry.context.span_id


async def test_a_batch_handlers_work_nests_under_the_batch_span(spans: Any) -> None:
    app = InMemoryApp(registry)
    caller = await send_traced(app, "rows", {"n": 1})
    await app.run_until_idle()
    [batch] = batch_spans(spans, "rows")
    [copy] = by_name(spans)["COPY rows"]
    assert copy.parent.span_id == batch.context.span_id
    assert batch.context.trace_id == caller.trace_id  # one entry, one trace: its child


async def test_a_sync_batch_handlers_work_nests_under_the_batch_span_too(spans: Any) -> None:
    app = InMemoryApp(registry)
    callers = [await send_traced(app, "sync_rows", {"n": n}) for n in range(2)]
    await app.run_until_idle()
    [batch] = batch_spans(spans, "sync_rows")
    assert entry_spans(spans, "sync_rows") == []  # the call is the batch's, not one entry's
    [copy] = by_name(spans)["COPY sync_rows"]
    assert copy.parent.span_id == batch.context.span_id
    assert {link.context.trace_id for link in batch.links} == {c.trace_id for c in callers}


async def test_a_batch_of_several_traces_is_a_new_trace_linked_to_each(spans: Any) -> None:
    app = InMemoryApp(registry)
    callers = [await send_traced(app, "rows", {"n": n}) for n in range(3)]
    await app.run_until_idle()
    [batch] = by_name(spans)["process rows"]
    assert batch.parent is None
    assert {link.context.trace_id for link in batch.links} == {c.trace_id for c in callers}


async def test_a_decision_without_the_handler_gets_a_settle_span(spans: Any) -> None:
    app = InMemoryApp(registry)
    caller = await send_traced(app, "slow_each", {"n": 1})
    stream = app.streams["slow_each"]
    stream.read(1)
    stream.pending[next(iter(stream.pending))].deliveries = 5  # delivered past the limit
    stream.pending[next(iter(stream.pending))].due = 0
    await app.run_until_idle()
    [settle] = by_name(spans)["settle slow_each"]
    assert settle.context.trace_id == caller.trace_id
    assert [e.name for e in settle.events] == ["dead_letter"]


def test_without_tracing_nothing_of_it_is_imported_and_streamtasks_needs_no_opentelemetry() -> None:
    """A process where OpenTelemetry cannot be imported at all runs results, middleware and
    the producer's encoding; and a registry without Tracing never imports streamtasks.tracing."""
    code = """
import asyncio, sys
sys.modules["opentelemetry"] = None  # not installed
from streamtasks import Message, Registry, Producer
from streamtasks.testing import InMemoryApp
registry = Registry()
class Count:
    calls = 0
    def before_batch(self, batch):
        Count.calls += 1
registry.middleware(Count())
@registry.stream_handler("s", results=True)
def double(msg: Message) -> int:
    return int(msg["x"]) * 2
async def main():
    async with InMemoryApp(registry):
        assert await double.call({"x": 2}) == 4
    fields = Producer()._prepare({"x": 1}, None)
    assert not [k for k in fields if k.startswith("_st_trace")], fields
asyncio.run(main())
assert Count.calls == 1
assert "streamtasks.tracing" not in sys.modules
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
