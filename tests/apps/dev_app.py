"""The dev-loop tests' app (tests/integration/test_dev_loop.py): records every handled entry,
the time of the first, and its VERSION, in the Redis at REDIS_URL. The reload test runs a copy
of this file from a temporary directory and edits VERSION while the worker runs."""

from __future__ import annotations

import os
import time

import redis as sync_redis

from streamtasks import Message, Registry

VERSION = "1"
registry = Registry(group="dev-loop")
_client: list[sync_redis.Redis] = []


def _redis() -> sync_redis.Redis:
    if not _client:
        _client.append(sync_redis.Redis.from_url(os.environ["REDIS_URL"]))
    return _client[0]


@registry.stream_handler("dev", batch=True, batch_size=20, max_in_flight=2)
def on_dev(msgs: list[Message]) -> None:
    time.sleep(float(msgs[0].get("sleep") or 0))
    pipe = _redis().pipeline()
    pipe.set("dev:first", repr(time.time()), nx=True)
    for msg in msgs:
        pipe.hincrby("dev:handled", msg.id, 1)
        pipe.hsetnx("dev:version", msg.id, VERSION)
        pipe.hsetnx("dev:handled_at", msg.id, repr(time.time()))
    pipe.execute()
