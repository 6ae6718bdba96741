"""TimescaleDB, against the real extension: setup, policies, idempotency, aggregates, status.

The tests that need TimescaleDB loaded use ``timescale_database_url`` (a second throwaway
PostgreSQL that preloads it); they skip, with one line, only where TimescaleDB is not
installed. The first test uses the ordinary ``pg_server``, where the extension files are
installed (the bootstrap installs them machine-wide) but not preloaded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.builtins import inference_msg, schema_snapshot, training_msg

from streamtasks.adserving.modelstats import (
    LATENCY_HISTOGRAM,
    LATENCY_PRECISION_FACTOR,
    histogram_percentile,
    model_performance_stats,
)
from streamtasks.adserving.records import parse_inference, parse_training
from streamtasks.adserving.schema import setup_database
from streamtasks.adserving.store import store_inference, store_training
from streamtasks.adserving.timescale import TimescaleSettings, timescale_status
from streamtasks.errors import ConfigError

pytestmark = pytest.mark.integration


async def _skip_unless_installed(conn: Any) -> None:
    if not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')"
    ):
        pytest.skip("TimescaleDB is not installed for this PostgreSQL (scripts/services.py ensure-binaries)")


async def test_installed_but_not_preloaded_falls_back_to_plain_schema(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Extension files present, not in shared_preload_libraries: plain schema, one log line."""
    conn = await asyncpg.connect(database_url)
    try:
        await _skip_unless_installed(conn)
        with caplog.at_level(logging.INFO, logger="streamtasks.db"):
            result = await setup_database(conn)
        assert result == {"timescaledb": False, "files": ["001_adserving.sql"]}
        assert await conn.fetchval("SELECT to_regclass('inference_results') IS NOT NULL")
        assert not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"
        )
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, warnings
        assert "not preloaded" in warnings[0] and "shared_preload_libraries" in warnings[0]
        with pytest.raises(RuntimeError, match="not preloaded"):
            await setup_database(conn, timescaledb=True)
        assert not conn.is_closed()
    finally:
        await conn.close()


async def test_cli_db_init_not_preloaded_is_one_line_and_exit_0(database_url: str) -> None:
    """`streamtasks db init` on that server: the plain schema, and one line on stderr."""
    conn = await asyncpg.connect(database_url)
    try:
        await _skip_unless_installed(conn)
    finally:
        await conn.close()
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "streamtasks", "db", "init", "--database-url", database_url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "schema applied: 001_adserving.sql (timescaledb: False)"
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "not preloaded" in lines[0] and "shared_preload_libraries" in lines[0], lines


# --------------------------------------------------------------------------- helpers

ALL_FILES = ["001_adserving.sql", "002_timescaledb.sql", "003_timescaledb_aggregates.sql"]


@pytest.fixture
async def ts(timescale_database_url: str) -> AsyncIterator[Any]:
    """A connection to an empty database on the TimescaleDB server."""
    conn = await asyncpg.connect(timescale_database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def db_now(conn: Any) -> datetime:
    value: datetime = await conn.fetchval("SELECT now()")
    return value


async def jobs(conn: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """{(proc_name, table): {"job_id", "config", "schedule_interval"}} of this database's jobs."""
    rows = await conn.fetch(
        """
        SELECT job_id, proc_name,
               coalesce(hypertable_name, to_regclass(config->>'hypertable')::text) AS target,
               config, schedule_interval
        FROM timescaledb_information.jobs WHERE job_id >= 1000
        """
    )
    return {
        (r["proc_name"], r["target"]): {
            "job_id": r["job_id"],
            "config": json.loads(r["config"]) if r["config"] else None,
            "schedule_interval": r["schedule_interval"],
        }
        for r in rows
    }


async def pause_jobs(conn: Any) -> None:
    """Stop the background scheduler from running this database's jobs (tests run them)."""
    await conn.execute("SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs")


async def run_job(conn: Any, proc: str, table: str) -> None:
    job_id = (await jobs(conn))[(proc, table)]["job_id"]
    await conn.execute(f"CALL run_job({int(job_id)})")


async def count(conn: Any, table: str) -> int:
    value: int = await conn.fetchval(f"SELECT count(*) FROM {table}")
    return value


# --------------------------------------------------------------------------- db init


async def test_db_init_creates_hypertables_compression_and_policies(ts: Any) -> None:
    """Hypertables with the configured chunk interval, compression (segment by model, order
    by time), a compression policy, refresh policies; retention and key cleanup when set."""
    settings = TimescaleSettings(chunk_interval="6 hours", compress_after="3 days", retention="30 days")
    assert await setup_database(ts, timescale=settings) == {"timescaledb": True, "files": ALL_FILES}
    rows = await ts.fetch(
        """
        SELECT h.hypertable_name, h.compression_enabled, d.time_interval
        FROM timescaledb_information.hypertables h
        JOIN timescaledb_information.dimensions d USING (hypertable_schema, hypertable_name)
        WHERE h.hypertable_schema = 'public' ORDER BY 1
        """
    )
    assert [tuple(r) for r in rows] == [
        ("inference_results", True, timedelta(hours=6)),
        ("training_data", True, timedelta(hours=6)),
    ]
    cols = await ts.fetch(
        """
        SELECT hypertable_name, attname, segmentby_column_index, orderby_column_index, orderby_asc
        FROM timescaledb_information.compression_settings
        WHERE hypertable_schema = 'public' ORDER BY 1, 2
        """
    )
    for table in ("inference_results", "training_data"):
        mine = {r["attname"]: r for r in cols if r["hypertable_name"] == table}
        assert mine["model_name"]["segmentby_column_index"] == 1
        assert mine["created_at"]["orderby_column_index"] == 1 and mine["created_at"]["orderby_asc"]
    found = await jobs(ts)
    for table in ("training_data", "inference_results"):
        assert found[("policy_compression", table)]["config"]["compress_after"] == "3 days"
        assert found[("policy_retention", table)]["config"]["drop_after"] == "30 days"
        assert found[("streamtasks_prune_keys", table)]["config"] == {
            "hypertable": f"public.{table}", "keys": f"public.{table}_keys", "drop_after": "30 days",
        }  # fmt: skip
        assert found[("policy_refresh_continuous_aggregate", f"{table}_hourly")][
            "schedule_interval"
        ] == timedelta(minutes=30)
    assert len(found) == 8


async def test_db_init_twice_is_a_no_op(ts: Any) -> None:
    """The second run leaves tables, indexes, constraints, hypertables and jobs as they were."""
    settings = TimescaleSettings(retention="90 days")
    await setup_database(ts, timescale=settings)
    before = (await schema_snapshot(ts), await jobs(ts))
    assert await setup_database(ts, timescale=settings) == {"timescaledb": True, "files": ALL_FILES}
    assert (await schema_snapshot(ts), await jobs(ts)) == before


async def test_concurrent_db_inits_on_timescaledb_are_safe(timescale_database_url: str) -> None:
    """Several processes running db init at once all succeed and leave one set of jobs."""
    conns = [await asyncpg.connect(timescale_database_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(setup_database(c) for c in conns))
        assert all(r == {"timescaledb": True, "files": ALL_FILES} for r in results)
        n_jobs = await conns[0].fetchval(
            "SELECT count(*) FROM timescaledb_information.jobs WHERE job_id >= 1000"
        )
        assert n_jobs == 4  # compression x2, refresh x2
    finally:
        for c in conns:
            await c.close()


async def test_changed_settings_change_only_those_policies(ts: Any) -> None:
    """A new compress_after replaces that policy; retention off removes retention and cleanup."""
    await setup_database(ts, timescale=TimescaleSettings(retention="90 days"))
    first = await jobs(ts)
    await setup_database(
        ts,
        timescale=TimescaleSettings(compress_after="2 days", retention=None, aggregate_refresh="5 minutes"),
    )
    second = await jobs(ts)
    key = ("policy_compression", "training_data")
    assert (
        second[key]["config"]["compress_after"] == "2 days" and second[key]["job_id"] != first[key]["job_id"]
    )
    assert not [k for k in second if k[0] in ("policy_retention", "streamtasks_prune_keys")]
    cagg = ("policy_refresh_continuous_aggregate", "inference_results_hourly")
    assert second[cagg]["job_id"] == first[cagg]["job_id"]  # altered in place, history kept
    assert second[cagg]["schedule_interval"] == timedelta(minutes=5)
    await setup_database(ts, timescale=TimescaleSettings(compress_after=None, chunk_interval="12 hours"))
    assert not [k for k in await jobs(ts) if k[0] == "policy_compression"]
    intervals = await ts.fetch(
        "SELECT time_interval FROM timescaledb_information.dimensions"
        " WHERE hypertable_name IN ('training_data', 'inference_results')"
    )
    assert [r[0] for r in intervals] == [timedelta(hours=12)] * 2  # for new chunks


async def test_bad_interval_names_the_variable(ts: Any) -> None:
    """A setting PostgreSQL cannot read as a positive interval is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="TIMESCALEDB_RETENTION='ninety days'"):
        await setup_database(ts, timescale=TimescaleSettings(retention="ninety days"))
    with pytest.raises(ConfigError, match="TIMESCALEDB_CHUNK_INTERVAL='-1 day'"):
        await setup_database(ts, timescale=TimescaleSettings(chunk_interval="-1 day"))
    assert await ts.fetchval("SELECT to_regclass('training_data')") is None  # nothing half-done


def test_settings_from_environment() -> None:
    """TIMESCALEDB_* variables, with 'off' disabling a policy; defaults otherwise."""
    assert TimescaleSettings.from_env({}) == TimescaleSettings()
    assert TimescaleSettings.from_env(
        {"TIMESCALEDB_CHUNK_INTERVAL": "12 hours", "TIMESCALEDB_COMPRESS_AFTER": "off",
         "TIMESCALEDB_RETENTION": "90 days", "TIMESCALEDB_AGGREGATE_REFRESH": "5 minutes"}
    ) == TimescaleSettings("12 hours", None, "90 days", "5 minutes")  # fmt: skip


async def test_db_init_migrates_plain_schema_rows_once(ts: Any) -> None:
    """A database holding plain-schema rows: the first TimescaleDB init moves every row and
    key, the second changes nothing; re-sends still store nothing, new entries store."""
    now = await db_now(ts)
    training = [
        parse_training(training_msg(f"t{i}", at=now - timedelta(hours=7 * i), mid=f"tm{i}"))
        for i in range(40)
    ]
    inference = [parse_inference(inference_msg(f"i{i}", at=now - timedelta(hours=5 * i))) for i in range(40)]
    assert await setup_database(ts, timescaledb=False) == {
        "timescaledb": False,
        "files": ["001_adserving.sql"],
    }
    assert await store_training(ts, training) == 40  # plans the plain schema on this connection
    assert await store_inference(ts, inference) == 40
    before = sorted(tuple(r) for r in await ts.fetch("SELECT idempotency_key, request_id FROM training_data"))

    assert (await setup_database(ts))["timescaledb"] is True
    assert (await count(ts, "training_data"), await count(ts, "inference_results")) == (40, 40)
    assert (await count(ts, "training_data_keys"), await count(ts, "inference_results_keys")) == (40, 40)
    assert (
        sorted(tuple(r) for r in await ts.fetch("SELECT idempotency_key, request_id FROM training_data"))
        == before
    )
    assert await ts.fetchval("SELECT count(*) FROM show_chunks('training_data')") > 1

    snapshot = (await schema_snapshot(ts), await jobs(ts))
    await setup_database(ts)
    assert (await schema_snapshot(ts), await jobs(ts)) == snapshot
    # the store notices the new schema on the same connection
    assert await store_training(ts, training) == 0
    assert await store_inference(ts, inference) == 0
    fresh = parse_training(training_msg("new", at=now, mid="tm-new"))
    assert await store_training(ts, [fresh, *training[:3]]) == 1
    assert (await count(ts, "training_data"), await count(ts, "training_data_keys")) == (41, 41)


async def test_retention_drops_chunks_and_the_keys_of_their_rows_only(ts: Any) -> None:
    """Retention drops whole chunks; the key cleanup deletes only keys whose rows are gone.

    The idempotency window: an entry re-sent after its key was deleted is stored again, as a
    new row; a re-send within retention stores nothing.
    """
    await setup_database(ts, timescale=TimescaleSettings(retention="30 days"))
    await pause_jobs(ts)
    now = await db_now(ts)
    horizon = now - timedelta(days=30)
    chunk_start = horizon.replace(hour=0, minute=0, second=0, microsecond=0)  # 1-day chunks from the epoch
    old = [
        parse_training(training_msg(f"old{i}", at=now - timedelta(days=40 + i), mid=f"old{i}"))
        for i in range(5)
    ]
    recent = [
        parse_training(training_msg(f"new{i}", at=now - timedelta(days=i), mid=f"new{i}")) for i in range(5)
    ]
    # older than the horizon, but in the chunk that straddles it: retention keeps that chunk
    straddling = []
    if horizon > chunk_start:
        at = chunk_start + (horizon - chunk_start) / 2
        straddling = [parse_training(training_msg("edge", at=at, mid="edge"))]
    assert await store_training(ts, [*old, *recent, *straddling]) == 10 + len(straddling)

    await run_job(ts, "policy_retention", "training_data")
    assert await count(ts, "training_data") == 5 + len(straddling)
    assert await count(ts, "training_data_keys") == 10 + len(straddling)  # keys stay until the cleanup
    await run_job(ts, "streamtasks_prune_keys", "training_data")
    keys = {r[0] for r in await ts.fetch("SELECT idempotency_key FROM training_data_keys")}
    assert keys == {f"new{i}" for i in range(5)} | ({"edge"} if straddling else set())

    assert await store_training(ts, [*recent, *straddling]) == 0  # within the window: nothing
    assert await store_training(ts, old[:1]) == 1  # past retention: stored again, as a new row


# --------------------------------------------------------------------------- idempotency


async def duplicates(conn: Any, table: str) -> int:
    value: int = await conn.fetchval(
        f"SELECT count(*) FROM (SELECT idempotency_key FROM {table} GROUP BY 1 HAVING count(*) > 1) d"
    )
    return value


async def compress_older_than(conn: Any, table: str, age: timedelta) -> int:
    rows = await conn.fetch(
        "SELECT compress_chunk(c, if_not_compressed => true)"
        " FROM show_chunks($1::text::regclass, older_than => $2::interval) c",
        table,
        age,
    )
    return len(rows)


async def compressed_chunks(conn: Any, table: str) -> int:
    value: int = await conn.fetchval(
        "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = $1 AND is_compressed",
        table,
    )
    return value


async def test_redelivery_across_chunks_and_into_compressed_chunks_stores_nothing(ts: Any) -> None:
    """Entries over 10 one-day chunks; the old chunks compressed; re-sends (same entry, and a
    producer retry whose created_at falls in another chunk) store nothing; a late new entry
    lands in a compressed chunk once."""
    await setup_database(ts)
    await pause_jobs(ts)
    now = await db_now(ts)
    n = 2000
    at = [now - timedelta(days=10) + timedelta(seconds=i * 10 * 86_400 / n) for i in range(n)]
    training = [parse_training(training_msg(f"t{i}", at=at[i], mid=f"t{i}")) for i in range(n)]
    inference = [parse_inference(inference_msg(f"i{i}", at=at[i], mid=f"i{i}")) for i in range(n)]
    for start in range(0, n, 500):
        assert await store_training(ts, training[start : start + 500]) == 500
        assert await store_inference(ts, inference[start : start + 500]) == 500
    assert await ts.fetchval("SELECT count(*) FROM show_chunks('inference_results')") >= 10
    assert await compress_older_than(ts, "inference_results", timedelta(days=2)) >= 7
    assert await compress_older_than(ts, "training_data", timedelta(days=2)) >= 7

    # redelivered entries: every one of them, batched across all chunks, compressed or not
    assert await store_training(ts, training) == 0
    assert await store_inference(ts, inference) == 0
    # producer retries under the same message id, whose time falls in another chunk
    retries = [
        parse_inference(inference_msg(f"i{i}", at=at[i] + timedelta(days=3), mid=f"i{i}"))
        for i in range(0, n, 7)
    ]
    assert await store_inference(ts, retries) == 0
    # a late entry, new key, into the oldest (compressed) chunk
    late = parse_inference(inference_msg("late", at=at[0] + timedelta(seconds=1), mid="late"))
    assert await store_inference(ts, [late, late]) == 1
    assert await store_inference(ts, [late]) == 0
    oldest = await ts.fetchval(
        "SELECT is_compressed FROM timescaledb_information.chunks WHERE hypertable_name = 'inference_results'"
        " ORDER BY range_start LIMIT 1"
    )
    assert oldest  # the row went into the compressed chunk, which stays compressed

    assert (await count(ts, "training_data"), await count(ts, "inference_results")) == (n, n + 1)
    assert await duplicates(ts, "training_data") == await duplicates(ts, "inference_results") == 0
    assert (
        await ts.fetchval("SELECT request_id FROM inference_results WHERE idempotency_key = 'late'") == "late"
    )


async def test_failed_batch_leaves_no_keys_behind(ts: Any) -> None:
    """A batch that fails after its keys were copied rolls back the keys too: the entries,
    retried, are stored (a leaked key would make them silently lost)."""
    await setup_database(ts)
    now = await db_now(ts)
    good = parse_inference(inference_msg("ok", at=now, mid="ok"))
    bad = parse_inference(inference_msg("bad", at=now, mid="bad"))
    await ts.execute("ALTER TABLE inference_results ADD CONSTRAINT no_bad CHECK (request_id <> 'bad')")
    with pytest.raises(asyncpg.CheckViolationError):
        await store_inference(ts, [good, bad])
    assert (await count(ts, "inference_results"), await count(ts, "inference_results_keys")) == (0, 0)
    with pytest.raises(asyncpg.CheckViolationError):  # the slow path too (one key stored already)
        await store_inference(ts, [good])
        await store_inference(ts, [good, bad])
    assert (await count(ts, "inference_results"), await count(ts, "inference_results_keys")) == (1, 1)
    await ts.execute("ALTER TABLE inference_results DROP CONSTRAINT no_bad")
    assert await store_inference(ts, [good, bad]) == 1
    assert (await count(ts, "inference_results"), await count(ts, "inference_results_keys")) == (2, 2)


async def test_redelivery_while_compression_runs_stores_nothing_twice(
    ts: Any, timescale_database_url: str
) -> None:
    """A compression of the old chunks running while batches of re-sends and late entries
    land in those same chunks: every key exactly once."""
    await setup_database(ts)
    await pause_jobs(ts)
    now = await db_now(ts)
    n = 6000
    at = [now - timedelta(days=6) + timedelta(seconds=i * 4 * 86_400 / n) for i in range(n)]
    first = [parse_inference(inference_msg(f"i{i}", at=at[i], mid=f"i{i}")) for i in range(n)]
    for start in range(0, n, 1000):
        await store_inference(ts, first[start : start + 1000])
    late = [
        parse_inference(inference_msg(f"late{i}", at=at[i] + timedelta(seconds=1), mid=f"l{i}"))
        for i in range(n)
    ]
    writer = await asyncpg.connect(timescale_database_url)
    stored = 0

    async def write() -> None:
        nonlocal stored
        for start in range(0, n, 500):
            # each batch: 250 re-sends and 250 new late entries, into chunks being compressed
            batch = first[start : start + 250] + late[start : start + 250]
            stored += await store_inference(writer, batch)
            stored += await store_inference(writer, batch)  # and that batch redelivered at once

    async def compress() -> int:
        # chunk by chunk, each its own transaction, so the writer's batches interleave
        chunks = await ts.fetch(
            "SELECT c::text FROM show_chunks('inference_results', older_than => now() - INTERVAL '1 day') c"
        )
        for (chunk,) in chunks:
            await ts.execute("SELECT compress_chunk($1::text::regclass)", chunk)
        return len(chunks)

    try:
        compressed, _ = await asyncio.gather(compress(), write())
    finally:
        await writer.close()
    assert compressed >= 3
    assert await compressed_chunks(ts, "inference_results") == compressed
    assert stored == n // 2
    assert await count(ts, "inference_results") == n + n // 2
    assert await count(ts, "inference_results_keys") == n + n // 2
    assert await duplicates(ts, "inference_results") == 0


# --------------------------------------------------------------------------- stats


def within_precision(estimate: float | None, exact: float | None) -> bool:
    """The histogram's stated precision: (1 + estimate) within a factor of (1 + exact)."""
    if estimate is None or exact is None:
        return estimate is exact
    ratio = (1 + estimate) / (1 + exact)
    return 1 / LATENCY_PRECISION_FACTOR - 1e-9 <= ratio <= LATENCY_PRECISION_FACTOR + 1e-9


def assert_stats_agree(agg: dict[str, Any], raw: dict[str, Any]) -> None:
    assert (agg["source"], raw["source"]) == ("aggregates", "rows")
    for key in ("requests", "anomalies", "training_rows", "first_at", "last_at", "peak_hour"):
        assert agg[key] == raw[key], key
    for key in ("mean_confidence", "anomaly_rate", "throughput_rps", "window_rps", "peak_hourly_rps"):
        assert agg[key] == (None if raw[key] is None else pytest.approx(raw[key], rel=1e-9)), key
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        assert within_precision(agg[key], raw[key]), (key, agg[key], raw[key])
    assert [b["bucket"] for b in agg["buckets"]] == [b["bucket"] for b in raw["buckets"]]
    for a, r in zip(agg["buckets"], raw["buckets"], strict=True):
        assert a["requests"] == r["requests"]
        assert a["mean_confidence"] == pytest.approx(r["mean_confidence"], rel=1e-9)
        assert a["anomaly_rate"] == pytest.approx(r["anomaly_rate"], rel=1e-9)
        for key in ("p50_ms", "p95_ms", "p99_ms"):
            assert within_precision(a[key], r[key]), (key, a, r)


STATS_NOW = datetime(2024, 3, 10, 17, 37, 12, tzinfo=timezone.utc)


def sample_data(rng: random.Random, n: int, *, start: datetime, span_h: float) -> tuple[list[Any], list[Any]]:
    inference, training = [], []
    for i in range(n):
        at = start + timedelta(seconds=rng.uniform(0, span_h * 3600))
        model = "m1" if rng.random() < 0.8 else "m2"
        inference.append(
            parse_inference(
                inference_msg(
                    f"r{i}", model=model, at=at, ms_taken=round(rng.lognormvariate(3, 1), 3),
                    confidence=rng.random(), anomaly=rng.random() < 0.05, mid=f"i-{start}-{i}",
                )
            )
        )  # fmt: skip
        if rng.random() < 0.5:
            training.append(parse_training(training_msg(f"r{i}", model=model, at=at, mid=f"t-{start}-{i}")))
    return inference, training


async def test_stats_from_aggregates_equal_stats_from_rows(ts: Any, database_url: str) -> None:
    """The same data in plain PostgreSQL (exact queries) and in TimescaleDB (hourly aggregates
    plus raw partial hours): counts, means, times equal; percentiles within the stated
    precision; before the aggregates are materialised, after, and after late rows + refresh."""
    rng = random.Random(16)
    inference, training = sample_data(rng, 4000, start=STATS_NOW - timedelta(hours=60), span_h=60)
    plain = await asyncpg.connect(database_url)
    try:
        await setup_database(plain, timescaledb=False)
        await setup_database(ts)
        await pause_jobs(ts)
        for conn in (plain, ts):
            await store_inference(conn, inference)
            await store_training(conn, training)

        windows = [
            (30.5, STATS_NOW),
            (0.25, STATS_NOW),
            (100, STATS_NOW),
            (5, STATS_NOW.replace(minute=0, second=0)),
        ]

        async def compare() -> None:
            for hours, now in windows:
                for model in ("m1", "m2", "nobody"):
                    agg = await model_performance_stats(ts, model, hours, now=now)
                    raw = await model_performance_stats(plain, model, hours, now=now)
                    assert_stats_agree(agg, raw)

        await compare()  # nothing materialised: real-time aggregation
        for view in ("inference_results_hourly", "training_data_hourly"):
            await ts.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")
        materialised = await ts.fetchval(
            "SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name)"
            " FROM timescaledb_information.continuous_aggregates WHERE view_name = 'inference_results_hourly'"
        )
        assert await count(ts, materialised) > 60  # every (model, hour) of the data
        await compare()  # materialised
        late_inference, late_training = sample_data(
            rng, 300, start=STATS_NOW - timedelta(hours=40), span_h=20
        )
        for conn in (plain, ts):
            await store_inference(conn, late_inference)
            await store_training(conn, late_training)
        for view in ("inference_results_hourly", "training_data_hourly"):
            await ts.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")
        await compare()  # late rows in materialised hours, after the refresh
    finally:
        await plain.close()


def exact_percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def python_histogram(values: list[float]) -> list[int]:
    """TimescaleDB's histogram(ln(1 + v), LOW, HIGH, N), computed here."""
    low, high, n = LATENCY_HISTOGRAM
    hist = [0] * (n + 2)
    for v in values:
        x = math.log1p(v)
        hist[0 if x < low else n + 1 if x >= high else int((x - low) / ((high - low) / n)) + 1] += 1
    return hist


@given(
    st.lists(st.floats(min_value=0, max_value=150_000, allow_nan=False), min_size=1, max_size=300),
    st.sampled_from([0.0, 0.01, 0.5, 0.95, 0.99, 1.0]),
)
def test_histogram_percentile_is_within_the_stated_precision(values: list[float], q: float) -> None:
    """Any latencies below 162.8 s, any q: within a factor e^0.04 of (1 + percentile_cont)."""
    assert within_precision(histogram_percentile(python_histogram(values), q), exact_percentile(values, q))


# --------------------------------------------------------------------------- db status


async def test_db_status_shows_hypertables_chunks_compression_and_job_runs(
    ts: Any, timescale_database_url: str, database_url: str
) -> None:
    """Chunks, compressed chunks and ratio per hypertable; each job with its last run (a job
    run by the background scheduler here); the CLI prints it, plain PostgreSQL says so."""
    await setup_database(ts, timescale=TimescaleSettings(retention="90 days"))
    now = await db_now(ts)
    records = [
        parse_inference(inference_msg(f"r{i}", at=now - timedelta(minutes=7 * i), mid=f"s{i}"))
        for i in range(1500)
    ]
    await store_inference(ts, records)
    compressed = await compress_older_than(ts, "inference_results", timedelta(days=2))
    assert compressed >= 4
    job_id = (await jobs(ts))[("policy_refresh_continuous_aggregate", "inference_results_hourly")]["job_id"]
    await ts.execute("SELECT alter_job($1, next_start => now())", job_id)
    for _ in range(600):  # the scheduler picks it up within a second or two (idle machine)
        finished = await ts.fetchval(  # a run that ended (while one runs, its status is unknown)
            "SELECT total_runs FROM timescaledb_information.job_stats"
            " WHERE job_id = $1 AND last_run_status IS NOT NULL AND job_status <> 'Running'",
            job_id,
        )
        if finished:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail(f"TimescaleDB's scheduler did not run job {job_id} within 60 s")

    status = await timescale_status(ts)
    assert status["timescaledb"] == await ts.fetchval(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    )
    by_name = {h["name"]: h for h in status["hypertables"]}
    inf = by_name["inference_results"]
    assert inf["chunks"] == await ts.fetchval("SELECT count(*) FROM show_chunks('inference_results')") >= 7
    assert inf["compressed_chunks"] == compressed
    assert inf["compression_ratio"] > 1
    assert inf["chunk_interval"] == timedelta(days=1)
    assert by_name["training_data"]["compression_ratio"] is None  # nothing compressed yet
    assert {a["name"] for a in status["aggregates"]} == {"inference_results_hourly", "training_data_hourly"}
    kinds = sorted((j["kind"], j["target"]) for j in status["jobs"])
    assert kinds == sorted(
        [(k, t) for t in ("training_data", "inference_results")
         for k in ("policy_compression", "policy_retention")]
        + [("streamtasks_prune_keys", f"public.{t}") for t in ("training_data", "inference_results")]
        + [("policy_refresh_continuous_aggregate", f"{t}_hourly")
           for t in ("training_data", "inference_results")]
    )  # fmt: skip
    ran = next(j for j in status["jobs"] if j["job_id"] == job_id)
    assert ran["total_runs"] >= 1 and ran["last_run_started_at"] is not None
    assert ran["last_run_status"] == "Success" and ran["total_failures"] == 0, ran
    assert ran["next_start"] > ran["last_run_started_at"]

    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "streamtasks", "db", "status", "--json",
         "--database-url", timescale_database_url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert {h["name"] for h in json.loads(out.stdout)["hypertables"]} == {
        "training_data",
        "inference_results",
    }
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "streamtasks", "db", "status", "--database-url", database_url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0 and "not enabled" in out.stdout, out
    plain = await asyncpg.connect(database_url)
    try:
        assert await timescale_status(plain) == {
            "timescaledb": None,
            "hypertables": [],
            "aggregates": [],
            "jobs": [],
            "warnings": [],
        }
    finally:
        await plain.close()


# --------------------------------------------------------------------------- background jobs

#: The kinds of job ``db init`` schedules (with retention on; one per table each), in the order
#: the test runs them: one kind at a time, since jobs of different kinds on one hypertable can
#: collide when forced to run together every second (retention dropping the chunk compression
#: is compressing: "deadlock detected", "cache lookup failed"), which their real schedules
#: (hours apart) make rare and TimescaleDB retries.
JOB_KINDS = (
    "policy_compression",
    "policy_retention",
    "streamtasks_prune_keys",
    "policy_refresh_continuous_aggregate",
)


@pytest.fixture
async def paused_after(ts: Any) -> AsyncIterator[None]:
    """Pause the jobs of ``ts``'s database after the test: a job on a 1-second schedule would
    keep running (or failing) in the background for the rest of the session."""
    try:
        yield
    finally:
        await pause_jobs(ts)


async def every_second(conn: Any, ids: list[int]) -> None:
    """Put these jobs on a 1-second schedule, starting now."""
    for job_id in ids:
        await conn.execute(
            "SELECT alter_job($1, schedule_interval => '1 second', next_start => now())", job_id
        )


async def job_stats(conn: Any, ids: list[int]) -> dict[int, dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT job_id, last_run_status, total_runs, total_successes, total_failures,"
        " next_start > now() + interval '30 minutes' AS next_run_later"
        " FROM timescaledb_information.job_stats WHERE job_id = ANY($1::int[])",
        ids,
    )
    return {r["job_id"]: dict(r) for r in rows}


async def poll(check: Any, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)


async def scheduled_runs(conn: Any, ids: list[int], runs: int) -> None:
    """Let TimescaleDB's scheduler run these jobs ``runs`` times each, 1 s apart, then put them
    an hour away and wait until no run is in progress (a run in progress has no status yet).
    Not by pausing them: the scheduler cancels a running job that is unscheduled (a failure)."""
    await every_second(conn, ids)

    async def ended() -> bool:  # total_runs counts a run as it starts
        stats = (await job_stats(conn, ids)).values()
        return len(stats) == len(ids) and all(
            s["total_successes"] + s["total_failures"] >= runs for s in stats
        )

    await poll(ended)
    for job_id in ids:
        await conn.execute(
            "SELECT alter_job($1, schedule_interval => '1 hour', next_start => now() + interval '1 hour')",
            job_id,
        )

    async def settled() -> bool:
        stats = (await job_stats(conn, ids)).values()
        return all(s["last_run_status"] is not None and s["next_run_later"] for s in stats)

    await poll(settled)


async def db_status_cli(dsn: str, *options: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "streamtasks", "db", "status", *options, "--database-url", dsn],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_every_background_job_runs_success_on_its_own_schedule(
    ts: Any, paused_after: None, timescale_database_url: str
) -> None:
    """Compression, retention, key cleanup and aggregate refresh, run by TimescaleDB's scheduler
    (not ``CALL run_job``) on a 1-second schedule: two runs each, all ``Success``, their work
    done, and ``db status`` shows it with no warning. With TimescaleDB 2.28.3 unpatched on
    PostgreSQL 15.20 every one of these runs ended ``Failed`` (schema/README.md)."""
    await setup_database(ts, timescale=TimescaleSettings(retention="30 days"))
    now = await db_now(ts)
    ages = {"gone": timedelta(days=40), "compressed": timedelta(days=10), "recent": timedelta(hours=2)}
    sent = {f"{name}{i}": now - age - timedelta(minutes=i) for name, age in ages.items() for i in range(3)}
    await store_inference(ts, [parse_inference(inference_msg(k, at=at, mid=k)) for k, at in sent.items()])
    by_kind = {
        kind: [j["job_id"] for (k, _), j in (await jobs(ts)).items() if k == kind] for kind in JOB_KINDS
    }
    assert [len(ids) for ids in by_kind.values()] == [2, 2, 2, 2]
    ids = [job_id for kind_ids in by_kind.values() for job_id in kind_ids]
    for kind_ids in by_kind.values():
        await scheduled_runs(ts, kind_ids, runs=2)

    stats = await job_stats(ts, ids)
    errors = await ts.fetch("SELECT job_id, err_message FROM timescaledb_information.job_errors")
    assert all(s["total_successes"] >= 2 and s["total_failures"] == 0 for s in stats.values()), (
        stats,
        errors,
    )
    assert await compressed_chunks(ts, "inference_results") >= 1
    kept = {r[0] for r in await ts.fetch("SELECT request_id FROM inference_results")}
    assert kept == {f"{name}{i}" for name in ("compressed", "recent") for i in range(3)}
    keys = {r[0] for r in await ts.fetch("SELECT idempotency_key FROM inference_results_keys")}
    assert keys == kept  # the keys of the dropped rows are gone
    assert await ts.fetchval("SELECT count(*) FROM inference_results_hourly") >= 1

    out = await db_status_cli(timescale_database_url, "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["warnings"] == []
    assert {j["job_id"]: j["last_run_status"] for j in status["jobs"]} == dict.fromkeys(ids, "Success")
    assert all(j["total_runs"] >= 2 and j["total_failures"] == 0 for j in status["jobs"]), status["jobs"]
    text = await db_status_cli(timescale_database_url)
    assert text.returncode == 0 and "Success" in text.stdout and "WARNING" not in text.stdout, text


async def test_db_status_warns_when_a_job_failed_its_last_run(
    ts: Any, paused_after: None, timescale_database_url: str
) -> None:
    """A key cleanup whose key table is gone from its config fails on its schedule: ``db
    status`` names the job, its table and the error (JSON ``warnings`` too); the others stay quiet."""
    await setup_database(ts, timescale=TimescaleSettings(retention="30 days"))
    prune = (await jobs(ts))[("streamtasks_prune_keys", "training_data")]
    broken = {**prune["config"], "keys": "public.no_such_keys"}
    await ts.execute("SELECT alter_job($1, config => $2::text::jsonb)", prune["job_id"], json.dumps(broken))
    await scheduled_runs(ts, [prune["job_id"]], runs=1)
    assert (await job_stats(ts, [prune["job_id"]]))[prune["job_id"]]["last_run_status"] == "Failed"

    out = await db_status_cli(timescale_database_url, "--json")
    assert out.returncode == 0, out.stderr
    [warning] = json.loads(out.stdout)["warnings"]
    assert warning.startswith(
        f"job {prune['job_id']} (prune keys on public.training_data) failed its last run"
    )
    assert "no_such_keys" in warning, warning
    text = await db_status_cli(timescale_database_url)
    lines = [line for line in text.stdout.splitlines() if line.startswith("WARNING:")]
    assert text.returncode == 0 and len(lines) == 1 and "no_such_keys" in lines[0], text.stdout
