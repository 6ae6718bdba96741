"""Handlers for the Redis Cluster tests, run in-process (``InlineExecutor``): they record what
they handled in this module's memory, which the test reads back."""

from __future__ import annotations

import threading
from collections import defaultdict

from streamtasks import Message, Registry
from streamtasks.errors import DecodeError

SHARDS = 16

registry = Registry(group="cluster-tests")
lock = threading.Lock()
#: stream -> [(key, seq), ...] in the order handled
handled: dict[str, list[tuple[str, int]]] = defaultdict(list)


def reset() -> None:
    with lock:
        handled.clear()


@registry.stream_handler("orders", shards=SHARDS, batch=True, batch_size=200)
def orders(msgs: list[Message]) -> None:
    with lock:
        for msg in msgs:
            handled[msg.stream].append((str(msg["key"]), int(msg["seq"])))


@registry.stream_handler("{events}", batch_size=50, max_retries=0)
def events(msg: Message) -> None:
    if msg.get("bad") == "1":
        raise DecodeError("bad_input", "asked to be bad")
    with lock:
        handled[msg.stream].append(("", int(msg["seq"])))


plain = Registry(group="cluster-tests")


@plain.stream_handler("untagged_stream")
def untagged(msg: Message) -> None:
    return None
