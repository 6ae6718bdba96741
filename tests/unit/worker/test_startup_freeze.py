"""A process of our own (the worker command, an actor) freezes start-up's objects once its
executor started, so full collections stop walking them on the hot path, and raises the young
generation's threshold above what a batch keeps alive; cycles are still collected (pure
logic)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streamtasks.worker.events import ExecutorStarted, StateChanged
from streamtasks.worker.startup import YOUNG_GC_THRESHOLD, freeze_after_start


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()  # the test process' objects go back to the collector
    gc.set_threshold(*thresholds)


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


def test_the_young_threshold_goes_up_at_the_start_and_the_older_ones_stay(unfrozen: None) -> None:
    gc.set_threshold(700, 10, 10)
    freeze_after_start(StateChanged("reading"))
    assert gc.get_threshold() == (700, 10, 10)
    freeze_after_start(ExecutorStarted())
    assert gc.get_threshold() == (YOUNG_GC_THRESHOLD, 10, 10)


class Node:
    other: object = None


def test_cycles_made_after_the_start_are_freed_without_an_explicit_collect(unfrozen: None) -> None:
    freeze_after_start(ExecutorStarted())
    a, b = Node(), Node()
    a.other, b.other = b, a
    freed = weakref.ref(a)
    del a, b
    kept = [[] for _ in range(2 * YOUNG_GC_THRESHOLD)]  # allocations that live on
    assert freed() is None  # a young collection came due and freed the cycle
    del kept
