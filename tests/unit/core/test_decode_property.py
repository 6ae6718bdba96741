"""Property: whatever shape an entry has, the decode path gives it exactly one final
outcome at its first delivery — done, or dead with a known reason and a dead letter that
one Lua call can write and that replays the entry byte for byte. Never a retry, never an
exception that would fail its batch-mates. Pure: no services (the integration twin is
``tests/integration/test_hostile_property.py``)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.hostile import MAX_ENTRY_BYTES, Pairs, entries, parse_all

from streamtasks import DecodeError, Message, Registry
from streamtasks.adserving.modelstats import stats_window
from streamtasks.deadletter import DeadLetter, dead_letter_fields
from streamtasks.message import decode_entry
from streamtasks.retry import Dead, RetryLater
from streamtasks.worker import RawEntry, run_batch

LUA_UNPACK_LIMIT = 7999
KNOWN_REASONS = {
    "missing_field", "invalid_json", "wrong_type", "invalid_value", "nul_byte", "lone_surrogate",
    "too_deep", "too_large", "invalid_utf8", "bad_reserved_field", "invalid",
}  # fmt: skip
IDS = ["1700000000000-{}", "253402300800000-{}", f"{2**64 - 1}-{{}}"]

registry = Registry(group="prop")


@registry.stream_handler("s", batch=True, max_retries=20, max_entry_bytes=MAX_ENTRY_BYTES)
def store(msgs: list[Message]) -> dict[str, Exception] | None:
    return parse_all(msgs)[1] or None


def flat(pairs: Pairs) -> list[bytes]:
    return [b for kv in pairs for b in kv]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(st.lists(entries(), min_size=1, max_size=6), st.sampled_from(IDS))
def test_every_entry_gets_one_final_outcome_and_a_faithful_dead_letter(batch: list[Pairs], ids: str) -> None:
    raw: list[RawEntry] = [(ids.format(i), flat(pairs), 1) for i, pairs in enumerate(batch)]
    result = run_batch(registry.handlers["s"], raw)
    assert result.size == len(batch)
    for index, pairs in enumerate(batch):
        outcome = result.failed.get(index)
        assert not isinstance(outcome, RetryLater), (index, outcome)
        if outcome is None:
            continue
        assert isinstance(outcome, Dead) and outcome.error.reason in KNOWN_REASONS, outcome
        letter = dead_letter_fields(
            stream="s", entry_id=raw[index][0], group="prop", handler="store", error=outcome.error,
            attempts=1, raw=raw[index][1], now_ms=1,
        )  # fmt: skip
        assert len(letter) + 8 < LUA_UNPACK_LIMIT
        encoded = [v if isinstance(v, bytes) else v.encode() for v in letter]
        assert list(DeadLetter.from_entry("1-0", encoded).pairs) == pairs


RESERVED_NAMES = ["_st_mid", "_st_ts", "_st_origin_stream", "_st_origin_id"]


@given(
    st.dictionaries(st.sampled_from(RESERVED_NAMES), st.text(max_size=30), max_size=4), st.sampled_from(IDS)
)
def test_every_accessor_either_works_or_raises_decode_error(reserved: dict[str, str], ids: str) -> None:
    """A Message built by hand with any reserved values: no accessor raises anything but
    DecodeError, and decode_entry accepts exactly the fields the accessors can read."""
    msg = Message("s", ids.format(0), {"a": "b", **reserved})
    failed = False
    for read in (
        lambda: msg.enqueued_at,
        lambda: msg.produced_at,
        lambda: msg.idempotency_key,
        lambda: msg.origin,
    ):
        try:
            read()
        except DecodeError as exc:
            assert exc.reason == "bad_reserved_field"
            failed = True
    encoded = [b for k, v in msg.fields.items() for b in (k.encode(), v.encode("utf-8", "surrogatepass"))]
    try:
        decode_entry("s", msg.id, encoded)
    except DecodeError as exc:
        assert exc.reason in {"bad_reserved_field", "invalid_utf8"}
    else:
        assert not failed


@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**80), 2**80)))
def test_any_stats_window_is_clamped_or_refused(hours: float) -> None:
    now = datetime.now(timezone.utc)
    try:
        window = stats_window(hours, now)
    except ValueError:
        assert not hours > 0
        return
    assert 0 < window <= hours
    assert now - timedelta(hours=window) >= datetime(1970, 1, 1, tzinfo=timezone.utc)
