"""The trim point (pure): nothing below it is unacked by any group, and it is as high as that
allows (or the retention)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamtasks.redisutil import id_key
from streamtasks.streams import NO_GROUP, RETENTION, GroupPosition, after, cap_id, trim_point


def test_a_stream_without_groups_is_never_trimmed() -> None:
    assert trim_point([], cap=None) == trim_point([], cap="99-0")
    assert trim_point([], cap=None).minid is None
    assert trim_point([], cap=None).held_by == NO_GROUP


def test_the_group_furthest_behind_holds_the_trim_back() -> None:
    groups = [
        GroupPosition("fast", last_delivered="50-0", oldest_pending=None),
        GroupPosition("slow", last_delivered="40-0", oldest_pending="12-3"),
        GroupPosition("idle", last_delivered="20-0", oldest_pending=None),
    ]
    point = trim_point(groups, cap=None)
    assert point.minid == "12-3" and point.held_by == "slow"


def test_a_group_that_has_not_read_holds_everything() -> None:
    point = trim_point([GroupPosition("new", "0-0", None), GroupPosition("a", "9-0", None)], None)
    assert point.minid == "0-1" and point.held_by == "new"


def test_retention_keeps_recent_entries_even_when_acked() -> None:
    groups = [GroupPosition("a", last_delivered="5000-0", oldest_pending=None)]
    assert trim_point(groups, cap_id(now_ms=5000, keep_ms=2000)).minid == "3000-0"
    assert trim_point(groups, cap_id(now_ms=5000, keep_ms=2000)).held_by == RETENTION
    assert trim_point(groups, cap_id(now_ms=5000, keep_ms=None)).minid == "5000-1"
    assert cap_id(now_ms=10, keep_ms=2000) == "0-0"


def test_after_is_the_next_id() -> None:
    assert after("5-0") == "5-1"
    assert id_key(after("1700000000000-99")) > id_key("1700000000000-99")


@st.composite
def stream_states(draw: st.DrawFn) -> tuple[int, list[tuple[GroupPosition, set[int]]], int | None]:
    """A stream of ids 1-0 .. n-0 and groups, each with a position and the pending subset."""
    n = draw(st.integers(0, 40))
    groups = []
    for g in range(draw(st.integers(0, 4))):
        delivered = draw(st.integers(0, n))
        pending = draw(st.sets(st.integers(1, delivered), max_size=delivered)) if delivered else set()
        oldest = f"{min(pending)}-0" if pending else None
        groups.append((GroupPosition(f"g{g}", f"{delivered}-0", oldest), pending))
    keep = draw(st.none() | st.integers(0, n + 2))
    return n, groups, keep


@given(stream_states())
def test_nothing_below_the_trim_point_is_unacked_by_any_group(
    state: tuple[int, list[tuple[GroupPosition, set[int]]], int | None],
) -> None:
    """Every entry below the point was delivered to and acked by every group; the entry at
    the point (if any, and unless the retention holds) is not acked by some group."""
    n, groups, keep = state
    now_ms = n + 1
    point = trim_point([g for g, _ in groups], cap_id(now_ms, keep))
    if not groups:
        assert point.minid is None
        return
    assert point.minid is not None
    bound = id_key(point.minid)

    def acked_by_all(i: int) -> bool:
        return all(i <= id_key(g.last_delivered)[0] and i not in p for g, p in groups)

    for i in range(1, n + 1):
        if (i, 0) < bound:
            assert acked_by_all(i), (i, point)
    if point.held_by != RETENTION:
        first_kept = bound[0] if bound[1] == 0 else bound[0] + 1
        if 1 <= first_kept <= n:
            assert not acked_by_all(first_kept)


def test_trimmed_events_feed_the_trimmed_entries_metric() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from streamtasks.observe.metrics import SettledObserver
    from streamtasks.worker.events import Trimmed
    from streamtasks.worker.tally import Tally

    registry = CollectorRegistry()
    worker = Tally("w")  # the worker's tally, a listener of its events
    SettledObserver(registry, worker)
    worker(Trimmed("orders", 5, "billing"))
    worker(Trimmed("orders", 2, "billing"))
    text = generate_latest(registry).decode()
    assert 'streamtasks_entries_trimmed_total{held_by="billing",stream="orders"} 7.0' in text
