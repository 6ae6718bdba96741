"""A handler with ack-aware trimming, for the trimming tests (run in-process, ``InlineExecutor``):
slow, failing some entries until they are dead-lettered; it records what it handled here."""

from __future__ import annotations

import threading
import time

from streamtasks import Message, Registry

registry = Registry(group="trim-a")
lock = threading.Lock()
handled: set[str] = set()


@registry.stream_handler(
    "trimmed", batch_size=20, max_retries=1, backoff_base=0.05, backoff_max=0.1, trim_acked_after=0
)
def slow(msg: Message) -> None:
    time.sleep(0.001)
    if msg.get("fail") == "1":
        raise ValueError("asked to fail")
    with lock:
        handled.add(str(msg["n"]))


short_lived = Registry(group="trim-c")


@short_lived.stream_handler("expiring", trim_acked_after=0, dead_letter_retention=0, max_retries=0)
def rejects_odd(msg: Message) -> None:
    if int(msg["n"]) % 2:
        raise ValueError("odd")
