"""An actor's ``run`` called again while it serves (the worker process' call broke, the
process did not) joins the run in progress: one worker per actor; once that worker ended,
a call starts a new one (stand-in worker: no Ray, no Redis)."""

from __future__ import annotations

import asyncio

import pytest

from streamtasks import Registry
from streamtasks.ray import actor as actor_module
from streamtasks.ray.actor import WorkerActor
from streamtasks.worker import WorkerSettings

registry = Registry(group="g")
registry.stream_handler("s")(lambda msg: None)


async def test_a_second_run_joins_the_first_and_a_later_one_starts_anew(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(actor_module.logs, "configure", lambda *args: None)  # this process' logging stays
    actor = WorkerActor(registry, "redis://unused", WorkerSettings(consumer="c-a0"), 1)
    started: list[int] = []
    release = asyncio.Event()

    async def serve() -> None:
        started.append(1)
        await release.wait()

    actor._run = serve  # type: ignore[method-assign]
    first = asyncio.create_task(actor.run())
    second = asyncio.create_task(actor.run())
    await asyncio.sleep(0.01)
    assert started == [1] and not first.done() and not second.done()
    release.set()
    await asyncio.gather(first, second)
    await actor.run()  # the worker ended: a new one
    assert started == [1, 1]
