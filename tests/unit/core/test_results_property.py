"""Results against input streamtasks does not control, property-based: a stored outcome or a
reply read from Redis (any bytes another process wrote), any raw entry, any value a batch
handler returns."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamtasks import DeadLettered, Message, Registry
from streamtasks.logs import redact
from streamtasks.results import dead_outcome, decode_outcome, encode_value, entry_address, result_ident
from streamtasks.retry import ErrorInfo
from streamtasks.worker.run import batch_outcomes

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


@given(json_values)
def test_a_json_value_round_trips(value: Any) -> None:
    assert decode_outcome(encode_value(value)) == value


@given(
    st.binary(max_size=200)
    | st.builds(lambda j: b"d1-1 " + json.dumps(j).encode(), json_values)
    | st.builds(lambda j: b"d1-1 " + json.dumps({"attempts": j, "reason": j}).encode(), json_values)
)
def test_any_stored_bytes_decode_or_fail_with_a_clear_error(raw: bytes) -> None:
    """A value, DeadLettered, or msgspec's / ValueError's one-line error: nothing else."""
    with contextlib.suppress(DeadLettered, msgspec.DecodeError, ValueError):
        decode_outcome(raw)


@given(st.text(), st.text(), st.text(), st.integers(0, 100))
def test_a_dead_outcome_carries_its_dead_letter(
    reason: str, error_type: str, error: str, attempts: int
) -> None:
    outcome = dead_outcome("s", "3-4", "s:dead", ErrorInfo(error_type, error, reason), attempts)
    stored = f"d1-2 {outcome}".encode()
    with pytest.raises(DeadLettered) as caught:
        decode_outcome(stored)
    got = caught.value
    assert (got.reason, got.error_type, got.error, got.attempts) == (
        reason,
        error_type,
        redact(error),
        attempts,
    )
    assert (got.dead_letter_id, got.entry_id, got.dead_letter_stream) == ("1-2", "3-4", "s:dead")


raw_fields = st.lists(
    st.tuples(
        st.sampled_from([b"_st_mid", b"_st_reply", b"_st_origin_id", b"x", b"\xff"]) | st.binary(max_size=8),
        st.binary(max_size=16),
    ),
    max_size=6,
).map(lambda pairs: [b for kv in pairs for b in kv])  # fmt: skip


@given(raw_fields)
def test_any_raw_entry_has_an_address(raw: list[bytes]) -> None:
    ident, reply = entry_address("s", "1-1", raw)
    assert isinstance(ident, str) and ident
    assert reply is None or isinstance(reply, str)


@given(st.text(min_size=1))
def test_a_call_and_its_entry_agree_on_the_result_identity(mid: str) -> None:
    ident, _ = entry_address("s", "1-1", [b"_st_mid", mid.encode()])
    assert result_ident(mid) == ident == Message("s", "1-1", {"_st_mid": mid}).idempotency_key


registry = Registry()


@registry.stream_handler("with_results", batch=True, results=True)
def with_results(msgs: list[Message]) -> None: ...


@registry.stream_handler("without", batch=True)
def without(msgs: list[Message]) -> None: ...


answers = st.one_of(
    st.none(), st.integers(), st.text(),
    st.lists(st.one_of(st.integers(), st.just(ValueError("bad"))), max_size=6),
    st.dictionaries(st.one_of(st.sampled_from(["1-0", "1-1", "1-2", "9-9"]), st.integers(0, 5)),
                    st.one_of(st.integers(), st.just(ValueError("bad"))), max_size=6),
)  # fmt: skip


@given(st.integers(1, 4), answers, st.booleans())
def test_a_batch_handlers_answer_gives_each_entry_one_outcome(n: int, answer: Any, results: bool) -> None:
    """With results, every entry gets exactly one of a value or an error; without, values are
    never kept and failures come only from exceptions."""
    spec = registry.handlers["with_results" if results else "without"]
    ids = [f"1-{i}" for i in range(n)]
    errors, values = batch_outcomes(spec, ids, answer)
    assert set(errors) | set(values) <= set(range(n)) and not set(errors) & set(values)
    assert all(isinstance(e, BaseException) for e in errors.values())
    if results:
        assert set(errors) | set(values) == set(range(n))
    json.dumps(list(errors))  # positions, plain ints
