"""The built-in handlers end to end, against the lean loop, in one run (``run.py`` drives it).

What is measured (``README.md`` beside this file explains every number):

* **drain**: N training entries are in the stream before the consumer starts; the time from
  spawning the consumer process to the last entry acknowledged (every ack follows the
  commit of its row), start-up included. The consumer is ``streamtasks worker
  streamtasks.builtins:registry`` (a subprocess, with its own local Ray) or the lean loop
  (``lean_loop.py``, a subprocess too).
* **steady**: acknowledged entries per second between 20 % and 80 % of N, from the same run.
* **start-up**: spawn -> the worker logs "reading" (the line just before its first
  XREADGROUP); for the lean loop, spawn -> it appears in ``XINFO CONSUMERS``.
* **latency**: at a fixed offered load (entries XADDed at an even pace, each with its send
  time in ``_st_ts``), every 10th entry is a probe whose row is looked up by its key every
  5 ms: XADD -> row visible to another session. Also, for every row, ``stored_at -
  created_at`` (transaction start in PostgreSQL - XADD time; excludes the commit itself).
* **RSS**, **CPU**: see :mod:`harness`.
* **producer**: a raw redis-py pipeline loop vs ``Producer.send_many`` vs many concurrent
  single sends gathered (coalesced into pipelines by the producer).
* **job** (:mod:`peers`): the same five-field job for the hand-written Ray driver,
  FastStream and a streamtasks user batch handler.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import attrs
import peers
from attrs import frozen
from harness import (
    LEAN_GROUP,
    LEAN_LOOP_PATH,
    METADATA,
    STALL_TIMEOUT_S,
    CpuMeter,
    Target,
    Ui,
    Watch,
    fill,
    spawn,
    sql,
    target,
    training_entry,
    watch_drain,
)
from redis.asyncio import Redis
from rich.console import Console
from rich.progress import TaskID

from streamtasks.adserving.schema import setup_database
from streamtasks.builtins import DEFAULT_GROUP
from streamtasks.producer import Producer

DEFAULT_N = 100_000
DEFAULT_RATE = 5_000
DEFAULT_LATENCY_SECONDS = 10.0
DEFAULT_PRODUCER_N = 10_000
DEFAULT_BIG_N = 20_000
DEFAULT_BIG_KB = 50
CURVE_SIZES = (10_000, 100_000, 1_000_000)
PROBE_EVERY = 10
WARMUP_ENTRIES = 200
PROBE_POLL_S = 0.005
PACE_TICK_S = 0.005
PHASES = ("drain", "latency", "producer", "big", "job")


@frozen
class BenchOptions:
    """What to run: the command line's options (see ``python benchmarks/run.py --help``)."""

    n: int = DEFAULT_N
    repeat: int = 1
    rate: int = DEFAULT_RATE
    latency_seconds: float = DEFAULT_LATENCY_SECONDS
    producer_n: int = DEFAULT_PRODUCER_N
    big_n: int = DEFAULT_BIG_N
    big_kb: int = DEFAULT_BIG_KB
    curve: bool = False
    curve_sizes: tuple[int, ...] = CURVE_SIZES
    job_n: int | None = None  # default: n
    job_peers: tuple[str, ...] = peers.KINDS
    num_cpus: int | None = None
    redis_url: str | None = None
    database_url: str | None = None
    keep_dir: bool = False
    skip: frozenset[str] = frozenset()


async def _setup_schema(conn: asyncpg.Connection) -> None:
    await setup_database(conn, timescaledb=False)
    await conn.execute(peers.JOB_TABLE_DDL)


# --- drain -----------------------------------------------------------------------------------


def spawn_builtins(kind: str, tgt: Target, train: str, infer: str, n: int | None, opts: BenchOptions) -> Any:
    """Start ``streamtasks worker streamtasks.builtins:registry`` or the lean loop."""
    env = {"REDIS_URL": tgt.redis_url, "DATABASE_URL": tgt.database_url}
    env.update(TRAINING_DATA_STREAM=train, INFERENCE_RESULTS_STREAM=infer)
    env.update(STREAMTASKS_LOG_FORMAT="text", STREAMTASKS_LOG_LEVEL="INFO")
    if kind == "streamtasks":
        argv = [sys.executable, "-m", "streamtasks", "worker", "streamtasks.builtins:registry"]
        if opts.num_cpus:
            argv += ["--num-cpus", str(opts.num_cpus)]
        group = DEFAULT_GROUP
    else:
        argv = [sys.executable, str(LEAN_LOOP_PATH), "--redis-url", tgt.redis_url]
        argv += ["--database-url", tgt.database_url, "--stream", train]
        argv += ["--n", str(n)] if n is not None else ["--idle", "1e9"]
        group = LEAN_GROUP
    log = tgt.workdir / f"{kind}-{train.replace(':', '_')}.log"
    return spawn(kind, group, argv, env, log)


async def truncate(tgt: Target) -> None:
    await sql(tgt, "TRUNCATE training_data, inference_results")


async def drain(
    kind: str, tgt: Target, redis: Redis, n: int, opts: BenchOptions, ui: Ui, *, pad: int = 0
) -> Any:
    """Backlog of ``n`` entries, then start ``kind`` and time it until all are acked."""
    await truncate(tgt)
    train, infer = tgt.streams(f"drain-{kind}")
    task = ui.task(f"{kind}: fill {n:,}" + (f" x {pad // 1024} KB" if pad else ""), n)
    await fill(redis, train, n, pad=pad, on_chunk=lambda c: ui.advance(task, c))
    ui.done(task)
    consumer = spawn_builtins(kind, tgt, train, infer, n, opts)
    return await watch_drain(consumer, tgt, redis, train, n, ui, "training_data")


# --- latency ---------------------------------------------------------------------------------


@frozen
class LatencyResult:
    kind: str
    offered_per_s: int
    seconds: float
    sent: int
    probes: int
    visible_ms: dict[str, float]  # XADD -> row visible (probes)
    stored_ms: dict[str, float]  # XADD -> transaction start (stored_at - created_at), all rows


def percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    qs = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else list(values) * 99
    return {
        "p50": round(qs[49], 1),
        "p95": round(qs[94], 1),
        "p99": round(qs[98], 1),
        "max": round(max(values), 1),
    }


async def offer(
    redis: Redis, stream: str, rate: int, seconds: float, tag: str, probes: dict[str, float]
) -> int:
    """XADD at ``rate`` entries/s for ``seconds``; every PROBE_EVERY-th key goes into ``probes``."""
    started = time.perf_counter()
    sent = 0
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(rate * elapsed) - sent
        if due > 0:
            now = time.time()
            pipe = redis.pipeline(transaction=False)
            keys = [f"{tag}-{i}" for i in range(sent, sent + due)]
            for key in keys:
                pipe.xadd(stream, training_entry(key, int(now * 1000)))  # type: ignore[arg-type]
            await pipe.execute()
            for i, key in enumerate(keys, start=sent):
                if i % PROBE_EVERY == 0:
                    probes[key] = now
            sent += due
        await asyncio.sleep(PACE_TICK_S)
    return sent


async def watch_probes(tgt: Target, probes: dict[str, float], seen: list[float], stop: asyncio.Event) -> None:
    """Look the outstanding probe keys up every PROBE_POLL_S; record XADD -> visible."""
    conn = await asyncpg.connect(tgt.database_url)
    try:
        while not (stop.is_set() and not probes):
            if probes:
                found = await conn.fetch(
                    "SELECT idempotency_key FROM training_data WHERE idempotency_key = ANY($1::text[])",
                    list(probes),
                )
                now = time.time()
                for row in found:
                    seen.append((now - probes.pop(row[0])) * 1000)
            await asyncio.sleep(PROBE_POLL_S)
    finally:
        await conn.close()


async def latency(kind: str, tgt: Target, redis: Redis, opts: BenchOptions, ui: Ui) -> LatencyResult:
    """Start ``kind``, wait until it reads, offer ``opts.rate`` entries/s, gather latencies."""
    await truncate(tgt)
    train, infer = tgt.streams(f"latency-{kind}")
    consumer = spawn_builtins(kind, tgt, train, infer, None, opts)
    watch = Watch(redis, consumer, train, CpuMeter(consumer.ps, None, None))
    probes: dict[str, float] = {}
    seen: list[float] = []
    stop = asyncio.Event()
    task = ui.task(f"{kind}: latency at {opts.rate:,}/s", int(opts.latency_seconds))
    try:
        # Warm-up entries: the first batch starts Ray's worker processes; and a consumer
        # blocked on an empty stream does not show in XINFO CONSUMERS (Redis 7.0).
        await fill(redis, train, WARMUP_ENTRIES, tag="warm", on_chunk=lambda c: None)
        await watch.until(WARMUP_ENTRIES, lambda d: None)
        watcher = asyncio.create_task(watch_probes(tgt, probes, seen, stop))
        ticker = asyncio.create_task(_tick(ui, task, opts.latency_seconds))
        sent = await offer(redis, train, opts.rate, opts.latency_seconds, "lat", probes)
        stop.set()
        await asyncio.wait_for(watcher, STALL_TIMEOUT_S)
        ticker.cancel()
    finally:
        consumer.stop()
        ui.done(task)
    return LatencyResult(
        kind, opts.rate, opts.latency_seconds, sent, len(seen), percentiles(seen), await _stored_ms(tgt)
    )


async def _tick(ui: Ui, task: TaskID, seconds: float) -> None:
    started = time.perf_counter()
    while True:
        ui.update(task, int(min(seconds, time.perf_counter() - started)))
        await asyncio.sleep(0.5)


async def _stored_ms(tgt: Target) -> dict[str, float]:
    conn = await asyncpg.connect(tgt.database_url)
    try:
        row = await conn.fetchrow(
            "SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY d) AS q, max(d) AS m "
            "FROM (SELECT extract(epoch FROM stored_at - created_at)::float8 * 1000 AS d FROM training_data "
            "WHERE request_id LIKE 'lat-%') s"
        )
    finally:
        await conn.close()
    q = row["q"] or [float("nan")] * 3
    return {
        "p50": round(q[0], 1),
        "p95": round(q[1], 1),
        "p99": round(q[2], 1),
        "max": round(row["m"] or 0, 1),
    }


# --- producer --------------------------------------------------------------------------------


async def producer_bench(tgt: Target, redis: Redis, n: int, ui: Ui) -> dict[str, Any]:
    """entries/s: raw pipeline loop, ``send_many``, ``n`` concurrent single sends gathered.

    All four write the same training entries with ``input_data`` pre-encoded (the facade
    encodes the small ``metadata`` dict itself), so the comparison is about the send path.
    """
    fields = [training_entry(f"p-{i}", 0) for i in range(n)]
    ways: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("raw_pipeline", lambda: _raw_pipeline(redis, tgt.streams("producer-raw")[0], fields)),
        ("send_many", lambda: _send_many(redis, tgt.streams("producer-many")[0], fields)),
        ("gathered_sends", lambda: _gathered_sends(redis, tgt.streams("producer-send")[0], fields)),
        ("gathered_facade", lambda: _gathered_facade(tgt, tgt.streams("producer-facade")[0], fields)),
    ]
    task = ui.task(f"producer: {n:,} entries x {len(ways)} ways", len(ways))
    out: dict[str, Any] = {}
    for name, way in ways:
        started = time.perf_counter()
        await way()
        out[name] = round(n / (time.perf_counter() - started))
        ui.advance(task, 1)
    ui.done(task)
    for name, _ in ways[1:]:
        out[f"{name}_ratio"] = round(out[name] / out["raw_pipeline"], 2)
    return out


async def _raw_pipeline(redis: Redis, stream: str, fields: list[dict[str, str]]) -> None:
    for start in range(0, len(fields), 1000):
        pipe = redis.pipeline(transaction=False)
        for f in fields[start : start + 1000]:
            pipe.xadd(stream, f)  # type: ignore[arg-type]
        await pipe.execute()


async def _send_many(redis: Redis, stream: str, fields: list[dict[str, str]]) -> None:
    await Producer(redis).send_many(stream, fields)


async def _gathered_sends(redis: Redis, stream: str, fields: list[dict[str, str]]) -> None:
    producer = Producer(redis)
    await asyncio.gather(*(producer.send(stream, f) for f in fields))


async def _gathered_facade(tgt: Target, stream: str, fields: list[dict[str, str]]) -> None:
    """``AsyncProcessingSystem.send_training_data`` called concurrently, the way an API does."""
    from streamtasks.adserving.config import AsyncProcessingConfig
    from streamtasks.adserving.system import AsyncProcessingSystem

    env = {"REDIS_URL": tgt.redis_url, "DATABASE_URL": tgt.database_url, "TRAINING_DATA_STREAM": stream}
    system = AsyncProcessingSystem(AsyncProcessingConfig.from_env(env, env_file=None))
    await system.initialize()
    try:
        await asyncio.gather(
            *(
                system.send_training_data(
                    model_name=f["model_name"], request_id=f["request_id"], input_data=f["input_data"],
                    metadata=METADATA, source_ip=f["source_ip"],
                )
                for f in fields
            )
        )  # fmt: skip
    finally:
        await system.close()


# --- the whole run ---------------------------------------------------------------------------


def _asdict(value: Any) -> Any:
    return attrs.asdict(value) if attrs.has(type(value)) else value


async def run_bench(opts: BenchOptions, console: Console) -> dict[str, Any]:
    """Run every phase not in ``opts.skip``; returns the results as plain data."""
    ui = Ui(console)
    results: dict[str, Any] = {"options": {"n": opts.n, "rate": opts.rate, "repeat": opts.repeat}}
    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    with ui.progress:
        async with target(opts.redis_url, opts.database_url, _setup_schema, keep_dir=opts.keep_dir) as tgt:
            redis = Redis.from_url(tgt.redis_url)
            try:
                await _phases(opts, tgt, redis, ui, results)
            finally:
                await redis.aclose()
    return results


async def _phases(opts: BenchOptions, tgt: Target, redis: Redis, ui: Ui, results: dict[str, Any]) -> None:
    if "drain" not in opts.skip:
        results["drain"] = await _alternating(opts.n, 0, opts, tgt, redis, ui)
    if "job" not in opts.skip:
        results["job"] = await _job(opts, tgt, redis, ui)
    if "latency" not in opts.skip:
        results["latency"] = {
            kind: _asdict(await latency(kind, tgt, redis, opts, ui)) for kind in ("lean", "streamtasks")
        }
    if "producer" not in opts.skip:
        results["producer"] = await producer_bench(tgt, redis, opts.producer_n, ui)
    if "big" not in opts.skip and opts.big_n:
        runs = await _alternating(opts.big_n, opts.big_kb * 1024, opts, tgt, redis, ui)
        results["big"] = {"entry_kb": opts.big_kb, "n": opts.big_n, **runs}
    if opts.curve:
        results["curve"] = [
            _asdict(await drain("streamtasks", tgt, redis, size, opts, ui)) for size in opts.curve_sizes
        ]


async def _alternating(
    n: int, pad: int, opts: BenchOptions, tgt: Target, redis: Redis, ui: Ui
) -> dict[str, list[Any]]:
    """``opts.repeat`` drains of ``n`` entries (``pad`` bytes more each) by the lean loop and
    the worker, alternating."""
    runs: dict[str, list[Any]] = {"lean": [], "streamtasks": []}
    for _ in range(opts.repeat):
        for kind in runs:
            runs[kind].append(_asdict(await drain(kind, tgt, redis, n, opts, ui, pad=pad)))
    return runs


async def _job(opts: BenchOptions, tgt: Target, redis: Redis, ui: Ui) -> dict[str, Any]:
    n = opts.job_n or opts.n
    runs: dict[str, list[Any]] = {kind: [] for kind in opts.job_peers}
    for _ in range(opts.repeat):
        for kind in opts.job_peers:
            runs[kind].append(_asdict(await peers.drain(kind, tgt, redis, n, ui, num_cpus=opts.num_cpus)))
    return {"n": n, "runs": runs}
