"""Handlers for the observability tests (metrics, status). Imported by Ray workers, so what
they record goes to Redis (``TEST_REDIS_URL``, set by the ``ray_address`` fixture).

* ``obs_work``: entries with ``bad`` are rejected (dead-lettered at once); an entry with
  ``gate`` blocks its batch until the key ``obs:gate`` exists -- a stable backlog for the test
  to compare against ``XINFO``/``XPENDING``.
* ``obs_latency``: one entry per batch; sleeps ``sleep`` seconds, then records its completion
  time (``time.time()``) in the hash ``obs:done`` -- the test's independent latency measure.
"""

from __future__ import annotations

import os
import time

import redis as sync_redis

from streamtasks import Message, Registry
from streamtasks.errors import Reject

registry = Registry(group="obs-tests")
GATE_KEY = "obs:gate"
DONE_KEY = "obs:done"
GATE_TIMEOUT_S = 90.0
_clients: dict[str, sync_redis.Redis] = {}


def _redis() -> sync_redis.Redis:
    url = os.environ["TEST_REDIS_URL"]
    if url not in _clients:
        _clients[url] = sync_redis.Redis.from_url(url)
    return _clients[url]


@registry.stream_handler("obs_work", batch_size=5, max_in_flight=1, max_retries=2)
def work(msg: Message) -> None:
    if msg.get("bad"):
        raise Reject("asked to reject", code="test_bad")
    if msg.get("gate"):
        deadline = time.monotonic() + GATE_TIMEOUT_S
        while not _redis().exists(GATE_KEY) and time.monotonic() < deadline:
            time.sleep(0.05)


@registry.stream_handler("obs_latency", batch_size=1, max_in_flight=2, max_retries=0)
def latency(msg: Message) -> None:
    time.sleep(float(msg.get("sleep") or 0))
    _redis().hset(DONE_KEY, msg.id, repr(time.time()))
