"""A delayed-entry handler and a periodic one for worker subprocesses (actor mode, kill -9):
each records in Redis what it handled, by message id, and how late."""

from __future__ import annotations

import time

from core_app import _redis  # the test Redis, from TEST_REDIS_URL

from streamtasks import Message, Registry

registry = Registry(group="timers-tests")


@registry.stream_handler("delayed", batch_size=50)
def delayed(msg: Message) -> None:
    due = msg.due.timestamp() if msg.due is not None else 0.0
    pipe = _redis().pipeline()
    pipe.hincrby("timers:handled", str(msg.message_id), 1)
    pipe.hset("timers:late", str(msg.message_id), f"{time.time() - due:.4f}")
    pipe.execute()


@registry.periodic("beat", every=0.5)
def beat(msg: Message) -> None:
    tick = msg.tick.timestamp() if msg.tick is not None else -1.0
    _redis().hincrby("timers:ticks", f"{tick:.3f}", 1)
