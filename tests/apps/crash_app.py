"""The built-in training handler, made to stall after its COPY committed and before the
worker can ack: the test kills the worker in that window (a crash between commit and XACK)."""

from __future__ import annotations

import asyncio
import os

import redis.asyncio as aioredis

from streamtasks import Message, Registry
from streamtasks.builtins import store_training_batch

# The built-in store reads DATABASE_URL in the Ray worker: a registry serving it on a Ray
# cluster says so, and a worker that joins one forwards it (the core forwards only its own).
registry = Registry(group="streamtasks-adserving", env_forward=("DATABASE_",))


@registry.stream_handler("training_data_stream", batch=True, batch_size=1000, max_retries=3)
async def commit_then_stall(msgs: list[Message]) -> object:
    failures = await store_training_batch(msgs)
    client = aioredis.Redis.from_url(os.environ["REDIS_URL"])
    await client.incrby("crash_app:committed", len(msgs))
    await client.aclose()
    await asyncio.sleep(3600)  # never returns: the entries stay unacked until the kill
    return failures
