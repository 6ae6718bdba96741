"""One trace from the caller to the row, with the worker in actor mode: a caller span (this
process, the SDK's in-memory exporter) -> the producer's send span -> the actor's process
span -> the built-ins' COPY span (exported by the actor over OTLP/HTTP to a receiver this
test runs on 127.0.0.1), all with one trace id; the same through a retry and through a
``streamtasks dlq replay``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import traced_app
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from redis.asyncio import Redis
from support.invariants import READY_LOG, WORKER_START_S, poll
from support.otel import spans

from streamtasks import Producer

__all__ = ["spans"]
pytestmark = pytest.mark.integration
ROW = {"model_name": "fraud", "input_data": {"amount": 3}}


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver: keeps every span it is sent (protobuf)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[Any] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"

    def named(self, name: str, trace_id: bytes) -> list[Any]:
        return [s for s in list(self.spans) if s.name == name and s.trace_id == trace_id]


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                self.server.spans.extend(scope.spans)
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def worker(
    receiver: Receiver, spawn: Any, redis: Redis, redis_url: str, ray_address: str, schema: str
) -> Any:
    """``streamtasks worker traced_app:registry`` in actor mode (one actor), exporting its
    spans over OTLP/HTTP (the OTEL_* variables reach the actor like STREAMTASKS_*)."""
    argv = [
        sys.executable, "-m", "streamtasks", "worker", "traced_app:registry", "--mode", "actors",
        "--actors", "1", "--ray-address", ray_address, "--redis-url", redis_url,
    ]  # fmt: skip
    env = {
        "DATABASE_URL": schema,
        "OTEL_TRACES_EXPORTER": "otlp_proto_http",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "streamtasks-test-worker",
    }
    proc = spawn(argv, env=env, name="traced-worker")
    proc.wait_for_log(READY_LOG, timeout=WORKER_START_S)
    return proc


async def send_in_a_caller_span(redis: Redis, stream: str, fields: dict[str, Any]) -> Any:
    tracer = trace.get_tracer("tests")
    async with Producer(redis) as producer:
        with tracer.start_as_current_span("POST /score") as caller:
            await producer.send(stream, fields)
    return caller.get_span_context()


def one_trace(spans: Any, receiver: Receiver, caller: Any, stream: str) -> tuple[Any, list[Any], Any]:
    """The send span (here), the process spans and the COPY span (from the actor), checked
    to form one trace: caller -> send -> process -> COPY."""
    trace_id = caller.trace_id.to_bytes(16, "big")
    [send] = [s for s in spans.get_finished_spans() if s.name == f"send {stream}"]
    assert send.parent.span_id == caller.span_id
    processes = receiver.named(f"process {stream}", trace_id)
    [copy] = receiver.named("COPY training_data", trace_id)
    assert copy.parent_span_id in {p.span_id for p in processes}
    for process in processes:
        assert process.parent_span_id == send.context.span_id.to_bytes(8, "big")
        assert process.kind == process.SPAN_KIND_CONSUMER
    return send, processes, copy


def attributes(span: Any) -> dict[str, Any]:
    out = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value"))
    return out


async def test_one_trace_from_the_caller_to_the_copy(
    spans: Any, receiver: Receiver, worker: Any, redis: Redis
) -> None:
    caller = await send_in_a_caller_span(redis, "traced_training", {**ROW, "request_id": "r-1"})
    trace_id = caller.trace_id.to_bytes(16, "big")
    await poll(
        lambda: receiver.named("COPY training_data", trace_id), 60, "the COPY span", worker.output_tail
    )
    _, [process], copy = one_trace(spans, receiver, caller, "traced_training")
    got = attributes(process)
    assert got["messaging.system"] == "redis" and got["messaging.destination.name"] == "traced_training"
    assert got["messaging.consumer.group.name"] == "traced" and got["streamtasks.outcome"] == "done=1"
    assert attributes(copy)["db.operation.name"] == "COPY"


async def test_one_trace_through_a_retry(spans: Any, receiver: Receiver, worker: Any, redis: Redis) -> None:
    caller = await send_in_a_caller_span(
        redis, "traced_flaky", {**ROW, "request_id": "r-2", "fail_attempts": 1}
    )
    trace_id = caller.trace_id.to_bytes(16, "big")
    await poll(
        lambda: receiver.named("COPY training_data", trace_id), 60, "the COPY span", worker.output_tail
    )
    _, processes, _ = one_trace(spans, receiver, caller, "traced_flaky")
    assert len(processes) == 2
    first = min(processes, key=lambda s: s.start_time_unix_nano)
    assert [e.name for e in first.events] == ["exception", "retry"]


async def test_one_trace_through_a_dead_letter_replay(
    spans: Any, receiver: Receiver, worker: Any, redis: Redis, redis_url: str
) -> None:
    await redis.set(traced_app.BROKEN, 1)
    caller = await send_in_a_caller_span(redis, "traced_broken", {**ROW, "request_id": "r-3"})
    await poll(lambda: _dead(redis), 60, "the dead letter", worker.output_tail)
    await redis.delete(traced_app.BROKEN)
    replay = [
        sys.executable,
        "-m",
        "streamtasks",
        "dlq",
        "replay",
        "traced_broken",
        "--all",
        "--redis-url",
        redis_url,
    ]
    done = await asyncio.to_thread(subprocess.run, replay, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    trace_id = caller.trace_id.to_bytes(16, "big")
    await poll(
        lambda: receiver.named("COPY training_data", trace_id), 60, "the COPY span", worker.output_tail
    )
    _, processes, _ = one_trace(spans, receiver, caller, "traced_broken")
    dead = [p for p in processes if any(e.name == "dead_letter" for e in p.events)]
    assert len(processes) == 2 and len(dead) == 1


async def _dead(redis: Redis) -> bool:
    return int(await redis.xlen("traced_broken:dead")) == 1
