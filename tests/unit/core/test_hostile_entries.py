"""Hostile entries at the decode path (issue 12): reserved fields with bad values, entry ids
far in the future, idempotency keys that could collide. Pure: no services."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from streamtasks import DecodeError, Message, Registry
from streamtasks.adserving.records import parse_inference, parse_training
from streamtasks.message import MAX_TIME_MS, decode_entry, id_datetime
from streamtasks.retry import Dead
from streamtasks.worker import RawEntry, run_batch

GOOD = {
    "model_name": "fraud", "request_id": "r1", "prediction": '{"label": 1}',
    "confidence": "0.9", "anomaly_score": "0.1", "processing_time_ms": "3",
}  # fmt: skip
MAX_ID_PART = 2**64 - 1

BAD_RESERVED: list[tuple[str, dict[str, str]]] = [
    ("origin id not an id", {"_st_origin_stream": "s", "_st_origin_id": "nope"}),
    ("origin id empty", {"_st_origin_stream": "s", "_st_origin_id": ""}),
    ("origin id without seq", {"_st_origin_stream": "s", "_st_origin_id": "5"}),
    ("origin id negative", {"_st_origin_stream": "s", "_st_origin_id": "-1-0"}),
    ("origin id past 2^64", {"_st_origin_stream": "s", "_st_origin_id": f"{MAX_ID_PART + 1}-0"}),
    ("origin seq past 2^64", {"_st_origin_stream": "s", "_st_origin_id": f"1-{MAX_ID_PART + 1}"}),
    ("origin id in fullwidth digits", {"_st_origin_stream": "s", "_st_origin_id": "\uff11-0"}),
    ("origin id with spaces", {"_st_origin_stream": "s", "_st_origin_id": " 1-0"}),
    ("origin id alone", {"_st_origin_id": "1-0"}),
    ("origin stream alone", {"_st_origin_stream": "s"}),
    ("origin stream empty", {"_st_origin_stream": "", "_st_origin_id": "1-0"}),
    ("producer ts a word", {"_st_ts": "yesterday"}),
    ("producer ts a float", {"_st_ts": "1.5e12"}),
    ("producer ts with underscores", {"_st_ts": "1_700_000_000_000"}),
    ("producer ts in Arabic-Indic digits", {"_st_ts": "\u0661\u0667" + "\u0660" * 11}),
    ("producer ts negative", {"_st_ts": "-5"}),
    ("producer ts past year 9999", {"_st_ts": str(MAX_TIME_MS + 1)}),
    ("producer ts 30 digits", {"_st_ts": "9" * 30}),
    ("producer ts empty", {"_st_ts": ""}),
]


def raw(fields: dict[str, str]) -> list[bytes]:
    return [b for kv in fields.items() for b in (kv[0].encode(), kv[1].encode())]


@pytest.mark.parametrize("bad", [c[1] for c in BAD_RESERVED], ids=[c[0] for c in BAD_RESERVED])
def test_a_bad_reserved_field_is_a_decode_error_in_the_decode_path(bad: dict[str, str]) -> None:
    """decode_entry refuses the entry with reason ``bad_reserved_field``: no handler ever
    sees it, so no accessor can raise later."""
    with pytest.raises(DecodeError) as err:
        decode_entry("s", "1700000000000-0", raw({**GOOD, **bad}))
    assert err.value.reason == "bad_reserved_field"


@pytest.mark.parametrize("bad", [c[1] for c in BAD_RESERVED], ids=[c[0] for c in BAD_RESERVED])
def test_every_accessor_of_a_bad_reserved_field_raises_decode_error_not_value_error(
    bad: dict[str, str],
) -> None:
    """A Message built by hand (a unit test, a user) with a bad reserved field: every
    accessor either works or raises DecodeError, and the built-in parsers too."""
    msg = Message("s", "1700000000000-0", {**GOOD, **bad})
    training = Message("s", "1-0", {**bad, "model_name": "m", "request_id": "r", "input_data": "1"})
    for read in (
        lambda: msg.enqueued_at,
        lambda: msg.produced_at,
        lambda: msg.idempotency_key,
        lambda: msg.origin,
        lambda: parse_inference(msg),
        lambda: parse_training(training),
    ):
        try:
            read()
        except DecodeError as exc:
            assert exc.reason == "bad_reserved_field"


def test_good_reserved_fields_pass_the_decode_path() -> None:
    fields = {**GOOD, "_st_mid": "m1", "_st_ts": str(MAX_TIME_MS)}
    fields |= {"_st_origin_stream": "other", "_st_origin_id": f"{MAX_ID_PART}-{MAX_ID_PART}"}
    msg = decode_entry("s", "1-0", raw(fields))
    assert msg.produced_at == datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc)
    assert msg.origin == ("other", f"{MAX_ID_PART}-{MAX_ID_PART}")


def _batch_spec(fn: Any) -> Any:
    registry = Registry(group="unit")
    registry.stream_handler("s", batch=True, max_retries=20)(fn)
    return registry.handlers["s"]


def test_a_bad_reserved_field_is_dead_at_once_and_never_fails_its_batch_mates() -> None:
    """The issue's case: an entry whose ``_st_origin_id`` is not an id, in a batch of the
    built-in parser. It is dead at attempt 1 as bad input; its batch-mates are done."""
    seen: list[str] = []

    def store(msgs: list[Message]) -> None:
        for msg in msgs:
            parse_inference(msg)
            seen.append(msg.id)

    entries: list[RawEntry] = [(f"1700000000000-{i}", raw(GOOD), 1) for i in range(5)]
    entries.insert(2, ("1700000000001-0", raw({**GOOD, "_st_origin_stream": "s", "_st_origin_id": "x"}), 1))
    result = run_batch(_batch_spec(store), entries)
    assert list(result.failed) == [2]
    outcome = result.failed[2]
    assert isinstance(outcome, Dead) and outcome.error.reason == "bad_reserved_field"
    assert len(seen) == 5


def test_an_unexpected_decoder_error_is_dead_for_that_entry_only() -> None:
    """An entry Redis would never return (an odd flat list) fails alone, at once."""
    entries: list[RawEntry] = [("1-0", raw(GOOD), 1), ("1-1", [b"lonely"], 1), ("1-2", raw(GOOD), 1)]
    result = run_batch(_batch_spec(lambda msgs: None), entries)
    assert list(result.failed) == [1]
    assert isinstance(result.failed[1], Dead)


# --- item 2: entry ids far in the future -------------------------------------------------

FUTURE_IDS = [
    "253402300800000-0",  # the first ms past year 9999: every later automatic id is past it too
    "253402300800000-17",
    f"{MAX_ID_PART}-0",
    f"{MAX_ID_PART}-{MAX_ID_PART}",
    f"{int((datetime.now(timezone.utc) + timedelta(days=3650)).timestamp() * 1000)}-0",
]


@pytest.mark.parametrize("entry_id", FUTURE_IDS, ids=[*FUTURE_IDS[:-1], "ten-years-ahead"])
def test_an_entry_id_far_in_the_future_falls_back_to_now(entry_id: str) -> None:
    """Any valid entry id gives a time: one past the clock (beyond a skew allowance) is not
    trusted, and the time of decoding is used instead; the record is stored, not retried."""
    before = datetime.now(timezone.utc)
    msg = decode_entry("inference_results_stream", entry_id, raw(GOOD))
    assert before <= msg.enqueued_at <= datetime.now(timezone.utc)
    record = parse_inference(msg)
    assert before <= record.created_at <= datetime.now(timezone.utc)
    assert record.entry_id == entry_id


def test_a_replayed_entry_with_a_future_origin_falls_back_too() -> None:
    fields = {**GOOD, "_st_origin_stream": "s", "_st_origin_id": f"{MAX_ID_PART}-3"}
    before = datetime.now(timezone.utc)
    assert decode_entry("s", "1-0", raw(fields)).enqueued_at >= before


def test_ordinary_ids_keep_their_own_time() -> None:
    assert id_datetime("1700000000123-4") == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=timezone.utc)
    assert id_datetime("0-1") == datetime(1970, 1, 1, tzinfo=timezone.utc)


# --- item 3: idempotency keys of entries with and without a message id ----------------------


def test_a_message_id_equal_to_an_entry_key_does_not_collide() -> None:
    """A producer may send any message id, also one spelled like another entry's key."""
    foreign = Message("s", "5-1", {"a": "b"})
    for mid in ("s/5-1", foreign.idempotency_key, "e:s/5-1", "m:s/5-1", "m:e:s/5-1"):
        assert Message("s", "9-0", {"_st_mid": mid}).idempotency_key != foreign.idempotency_key, mid


def test_message_ids_are_keys_as_sent_unless_they_look_reserved() -> None:
    """Producers' ids (the common case) stay as they were: rows stored before keep matching."""
    assert Message("s", "1-0", {"_st_mid": "8f2c-uuid"}).idempotency_key == "8f2c-uuid"
    assert Message("s", "1-0", {"_st_mid": "e:x"}).idempotency_key == "m:e:x"
    assert Message("s", "1-0", {"_st_mid": "m:x"}).idempotency_key == "m:m:x"
    assert Message("s", "5-1", {"a": "b"}).idempotency_key == "e:s/5-1"


def test_a_missing_field_read_with_brackets_is_bad_input_not_a_retry() -> None:
    """``msg["x"]`` of a field the entry lacks: dead at once (missing_field), and still a
    KeyError for code that catches one."""
    registry = Registry(group="unit")
    registry.stream_handler("s", max_retries=5)(lambda msg: msg["absent"])
    result = run_batch(registry.handlers["s"], [("1-0", raw(GOOD), 1)])
    outcome = result.failed[0]
    assert isinstance(outcome, Dead) and outcome.error.reason == "missing_field"
    assert outcome.error.message == "missing_field: field 'absent' is missing"
    with pytest.raises(KeyError):
        Message("s", "1-0", {})["absent"]


def test_far_future_ids_are_logged_once_per_stream(caplog: pytest.LogCaptureFixture) -> None:
    for stream in ("future_a", "future_a", "future_b", "future_a"):
        assert decode_entry(stream, "253402300800000-5", raw(GOOD)).enqueued_at.year < 9999
    lines = [r.getMessage() for r in caplog.records if "far past the clock" in r.getMessage()]
    assert len(lines) == 2 and "future_a" in lines[0] and "future_b" in lines[1]
