"""The pure detection of entries trimmed before delivery, and of a Redis that came back older
(``streamtasks/worker/gaps.py``), against a model of Redis' stream and group counters."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamtasks.streams import GroupState, StreamState, lost_before_delivery, rewind


def sid(n: int) -> str:
    return f"{1000 + n}-0"


def state(
    added: int, first: int | None, length: int, position: int, read: int | None
) -> tuple[StreamState, GroupState]:
    return (
        StreamState(length, None if first is None else sid(first), sid(added), added),
        GroupState(sid(position) if position else "0-0", read),
    )  # fmt: skip


def test_entries_trimmed_while_the_group_is_before_the_first_entry_are_counted() -> None:
    """Read 3 of 10, trimmed to the last 4: entries 4, 5, 6 were never delivered."""
    assert lost_before_delivery(*state(10, first=7, length=4, position=3, read=3)) == 3


def test_entries_trimmed_after_they_were_read_are_not_lost() -> None:
    assert lost_before_delivery(*state(10, first=6, length=5, position=5, read=5)) == 0
    assert lost_before_delivery(*state(10, first=None, length=0, position=10, read=10)) == 0


def test_a_group_at_the_end_shows_what_it_skipped() -> None:
    """The group read on after the trim: at the end, its counter says how many it never got."""
    assert lost_before_delivery(*state(10, first=7, length=4, position=10, read=7)) == 3
    assert lost_before_delivery(*state(10, first=None, length=0, position=3, read=3)) == 7


def test_part_way_through_or_without_counters_nothing_is_claimed() -> None:
    assert lost_before_delivery(*state(10, first=7, length=4, position=8, read=5)) == 0
    assert lost_before_delivery(*state(10, first=7, length=4, position=3, read=None)) == 0
    stream, group = state(10, first=7, length=4, position=3, read=3)
    old = StreamState(stream.length, stream.first_id, stream.last_generated_id, None)
    assert lost_before_delivery(old, group) == 0


def test_parsing_xinfo_replies_as_redis_py_gives_them() -> None:
    stream = StreamState.of(
        {"length": 4, "last-generated-id": b"1010-0", "entries-added": 10,
         "recorded-first-entry-id": b"1007-0", "first-entry": (b"1007-0", {b"a": b"1"})}
    )  # fmt: skip
    assert stream == StreamState(4, "1007-0", "1010-0", 10)
    redis6 = StreamState.of({"length": 1, "last-generated-id": b"5-0", "first-entry": (b"5-0", {})})
    assert redis6 == StreamState(1, "5-0", "5-0", None)
    assert GroupState.of({"name": b"g", "last-delivered-id": b"1003-0", "entries-read": None}) == GroupState(
        "1003-0", None
    )


def test_rewind_is_a_newest_id_below_what_was_read() -> None:
    assert rewind("1000-5", "1000-4")
    assert rewind("1001-0", "0-0")
    assert not rewind("1000-5", "1000-5")
    assert not rewind("1000-5", "2000-0")
    assert not rewind(None, "0-0")


# -- a model of Redis' counters: XADD, XREADGROUP, XTRIM MAXLEN ----------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 20)),
        st.tuples(st.just("read"), st.integers(1, 20)),
        st.tuples(st.just("trim"), st.integers(0, 20)),
    ),
    max_size=30,
)


@given(ops)
def test_the_count_never_exceeds_the_truth_and_equals_it_before_the_first_entry_or_at_the_end(
    steps: list[tuple[str, int]],
) -> None:
    stream: list[int] = []
    added, position, read, truth = 0, 0, 0, 0
    for op, n in steps:
        if op == "add":
            stream += range(added + 1, added + n + 1)
            added += n
        elif op == "read":
            got = [i for i in stream if i > position][:n]
            if got:
                position, read = got[-1], read + len(got)  # Redis: entries-read += 1 per entry
        elif len(stream) > n:
            removed, stream = stream[: len(stream) - n], stream[len(stream) - n :]
            truth += sum(1 for i in removed if i > position)
        first = stream[0] if stream else None
        found = lost_before_delivery(*state(added, first, len(stream), position, read))
        assert found <= truth
        if first is None or position < first or position >= added:
            assert found == truth
        # once reported, the counter is corrected: nothing is reported twice
        read += found
        truth -= found


def test_removed_is_what_redis_counted_in_minus_what_is_left() -> None:
    assert StreamState(4, "1007-0", "1010-0", 10).removed == 6
    assert StreamState(10, "1001-0", "1010-0", 10).removed == 0
    assert StreamState(1, "5-0", "5-0", None).removed is None
