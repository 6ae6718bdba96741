"""The controller's I/O decisions (stand-ins for the actors and their reports): which actors a
scale-down removes, what the snapshot says per group, and actors Ray cannot place said once."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from streamtasks import Registry
from streamtasks.ray import controller as controller_module
from streamtasks.ray.controller import Controller, GroupScale
from streamtasks.ray.slots import ActorGroup, Slot
from streamtasks.scaling import Autoscale, Scaler
from streamtasks.worker import WorkerSettings
from streamtasks.worker.tally import Tally

registry = Registry(group="g")
registry.stream_handler("jobs")(lambda msg: None)
GROUP = ActorGroup(0, registry, {}, 1)


class FakeActors:
    def __init__(self) -> None:
        self.slots: dict[int, Slot] = {}
        self.removed: list[int] = []

    def of(self, group: ActorGroup) -> list[Slot]:
        return [s for s in self.slots.values() if s.group.index == group.index]

    def add(self, group: ActorGroup) -> Slot:
        index = next(i for i in range(len(self.slots) + 1) if i not in self.slots)
        slot = self.slots[index] = Slot(index, group, object(), f"c-a{index}")
        return slot

    async def remove(self, slot: Slot) -> None:
        slot.stopping = True
        self.removed.append(slot.index)


class FakeReports:
    def __init__(self, reading: set[int]) -> None:
        self.read = reading

    def reading(self, index: int) -> bool:
        return index in self.read


AUTO = Autoscale(min=1, max=5)


def controller(reading: set[int], autoscale: Autoscale | None = AUTO) -> Any:
    actors, reports = FakeActors(), FakeReports(reading)
    return Controller(None, actors, reports, Tally("t"), WorkerSettings(), autoscale)  # type: ignore[arg-type]


async def test_a_scale_down_removes_the_unplaced_first_then_the_newest() -> None:
    c = controller(reading={0, 1, 3})
    c.start("g", "c", [(GROUP, 5)])
    for _ in range(4):
        c.actors.add(GROUP)  # 0 (from start) ... 4; 2 and 4 not placed
    gs = c.groups[0]
    await c.apply(gs, 2)
    assert c.actors.removed == [4, 2, 3]
    assert [s.index for s in c._live(gs)] == [0, 1]


async def test_a_scale_up_asks_for_the_missing_ones_and_the_snapshot_counts_them() -> None:
    c = controller(reading={0})
    c.start("g", "c", [(GROUP, 5)])
    gs = c.groups[0]
    gs.scaler = Scaler.start(3, 0.0)
    await c.apply(gs, 3)
    [state] = c.states()
    assert (state.desired, state.running, state.starting, state.min, state.max) == (3, 1, 2, 1, 5)
    assert state.handlers == ("jobs",)


def test_a_fixed_number_is_reported_without_bounds() -> None:
    c = controller(reading={0, 1}, autoscale=None)
    c.start("g", "c", [(GROUP, 2)])
    [state] = c.states()
    assert (state.desired, state.running, state.min, state.max, state.reason) == (
        2,
        2,
        None,
        None,
        "fixed at 2",
    )


def test_actors_ray_cannot_place_are_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    c = controller(reading={0})
    c.clock = lambda: now[0]
    c.start("g", "c", [(GROUP, 5)])
    late = c.actors.add(GROUP)
    late.created_at = -100.0
    gs: GroupScale = c.groups[0]
    monkeypatch.setattr(controller_module, "PLACE_WARN_S", 30.0)
    with caplog.at_level(logging.WARNING, "streamtasks.worker"):
        c._say_unplaced(gs)
        c._say_unplaced(gs)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and f"actors {late.index} of jobs not running" in said[0]
