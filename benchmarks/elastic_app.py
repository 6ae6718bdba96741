"""The app of ``benchmarks/elastic.py``'s fault runs (``elastic_app:registry``): every handler
records what it did in a *ledger* Redis (``ELASTIC_LEDGER_URL``), separate from the Redis
under test, so the record survives what the run does to that one (a failover).

* ``handled`` (hash): entry key (field ``k``) -> how many times a handler completed it;
* ``pids`` (list): ``<pid> <key> <time>`` of entries with ``pid=1``, which then wait (up to
  60 s) for the ledger key ``release``: the run kills the process that runs one.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import redis

from streamtasks import Message, Registry

LEDGER_ENV = "ELASTIC_LEDGER_URL"
registry = Registry(group="elastic")
_local = threading.local()


def ledger() -> redis.Redis:
    client: redis.Redis | None = getattr(_local, "client", None)
    if client is None:
        client = _local.client = redis.Redis.from_url(os.environ[LEDGER_ENV])
    return client


def _options() -> dict[str, Any]:
    url = os.environ.get(LEDGER_ENV)
    return {"runtime_env": {"env_vars": {LEDGER_ENV: url}}} if url else {}


@registry.stream_handler("work", batch=True, batch_size=20, **_options())
def work(msgs: list[Message]) -> None:
    db = ledger()
    for msg in msgs:
        if msg.get("pid"):
            db.rpush("pids", f"{os.getpid()} {msg['k']} {time.time()}")
            deadline = time.monotonic() + 60
            while not db.exists("release") and time.monotonic() < deadline:
                time.sleep(0.02)
        elif msg.get("sleep"):
            time.sleep(float(msg["sleep"]))
    pipe = db.pipeline(transaction=False)
    for msg in msgs:
        pipe.hincrby("handled", msg["k"], 1)
    pipe.execute()
