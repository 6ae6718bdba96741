"""Actor mode logs each Redis outage once for the whole worker (``health.OutageFold``), from
the outage events each actor's tally carries (``Tally.outages_since``). Pure logic."""

from __future__ import annotations

import logging
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamtasks.worker.events import Event, RedisDown, RedisUp
from streamtasks.worker.health import CONFIRM_S, INCIDENT_WINDOW_S, OutageFold
from streamtasks.worker.tally import OUTAGE_EVENTS_KEPT, Tally

DOWN = RedisDown("reading", "ConnectionError: Connection closed by server.")


def fold() -> tuple[OutageFold, list[Event]]:
    emitted: list[Event] = []
    return OutageFold(emitted.append), emitted


def test_two_actors_down_and_back_make_one_line_each_way_with_the_longest_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outages, emitted = fold()
    with caplog.at_level(logging.WARNING, "streamtasks.worker"):
        outages.see(0, 0.0, DOWN)
        outages.see(1, 0.2, RedisDown("settling", "ConnectionError"))
        outages.see(1, 1.7, RedisUp(1.5))
        outages.see(0, 2.25, RedisUp(2.25))
    assert [r.getMessage() for r in caplog.records if r.name == "streamtasks.worker"] == [
        f"Redis unavailable while reading ({DOWN.error}); retrying with backoff",
        "Redis is back after 2.2s",
    ]
    assert emitted == [DOWN, RedisUp(2.25)]


def test_an_actor_that_notices_after_the_others_are_back_is_the_same_outage() -> None:
    """A Redis restart: one actor sees it and reconnects in 0.1 s; the other, idle, trips over
    its stale connection a moment later, also for 0.1 s. One outage, not two."""
    outages, emitted = fold()
    outages.see(0, 10.0, DOWN)
    outages.see(0, 10.1, RedisUp(0.1))
    outages.see(1, 10.15, DOWN)
    outages.see(1, 10.25, RedisUp(0.1))
    outages.tick(11.5)
    assert emitted == [DOWN, RedisUp(0.1)]


def test_a_second_outage_soon_after_a_recovery_is_reported_once_it_lasts() -> None:
    """Down 3 s, up 5 s, down 4 s: two outages, the second reported once it lasted CONFIRM_S."""
    outages, emitted = fold()
    outages.see(0, 0.0, DOWN)
    outages.see(0, 3.0, RedisUp(3.0))
    outages.see(1, 8.0, DOWN)
    outages.tick(8.0 + CONFIRM_S / 2)
    assert emitted == [DOWN, RedisUp(3.0)]
    outages.tick(8.0 + CONFIRM_S)
    assert emitted == [DOWN, RedisUp(3.0), DOWN]
    outages.see(1, 12.0, RedisUp(4.0))
    assert emitted == [DOWN, RedisUp(3.0), DOWN, RedisUp(4.0)]


def test_a_second_outage_seen_whole_between_two_looks_is_still_reported() -> None:
    outages, emitted = fold()
    outages.see(0, 0.0, DOWN)
    outages.see(0, 1.0, RedisUp(1.0))
    outages.see(0, 5.0, DOWN)
    outages.see(0, 5.0 + CONFIRM_S + 0.5, RedisUp(CONFIRM_S + 0.5))
    assert emitted == [DOWN, RedisUp(1.0), DOWN, RedisUp(CONFIRM_S + 0.5)]


def test_an_outage_after_the_window_is_reported_at_once() -> None:
    outages, emitted = fold()
    outages.see(0, 0.0, DOWN)
    outages.see(0, 1.0, RedisUp(1.0))
    outages.see(1, 1.0 + INCIDENT_WINDOW_S, DOWN)
    assert emitted == [DOWN, RedisUp(1.0), DOWN]


def test_an_actor_restarted_while_down_ends_its_part_of_the_outage() -> None:
    outages, emitted = fold()
    outages.see(0, 0.0, DOWN)
    outages.see(1, 0.0, DOWN)
    outages.forget(1, 1.0)
    assert emitted == [DOWN]
    outages.see(0, 3.0, RedisUp(3.0))
    assert emitted == [DOWN, RedisUp(3.0)]
    outages.forget(0, 4.0)  # not down: nothing more
    outages.see(1, 5.0, RedisUp(9.0))  # an up it never saw the down of
    assert emitted == [DOWN, RedisUp(3.0)]


#: Each actor's own outages: (seconds up before, seconds down) per outage, in order.
outage = st.tuples(st.floats(0.0, 30.0), st.floats(0.01, 30.0))
outages_per_actor = st.lists(st.lists(outage, max_size=4), min_size=1, max_size=4)


@given(outages_per_actor, st.integers(0, 2**32))
def test_any_timeline_gives_alternating_lines_and_ends_back_up(
    per_actor: list[list[tuple[float, float]]], seed: int
) -> None:
    """Whatever the actors' outages and however the looks cut them: the lines alternate
    down/up starting with down, the first outage is reported, every "back" is at least as long
    as the actor outage that ended it, and the fold is back up once every actor is."""
    timeline: list[tuple[float, int, Event]] = []
    for actor, outages_of_actor in enumerate(per_actor):
        t = 0.0
        for up_for, down_for in outages_of_actor:
            t += up_for
            timeline += [(t, actor, DOWN), (t + down_for, actor, RedisUp(down_for))]
            t += down_for
    timeline.sort(key=lambda e: e[0])
    outages, emitted = fold()
    looks = random.Random(seed)
    for at, actor, event in timeline:
        lines = len(emitted)
        outages.see(actor, at, event)
        if isinstance(event, RedisUp) and emitted[lines:]:  # it ended the outage
            last = emitted[-1]
            assert isinstance(last, RedisUp) and last.down_for >= event.down_for
        if looks.random() < 0.5:
            outages.tick(at)
    kinds = [type(e) for e in emitted]
    assert kinds == [RedisDown, RedisUp] * (len(kinds) // 2)
    assert bool(kinds) == bool(timeline)
    assert not outages.down


@given(st.lists(st.integers(0, OUTAGE_EVENTS_KEPT - 1), max_size=12))
def test_polls_of_a_tally_see_each_outage_event_once_in_order(bursts: list[int]) -> None:
    """Between two polls fewer events than the tally keeps: the events taken poll by poll
    are every event, in order, none twice."""
    tally, seen, taken, sent = Tally("one"), None, [], []
    for burst in bursts:
        for _ in range(burst):
            event = RedisUp(float(len(sent)))
            sent.append(event)
            tally(event)
        snapshot = Tally(tally.incarnation, outages=list(tally.outages), outages_seen=tally.outages_seen)
        taken += [event for _, event in snapshot.outages_since(seen)]
        seen = snapshot
    assert taken == sent


def test_a_new_incarnation_hands_over_every_event_it_kept() -> None:
    before = Tally("old", outages=[(0.0, DOWN)], outages_seen=1)
    now = Tally("new")
    now(DOWN)
    now(RedisUp(1.0))
    assert [event for _, event in now.outages_since(before)] == [DOWN, RedisUp(1.0)]
