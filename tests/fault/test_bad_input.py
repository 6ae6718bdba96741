"""Bad input from a foreign producer (raw XADD): every kind is dead-lettered on its first
delivery with its reason code, the worker keeps going; Unicode round-trips byte-exact."""

from __future__ import annotations

from typing import Any

import psutil
import pytest
import redis.asyncio as aioredis
from support.invariants import Invariants, Workers

pytestmark = [pytest.mark.fault, pytest.mark.integration]

GOOD: dict[str, str | bytes] = {
    "model_name": "fraud", "request_id": "r1", "prediction": '{"label": 1}',
    "confidence": "0.9", "anomaly_score": "0.1", "processing_time_ms": "3",
}  # fmt: skip
MIB = 1024 * 1024
# Deliberately "confusable" characters (Fraktur letters): they must round-trip too.
UNICODE = "emoji 😀👍🏽👨‍👩‍👧 · CJK 漢字かな한국어 · RTL עברית العربية ‏· é vs é · 𝔘𝔫𝔦"  # noqa: RUF001


def _bad(**changes: str | bytes | None) -> dict[str, str | bytes]:
    out = {**GOOD, **changes}
    return {k: v for k, v in out.items() if v is not None}


BAD_INFERENCE: dict[str, tuple[dict[str, str | bytes], str]] = {
    "missing field": (_bad(prediction=None), "missing_field"),
    "invalid JSON": (_bad(prediction='{"label": '), "invalid_json"),
    "wrong type": (_bad(confidence="high"), "wrong_type"),
    "NUL byte": (_bad(model_name="fr\x00aud"), "nul_byte"),
    "invalid UTF-8": (_bad(model_name=b"\xff\xfe fraud"), "invalid_utf8"),
    "UTF-8-encoded surrogate": (_bad(request_id=b"r\xed\xa0\x80"), "invalid_utf8"),
    "lone surrogate escape": (_bad(prediction='{"label": "\\ud800"}'), "lone_surrogate"),
    "100k-deep JSON": (_bad(prediction="[" * 100_000 + "]" * 100_000), "too_deep"),
    "huge integer": (_bad(prediction="9" * 10_000), "invalid_json"),
    "over 1 MiB": (_bad(prediction='"' + "x" * MIB + '"'), "too_large"),
    "NUL in a Unicode name": (_bad(model_name=UNICODE + "\x00"), "nul_byte"),
}


async def test_every_kind_of_bad_input_is_dead_lettered_on_first_delivery_with_its_reason(
    redis: aioredis.Redis, ledger: Any, workers: Workers
) -> None:
    """Bad entries among good ones: each bad one dead-lettered at attempt 1 with its reason,
    its fields kept byte for byte; the good ones (sent after) handled; nothing pending."""
    w = workers.start("inference,small")
    inv = Invariants(redis, ledger, "inference")
    kinds = list(BAD_INFERENCE)
    bad_keys = await inv.send_each([dict(BAD_INFERENCE[k][0]) for k in kinds], chunk=1)
    good_keys = await inv.send_each([dict(GOOD) for _ in range(50)])
    small = Invariants(redis, ledger, "small")
    too_big, no_payload, ok = await small.send_each(
        [{"payload": '"' + "y" * 2000 + '"'}, {"other": "1"}, {"payload": "[1, 2]"}]
    )
    out, took = await inv.check(30, logs=workers.logs)
    small_out, _ = await small.check(30, logs=workers.logs)
    assert set(out.handled) == set(good_keys) and set(out.dead) == set(bad_keys)
    for kind, key in zip(kinds, bad_keys, strict=True):
        letter = out.dead[key]
        fields, reason = BAD_INFERENCE[kind]
        assert (letter.reason, letter.attempts) == (reason, 1), (kind, letter.reason, letter.error)
        assert letter.error_type == "DecodeError" and letter.error
        for name, value in fields.items():
            sent = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
            assert letter.fields[name] == sent, (kind, name)
    assert set(small_out.handled) == {ok}
    assert (
        small_out.dead[too_big].reason == "too_large" and small_out.dead[no_payload].reason == "missing_field"
    )
    assert w.running
    rss = psutil.Process(w.pid).memory_info().rss
    assert rss < 1024 * MIB, f"worker RSS {rss / MIB:.0f} MiB after the bad input"
    print(
        f"bad input: {len(kinds)} kinds dead-lettered, 50 good handled, settled in {took:.1f}s; "
        f"worker RSS {rss / MIB:.0f} MiB"
    )


async def test_unicode_round_trips_byte_exact(redis: aioredis.Redis, ledger: Any, workers: Workers) -> None:
    """Emoji, CJK, RTL, combining marks, astral planes: the handler gets exactly the bytes
    the producer wrote."""
    workers.start("text")
    inv = Invariants(redis, ledger, "text")
    texts = [UNICODE, "‮RTL override‬", "𝄞" * 1000, "a\u0301" * 50, "中" * 10_000]
    keys = await inv.send_each([{"text": t} for t in texts])
    out, _ = await inv.check(30, logs=workers.logs)
    assert not out.dead
    for key, text in zip(keys, texts, strict=True):
        assert ledger.hget("text", key) == text.encode("utf-8")
