"""The one decoder of what monitoring reads but did not write (``observe/readings.py``): a
heartbeat as the worker writes it decodes; any other value is :class:`Unreadable` with a
one-line reason, never another exception."""

from __future__ import annotations

import json
import math
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamtasks.observe.readings import (
    MAX_HEARTBEAT_BYTES,
    MAX_NAMED,
    Findings,
    Heartbeat,
    Unreadable,
    decode_heartbeat,
    printable,
)
from streamtasks.worker.events import LaneSnapshot, Snapshot

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
#: Every field of a heartbeat value that monitoring decodes (the decoder's own list, so a
#: field it gains is fuzzed too).
FIELDS = Heartbeat.__struct_fields__


def written(**extra: object) -> dict[str, object]:
    """A heartbeat body exactly as a worker writes it (plus ``extra``)."""
    lane = LaneSnapshot("orders", "app.handle", 1, 2, 3, 4, 5, 6, 7, 8)
    snap = Snapshot("c-a0", "g", "reading", 1700000000.0, {"orders": lane}, None, {"reclaim": "boom"})
    body = snap.heartbeat("host-1", 4242, 1700000100.5)
    body["ray"] = {"total": {"CPU": 2.0, "memory": 1e9}, "available": {"CPU": 1.5, "memory": 5e8}}
    return {**body, **extra}


def test_the_heartbeat_a_worker_writes_decodes_whole() -> None:
    beat = decode_heartbeat(json.dumps(written()).encode())
    assert (beat.consumer, beat.group, beat.host, beat.pid, beat.state) == (
        "c-a0",
        "g",
        "host-1",
        4242,
        "reading",
    )
    assert (beat.ts, beat.streams, beat.in_flight, beat.failing_loops) == (
        1700000100.5,
        ["orders"],
        1,
        ["reclaim"],
    )
    assert beat.ray is not None and beat.ray.total == {"CPU": 2.0, "memory": 1e9}
    assert decode_heartbeat(json.dumps(written(ray=None, added_later=[1]))).ray is None  # new fields: ignored


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (json.dumps(written(ts="soon")), "Expected `float`, got `str` - at `$.ts`"),
        (json.dumps(written(streams=5)), "Expected `array`, got `int` - at `$.streams`"),
        (json.dumps(written(ray="lots")), "Expected `object | null`, got `str` - at `$.ray`"),
        (json.dumps(written(pid=-1)), "at `$.pid`"),
        (json.dumps(written(consumer="a\nb")), "at `$.consumer`"),
        (json.dumps({"consumer": "x"}), "missing required field `ts`"),
        ("[1, 2]", "Expected `object`, got `array`"),
        (b"\xff\xfe not json", "not JSON"),
        ('{"ts": NaN}', "not JSON"),
        ('{"ts": 1e999}', "at `$.ts`"),
        (b"{" + b" " * MAX_HEARTBEAT_BYTES + b"}", "more than a heartbeat's"),
    ],
)
def test_a_value_that_does_not_fit_is_unreadable_with_the_reason(value: str | bytes, why: str) -> None:
    with pytest.raises(Unreadable) as err:
        decode_heartbeat(value)
    assert why in str(err.value) and "\n" not in str(err.value)


@given(st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()))
def test_any_value_decodes_or_is_unreadable(raw: bytes) -> None:
    try:
        beat = decode_heartbeat(raw)
    except Unreadable:
        return
    assert isinstance(beat, Heartbeat) and math.isfinite(beat.ts) and beat.ts >= 0


@given(st.sampled_from(FIELDS), JSON)
def test_any_value_in_any_field_decodes_to_the_right_types_or_is_unreadable(
    field: str, value: object
) -> None:
    try:
        beat = decode_heartbeat(json.dumps(written(**{field: value})))
    except Unreadable:
        return
    assert isinstance(beat.streams, list) and all(isinstance(s, str) and one_line(s) for s in beat.streams)
    assert beat.in_flight is None or (isinstance(beat.in_flight, int) and beat.in_flight >= 0)
    assert beat.consumer is None or one_line(beat.consumer)


def one_line(value: str) -> bool:
    """No line break and no control character: the value cannot break a table row."""
    return len(value.splitlines()) <= 1 and not any(unicodedata.category(c) == "Cc" for c in value)


def test_findings_name_the_first_keys_and_count_the_rest() -> None:
    found = Findings()
    for i in range(MAX_NAMED + 3):
        found.skip(f"streamtasks:worker:g:c{i}".encode(), "not JSON")
    found.skip(b"streamtasks:worker:g:c0", "said twice: counted once")
    problems = found.problems()
    assert len(problems) == MAX_NAMED + 1 and problems[-1] == "... and 3 more unreadable keys (skipped)"
    assert problems[0] == "streamtasks:worker:g:c0: skipped, not JSON"
    assert found.as_dict()["count"] == MAX_NAMED + 3 and len(found.as_dict()["keys"]) == MAX_NAMED


def test_denied_reads_are_named_by_command_with_their_keys() -> None:
    found = Findings()
    found.deny("INFO")
    found.deny("XLEN", "orders")
    found.deny("XLEN", "orders:dead")
    found.deny("XLEN", "orders")
    assert found.not_checked() == [
        "INFO: no permission (NOPERM)",
        "XLEN (orders, orders:dead): no permission (NOPERM)",
    ]


def test_a_key_name_is_shown_on_one_printable_line() -> None:
    assert printable(b"streamtasks:worker:g:\xff\nx") == "streamtasks:worker:g:\\xff\\nx"
