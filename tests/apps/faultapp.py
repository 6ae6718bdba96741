"""The app the fault-injection tests run in worker subprocesses (``faultapp:registry``).

Every handler records what it did in a *ledger* Redis (``FAULT_LEDGER_URL``), a server
separate from the one under test, so the record survives the faults the tests inject
(a restarted Redis, a destroyed group) and tells the invariant checker what was handled:

* ``handled`` (hash): entry key (field ``k``) -> how many times a handler completed it;
* ``runs`` (hash): entry key -> how many times a handler started it (failures included);
* ``attempts`` (hash): entry key -> the highest ``Message.attempt`` the handler saw;
* ``text`` (hash): entry key -> the ``text`` field as the handler got it (UTF-8 bytes);
* ``pids`` (list): ``<pid> <key>`` of entries with ``pid=1`` (the test kills that process).

Behaviour is chosen per entry by its fields, and by flag keys in the ledger:

* ``poison=1``: raise ``ValueError`` unless the ledger key ``fixed`` exists;
* ``dep=1``: raise ``ConnectionError`` while the ledger key ``dep_down`` exists;
* ``sleep=<s>``: take ``s`` seconds;
* ``pid=1``: record the process id, then wait (up to 60 s) for the ledger key ``release``;
* ``hold=1``: wait (up to 60 s) while the ledger key ``hold`` exists.

The ``jobs`` handler's options come from ``FAULT_*`` env vars read at import (in the worker
subprocess; the spec travels to Ray whole). The ledger URL reaches the Ray worker processes
through the handler's ``runtime_env``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import redis

from streamtasks import Message, Registry
from streamtasks.adserving.records import parse_inference

LEDGER_ENV = "FAULT_LEDGER_URL"
WAIT_LIMIT_S = 60.0
POLL_S = 0.05

registry = Registry(group="fault")

_local = threading.local()


def ledger() -> redis.Redis:
    """A ledger client per thread of this process."""
    client: redis.Redis | None = getattr(_local, "client", None)
    if client is None:
        client = redis.Redis.from_url(os.environ[LEDGER_ENV])
        _local.client = client
    return client


def _env_num(name: str, default: float) -> Any:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return type(default)(raw)


def _ray_options() -> dict[str, Any]:
    url = os.environ.get(LEDGER_ENV)
    return {"runtime_env": {"env_vars": {LEDGER_ENV: url}}} if url else {}


def _wait(until: Any) -> None:
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not until() and time.monotonic() < deadline:
        time.sleep(POLL_S)


def run_one(msg: Message) -> None:
    """Do what the entry asks; raise to fail it."""
    key = msg.get("k", msg.id)
    db = ledger()
    db.hincrby("runs", key, 1)
    db.eval(
        "local v = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') "
        "if tonumber(ARGV[2]) > v then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end",
        1, "attempts", key, msg.attempt,
    )  # fmt: skip
    if msg.get("pid"):
        db.rpush("pids", f"{os.getpid()} {key}")
        _wait(lambda: db.exists("release"))
    if msg.get("hold"):
        _wait(lambda: not db.exists("hold"))
    if msg.get("sleep"):
        time.sleep(float(msg["sleep"]))
    if msg.get("dep") and db.exists("dep_down"):
        raise ConnectionError("dependency is down")
    if msg.get("poison") and not db.exists("fixed"):
        raise ValueError(f"poison entry {key}")
    if "text" in msg.fields:
        db.hset("text", key, msg["text"].encode("utf-8", "surrogatepass"))


@registry.stream_handler(
    "jobs",
    batch=True,
    batch_size=_env_num("FAULT_BATCH_SIZE", 50),
    max_in_flight=_env_num("FAULT_MAX_IN_FLIGHT", 2),
    max_retries=_env_num("FAULT_MAX_RETRIES", 3),
    backoff_base=_env_num("FAULT_BACKOFF_BASE", 0.05),
    backoff_max=_env_num("FAULT_BACKOFF_MAX", 1.0),
    **_ray_options(),
)
def jobs(msgs: list[Message]) -> dict[str, Exception]:
    """Batch handler: runs every entry, records the successful ones, returns the failures."""
    failed: dict[str, Exception] = {}
    done: list[str] = []
    for msg in msgs:
        try:
            run_one(msg)
        except Exception as exc:
            failed[msg.id] = exc
        else:
            done.append(msg.get("k", msg.id))
    if done:
        pipe = ledger().pipeline(transaction=False)
        for key in done:
            pipe.hincrby("handled", key, 1)
        pipe.execute()
    return failed


def _record(msg: Message) -> None:
    ledger().hincrby("handled", msg.get("k", msg.id), 1)


@registry.stream_handler("inference", max_retries=3, backoff_base=0.05, **_ray_options())
def inference(msg: Message) -> None:
    """Validates with the built-in parser (no database): bad input raises DecodeError."""
    parse_inference(msg)
    _record(msg)


@registry.stream_handler("small", max_entry_bytes=1024, max_retries=3, backoff_base=0.05, **_ray_options())
def small(msg: Message) -> None:
    """Accepts entries up to 1 KiB; reads the JSON field ``payload``."""
    msg.json("payload")
    _record(msg)


@registry.stream_handler("text", **_ray_options())
def text(msg: Message) -> None:
    """Records the ``text`` field exactly as received."""
    ledger().hset("text", msg.get("k", msg.id), msg["text"].encode("utf-8", "surrogatepass"))
    _record(msg)
