"""Handlers of ``benchmarks/scale.py`` (imported by worker subprocesses and in-process workers).

``SCALE_RECORD=1`` makes the sharded handler record ``key:seq`` per shard in Redis (a list per
shard, in handling order) so the acceptance run can check "each once, per-key order".
"""

from __future__ import annotations

import os
from typing import Any

from streamtasks import Message, Registry

SHARDS = 16
registry = Registry(group="scale")
_client: list[Any] = []


def _redis() -> Any:
    if not _client:
        from redis import Redis
        from redis.cluster import RedisCluster

        url = os.environ["SCALE_REDIS_URL"]
        cluster = os.environ.get("SCALE_CLUSTER") == "1"
        _client.append(RedisCluster.from_url(url) if cluster else Redis.from_url(url))
    return _client[0]


@registry.stream_handler("orders", shards=SHARDS, batch=True, batch_size=500)
def orders(msgs: list[Message]) -> None:
    if os.environ.get("SCALE_RECORD") != "1" or not msgs:
        return
    _redis().rpush(f"handled:{msgs[0].stream}", *(f"{m['key']}:{m['seq']}" for m in msgs))


soak = Registry(group="soak")


@soak.stream_handler("{soak}", batch=True, batch_size=1000, trim_acked_after=0)
def soaked(msgs: list[Message]) -> None:
    return None
