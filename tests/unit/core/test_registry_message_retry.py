"""Unit tests of the pure core: registry, message codec, backoff and retry decisions, run_batch."""

from __future__ import annotations

import pickle

import pytest

from streamtasks import (
    DecodeError,
    Message,
    Registry,
    Reject,
    Retry,
    backoff,
    default_registry,
    stream_handler,
)
from streamtasks.errors import RegistryError
from streamtasks.message import decode_entry, encode_fields
from streamtasks.retry import Dead, RetryLater, RetryPolicy
from streamtasks.worker import run_batch


def test_decorating_connects_to_nothing_and_keeps_the_function_callable() -> None:
    registry = Registry(group="unit")

    @registry.stream_handler("orders")
    def on_order(msg: Message) -> str:
        return msg["order_id"]

    assert on_order(Message("orders", "1-0", {"order_id": "42"})) == "42"
    assert registry.handlers["orders"].fn.__name__ == "on_order"
    assert on_order.__name__ == "on_order"


def test_module_level_decorator_registers_on_the_default_registry() -> None:
    @stream_handler("unit_clicks_stream")
    def on_click(msg: Message) -> None: ...

    assert default_registry.handlers["unit_clicks_stream"].fn is on_click.spec.fn


def test_two_handlers_on_one_stream_are_refused() -> None:
    registry = Registry()
    registry.stream_handler("s")(lambda m: None)
    with pytest.raises(RegistryError, match="already has handler"):
        registry.stream_handler("s")(lambda m: None)


def test_unknown_handler_options_are_an_error_not_ignored() -> None:
    with pytest.raises(TypeError, match="unknown handler option"):
        Registry().stream_handler("s", num_cpu=1)


def test_include_composes_registries_under_the_including_group() -> None:
    base, other = Registry(group="app"), Registry(group="lib")
    other.stream_handler("lib_stream")(lambda m: None)
    base.stream_handler("app_stream")(lambda m: None)
    base.include(other)
    assert sorted(base.streams) == ["app_stream", "lib_stream"]
    assert base.group == "app"


def test_dead_letter_stream_defaults_to_stream_colon_dead() -> None:
    registry = Registry()
    registry.stream_handler("orders")(lambda m: None)
    registry.stream_handler("events", dead_letter_stream="events-dlq")(lambda m: None)
    assert registry.handlers["orders"].dead_letter_stream == "orders:dead"
    assert registry.handlers["events"].dead_letter_stream == "events-dlq"


def test_invalid_stream_names_are_refused() -> None:
    with pytest.raises(Exception, match="invalid stream name"):
        Registry().stream_handler("has space")


def test_message_json_accessor_and_reserved_fields() -> None:
    msg = Message("s", "1700000000000-0", {"a": '{"x": [1, 2]}', "_st_mid": "m1"})
    assert msg.json("a") == {"x": [1, 2]}
    assert msg.json("missing", default=None) is None
    assert msg.idempotency_key == "m1"
    assert msg.enqueued_at.year == 2023
    with pytest.raises(DecodeError) as err:
        Message("s", "1-0", {"a": "{nope"}).json("a")
    assert err.value.reason == "invalid_json"


def test_message_is_immutable() -> None:
    msg = Message("s", "1-0", {"a": "b"})
    with pytest.raises(AttributeError):
        msg.stream = "t"  # type: ignore[misc]
    with pytest.raises(TypeError):
        msg.fields["a"] = "c"  # type: ignore[index]


def test_idempotency_key_of_a_foreign_entry_is_its_origin() -> None:
    assert Message("s", "5-1", {"a": "b"}).idempotency_key == "e:s/5-1"
    replayed = Message("s", "9-0", {"a": "b", "_st_origin_stream": "s", "_st_origin_id": "5-1"})
    assert replayed.idempotency_key == "e:s/5-1"


def test_encode_fields_json_encodes_structured_values_and_keeps_strings() -> None:
    out = encode_fields({"s": "text", "n": 3, "f": 0.5, "b": True, "none": None, "d": {"k": [1]}})
    assert out == {"s": "text", "n": "3", "f": "0.5", "b": "true", "none": "null", "d": '{"k":[1]}'}
    with pytest.raises(ValueError):
        encode_fields({"x": float("nan")})


def test_decode_entry_rejects_invalid_utf8_and_oversized_entries() -> None:
    with pytest.raises(DecodeError) as err:
        decode_entry("s", "1-0", {b"k": b"\xed\xa0\x80"})  # an encoded lone surrogate
    assert err.value.reason == "invalid_utf8"
    with pytest.raises(DecodeError) as err:
        decode_entry("s", "1-0", {b"k": b"x" * 100}, max_bytes=50)
    assert err.value.reason == "too_large"
    text = "emoji 🎉 CJK 漢字 RTL עברית"
    assert decode_entry("s", "1-0", {b"k": text.encode()}).fields["k"] == text


def test_backoff_is_exponential_capped_and_jittered() -> None:
    assert backoff(1, 1.0, 30.0, rand=lambda: 1.0) == 1.0
    assert backoff(3, 1.0, 30.0, rand=lambda: 1.0) == 4.0
    assert backoff(10, 1.0, 30.0, rand=lambda: 1.0) == 30.0
    assert backoff(3, 1.0, 30.0, rand=lambda: 0.5) == 2.0
    assert backoff(10_000, 1.0, 30.0, rand=lambda: 1.0) == 30.0  # no overflow


def test_retry_policy_decisions() -> None:
    policy = RetryPolicy(max_retries=2, backoff_base=1.0, backoff_max=8.0, dont_retry_on=KeyError)
    assert isinstance(policy.decide(ValueError("x"), attempt=1), RetryLater)
    assert isinstance(policy.decide(ValueError("x"), attempt=2), RetryLater)
    last = policy.decide(ValueError("x"), attempt=3)
    assert isinstance(last, Dead) and last.error.type == "ValueError"
    assert isinstance(policy.decide(KeyError("k"), attempt=1), Dead)
    assert isinstance(policy.decide(Reject("bad"), attempt=1), Dead)
    assert policy.decide(Reject("bad", code="bad_input"), attempt=1).error.reason == "bad_input"
    asked = policy.decide(Retry(after=7), attempt=1)
    assert isinstance(asked, RetryLater) and asked.delay == 7
    only = RetryPolicy(retry_on=ConnectionError)
    assert isinstance(only.decide(ValueError("x"), attempt=1), Dead)
    assert isinstance(only.decide(ConnectionError("x"), attempt=1), RetryLater)


registry = Registry(group="unit-run")
calls: list[str] = []


@registry.stream_handler("each")
def each(msg: Message) -> None:
    calls.append(msg.id)
    if msg["v"] == "bad":
        raise ValueError("bad entry")


@registry.stream_handler("batched", batch=True)
async def batched(msgs: list[Message]) -> dict[str, BaseException]:
    return {m.id: Reject("no") for m in msgs if m["v"] == "bad"}


def _entries(*values: bytes) -> list[tuple[str, dict[bytes, bytes], int]]:
    return [(f"{i + 1}-0", {b"v": v}, 1) for i, v in enumerate(values)]


def test_run_batch_isolates_a_failing_entry_from_its_batch_mates() -> None:
    calls.clear()
    result = run_batch(registry.handlers["each"], _entries(b"ok", b"bad", b"ok"))
    assert calls == ["1-0", "2-0", "3-0"]
    assert set(result.failed) == {1}
    assert isinstance(result.failed[1], RetryLater)


def test_run_batch_maps_batch_handler_failures_and_decode_errors_per_entry() -> None:
    entries = [*_entries(b"ok", b"bad"), ("3-0", {b"v": b"\xff"}, 1)]
    result = run_batch(registry.handlers["batched"], entries)
    assert set(result.failed) == {1, 2}
    assert result.failed[1].error.reason == "rejected"
    assert result.failed[2].error.reason == "invalid_utf8"


def test_handler_specs_pickle_by_reference_for_ray() -> None:
    spec = registry.handlers["each"]
    data = pickle.dumps(spec)
    assert b"co_code" not in data and len(data) < 2000
    assert pickle.loads(data).fn is spec.fn
