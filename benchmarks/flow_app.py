"""Handlers of ``benchmarks/flow.py`` (imported by the worker subprocesses and their actors).

They record what they did in the run's Redis (``FLOW_REDIS_URL``): the rate-limited handler
the time and attempt of every call, the prioritized one the level of every entry it finished,
in order.
"""

from __future__ import annotations

import os
import time
from typing import Any

from streamtasks import Message, Registry, keys

registry = Registry(group="flow-bench")
RATE = int(os.environ.get("FLOW_RATE", "200"))
#: Entries per batch of the prioritized handler (what runs when level 0 arrives finishes first).
JOB_BATCH = int(os.environ.get("FLOW_JOB_BATCH", "100"))
JOB_SECONDS = float(os.environ.get("FLOW_JOB_SECONDS", "0.0002"))
_client: list[Any] = []


def _redis() -> Any:
    if not _client:
        from redis import Redis

        _client.append(Redis.from_url(os.environ["FLOW_REDIS_URL"]))
    return _client[0]


@registry.stream_handler("flow:limited", rate_limit=f"{RATE}/s", max_retries=0)
def limited(msg: Message) -> None:
    _redis().rpush("flow:calls", f"{time.time()}|{msg.attempt}|{os.getpid()}")


@registry.stream_handler("flow:jobs", priorities=3, batch_size=JOB_BATCH)
def jobs(msg: Message) -> None:
    time.sleep(JOB_SECONDS)
    level = keys.level_of(msg.stream)[1]
    _redis().pipeline().rpush("flow:order", level).hincrby("flow:levels", str(level), 1).execute()
