"""Actor mode's worker process is ready only once every actor reads, and says which actors
Ray has not started (pure logic: the actors are stand-ins answering ``report``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from streamtasks import Registry
from streamtasks.ray import pool as actors
from streamtasks.ray.pool import ActorPool
from streamtasks.ray.slots import ActorGroup, Slot
from streamtasks.worker.events import Snapshot
from streamtasks.worker.tally import Tally

registry = Registry(group="g")


@registry.stream_handler("s")
def handle(msg: Any) -> None:
    pass


class Method:
    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def remote(self) -> Any:
        if self.answer is None:  # an actor Ray has not placed: its call never completes
            return asyncio.get_running_loop().create_future()

        async def answer() -> Any:
            return self.answer

        return answer()


class Actor:
    def __init__(self, state: str | None) -> None:
        snap = None if state is None else Snapshot("c-a", "g", state, 0.0, {}, None)
        self.report = Method(None if snap is None else (snap, Tally("x")))


class NoRay:
    """Stands for the Ray executor: this test never starts Ray."""

    cluster = None
    env: dict[str, str] = {}


class NoRedis:
    """Stands for the Redis client: the pool registers its scripts, and this test runs none."""

    def register_script(self, script: str) -> None:
        return None


def pool(*states: str | None) -> ActorPool:
    p = ActorPool(registry, NoRedis(), "redis://", NoRay())  # type: ignore[arg-type]
    for i, state in enumerate(states):
        group = ActorGroup(i, registry, {"num_cpus": 1.0, "i": i}, 1)
        p.actors.slots[i] = Slot(i, group, Actor(state), f"c-a{i}")
    return p


async def test_ready_only_once_every_actor_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(actors, "POLL_INTERVAL_S", 0.01)
    p = pool("reading", None)
    await p._poll()
    assert p.state == "starting" and not p.reading.is_set()  # one of two actors reads
    p.actors.slots[1].handle = Actor("reading")
    await p._poll()
    assert p.state == "reading" and p.reading.is_set()


async def test_actors_not_started_in_time_are_named_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(actors, "POLL_INTERVAL_S", 0.01)
    monkeypatch.setattr(actors, "PLACE_WARN_S", 0.0)
    p = pool("reading", None, "reading")
    with caplog.at_level(logging.WARNING, "streamtasks.worker"):
        await p._poll()
        await p._poll()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "actors 1 not running" in warnings[0], warnings
    assert "s asks for num_cpus=1.0" in warnings[0] and p.state == "starting"
