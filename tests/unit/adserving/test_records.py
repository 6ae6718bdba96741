"""The adserving wire format: valid entries become typed records, bad ones a DecodeError."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from ipaddress import ip_address
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamtasks.adserving.fields import DECODER, MAX_JSON_DEPTH, MAX_NAME_LENGTH, loads
from streamtasks.adserving.records import (
    InferenceRecord,
    TrainingRecord,
    inference_row,
    parse_inference,
    parse_training,
    training_row,
)
from streamtasks.errors import DecodeError
from streamtasks.message import Message

ENTRY_ID = "1700000000123-4"


def training(**overrides: str | None) -> Message:
    fields: dict[str, Any] = {
        "model_name": "fraud_detection",
        "request_id": "req_1",
        "input_data": '{"user_id": 1234, "amount": 100.5, "features": [0.1, 0.2]}',
        "metadata": '{"api_version": "v1"}',
        "source_ip": "192.168.1.100",
    }
    fields.update(overrides)
    return Message("training_data_stream", ENTRY_ID, {k: v for k, v in fields.items() if v is not None})


def inference(**overrides: str | None) -> Message:
    fields: dict[str, Any] = {
        "model_name": "fraud_detection",
        "request_id": "req_1",
        "prediction": '{"prediction": 0, "probability": 0.85}',
        "confidence": "0.85",
        "anomaly_score": "0.15",
        "is_anomaly": "false",
        "processing_time_ms": "120",
    }
    fields.update(overrides)
    return Message("inference_results_stream", ENTRY_ID, {k: v for k, v in fields.items() if v is not None})


def reason_of(msg: Message, parse: Any) -> str:
    with pytest.raises(DecodeError) as info:
        parse(msg)
    return info.value.reason


def test_training_round_trip() -> None:
    """A valid training entry keeps every value, its JSON text, and the entry's identity."""
    rec = parse_training(training(_st_mid="mid-1", _st_ts="1700000000000"))
    assert isinstance(rec, TrainingRecord)
    assert rec.model_name == "fraud_detection"
    assert rec.request_id == "req_1"
    assert rec.input_data == {"user_id": 1234, "amount": 100.5, "features": [0.1, 0.2]}
    assert json.loads(rec.input_data_json) == rec.input_data
    assert rec.metadata == {"api_version": "v1"}
    assert rec.source_ip == ip_address("192.168.1.100")
    assert rec.idempotency_key == "mid-1"
    assert rec.created_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)
    assert (rec.stream, rec.entry_id) == ("training_data_stream", ENTRY_ID)
    assert len(rec.as_row()) == len(TrainingRecord.COLUMNS)


def test_training_defaults_without_optional_fields() -> None:
    """Without metadata, source_ip, message id or timestamp: {}, None, stream/id, entry time."""
    rec = parse_training(training(metadata=None, source_ip=None))
    assert rec.metadata == {} and rec.metadata_json == "{}"
    assert rec.source_ip is None
    assert rec.idempotency_key == f"e:training_data_stream/{ENTRY_ID}"
    assert rec.created_at == datetime.fromtimestamp(1700000000.123, tz=timezone.utc)


def test_json_text_is_passed_through_unchanged() -> None:
    """The JSON field text is stored as written (no re-serialisation on the hot path)."""
    text = '{ "b" : 1,"a":[ 1.50 ] }'
    assert parse_training(training(input_data=text)).input_data_json == text


def test_inference_round_trip() -> None:
    """A valid inference entry becomes a typed record with floats and a bool."""
    rec = parse_inference(inference(is_anomaly="1", metadata='{"k": "v"}'))
    assert isinstance(rec, InferenceRecord)
    assert rec.prediction == {"prediction": 0, "probability": 0.85}
    assert (rec.confidence, rec.anomaly_score, rec.processing_time_ms) == (0.85, 0.15, 120.0)
    assert rec.is_anomaly is True
    assert rec.metadata == {"k": "v"}
    assert len(rec.as_row()) == len(InferenceRecord.COLUMNS)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("false", False), ("1", True), ("0", False), ("True", True),
     ("FALSE", False), (None, False), ("", False)],
)  # fmt: skip
def test_is_anomaly_values(raw: str | None, expected: bool) -> None:
    """is_anomaly accepts true/false/1/0 in any case and defaults to false."""
    assert parse_inference(inference(is_anomaly=raw)).is_anomaly is expected


@pytest.mark.parametrize(
    "text",
    [
        "🚀 émoji ✓",
        "中文字符 テスト",
        "עברית مرحبا",
        "a\u200fb",
        "\U0001f468\u200d\U0001f469\u200d\U0001f467 family",
    ],
)
def test_unicode_is_preserved(text: str) -> None:
    """Emoji, CJK and right-to-left text survive in names, raw JSON and escaped JSON."""
    raw = json.dumps({"text": text}, ensure_ascii=False)
    escaped = json.dumps({"text": text})  # \uXXXX escapes, surrogate pairs for emoji
    rec = parse_training(training(model_name=text, input_data=raw, metadata=escaped))
    assert rec.model_name == text
    assert rec.input_data == {"text": text} and rec.input_data_json == raw
    assert rec.metadata == {"text": text}


BAD_TRAINING = [
    ("missing model_name", {"model_name": None}, "missing_field"),
    ("missing request_id", {"request_id": None}, "missing_field"),
    ("missing input_data", {"input_data": None}, "missing_field"),
    ("empty model_name", {"model_name": ""}, "invalid_value"),
    ("long request_id", {"request_id": "r" * (MAX_NAME_LENGTH + 1)}, "too_large"),
    ("invalid json", {"input_data": "{not json"}, "invalid_json"),
    ("trailing garbage", {"input_data": '{"a": 1} x'}, "invalid_json"),
    ("NaN", {"input_data": '{"a": NaN}'}, "invalid_json"),
    ("Infinity", {"input_data": "[Infinity]"}, "invalid_json"),
    ("huge integer", {"input_data": "1" * 5000}, "invalid_json"),
    ("numeric overflow", {"input_data": "[1e200000]"}, "invalid_json"),
    ("numeric underflow", {"input_data": "[1e-20000]"}, "invalid_json"),
    ("overflow in long text", {"input_data": '["' + "x" * 5000 + '", 1e200000]'}, "invalid_json"),
    ("long float literal", {"input_data": "[0." + "1" * 1500 + "]"}, "invalid_json"),
    ("metadata not object", {"metadata": "[1, 2]"}, "wrong_type"),
    ("metadata invalid", {"metadata": "{"}, "invalid_json"),
    ("bad source ip", {"source_ip": "999.1.1.1"}, "invalid_value"),
    ("NUL in name", {"model_name": "a\x00b"}, "nul_byte"),
    ("NUL in raw json", {"input_data": '"a\x00"'}, "nul_byte"),
    ("escaped NUL in json", {"input_data": '{"a": "x\\u0000y"}'}, "nul_byte"),
    ("escaped NUL in key", {"input_data": '{"x\\u0000": 1}'}, "nul_byte"),
    ("escaped NUL deep", {"metadata": '{"a": [[{"b": "\\u0000"}]]}'}, "nul_byte"),
    ("lone surrogate escape", {"input_data": '["\\ud800"]'}, "lone_surrogate"),
    ("lone surrogate in name", {"request_id": "r\ud800"}, "lone_surrogate"),
    ("too deep", {"input_data": "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)}, "too_deep"),
    ("very deep", {"input_data": "[" * 100_000 + "]" * 100_000}, "too_deep"),
    ("deep objects", {"input_data": '{"a":' * 70 + "1" + "}" * 70}, "too_deep"),
    ("bad producer ts", {"_st_ts": "yesterday"}, "bad_reserved_field"),
    ("NUL in message id", {"_st_mid": "m\x00"}, "nul_byte"),
]


@pytest.mark.parametrize(
    ("overrides", "reason"), [c[1:] for c in BAD_TRAINING], ids=[c[0] for c in BAD_TRAINING]
)
def test_bad_training_entries(overrides: dict[str, str | None], reason: str) -> None:
    """Every kind of bad training entry raises DecodeError with its reason code."""
    assert reason_of(training(**overrides), parse_training) == reason


BAD_INFERENCE = [
    ("missing prediction", {"prediction": None}, "missing_field"),
    ("missing confidence", {"confidence": None}, "missing_field"),
    ("missing processing time", {"processing_time_ms": None}, "missing_field"),
    ("confidence not a number", {"confidence": "high"}, "wrong_type"),
    ("anomaly score not a number", {"anomaly_score": ""}, "wrong_type"),
    ("confidence nan", {"confidence": "nan"}, "invalid_value"),
    ("anomaly score inf", {"anomaly_score": "inf"}, "invalid_value"),
    ("confidence overflow", {"confidence": "1e400"}, "invalid_value"),
    ("negative processing time", {"processing_time_ms": "-1"}, "invalid_value"),
    ("processing time not a number", {"processing_time_ms": "fast"}, "wrong_type"),
    ("is_anomaly not a bool", {"is_anomaly": "maybe"}, "wrong_type"),
    ("prediction invalid json", {"prediction": "{'a': 1}"}, "invalid_json"),
    ("prediction too deep", {"prediction": "[" * 65 + "]" * 65}, "too_deep"),
    ("metadata not object", {"metadata": '"text"'}, "wrong_type"),
    ("escaped NUL in prediction", {"prediction": '"\\u0000"'}, "nul_byte"),
    ("lone low surrogate", {"prediction": '"\\udc00"'}, "lone_surrogate"),
]


@pytest.mark.parametrize(
    ("overrides", "reason"), [c[1:] for c in BAD_INFERENCE], ids=[c[0] for c in BAD_INFERENCE]
)
def test_bad_inference_entries(overrides: dict[str, str | None], reason: str) -> None:
    """Every kind of bad inference entry raises DecodeError with its reason code."""
    assert reason_of(inference(**overrides), parse_inference) == reason


def test_depth_at_the_limit_is_accepted() -> None:
    """Exactly MAX_JSON_DEPTH levels of nesting is fine, also with many sibling brackets."""
    deep = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert parse_training(training(input_data=deep)).input_data_json == deep
    wide = json.dumps([[i] for i in range(500)])
    assert parse_training(training(input_data=wide)).input_data[499] == [499]


def test_valid_surrogate_pair_escape_is_accepted() -> None:
    """An escaped surrogate pair is one astral character, not a lone surrogate."""
    assert parse_training(training(input_data='"\\ud83d\\ude80"')).input_data == "🚀"


def test_ipv6_source_ip() -> None:
    """IPv6 addresses are accepted as source_ip."""
    assert parse_training(training(source_ip="2001:db8::1")).source_ip == ip_address("2001:db8::1")


def test_json_surrounding_whitespace_is_accepted() -> None:
    """JSON whitespace around the value is valid JSON, and kept in the stored text."""
    rec = parse_training(training(input_data=' \n{"a": 1}\t '))
    assert rec.input_data == {"a": 1}


@given(
    st.lists(
        st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(), st.text(max_size=50)),
        max_size=40,
    ),
    st.integers(min_value=0, max_value=4000),
)
def test_short_and_long_text_decode_as_the_standard_decoder(values: list[Any], pad: int) -> None:
    """The fast path (short text, no number it may refuse) and the checked decoder (long text)
    give what ``json.loads`` gives."""
    raw = json.dumps([*values, "p" * pad])
    assert loads(raw) == json.loads(raw)


#: Pieces of JSON and of what is not quite JSON: every case where msgspec and the standard
#: decoder could disagree (constants, lone surrogates, numbers out of range, control
#: characters, leading zeros, trailing data, deep nesting).
JSON_PIECES = st.sampled_from([
    "[", "]", "{", "}", ",", ":", '"a"', '"\\u0000"', '"\\ud800"', '"\\ud83d\\ude00"', '"\\x41"',
    "1", "-0", "01", "0.5", ".5", "5.", "1e5", "1E+05", "1e-2000", "1e400", "2e308", "1e0400",
    "1E1001", "1e-1001", "123456789012345678901234567890", "true", "null", "NaN", "-Infinity",
    " ", "\n", "\t", "\x0c", "\ufeff", '"x', "\\", "e", "\x00",
])  # fmt: skip


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8))
KEYS = st.text(max_size=4)


@given(
    st.one_of(
        st.lists(JSON_PIECES, max_size=30).map("".join),
        st.recursive(
            SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4)
        ).map(json.dumps),
        st.text(max_size=60),
    )
)
def test_the_fast_decoder_accepts_and_refuses_exactly_what_the_checked_decoder_does(raw: str) -> None:
    """Whatever the text: msgspec's fast path gives the value the checked standard decoder
    gives, or both refuse it (so no entry is stored, or dead-lettered, that was not before)."""
    try:
        expected = DECODER.decode(raw)
    except (ValueError, RecursionError):
        with pytest.raises((ValueError, RecursionError)):
            loads(raw)
        return
    assert loads(raw) == expected


#: Field values good and bad for every field of both wire formats.
ANY_VALUE = st.one_of(
    st.none(),
    st.sampled_from([
        "", "m", "x" * 300, "a\x00b", "\ud800", '{"a": 1}', "[1, 2.5]", "[1e2000]", "NaN", "{", "1",
        "-3", "0.5", "1e400", "true", "0", "yes", "10.0.0.1", "::1", "300.1.1.1", "1700000000000",
        "99999999999999999", "k" * 600, "e:x", "m:y",
    ]),
    st.text(max_size=20),
)  # fmt: skip
TRAINING_FIELDS = ("model_name", "request_id", "input_data", "metadata", "source_ip", "_st_mid", "_st_ts")
INFERENCE_FIELDS = (
    "model_name", "request_id", "prediction", "confidence", "anomaly_score", "is_anomaly",
    "processing_time_ms", "metadata", "_st_mid", "_st_ts",
)  # fmt: skip


def _outcome(fn: Any, msg: Message) -> Any:
    try:
        return fn(msg)
    except DecodeError as exc:
        return ("error", exc.reason, str(exc))


@given(st.fixed_dictionaries({}, optional=dict.fromkeys(TRAINING_FIELDS, ANY_VALUE)))
def test_a_training_row_is_the_records_row_or_the_same_error(values: dict[str, str | None]) -> None:
    """The built-in handler's path (the row, no record) and ``parse_training(...).as_row()``
    agree on every entry: the same row, or the same reason and message."""
    msg = training(**{name: value for name, value in values.items()})
    assert _outcome(training_row, msg) == _outcome(lambda m: parse_training(m).as_row(), msg)


@given(st.fixed_dictionaries({}, optional=dict.fromkeys(INFERENCE_FIELDS, ANY_VALUE)))
def test_an_inference_row_is_the_records_row_or_the_same_error(values: dict[str, str | None]) -> None:
    """As above, for inference results."""
    msg = inference(**{name: value for name, value in values.items()})
    assert _outcome(inference_row, msg) == _outcome(lambda m: parse_inference(m).as_row(), msg)
