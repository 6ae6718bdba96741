"""The built-ins with tracing on, for the end-to-end tracing test (actor mode): the built-in
training-data handler, and two handlers that fail before they call the same built-in store
(``COPY``): one for a given number of attempts (``fail_attempts``), one while the ledger key
``traced:broken`` exists (dead-lettered, then replayed)."""

from __future__ import annotations

import os
from typing import Any

import redis

from streamtasks import Message
from streamtasks.adserving.handlers import make_registry, store_training_batch
from streamtasks.tracing import Tracing

BROKEN = "traced:broken"
registry = make_registry(
    group="traced", training_stream="traced_training", inference_stream="traced_inference", batch_size=100
)
registry.middleware(Tracing())
_ledger: list[redis.Redis] = []


def ledger() -> redis.Redis:
    if not _ledger:
        _ledger.append(redis.Redis.from_url(os.environ["TEST_REDIS_URL"]))
    return _ledger[0]


@registry.stream_handler("traced_flaky", batch=True, max_retries=3, backoff_base=0.05, backoff_max=0.1)
async def flaky(msgs: list[Message]) -> Any:
    if any(int(m.get("fail_attempts") or 0) >= m.attempt for m in msgs):
        raise ConnectionError("the database went away (on purpose)")
    return await store_training_batch(msgs)


@registry.stream_handler("traced_broken", batch=True, max_retries=0)
async def broken(msgs: list[Message]) -> Any:
    if ledger().exists(BROKEN):
        raise RuntimeError("broken until the test fixes it")
    return await store_training_batch(msgs)
