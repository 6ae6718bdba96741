"""A registry whose handler names its own dead-letter stream (the ``dlq --app`` tests)."""

from __future__ import annotations

from streamtasks import Message, Registry

registry = Registry(group="dlq-tests")


@registry.stream_handler("jobs", dead_letter_stream="graveyard")
def jobs(msg: Message) -> None:
    raise ValueError("never used: the tests write dead letters themselves")
