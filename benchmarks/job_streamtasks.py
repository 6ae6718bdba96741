"""The job (issue 10) as a streamtasks user writes it: a batch handler and a pool resource.

``@registry.stream_handler(stream, batch=True, batch_size=500)`` with an asyncpg pool made
by ``@registry.resource`` (one per Ray worker process), one ``COPY`` per batch. Every
guarantee of the worker applies (ack after success, reclaim, leases, dead letters). Served by
the real worker (``benchmarks/peers.py`` runs it from this directory)::

    JOB_DATABASE_URL=... JOB_STREAM=... streamtasks worker job_streamtasks:registry --redis-url URL
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from streamtasks import Message, Registry

GROUP = "job-streamtasks"
BATCH = 500
TABLE = "job_rows"
COLUMNS = ("model_name", "request_id", "input_data", "metadata", "source_ip")

registry = Registry(group=GROUP, env_forward=("JOB_",))  # joining a cluster: its tasks get JOB_*


class _Dropped:
    """A span exporter that keeps nothing: tracing's cost on the worker, not a backend's."""

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


if os.environ.get("JOB_TRACING"):  # every process that imports the app (each actor) traces
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    from streamtasks.tracing import Tracing

    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(BatchSpanProcessor(_Dropped()))  # type: ignore[arg-type]
    trace.set_tracer_provider(provider)
    registry.middleware(Tracing(configure=False))


@registry.resource
async def pool() -> AsyncIterator[Any]:
    p = await asyncpg.create_pool(os.environ["JOB_DATABASE_URL"], min_size=1, max_size=2)
    try:
        yield p
    finally:
        await p.close()


@registry.stream_handler(os.environ.get("JOB_STREAM", "job"), batch=True, batch_size=BATCH)
async def store(msgs: list[Message]) -> None:
    rows = [(m["model_name"], m["request_id"], m["input_data"], m["metadata"], m["source_ip"]) for m in msgs]
    async with (await pool.get()).acquire() as conn:
        await conn.copy_records_to_table(TABLE, records=rows, columns=COLUMNS)
