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
    drained = [True, True, True]
    assert next_level([False, True, True], drained, [0, 0, 0]) == 1
    assert next_level([True, True, True], drained, [0, 5, 8]) == 0
    assert next_level([False, False], [True, True], [0, 0]) is None


def test_nothing_lower_starts_while_a_higher_level_may_have_entries_in_redis() -> None:
    assert next_level([False, False, True], [True, False, False], [0, 0, 0]) is None  # read level 1 first
    assert next_level([False, True, True], [False, False, False], [0, 0, 0]) is None  # level 0 first
    assert next_level([True, True, True], [False, False, False], [0, 0, 0]) == 0


def test_a_level_passed_over_guard_times_starts_next() -> None:
    drained = [False, False, False]
    assert next_level([True, False, True], drained, [0, 0, PRIORITY_GUARD]) == 2
    assert next_level([True, True, True], drained, [0, PRIORITY_GUARD, PRIORITY_GUARD]) == 1
    assert next_level([False, False, True], drained, [0, 0, PRIORITY_GUARD]) == 2
    assert passed_over([True, False, True], [3, 4, 5], 0) == [0, 0, 6]


def test_a_busy_level_0_leaves_each_waiting_level_one_start_in_guard_plus_one() -> None:
    ready, drained, skipped, started = [True, True, True], [False, False, False], [0, 0, 0], []
    for _ in range(10 * (PRIORITY_GUARD + 1)):
        level = next_level(ready, drained, skipped)
        assert level is not None
        skipped = passed_over(ready, skipped, level)
        started.append(level)
    assert started[:PRIORITY_GUARD] == [0] * PRIORITY_GUARD
    assert started.count(1) >= 9 and started.count(2) >= 9 and started.count(0) >= 70


levels_state = st.lists(
    st.lists(st.tuples(st.booleans(), st.booleans()), min_size=10, max_size=10), max_size=200
)


@given(st.integers(1, 10), levels_state)
def test_no_ready_level_waits_longer_than_the_guard_and_else_the_highest_goes(
    levels: int, rounds: list[list[tuple[bool, bool]]]
) -> None:
    """Whatever is ready and drained when: a start that is not the guard's is the highest
    ready level's, with every level above it drained; and level k, while it stays ready, is
    started within PRIORITY_GUARD + k starts of other levels."""
    skipped = [0] * levels
    waiting = [0] * levels  # starts of other levels since this one became ready
    for row in rounds:
        ready = [r for r, _ in row[:levels]]
        drained = [d for _, d in row[:levels]]
        level = next_level(ready, drained, skipped)
        due = [i for i in range(levels) if ready[i] and skipped[i] >= PRIORITY_GUARD]
        if due:
            assert level == due[0]
        elif level is None:
            first = next((i for i in range(levels) if ready[i]), None)
            assert first is None or not all(drained[:first])
            waiting = [w if ready[i] else 0 for i, w in enumerate(waiting)]
            continue
        else:
            assert ready[level] and level == ready.index(True) and all(drained[:level])
        skipped = passed_over(ready, skipped, level)
        waiting = [0 if i == level or not ready[i] else w + 1 for i, w in enumerate(waiting)]
        assert all(w <= PRIORITY_GUARD + k for k, w in enumerate(waiting))


def test_a_level_is_read_while_the_higher_are_drained_and_its_room_allows_or_for_its_reserve() -> None:
    nothing = [False, False, False]
    assert read_levels([0, 0, 0], nothing, in_flight=0, capacity=4) == [0, 1, 2]  # first read
    assert read_levels([2, 1, 1], nothing, in_flight=2, capacity=4) == []  # level 0 has its room full
    assert read_levels([1, 1, 1], nothing, in_flight=2, capacity=4) == [0]  # level 0 busy
    assert read_levels([1, 0, 1], nothing, in_flight=2, capacity=4) == [0, 1]  # level 1: its reserve
    assert read_levels([0, 0, 3], [True, True, False], in_flight=1, capacity=4) == [0, 1]
    assert read_levels([0, 0, 2], [True, True, False], in_flight=1, capacity=4) == [0, 1, 2]
    assert read_levels([0, 0, 4], [True, True, False], in_flight=0, capacity=4) == [0, 1]
    assert read_levels([0, 0, 0], [True, True, True], in_flight=4, capacity=4) == [1, 2]  # reserves only


@given(
    st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=10),
    st.integers(0, 8),
    st.integers(1, 8),
)
def test_the_read_plan_reads_in_priority_order_within_the_room_and_keeps_reserves(
    levels: list[tuple[int, bool]], in_flight: int, capacity: int
) -> None:
    queued = [q for q, _ in levels]
    drained = [d for _, d in levels]
    read = read_levels(queued, drained, in_flight, capacity)
    assert read == sorted(read)
    for level in range(len(levels)):
        above_drained = all(drained[i] and queued[i] == 0 for i in range(level))
        room = in_flight + sum(queued[: level + 1]) < capacity
        assert (level in read) == ((above_drained and room) or (level > 0 and queued[level] == 0))


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
    assert group.next_to_start() is None  # levels 0 and 1 may have entries: read them first
    group.saw(top, found=False)
    group.saw(middle, found=False)
    assert group.next_to_start() is low


def test_a_full_level_0_is_not_read_and_lower_levels_keep_one_batch_in_reserve() -> None:
    top, middle, low = _levels(max_in_flight=1)
    priorities = Priorities({lane.stream: lane for lane in (top, middle, low)})
    assert priorities.readable([top, middle, low]) == [top, middle, low]
    _queue(top, 2)  # capacity 2 (max_in_flight 1 + prefetch 1): full for level 0
    assert priorities.readable([top, middle, low]) == [middle, low]
    _queue(middle, 1)
    _queue(low, 1)
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
