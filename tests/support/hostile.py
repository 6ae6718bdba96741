"""Hypothesis strategies for hostile stream entries, and the handler both property tests run.

An entry is a list of raw (name, value) byte pairs, as a foreign producer could ``XADD``
them: the built-in inference fields (valid or mutated), reserved ``_st_*`` fields with
random values, names that are not UTF-8, repeated names, values past the size limit, and
sometimes thousands of fields.
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from streamtasks import DecodeError, Message
from streamtasks.adserving.records import parse_inference

#: The property tests' handlers refuse entries over this many bytes (cheap to exceed).
MAX_ENTRY_BYTES = 64 * 1024

GOOD: dict[bytes, bytes] = {
    b"model_name": b"fraud", b"request_id": b"r1", b"prediction": b'{"label": 1}',
    b"confidence": b"0.9", b"anomaly_score": b"0.1", b"processing_time_ms": b"3",
}  # fmt: skip
RESERVED = (b"_st_mid", b"_st_ts", b"_st_origin_stream", b"_st_origin_id")

Pairs = list[tuple[bytes, bytes]]

_id_part = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 253402300800000, 2**64 - 1, 2**64]))
_reserved_value = st.one_of(
    st.builds(lambda ms, seq: f"{ms}-{seq}".encode(), _id_part, _id_part),
    st.integers(-1, 2**70).map(lambda n: str(n).encode()),
    st.sampled_from([b"", b"0", b"1700000000000", b"253402300799999", b"253402300800000", b" 1-0", b"1_0"]),
    st.binary(max_size=20),
    st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
_reserved = st.dictionaries(st.sampled_from(RESERVED), _reserved_value, max_size=4)
_core_value = st.one_of(
    st.binary(max_size=30),
    st.sampled_from([b"", b"nan", b"-1", b"1e400", b"[" * 100, b'"\\u0000"', b"\xff", b"\xed\xa0\x80"]),
)
# A core field dropped (None) or replaced, or left alone.
_mutations = st.dictionaries(st.sampled_from(sorted(GOOD)), st.one_of(st.none(), _core_value), max_size=2)
_extra = st.lists(st.tuples(st.binary(min_size=0, max_size=8), st.binary(max_size=16)), max_size=6)
_filler = st.one_of(st.just(0), st.just(0), st.integers(1, 20), st.integers(1_000, 9_000))
_big_value = st.sampled_from([0, 0, 0, 10_000, MAX_ENTRY_BYTES + 1])


@st.composite
def entries(draw: st.DrawFn) -> Pairs:
    """One hostile entry: at least one field, names and values raw bytes."""
    fields = dict(GOOD)
    for name, value in draw(_mutations).items():
        if value is None:
            fields.pop(name, None)
        else:
            fields[name] = value
    pairs: Pairs = list(fields.items())
    pairs += list(draw(_reserved).items())
    pairs += draw(_extra)
    pairs += [(b"x%d" % i, b"v") for i in range(draw(_filler))]
    size = draw(_big_value)
    if size:
        pairs.append((b"big", b"y" * size))
    if not pairs:
        pairs = [(b"only", b"1")]
    order = draw(st.permutations(range(len(pairs)))) if len(pairs) < 50 else range(len(pairs))
    return [pairs[i] for i in order]


#: Explicit id for the first entry of a stream (the later ones get automatic ids after it).
first_ids = st.sampled_from([None, None, None, "253402300800000-0", f"{2**64 - 1}-0", "1-1"])


def parse_all(msgs: Sequence[Message]) -> tuple[list[str], dict[str, Exception]]:
    """What the built-ins' batch handler does, without the database: parse every entry;
    return the ids it would store and the failures of the others."""
    ok: list[str] = []
    failures: dict[str, Exception] = {}
    for msg in msgs:
        try:
            parse_inference(msg)
        except DecodeError as exc:
            failures[msg.id] = exc
        else:
            ok.append(msg.id)
    return ok, failures
