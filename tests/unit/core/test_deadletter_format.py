"""The dead-letter format keeps every original field byte for byte, names included, and
stays within what one Lua call can pass however many fields the entry has."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamtasks.deadletter import (
    MAX_INLINE_FIELDS,
    MAX_SCRIPT_VALUES,
    PACKED_FIELDS,
    DeadLetter,
    dead_letter_fields,
    pack_fields,
    unpack_fields,
)
from streamtasks.retry import ErrorInfo

#: What Lua's unpack() (and the C stack under redis.call) takes at most.
LUA_UNPACK_LIMIT = 7999
ERROR = ErrorInfo("DecodeError", "invalid_utf8: ...", "invalid_utf8", "Traceback ...")

names = st.binary(min_size=0, max_size=12)
values = st.binary(min_size=0, max_size=40)
pairs_of = st.lists(st.tuples(names, values), max_size=30)


def letter_of(pairs: list[tuple[bytes, bytes]]) -> tuple[list[str | bytes], DeadLetter]:
    flat = dead_letter_fields(
        stream="s", entry_id="1-0", group="g", handler="h", error=ERROR, attempts=1,
        raw=[b for kv in pairs for b in kv], now_ms=5,
    )  # fmt: skip
    as_bytes = [v if isinstance(v, bytes) else v.encode() for v in [*flat, "first_failure_ms", "4"]]
    return flat, DeadLetter.from_entry("9-0", as_bytes)


def test_a_name_that_is_not_utf8_is_stored_as_its_bytes() -> None:
    flat, letter = letter_of([(b"\xff\xfename", b"v"), (b"k", b"\xfe")])
    assert b"f:\xff\xfename" in flat
    assert letter.fields["\udcff\udcfename"] == b"v"
    assert letter.replay_fields()[:4] == [b"\xff\xfename", b"v", b"k", b"\xfe"]


def test_an_entry_with_20k_fields_fits_one_lua_call_and_round_trips() -> None:
    pairs = [(f"f{i}".encode(), f"v{i}".encode()) for i in range(20_000)]
    flat, letter = letter_of(pairs)
    assert PACKED_FIELDS in flat
    assert len(flat) + 8 < LUA_UNPACK_LIMIT  # the script adds first_failure_ms, MAXLEN, the key
    assert list(letter.pairs) == pairs
    assert len(letter.replay_fields()) > MAX_SCRIPT_VALUES  # replay goes through MULTI


def test_up_to_the_inline_limit_fields_stay_one_field_each() -> None:
    pairs = [(f"f{i}".encode(), b"v") for i in range(MAX_INLINE_FIELDS)]
    flat, letter = letter_of(pairs)
    assert PACKED_FIELDS not in flat and b"f:f999" in flat
    assert len(letter.replay_fields()) <= MAX_SCRIPT_VALUES < LUA_UNPACK_LIMIT


@given(pairs_of)
def test_pack_and_unpack_are_inverse(pairs: list[tuple[bytes, bytes]]) -> None:
    assert unpack_fields(pack_fields(pairs)) == pairs


@given(pairs_of, st.integers(min_value=0, max_value=2 * MAX_INLINE_FIELDS))
def test_any_fields_survive_dead_letter_and_replay_byte_for_byte(
    pairs: list[tuple[bytes, bytes]], padding: int
) -> None:
    """Any names and values, any count (inline or packed): the replay sends what came in,
    in order, repeated names too, then the origin markers."""
    pairs = pairs + [(b"pad%d" % i, b"") for i in range(padding)]
    flat, letter = letter_of(pairs)
    assert len(flat) + 8 < LUA_UNPACK_LIMIT
    replayed = letter.replay_fields()  # (generated names are too short to be _st_origin_*)
    assert list(zip(replayed[0:-4:2], replayed[1:-4:2], strict=True)) == pairs
    assert replayed[-4:] == ["_st_origin_stream", b"s", "_st_origin_id", b"1-0"]


@given(st.lists(st.binary(max_size=24), max_size=40).map(lambda xs: xs if len(xs) % 2 == 0 else xs[:-1]))
def test_any_entry_in_a_dead_letter_stream_parses(flat: list[bytes]) -> None:
    """A dead-letter stream may hold entries nobody wrote through streamtasks (a hand-made
    XADD, a corrupt ``packed_fields``): parsing never raises, so listing goes on."""
    letter = DeadLetter.from_entry("1-0", flat)
    assert isinstance(letter.replay_fields(), list)


def test_a_corrupt_packed_value_is_kept_as_it_is() -> None:
    letter = DeadLetter.from_entry("1-0", [b"packed_fields", b"3:abc,2:x", b"reason", b"r"])
    assert list(letter.pairs) == [(b"packed_fields", b"3:abc,2:x")] and letter.reason == "r"
