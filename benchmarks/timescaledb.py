#!/usr/bin/env python3
"""TimescaleDB vs plain PostgreSQL for the built-ins: throughput, idempotency, compression, stats.

Runs against throwaway servers (``scripts/services.py``): one redis-server and one PostgreSQL
that preloads TimescaleDB (``install.sh`` from ``../shared/timescaledb`` must have run). The
plain schema lives in its own database on that same server (``setup_database(...,
timescaledb=False)``), so both sides share one server and its settings (``fsync=off``).

Phases (``benchmarks/README.md`` reports the figures):

* **drain** (per schema): ``--n`` training + ``--n`` inference entries, ``created_at`` spread
  over the last 10 days, each with a message id, are in the streams before
  ``streamtasks worker streamtasks.builtins:registry`` starts; 90 % of ``--resends`` entries
  are re-sent (same message id) behind them. Reported: drain time, steady rows/s (20-80 % of
  the rows), rows, duplicates, pending. Then, on TimescaleDB, every chunk older than one day
  is compressed, and the remaining 10 % of the re-sends (all with ``created_at`` in a
  compressed chunk) are sent to the running worker; rows, duplicates and pending again.
* **compression**: every chunk compressed: bytes before / after, per hypertable, and the
  plain tables' size for the same rows.
* **stats**: ``--stats-rows`` inference rows for one model over 30 days (generated in SQL),
  ``model_performance_stats(model, 720 h)``: median of 5 calls on plain PostgreSQL (exact
  percentiles over the rows) and on TimescaleDB (hourly aggregates, refreshed, chunks older
  than 7 days compressed as the default policy would).

Usage::

    .venv/bin/python benchmarks/timescaledb.py                    # small: 10k + 10k, 100k stats rows
    .venv/bin/python benchmarks/timescaledb.py --n 100000 --resends 5000 --stats-rows 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
from redis.asyncio import Redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from streamtasks.adserving.modelstats import model_performance_stats  # noqa: E402
from streamtasks.adserving.schema import setup_database  # noqa: E402
from streamtasks.adserving.timescale import timescale_status  # noqa: E402
from streamtasks.builtins import DEFAULT_GROUP  # noqa: E402
from streamtasks.producer import Producer  # noqa: E402

TRAIN, INFER = "bench_training", "bench_inference"
DAYS = 10
LATE_SHARE = 0.1  # of the re-sends: sent after their chunk was compressed


def load_services() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_services", REPO / "scripts" / "services.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_services"] = module
    spec.loader.exec_module(module)
    return module


def training(i: int, at_ms: int) -> dict[str, str]:
    return {
        "model_name": f"m{i % 4}", "request_id": f"r{i}",
        "input_data": '{"user_id": ' + str(i) + ', "x": [1, 2, 3]}',
        "metadata": '{"v": 1}', "source_ip": "10.0.0.1", "_st_ts": str(at_ms), "_st_mid": f"t-{i}",
    }  # fmt: skip


def inference(i: int, at_ms: int) -> dict[str, str]:
    return {
        "model_name": f"m{i % 4}", "request_id": f"r{i}", "prediction": '{"score": 0.5}',
        "confidence": f"{(i % 100) / 100:.2f}", "anomaly_score": "0.1",
        "is_anomaly": str(i % 50 == 0).lower(),
        "processing_time_ms": f"{5 + i % 200}.5", "_st_ts": str(at_ms), "_st_mid": f"i-{i}",
    }  # fmt: skip


async def counts(conn: Any) -> dict[str, int]:
    out = {}
    for table in ("training_data", "inference_results"):
        out[table] = await conn.fetchval(f"SELECT count(*) FROM {table}")
        out[f"{table}_dupes"] = await conn.fetchval(
            f"SELECT count(*) FROM (SELECT 1 FROM {table} GROUP BY idempotency_key HAVING count(*) > 1) d"
        )
    return out


async def pending(redis: Redis) -> int:
    total = 0
    for stream in (TRAIN, INFER):
        info = await redis.xpending(stream, DEFAULT_GROUP)
        total += int(info["pending"])
        for group in await redis.xinfo_groups(stream):
            if group["name"] in (DEFAULT_GROUP, DEFAULT_GROUP.encode()):
                total += int(group.get("lag") or 0)
    return total


async def wait_rows(conn: Any, want: int, timeout: float, samples: list[tuple[float, int]]) -> None:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        rows = sum(
            [await conn.fetchval(f"SELECT count(*) FROM {t}") for t in ("training_data", "inference_results")]
        )
        samples.append((time.perf_counter(), rows))
        if rows >= want:
            return
        await asyncio.sleep(0.25)
    raise TimeoutError(f"{samples[-1][1]} of {want} rows after {timeout:.0f} s")


def steady(samples: list[tuple[float, int]], want: int) -> float:
    a = next(s for s in samples if s[1] >= 0.2 * want)
    b = next(s for s in samples if s[1] >= 0.8 * want)
    return (b[1] - a[1]) / (b[0] - a[0]) if b[0] > a[0] else float("nan")


async def wait_idle(redis: Redis, timeout: float = 120) -> None:
    started = time.perf_counter()
    while await pending(redis):
        if time.perf_counter() - started > timeout:
            raise TimeoutError("entries still pending")
        await asyncio.sleep(0.25)


async def drain(
    kind: str, redis_url: str, db_url: str, n: int, resends: int, workdir: Path
) -> dict[str, Any]:
    redis = Redis.from_url(redis_url)
    await redis.flushall()
    conn = await asyncpg.connect(db_url)
    result: dict[str, Any] = {"schema": kind}
    try:
        init = await setup_database(conn, timescaledb=kind == "timescaledb")
        assert init["timescaledb"] == (kind == "timescaledb"), init
        now_ms = int(time.time() * 1000)
        span_ms = DAYS * 86_400_000
        at = [now_ms - span_ms + (i * span_ms) // n for i in range(n)]
        producer = Producer(redis)
        for stream, make in ((TRAIN, training), (INFER, inference)):
            await redis.xgroup_create(stream, DEFAULT_GROUP, id="0", mkstream=True)
            await producer.send_many(stream, (make(i, at[i]) for i in range(n)))
        # re-sends: the early ones behind the originals, the late ones (old rows) held back
        late_n = int(resends * LATE_SHARE)
        early = [i for i in range(0, n, max(1, n // (resends - late_n)))][: resends - late_n]
        late = list(range(late_n))  # the oldest entries: their chunks get compressed
        for stream, make in ((TRAIN, training), (INFER, inference)):
            await producer.send_many(stream, (make(i, at[i]) for i in early[: len(early) // 2]))
            await producer.send_many(stream, (make(i, at[i]) for i in early[len(early) // 2 :]))
        env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": db_url, "TRAINING_DATA_STREAM": TRAIN,
               "INFERENCE_RESULTS_STREAM": INFER, "RAY_USAGE_STATS_ENABLED": "0",
               "PYTHONPATH": str(REPO)}  # fmt: skip
        log = (workdir / f"worker-{kind}.log").open("wb")
        started = time.perf_counter()
        worker = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
            [sys.executable, "-m", "streamtasks", "worker", "streamtasks.builtins:registry"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            samples: list[tuple[float, int]] = []
            await wait_rows(conn, 2 * n, 600, samples)
            result["drain_s"] = round(samples[-1][0] - started, 2)
            result["steady_rows_per_s"] = round(steady(samples, 2 * n))
            await wait_idle(redis)
            result["after_drain"] = {**await counts(conn), "pending": await pending(redis)}
            if kind == "timescaledb":
                compressed = 0
                for table in ("training_data", "inference_results"):
                    compressed += len(
                        await conn.fetch(
                            "SELECT compress_chunk(c, if_not_compressed => true)"
                            f" FROM show_chunks('{table}', older_than => INTERVAL '1 day') c"
                        )
                    )
                result["chunks_compressed_before_late_resends"] = compressed
                if late_n:  # every late re-send targets a compressed chunk
                    result["late_resend_chunks_all_compressed"] = await conn.fetchval(
                        "SELECT bool_and(is_compressed) FROM timescaledb_information.chunks"
                        " WHERE range_end > $1 AND range_start <= $2",
                        datetime.fromtimestamp(at[0] / 1000, timezone.utc),
                        datetime.fromtimestamp(at[late_n - 1] / 1000, timezone.utc),
                    )
            for stream, make in ((TRAIN, training), (INFER, inference)):
                await producer.send_many(stream, (make(i, at[i]) for i in late))
            await asyncio.sleep(1.0)
            await wait_idle(redis)
            result["after_late_resends"] = {**await counts(conn), "pending": await pending(redis)}
            result["resent_per_stream"] = len(early) + len(late)
        finally:
            worker.terminate()
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
            log.close()
    finally:
        await conn.close()
        await redis.aclose()
    return result


async def compression(db_url: str, plain_url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(db_url)
    plain = await asyncpg.connect(plain_url)
    try:
        for table in ("training_data", "inference_results"):
            await conn.execute(
                f"SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('{table}') c"
            )
        status = await timescale_status(conn)
        out: dict[str, Any] = {}
        for h in status["hypertables"]:
            plain_bytes = await plain.fetchval("SELECT pg_total_relation_size($1::text::regclass)", h["name"])
            out[h["name"]] = {
                "before_bytes": h["bytes_before_compression"],
                "after_bytes": h["bytes_after_compression"],
                "ratio": round(h["compression_ratio"], 2) if h["compression_ratio"] else None,
                "plain_table_bytes": plain_bytes,
                "plain_over_compressed": round(plain_bytes / h["total_bytes"], 2),
            }
        return out
    finally:
        await conn.close()
        await plain.close()


_FILL = """
INSERT INTO inference_results (model_name, request_id, prediction, confidence, anomaly_score, is_anomaly,
                               processing_time_ms, created_at, idempotency_key, stream, entry_id {keyed})
SELECT 'm0', 'r' || i, '{{"score": 0.5}}', (i % 1000) / 1000.0, 0.1, i % 97 = 0,
       exp(2 + (i % 1009) / 300.0), $1::timestamptz - (i * ($2::float8 / $3)) * INTERVAL '1 second',
       'k' || i, 'bench', i || '-0' {keyed_value}
FROM generate_series(1, $3) i
"""


async def stats(db_url: str, plain_url: str, rows: int) -> dict[str, Any]:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    span_s = 30 * 86_400 - 60
    out: dict[str, Any] = {"rows": rows}
    for kind, url in (("plain", plain_url), ("timescaledb", db_url)):
        conn = await asyncpg.connect(url, command_timeout=3600)
        try:
            await conn.execute("TRUNCATE training_data, inference_results")
            keyed = kind == "timescaledb"
            sql = _FILL.format(keyed=", keyed" if keyed else "", keyed_value=", TRUE" if keyed else "")
            started = time.perf_counter()
            await conn.execute(sql, now, span_s, rows)
            if keyed:
                for view in ("inference_results_hourly", "training_data_hourly"):
                    await conn.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")
                await conn.execute(
                    "SELECT compress_chunk(c, if_not_compressed => true)"
                    " FROM show_chunks('inference_results', older_than => INTERVAL '7 days') c"
                )
            await conn.execute("ANALYZE inference_results")
            load_s = time.perf_counter() - started
            times = []
            result: dict[str, Any] = {}
            for _ in range(5):
                t0 = time.perf_counter()
                result = await model_performance_stats(conn, "m0", 720, now=now + timedelta(seconds=1))
                times.append((time.perf_counter() - t0) * 1000)
            out[kind] = {
                "load_s": round(load_s, 1), "median_ms": round(statistics.median(times), 1),
                "min_ms": round(min(times), 1), "source": result["source"], "requests": result["requests"],
                "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
            }  # fmt: skip
        finally:
            await conn.close()
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="training and inference entries each")
    parser.add_argument("--resends", type=int, default=500, help="entries re-sent per stream")
    parser.add_argument("--stats-rows", type=int, default=100_000)
    parser.add_argument("--skip", default="", help="comma-separated: drain,compression,stats")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    services = load_services()
    if not services.timescaledb_installed():
        sys.exit("TimescaleDB is not installed: run scripts/services.py ensure-binaries as root")
    workdir = Path(tempfile.mkdtemp(prefix="streamtasks-tsdb-bench-"))
    workdir.chmod(0o711)  # noqa: ASYNC240 - once, before anything runs
    redis_srv = services.RedisServer(workdir / "redis").start()
    pg = services.PostgresServer(workdir / "pg", preload=("timescaledb",)).start()
    results: dict[str, Any] = {"n": args.n, "resends": args.resends}
    try:
        tsdb_url, plain_url = pg.create_database("tsdb"), pg.create_database("plain")
        # the benchmark runs the policies itself; the background scheduler stays out of the timings
        if "drain" not in skip:
            results["drain"] = [
                await drain(kind, redis_srv.url, url, args.n, args.resends, workdir)
                for kind, url in (("plain", plain_url), ("timescaledb", tsdb_url))
            ]
        if "compression" not in skip and "drain" not in skip:
            results["compression"] = await compression(tsdb_url, plain_url)
        if "stats" not in skip:
            for url, tsdb in ((tsdb_url, True), (plain_url, False)):
                conn = await asyncpg.connect(url)
                await setup_database(conn, timescaledb=tsdb)
                await conn.close()
            results["stats"] = await stats(tsdb_url, plain_url, args.stats_rows)
    finally:
        pg.stop("immediate")
        redis_srv.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    asyncio.run(main())
