"""Schema setup, idempotent batch storage and model stats, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from support.builtins import NOW, inference_msg, schema_snapshot, training_msg

import streamtasks.builtins as builtins
from streamtasks.adserving.db import create_pool, database_health
from streamtasks.adserving.modelstats import model_performance_stats
from streamtasks.adserving.records import parse_inference, parse_training
from streamtasks.adserving.schema import schema_dir, setup_database
from streamtasks.adserving.store import store_inference, store_training
from streamtasks.errors import DecodeError

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Any]:
    pool = await create_pool(database_url)
    await setup_database(pool)
    yield pool
    await pool.close()


async def test_setup_twice_changes_nothing(database_url: str) -> None:
    """A second setup applies the same files and leaves columns, indexes, constraints as they were."""
    conn = await asyncpg.connect(database_url)
    try:
        first = await setup_database(conn)
        before = await schema_snapshot(conn)
        second = await setup_database(conn)
        assert first == second == {"timescaledb": False, "files": ["001_adserving.sql"]}
        assert await schema_snapshot(conn) == before
        assert ("con", "training_data", "UNIQUE (idempotency_key)") in before
        assert ("con", "inference_results", "UNIQUE (idempotency_key)") in before
    finally:
        await conn.close()


async def test_concurrent_setups_are_safe(database_url: str) -> None:
    """Several processes running setup at once all succeed (the advisory lock serialises them)."""
    conns = [await asyncpg.connect(database_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(setup_database(c) for c in conns))
        assert all(r["files"] == ["001_adserving.sql"] for r in results)
    finally:
        for c in conns:
            await c.close()


async def test_bundled_schema_is_found() -> None:
    """The schema directory resolves (installed package or repo) and holds the files."""
    names = sorted(p.name for p in schema_dir().glob("*.sql"))
    assert names == ["001_adserving.sql", "002_timescaledb.sql", "003_timescaledb_aggregates.sql"]


async def test_duplicates_in_one_batch_store_one_row(pool: Any) -> None:
    """A key twice in one batch makes one row; the batch reports the rows it inserted."""
    a = parse_training(training_msg("r1", mid="k1"))
    b = parse_training(training_msg("r1-again", mid="k1"))
    c = parse_training(training_msg("r2"))
    async with pool.acquire() as conn:
        assert await store_training(conn, [a, b, c]) == 2
        rows = await conn.fetch("SELECT request_id FROM training_data ORDER BY request_id")
    assert [r["request_id"] for r in rows] == ["r1", "r2"]


async def test_restoring_the_same_records_inserts_nothing(pool: Any) -> None:
    """Redelivered entries (same keys) insert 0 rows, in a new transaction and connection."""
    records = [parse_inference(inference_msg(f"r{i}")) for i in range(50)]
    async with pool.acquire() as conn:
        assert await store_inference(conn, records) == 50
    async with pool.acquire() as conn:
        assert await store_inference(conn, records) == 0
        assert await conn.fetchval("SELECT count(*) FROM inference_results") == 50
        assert await store_inference(conn, []) == 0


async def test_producer_retry_under_same_message_id_is_one_row(pool: Any) -> None:
    """Two different entries with one message id (a producer's retry) store one row."""
    first = parse_training(training_msg("r1", mid="m-1", at=NOW))
    retry = parse_training(training_msg("r1", mid="m-1", at=NOW + timedelta(seconds=5)))
    async with pool.acquire() as conn:
        assert await store_training(conn, [first]) == 1
        assert await store_training(conn, [retry]) == 0


async def test_values_round_trip(pool: Any) -> None:
    """Unicode, JSON, inet and times come back as sent."""
    text = "🚀 中文 עברית مرحبا"
    payload = json.dumps({"text": text, "n": [1, 2.5, None, True]}, ensure_ascii=False)
    rec = parse_training(
        training_msg(
            "r1", model=text, input_data=payload, metadata='{"v": "\\u00e9"}', source_ip="2001:db8::1"
        )
    )
    async with pool.acquire() as conn:
        await store_training(conn, [rec])
        row = await conn.fetchrow("SELECT *, input_data::text AS raw FROM training_data")
    assert row["model_name"] == text
    assert json.loads(row["raw"]) == json.loads(payload)
    assert json.loads(row["metadata"]) == {"v": "é"}
    assert str(row["source_ip"]) == "2001:db8::1"
    assert row["created_at"] == NOW
    assert (row["stream"], row["entry_id"]) == (rec.stream, rec.entry_id)
    assert row["idempotency_key"] == f"e:training_data_stream/{rec.entry_id}"


async def test_rolled_back_batch_leaves_store_usable(pool: Any) -> None:
    """A failed batch rolls back entirely; the next batch on that connection works."""
    good = parse_inference(inference_msg("ok"))
    async with pool.acquire() as conn:
        await conn.execute("ALTER TABLE inference_results ADD CONSTRAINT no_bad CHECK (request_id <> 'bad')")
        with pytest.raises(asyncpg.CheckViolationError):
            await store_inference(conn, [good, parse_inference(inference_msg("bad"))])
        assert await conn.fetchval("SELECT count(*) FROM inference_results") == 0
        assert await store_inference(conn, [good]) == 1


async def test_store_survives_discarded_staging_table(pool: Any) -> None:
    """After DISCARD TEMP drops the cached staging table, the next batch recreates it."""
    async with pool.acquire() as conn:
        assert await store_inference(conn, [parse_inference(inference_msg("a"))]) == 1
        await conn.execute("DISCARD TEMP")
        assert await store_inference(conn, [parse_inference(inference_msg("b"))]) == 1


async def test_builtin_handlers_fail_only_bad_entries(pool: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch with bad entries stores the good ones and returns {entry id: DecodeError}."""

    async def get() -> Any:
        return pool

    monkeypatch.setattr(builtins.database_pool, "get", get)
    good = [training_msg(f"r{i}") for i in range(3)]
    bad = training_msg("x", input_data="{nope")
    failures = await builtins.store_training_batch([good[0], bad, *good[1:]])
    assert failures is not None and list(failures) == [bad.id]
    assert isinstance(failures[bad.id], DecodeError) and failures[bad.id].reason == "invalid_json"
    assert await builtins.store_inference_batch([inference_msg("i1")]) is None
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM training_data") == 3
        assert await conn.fetchval("SELECT count(*) FROM inference_results") == 1


def percentile_cont(values: list[float], q: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between closest ranks."""
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


async def test_model_performance_stats_on_known_data(pool: Any) -> None:
    """Counts, throughput, percentiles, mean confidence, anomaly rate and hourly buckets are exact."""
    since = NOW - timedelta(hours=3)
    inside = [  # (time, processing ms, confidence, anomaly)
        (since, 5.0, 0.9, False),  # the window's first instant is included
        (since + timedelta(minutes=30), 15.0, 0.8, True),
        (since + timedelta(minutes=59, seconds=59), 25.0, 0.7, False),
        (since + timedelta(hours=1, minutes=5), 100.0, 0.6, False),
        (since + timedelta(hours=2, minutes=10), 7.5, 0.95, True),
        (NOW - timedelta(milliseconds=1), 42.0, 0.5, False),
        (since + timedelta(hours=2, minutes=40), 1.0, 0.1, False),
    ]
    outside = [NOW, since - timedelta(milliseconds=1), NOW + timedelta(hours=1)]
    records = [
        parse_inference(inference_msg(f"in{i}", at=t, ms_taken=p, confidence=c, anomaly=a))
        for i, (t, p, c, a) in enumerate(inside)
    ]
    records += [parse_inference(inference_msg(f"out{i}", at=t, ms_taken=1e6)) for i, t in enumerate(outside)]
    records.append(parse_inference(inference_msg("other", model="other", at=since, ms_taken=1e6)))
    training = [parse_training(training_msg(f"t{i}", at=since + timedelta(minutes=i))) for i in range(4)]
    training += [
        parse_training(training_msg("t-out", at=NOW)),
        parse_training(training_msg("t-o", model="o")),
    ]
    async with pool.acquire() as conn:
        await store_inference(conn, records)
        await store_training(conn, training)

    stats = await model_performance_stats(pool, "fraud", 3, now=NOW)

    times = [p for _, p, _, _ in inside]
    assert stats["requests"] == len(inside) == 7
    active = (NOW - timedelta(milliseconds=1) - since).total_seconds()  # first to last request
    assert stats["throughput_rps"] == pytest.approx(7 / active)
    assert stats["window_rps"] == pytest.approx(7 / (3 * 3600))
    assert (stats["first_at"], stats["last_at"]) == (since, NOW - timedelta(milliseconds=1))
    assert (stats["peak_hourly_rps"], stats["peak_hour"]) == (pytest.approx(3 / 3600), since)
    assert stats["p50_ms"] == pytest.approx(percentile_cont(times, 0.5)) == pytest.approx(15.0)
    assert stats["p95_ms"] == pytest.approx(percentile_cont(times, 0.95))
    assert stats["p99_ms"] == pytest.approx(percentile_cont(times, 0.99))
    assert stats["mean_confidence"] == pytest.approx(sum(c for _, _, c, _ in inside) / 7)
    assert stats["anomaly_rate"] == pytest.approx(2 / 7)
    assert stats["anomalies"] == 2
    assert stats["training_rows"] == 4

    by_hour: dict[datetime, list[tuple[float, float, bool]]] = {}
    for t, p, c, a in inside:
        by_hour.setdefault(t.replace(minute=0, second=0, microsecond=0), []).append((p, c, a))
    expected = [
        {
            "bucket": hour,
            "requests": len(rows),
            "mean_confidence": pytest.approx(sum(c for _, c, _ in rows) / len(rows)),
            "anomaly_rate": pytest.approx(sum(a for _, _, a in rows) / len(rows)),
            "p50_ms": pytest.approx(percentile_cont([p for p, _, _ in rows], 0.5)),
            "p95_ms": pytest.approx(percentile_cont([p for p, _, _ in rows], 0.95)),
            "p99_ms": pytest.approx(percentile_cont([p for p, _, _ in rows], 0.99)),
        }
        for hour, rows in sorted(by_hour.items())
    ]
    assert stats["buckets"] == expected
    assert [b["requests"] for b in stats["buckets"]] == [3, 1, 3]


async def test_stats_of_an_empty_window(pool: Any) -> None:
    """No rows: zero counts and throughput, None for the aggregates, no buckets."""
    stats = await model_performance_stats(pool, "nobody", 24, now=NOW)
    assert (stats["requests"], stats["throughput_rps"], stats["training_rows"]) == (0, 0.0, 0)
    assert stats["p50_ms"] is stats["mean_confidence"] is stats["anomaly_rate"] is None
    assert stats["peak_hourly_rps"] is stats["peak_hour"] is stats["first_at"] is None
    assert stats["buckets"] == []


async def test_throughput_is_over_the_span_with_data_and_peak_hour(pool: Any) -> None:
    """502 requests in the last minute of a 24 h window: ~10 req/s, not 502 / 86,400 s."""
    first = NOW - timedelta(seconds=60)
    records = [
        parse_inference(inference_msg(f"r{i}", at=first + timedelta(milliseconds=100 * i)))
        for i in range(502)
    ]
    async with pool.acquire() as conn:
        await store_inference(conn, records)
    stats = await model_performance_stats(pool, "fraud", 24, now=NOW)
    span = 50.1  # 501 gaps of 100 ms
    assert stats["throughput_rps"] == pytest.approx(502 / span)
    assert stats["window_rps"] == pytest.approx(502 / 86_400)
    assert stats["peak_hourly_rps"] == pytest.approx(502 / 3600)
    assert stats["peak_hour"] == NOW - timedelta(hours=1)
    single = await model_performance_stats(pool, "fraud", 24, now=first + timedelta(milliseconds=1))
    assert (single["requests"], single["throughput_rps"]) == (1, 1.0)  # a span of at least 1 s


async def test_database_health(pool: Any, database_url: str) -> None:
    """Health is 'healthy' for a pool or a DSN, and 'unhealthy' without the password leaking."""
    assert (await database_health(pool))["health"] == "healthy"
    assert (await database_health(database_url))["health"] == "healthy"
    bad = await database_health("postgresql://u:s3cr3t-pw@127.0.0.1:1/x", timeout=2)
    assert bad["health"] == "unhealthy"
    assert "s3cr3t-pw" not in json.dumps(bad, default=str)


async def test_ipv4_and_ipv6_source_addresses_are_stored_exactly(pool: Any) -> None:
    """Both address families survive the packed-bytes path into inet, including edge values."""
    addresses = ["192.168.1.100", "0.0.0.1", "255.255.255.255", "::1", "2001:db8::1", "::ffff:10.0.0.1"]
    recs = [parse_training(training_msg(f"ip{i}", source_ip=a)) for i, a in enumerate(addresses)]
    async with pool.acquire() as conn:
        assert await store_training(conn, recs) == len(addresses)
        rows = await conn.fetch(
            "SELECT request_id, host(source_ip) AS ip, family(source_ip) AS f FROM training_data"
        )
    got = {r["request_id"]: (r["ip"], r["f"]) for r in rows}
    assert got == {f"ip{i}": (a, 6 if ":" in a else 4) for i, a in enumerate(addresses)}
