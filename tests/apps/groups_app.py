"""Two handlers with different Ray options: actor mode starts a group of actors for each (an
actor runs in one process with one set of options). Records what it handled in Redis."""

from __future__ import annotations

import os

import redis as sync_redis

from streamtasks import Message, Registry

registry = Registry(group="groups-tests")
_clients: dict[str, sync_redis.Redis] = {}


def _redis() -> sync_redis.Redis:
    url = os.environ["TEST_REDIS_URL"]  # set by the ray_address fixture (tests/conftest.py)
    if url not in _clients:
        _clients[url] = sync_redis.Redis.from_url(url)
    return _clients[url]


@registry.stream_handler("plain", batch_size=20)
def plain(msg: Message) -> None:
    _redis().hincrby("groups:handled", f"plain|{msg.id}", 1)


@registry.stream_handler("half_cpu", batch_size=20, num_cpus=0.5)
def half_cpu(msg: Message) -> None:
    _redis().hincrby("groups:handled", f"half_cpu|{msg.id}", 1)
