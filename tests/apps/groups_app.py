"""Two handlers with different Ray options: actor mode starts a group of actors for each (an
actor runs in one process with one set of options). Records what it handled in Redis."""

from __future__ import annotations

from core_app import _redis  # the test Redis, from TEST_REDIS_URL

from streamtasks import Message, Registry

registry = Registry(group="groups-tests")


@registry.stream_handler("plain", batch_size=20)
def plain(msg: Message) -> None:
    _redis().hincrby("groups:handled", f"plain|{msg.id}", 1)


@registry.stream_handler("half_cpu", batch_size=20, num_cpus=0.5)
def half_cpu(msg: Message) -> None:
    _redis().hincrby("groups:handled", f"half_cpu|{msg.id}", 1)
