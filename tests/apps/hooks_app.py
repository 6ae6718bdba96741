"""Middleware that records where its hooks run (process id) into the test Redis, for the
middleware tests in every mode: importable by Ray's workers, which find the test Redis in
``TEST_REDIS_URL`` (set before the session's Ray started)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import redis

from streamtasks import Message, Registry
from streamtasks.hooks import CallInfo, SettleEvent

CALLS = "hooks:calls"
HANDLED = "hooks:handled"
_clients: dict[str, redis.Redis] = {}


def ledger() -> redis.Redis:
    """A client per process (never pickled with the middleware)."""
    url = os.environ["TEST_REDIS_URL"]
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url)
    return _clients[url]


class PidLog:
    """Records ``<pid> <hook>`` of its hooks."""

    @contextlib.contextmanager
    def around_call(self, call: CallInfo) -> Iterator[None]:
        ledger().rpush(CALLS, f"{os.getpid()} around_call")
        yield

    def on_dead_letter(self, event: SettleEvent) -> None:
        ledger().rpush(CALLS, f"{os.getpid()} on_dead_letter {event.entry_id} {event.dead_letter_id}")


class BrokenDeadLetterHook:
    """Fails every time, before PidLog's turn."""

    def on_dead_letter(self, event: SettleEvent) -> None:
        raise RuntimeError("this hook is broken")


registry = Registry(group="hooks-tests")
registry.middleware(BrokenDeadLetterHook())
registry.middleware(PidLog())


@registry.stream_handler("hooked", max_retries=0, batch_size=50)
def hooked(msg: Message) -> Any:
    if msg.get("bad"):
        raise ValueError("a bad entry")
    ledger().rpush(HANDLED, msg["n"])
