"""Priority levels (pure): which level starts next (:func:`next_level`, with the guard) and
which levels are read (:func:`read_levels`), and the lanes of one prioritized stream sharing
its handler's ``max_in_flight``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamtasks import Message, Registry
from streamtasks.worker.lanes import Batch, Lane
from streamtasks.worker.priority import PRIORITY_GUARD, Priorities, next_level, passed_over, read_levels


def test_the_highest_ready_level_starts_first() -> None:
    assert next_level([False, True, True], [0, 0, 0]) == 1
    assert next_level([True, True, True], [0, 5, 8]) == 0
    assert next_level([False, False], [0, 0]) is None


def test_a_level_passed_over_guard_times_starts_next() -> None:
    assert next_level([True, False, True], [0, 0, PRIORITY_GUARD]) == 2
    assert next_level([True, True, True], [0, PRIORITY_GUARD, PRIORITY_GUARD]) == 1
    assert passed_over([True, False, True], [3, 4, 5], 0) == [0, 0, 6]


def test_a_busy_level_0_leaves_each_waiting_level_one_start_in_guard_plus_one() -> None:
    ready, skipped, started = [True, True, True], [0, 0, 0], []
    for _ in range(10 * (PRIORITY_GUARD + 1)):
        level = next_level(ready, skipped)
        assert level is not None
        skipped = passed_over(ready, skipped, level)
        started.append(level)
    assert started[:PRIORITY_GUARD] == [0] * PRIORITY_GUARD
    assert started.count(1) >= 9 and started.count(2) >= 9 and started.count(0) >= 70


@given(
    st.integers(1, 10),
    st.lists(st.lists(st.booleans(), min_size=10, max_size=10), min_size=1, max_size=200),
)
def test_no_ready_level_waits_longer_than_the_guard_and_else_the_highest_goes(
    levels: int, rounds: list[list[bool]]
) -> None:
    """Whatever becomes ready when: level k, while it stays ready, is started within
    PRIORITY_GUARD + k starts of other levels, and a start that is not the guard's is the
    highest ready level's."""
    skipped = [0] * levels
    waiting = [0] * levels  # starts of other levels since this one became ready
    for row in rounds:
        ready = row[:levels]
        level = next_level(ready, skipped)
        if not any(ready):
            assert level is None
            waiting = [0] * levels
            continue
        assert level is not None and ready[level]
        due = [i for i in range(levels) if ready[i] and skipped[i] >= PRIORITY_GUARD]
        assert level == (due[0] if due else ready.index(True))
        skipped = passed_over(ready, skipped, level)
        waiting = [0 if i == level or not ready[i] else w + 1 for i, w in enumerate(waiting)]
        assert all(w <= PRIORITY_GUARD + k for k, w in enumerate(waiting))


def test_lower_levels_are_read_when_the_higher_are_drained_or_to_keep_one_batch_in_reserve() -> None:
    assert read_levels([0, 0, 0], [False, False, False], free=4) == [0, 1, 2]  # nothing read yet
    assert read_levels([2, 1, 1], [False, False, False], free=1) == [0]  # level 0 busy
    assert read_levels([2, 0, 1], [False, True, False], free=1) == [0, 1]  # level 1: its reserve
    assert read_levels([0, 3, 1], [True, False, True], free=1) == [0, 1]  # level 1 busy now
    assert read_levels([0, 0, 2], [True, True, False], free=1) == [0, 1, 2]
    assert read_levels([0, 0, 0], [False, False, False], free=0) == []


@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=10), st.integers(-3, 8))
def test_the_read_plan_keeps_level_order_and_never_reads_a_full_group(
    levels: list[tuple[int, bool]], free: int
) -> None:
    queued = [q for q, _ in levels]
    drained = [d for _, d in levels]
    read = read_levels(queued, drained, free)
    if free <= 0:
        assert read == []
        return
    assert read[:1] == [0] and read == sorted(read)
    for level in range(len(levels)):
        above_drained = all(drained[i] and queued[i] == 0 for i in range(level))
        assert (level in read) == (above_drained or queued[level] == 0)


def _levels(max_in_flight: int = 2) -> list[Lane]:
    registry = Registry(group="g")

    @registry.stream_handler("orders", priorities=3, max_in_flight=max_in_flight)
    def handle(msg: Message) -> None: ...

    lanes = {name: Lane(spec, prefetch=1) for name, spec in registry.handlers.items()}
    Priorities(lanes)
    return list(lanes.values())


def _queue(lane: Lane, batches: int) -> None:
    for n in range(batches):
        lane.queue.append(Batch([(f"{lane.spec.level}-{n}", [], 1)]))


def test_the_levels_of_a_stream_share_max_in_flight_and_start_level_0_first() -> None:
    top, middle, low = _levels(max_in_flight=2)
    _queue(low, 3)
    _queue(top, 2)
    group = top.levels
    assert group is not None and middle.levels is group and low.levels is group
    assert group.next_to_start() is top
    top.in_flight[object()] = top.queue.popleft()  # type: ignore[index]
    assert group.next_to_start() is top
    top.in_flight[object()] = top.queue.popleft()  # type: ignore[index]
    assert group.next_to_start() is None  # two running: the levels' max_in_flight together
    top.in_flight.clear()
    assert group.next_to_start() is low


def test_only_lanes_with_room_are_read_and_a_full_group_not_at_all() -> None:
    top, middle, low = _levels(max_in_flight=1)
    reader_plan = top.levels
    assert reader_plan is not None
    priorities = Priorities({lane.stream: lane for lane in (top, middle, low)})
    assert priorities.readable([top, middle, low]) == [top, middle, low]
    _queue(top, 2)  # capacity 2 (max_in_flight 1 + prefetch 1): full
    assert priorities.readable([top, middle, low]) == []


@pytest.mark.parametrize("shards", [None, 2])
def test_levels_group_per_shard(shards: int | None) -> None:
    registry = Registry(group="g")

    @registry.stream_handler("orders", priorities=2, shards=shards)
    def handle(msg: Message) -> None: ...

    lanes = {name: Lane(spec, prefetch=1) for name, spec in registry.handlers.items()}
    priorities = Priorities(lanes)
    groups = sorted([lane.stream for lane in g.lanes] for g in priorities.groups)
    if shards is None:
        assert groups == [["orders", "orders:p1"]]
    else:
        assert groups == [["orders:{0}", "orders:p1:{0}"], ["orders:{1}", "orders:p1:{1}"]]
