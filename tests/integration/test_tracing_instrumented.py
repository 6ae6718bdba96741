"""Spans of an instrumented library (redis-py, through opentelemetry-instrumentation-redis)
made inside a traced handler nest under the worker's span: per-entry sync handlers on the
batch's thread, async ones in their task on the process loop, batch handlers under the batch
span."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
from opentelemetry.instrumentation.redis import RedisInstrumentor
from redis.asyncio import Redis
from support.otel import spans

from streamtasks import Message, Registry
from streamtasks.testing import InMemoryApp
from streamtasks.tracing import Tracing

__all__ = ["spans"]
pytestmark = pytest.mark.integration
registry = Registry(group="instrumented")
registry.middleware(Tracing())
where: dict[str, str] = {}


@registry.resource
async def async_client() -> AsyncIterator[Redis]:
    client = Redis.from_url(where["url"])
    yield client
    await client.aclose()


@registry.stream_handler("sync_each")
def sync_each(msg: Message) -> None:
    with redis.Redis.from_url(where["url"]) as client:
        client.get("sync-key")


@registry.stream_handler("async_each")
async def async_each(msg: Message) -> None:
    await (await async_client.get()).get("async-key")


@registry.stream_handler("async_batch", batch=True)
async def async_batch(msgs: list[Message]) -> None:
    await (await async_client.get()).get("batch-key")


@pytest.fixture
def instrumented(redis_url: str) -> Iterator[None]:
    where["url"] = redis_url
    RedisInstrumentor().instrument()
    try:
        yield
    finally:
        RedisInstrumentor().uninstrument()


async def test_redis_spans_nest_under_the_worker_spans(spans: Any, instrumented: None) -> None:
    app = InMemoryApp(registry)
    for stream in ("sync_each", "async_each", "async_batch"):
        await app.send(stream, {"n": 1})
    await app.run_until_idle()
    await app.close()
    finished = spans.get_finished_spans()
    process = {
        (s.attributes["messaging.destination.name"], "messaging.message.id" in s.attributes): s
        for s in finished
        if s.name.startswith("process ")
    }
    gets = [s for s in finished if s.name == "GET"]  # the arguments are not recorded
    assert len(gets) == 3
    assert {s.parent.span_id for s in gets} == {
        process[("sync_each", True)].context.span_id,  # a sync handler: on the batch's thread
        process[("async_each", True)].context.span_id,  # an async one: in its task on the loop
        process[("async_batch", False)].context.span_id,  # a batch handler: under the batch span
    }
