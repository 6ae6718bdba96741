"""Handlers for the flow-control integration tests (rate limits, max_concurrency, priority
levels). Imported by Ray actors too, so they record what they did in Redis
(``TEST_REDIS_URL``), never in process memory."""

from __future__ import annotations

import asyncio
import os
import time

import redis as sync_redis

from streamtasks import Message, Registry

registry = Registry(group="flow-tests")
RATE = 40
_clients: dict[str, sync_redis.Redis] = {}
# Counts a call in and keeps the highest count seen: KEYS active, peak.
_ENTER = """
local n = redis.call('INCR', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
return n
"""


def _redis() -> sync_redis.Redis:
    url = os.environ["TEST_REDIS_URL"]
    if url not in _clients:
        _clients[url] = sync_redis.Redis.from_url(url)
    return _clients[url]


@registry.stream_handler("limited", rate_limit=f"{RATE}/s", batch_size=10, max_retries=0)
def limited(msg: Message) -> None:
    """Records when it was called, on which attempt."""
    _redis().rpush("calls:limited", f"{time.time()}|{msg.attempt}|{msg.id}")


@registry.stream_handler("scarce", max_concurrency=3, concurrency=8, batch_size=4)
async def scarce(msg: Message) -> None:
    """Counts the calls running at once (across every worker) and the most ever seen."""
    client = _redis()
    client.eval(_ENTER, 2, "active:scarce", "peak:scarce")
    await asyncio.sleep(0.03)
    client.decr("active:scarce")
    client.rpush("done:scarce", msg.id)


@registry.stream_handler("levels", priorities=3, batch_size=20, max_in_flight=1)
def levels(msg: Message) -> None:
    """Records the level of every entry it finished, in order."""
    time.sleep(0.004)
    _redis().rpush("order:levels", msg.stream)


@registry.stream_handler("{fcl}", priorities=2, rate_limit="400/s", max_concurrency=2, batch_size=50)
async def on_cluster(msg: Message) -> None:
    """A prioritized, limited stream whose levels share one Redis Cluster slot."""
    _redis().rpush("done:fcl", f"{msg.stream}|{msg.attempt}")
