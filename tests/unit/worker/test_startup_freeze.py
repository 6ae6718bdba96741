"""A process of our own (the worker command, an actor) freezes start-up's objects once its
executor started, so full collections stop walking them on the hot path (pure logic)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streamtasks.worker.events import ExecutorStarted, StateChanged
from streamtasks.worker.startup import freeze_after_start


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process' objects go back to the collector


def test_only_the_executors_start_freezes_and_then_every_object_is_out_of_reach(unfrozen: None) -> None:
    freeze_after_start(StateChanged("reading"))
    assert gc.get_freeze_count() == 0
    freeze_after_start(ExecutorStarted())
    assert gc.get_freeze_count() > 1000  # the modules' objects, at least
    assert sum(len(gc.get_objects(generation)) for generation in range(3)) < gc.get_freeze_count()


def test_objects_made_after_the_start_are_still_collected(unfrozen: None) -> None:
    freeze_after_start(ExecutorStarted())

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the collector frees it
    del a, b
    assert gc.collect() >= 2
