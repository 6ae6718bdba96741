"""A typed handler served by a real worker (tests/integration/test_typed_worker.py)."""

from __future__ import annotations

import os

import msgspec
import redis as sync_redis

from streamtasks import Registry

registry = Registry(group="shop")


class Order(msgspec.Struct):
    amount: float
    note: str = ""


@registry.stream_handler("orders", max_retries=0)
def on_order(order: Order) -> None:
    sync_redis.Redis.from_url(os.environ["REDIS_URL"]).rpush("shop:orders", msgspec.json.encode(order))
