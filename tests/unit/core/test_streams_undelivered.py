"""``undelivered``: what ``status`` calls undelivered never exceeds what the stream holds, and
with the entries lost before delivery it adds up to Redis' lag (issue 25, item 5)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamtasks.streams import GroupState, StreamState, lost_before_delivery, undelivered


def test_a_trim_of_unread_entries_leaves_only_what_the_stream_holds_undelivered() -> None:
    """2,000 sent, none read, trimmed to 500: Redis says lag 2,000, of which 1,500 are lost."""
    stream = StreamState(length=500, first_id="1501-0", last_generated_id="2000-0", entries_added=2000)
    group = GroupState("0-0", 0)
    lost = lost_before_delivery(stream, group)
    assert (lost, undelivered(2000, 500, lost)) == (1500, 500)


def test_undelivered_is_the_lag_when_nothing_was_lost() -> None:
    assert undelivered(7, 10, 0) == 7
    assert undelivered(None, 10, 0) is None  # Redis cannot tell the lag
    assert undelivered(7, None, 0) == 7  # the length could not be read


def test_a_lag_redis_overcounts_is_capped_at_the_length() -> None:
    """The group part-way through (the loss cannot be told yet): still no more than is there."""
    assert undelivered(2000, 500, 0) == 500


@given(
    added=st.integers(0, 10_000),
    read=st.integers(0, 10_000),
    left=st.integers(0, 10_000),
)
def test_undelivered_never_exceeds_the_length_and_adds_up_with_the_lost(
    added: int, read: int, left: int
) -> None:
    """Any stream of ``added`` entries, ``read`` of them delivered, ``left`` still in it (a
    trim removed the oldest), with the group before the first entry left: Redis' lag is
    added - read; undelivered <= length, and lost + undelivered == lag."""
    read, left = min(read, added), min(left, added)
    left = min(left, added - read)  # the group is before the first entry left: all left is unread
    first = None if not left else f"{added - left + 1}-0"
    stream = StreamState(left, first, f"{added}-0" if added else "0-0", added)
    group = GroupState(f"{read}-0" if read else "0-0", read)
    lag = added - read
    lost = lost_before_delivery(stream, group)
    waiting = undelivered(lag, left, lost)
    assert waiting is not None and 0 <= waiting <= left
    assert lost + waiting == lag


@given(lag=st.integers(0, 10**9), length=st.integers(0, 10**9), lost=st.integers(0, 10**9))
def test_undelivered_is_bounded_for_any_counters(lag: int, length: int, lost: int) -> None:
    waiting = undelivered(lag, length, lost)
    assert waiting is not None and 0 <= waiting <= min(length, lag)
    if lost <= lag and lag - lost <= length:
        assert lost + waiting == lag
