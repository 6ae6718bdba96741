"""Handlers for the core integration tests. Imported by Ray workers, so it records what it
handled in Redis (the test reads it back), never in process memory."""

from __future__ import annotations

import os
import time

import redis as sync_redis

from streamtasks import Message, Registry

registry = Registry(group="core-tests")
_clients: dict[str, sync_redis.Redis] = {}


def _redis() -> sync_redis.Redis:
    url = os.environ["TEST_REDIS_URL"]  # set by the ray_address fixture (tests/conftest.py)
    if url not in _clients:
        _clients[url] = sync_redis.Redis.from_url(url)
    return _clients[url]


def record(msg: Message, kind: str) -> None:
    _redis().hincrby(f"handled:{msg.stream}", f"{msg.id}|{kind}", 1)


@registry.stream_handler("sync_each", batch_size=100, max_retries=0)
def sync_each(msg: Message) -> None:
    if msg.get("fail") == "1":
        raise ValueError(f"asked to fail {msg.id}")
    if msg.get("sleep"):
        time.sleep(float(msg["sleep"]))
    record(msg, "sync_each")


@registry.stream_handler("async_each", batch_size=100)
async def async_each(msg: Message) -> None:
    record(msg, "async_each")


@registry.stream_handler("sync_batch", batch=True, batch_size=200)
def sync_batch(msgs: list[Message]) -> None:
    pipe = _redis().pipeline()
    for msg in msgs:
        pipe.hincrby(f"handled:{msg.stream}", f"{msg.id}|sync_batch", 1)
    pipe.execute()


@registry.stream_handler("async_batch", batch=True, batch_size=200, max_retries=0)
async def async_batch(msgs: list[Message]) -> dict[str, BaseException]:
    failed: dict[str, BaseException] = {}
    for msg in msgs:
        if msg.get("fail") == "1":
            failed[msg.id] = ValueError("asked to fail")
        else:
            record(msg, "async_batch")
    return failed


@registry.stream_handler("spread", batch=True, batch_size=100)
def spread(msgs: list[Message]) -> None:
    """Records each entry once, and which Ray node ran the batch."""
    import ray

    pipe = _redis().pipeline()
    for msg in msgs:
        pipe.hincrby(f"handled:{msg.stream}", f"{msg.id}|spread", 1)
    pipe.sadd("spread:nodes", ray.get_runtime_context().get_node_id())
    pipe.execute()
