"""Handlers for ``benchmarks/schedule.py``: a delayed-entry handler and periodic ones that
record, idempotently, what they got in Redis (``SCHEDULE_REDIS_URL``)."""

from __future__ import annotations

import functools
import os
import time

import redis

from streamtasks import Message, Registry

registry = Registry(group="schedule-bench")
STREAM = os.environ.get("SCHEDULE_STREAM", "delayed")


@functools.cache
def _redis() -> redis.Redis:
    url = os.environ["SCHEDULE_REDIS_URL"]
    if os.environ.get("SCHEDULE_CLUSTER"):
        return redis.RedisCluster.from_url(url)  # type: ignore[return-value]
    return redis.Redis.from_url(url)


@registry.stream_handler(STREAM, batch_size=200)
def delayed(batch: Message) -> None:
    now = time.time()
    due = batch.due.timestamp() if batch.due is not None else 0.0
    mid = str(batch.message_id)
    pipe = _redis().pipeline()
    pipe.hincrby("bench:deliveries", mid, 1)  # every delivery
    pipe.hsetnx("bench:late", mid, f"{now - due:.4f}")  # the first one: idempotent counting
    pipe.execute()


def _ticked(name: str, msg: Message) -> None:
    tick = msg.tick.timestamp() if msg.tick is not None else -1.0
    pipe = _redis().pipeline()
    pipe.hincrby(f"bench:{name}", f"{tick:.0f}", 1)
    pipe.hset(f"bench:{name}:added", f"{tick:.0f}", msg.id.split("-")[0])  # its XADD time (ms)
    pipe.execute()


@registry.periodic("{beat_latest}", every=1)
def beat_latest(msg: Message) -> None:
    _ticked("latest", msg)


@registry.periodic("{beat_all}", every=1, catch_up="all")
def beat_all(msg: Message) -> None:
    _ticked("all", msg)
