"""Actor mode's metrics: what each actor's counters added since the last poll (pure logic)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamtasks.worker.actors import growth
from streamtasks.worker.events import LaneSnapshot


def lane(handled: int, retried: int = 0, dead: int = 0) -> LaneSnapshot:
    return LaneSnapshot(
        stream="s", handler="h", in_flight=0, queued=0, held=0, handled=handled, retried=retried,
        dead=dead, reclaimed=0, lost=0,
    )  # fmt: skip


def test_an_actor_seen_for_the_first_time_counts_everything_it_did() -> None:
    assert growth(None, lane(120, 3, 1)) == (120, 3, 1)  # the first poll's work is not dropped


def test_growth_between_two_polls() -> None:
    assert growth(lane(100, 2, 0), lane(150, 2, 1)) == (50, 0, 1)


def test_an_actor_restarted_by_ray_counts_from_zero_again() -> None:
    assert growth(lane(5000, 10, 4), lane(30, 0, 0)) == (30, 0, 0)  # never a negative increment


counts = st.tuples(st.integers(0, 10**6), st.integers(0, 10**4), st.integers(0, 10**4))
Polls = list[tuple[tuple[int, int, int], bool]]


@given(st.lists(st.tuples(counts, st.booleans()), min_size=1, max_size=30))
def test_reported_growth_is_the_work_done_across_restarts(polls: Polls) -> None:
    """Between two polls an actor does some work, sometimes after Ray restarted it (its
    counters from 0). The growth reported is never negative and never more than the work;
    it is all of it unless a restart caught up with the old counters before the poll (no
    poller could see that one)."""
    before: LaneSnapshot | None = None
    current, done, reported = (0, 0, 0), [0, 0, 0], [0, 0, 0]
    exact = True
    for step, restarted in polls:
        base = (0, 0, 0) if restarted else current
        current = (base[0] + step[0], base[1] + step[1], base[2] + step[2])
        done = [d + s for d, s in zip(done, step, strict=True)]
        seen = None if before is None else (before.handled, before.retried, before.dead)
        if restarted and seen is not None and all(c >= b for c, b in zip(current, seen, strict=True)):
            exact = False
        grown = growth(before, lane(*current))
        assert min(grown) >= 0
        reported = [r + g for r, g in zip(reported, grown, strict=True)]
        before = lane(*current)
    assert all(r <= d for r, d in zip(reported, done, strict=True))
    if exact:
        assert reported == done
