"""``streamtasks bench``: the built-in handlers end to end, against the lean loop, in one run.

What is measured (``benchmarks/README.md`` explains every number):

* **drain**: N training entries are in the stream before the consumer starts; the time from
  spawning the consumer process to the last entry acknowledged (every ack follows the
  commit of its row), start-up included. The consumer is ``streamtasks worker
  streamtasks.builtins:registry`` (a subprocess, with its own local Ray) or the lean loop
  (``benchmarks/lean_loop.py``, a subprocess too).
* **steady**: acknowledged entries per second between 20 % and 80 % of N, from the same run.
* **start-up**: spawn -> the worker logs "reading" (the line just before its first
  XREADGROUP); for the lean loop, spawn -> it appears in ``XINFO CONSUMERS``.
* **latency**: at a fixed offered load (entries XADDed at an even pace, each with its send
  time in ``_st_ts``), every 10th entry is a probe whose row is looked up by its key every
  5 ms: XADD -> row visible to another session. Also, for every row, ``stored_at -
  created_at`` (transaction start in PostgreSQL - XADD time; excludes the commit itself).
* **RSS**: peak resident memory of the consumer process and of its whole process tree (Ray's
  GCS, raylet and workers included; shared pages are counted once per process).
* **CPU**: CPU seconds per process group during the drain: router, Ray workers, Ray
  system processes, redis-server, postgres.
* **producer**: a raw redis-py pipeline loop vs ``Producer.send_many`` vs many concurrent
  single sends gathered (coalesced into pipelines by the producer).

The services are throwaway ones (``scripts/services.py``) unless URLs are given; with given
URLs the run uses its own schema (``bench_<token>``) and streams (``bench:<token>:...``) and
drops them at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import attrs
import click
import psutil
from attrs import define, field, frozen
from redis import exceptions as rx
from redis.asyncio import Redis
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from .db import setup_database
from .producer import Producer

REPO_ROOT = Path(__file__).resolve().parent.parent
#: A wheel carries both files in streamtasks/_bench (pyproject force-include); a source
#: checkout (editable install) has them in place.
_PACKAGED = Path(__file__).resolve().parent / "_bench"


def _script_path(checkout: Path, packaged_name: str) -> Path:
    return checkout if checkout.exists() else _PACKAGED / packaged_name


LEAN_LOOP_PATH = _script_path(REPO_ROOT / "benchmarks" / "lean_loop.py", "lean_loop.py")
SERVICES_PATH = _script_path(REPO_ROOT / "scripts" / "services.py", "services.py")
LEAN_GROUP = "lean-loop"

DEFAULT_N = 100_000
DEFAULT_RATE = 5_000
DEFAULT_LATENCY_SECONDS = 10.0
DEFAULT_PRODUCER_N = 10_000
DEFAULT_BIG_N = 20_000
DEFAULT_BIG_KB = 50
CURVE_SIZES = (10_000, 100_000, 1_000_000)
#: Steady throughput is measured between these fractions of N acknowledged.
STEADY_WINDOW = (0.2, 0.8)
FILL_CHUNK = 1000
POLL_S = 0.05
RSS_POLL_S = 0.2
PROBE_EVERY = 10
WARMUP_ENTRIES = 200
PROBE_POLL_S = 0.005
PACE_TICK_S = 0.005
#: A consumer that makes no progress for this long has failed.
STALL_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 40.0
MB = 1024 * 1024
LOG_TIME_FORMAT = "%Y-%m-%d %H:%M:%S,%f"
METADATA = {"api": "v1", "region": "eu-west-1"}


def load_script(path: Path, name: str) -> ModuleType:
    """Import a file of the source checkout (the lean loop, the service helpers)."""
    if name in sys.modules:
        return sys.modules[name]
    if not path.exists():
        raise click.ClickException(f"{path} not found: reinstall streamtasks, or run from a source checkout")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise click.ClickException(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@frozen
class BenchOptions:
    """What to run: the command line's options (see ``streamtasks bench --help``)."""

    n: int = DEFAULT_N
    repeat: int = 1
    rate: int = DEFAULT_RATE
    latency_seconds: float = DEFAULT_LATENCY_SECONDS
    producer_n: int = DEFAULT_PRODUCER_N
    big_n: int = DEFAULT_BIG_N
    big_kb: int = DEFAULT_BIG_KB
    curve: bool = False
    curve_sizes: tuple[int, ...] = CURVE_SIZES
    num_cpus: int | None = None
    redis_url: str | None = None
    database_url: str | None = None
    keep_dir: bool = False
    skip: frozenset[str] = frozenset()


# --- services and isolation ------------------------------------------------------------------


@define
class Target:
    """Where this run writes: its Redis, its database (own schema) and its key prefix."""

    redis_url: str
    database_url: str  # with search_path set to the run's schema
    schema: str
    prefix: str
    workdir: Path
    redis_pid: int | None = None
    postgres_pid: int | None = None
    counter: int = 0

    def streams(self, phase: str) -> tuple[str, str]:
        """Fresh training/inference stream names for one phase."""
        self.counter += 1
        base = f"{self.prefix}:{self.counter}-{phase}"
        return f"{base}:train", f"{base}:infer"


def _with_search_path(url: str, schema: str) -> str:
    # asyncpg passes unknown DSN query parameters on as server settings.
    return f"{url}{'&' if '?' in url else '?'}search_path={schema}"


def _services(opts: BenchOptions, workdir: Path, stack: contextlib.ExitStack) -> tuple[str, str, Any, Any]:
    """(redis url, database url, redis pid, postgres pid): given, or throwaway servers."""
    redis_url, redis_pid = opts.redis_url, None
    db_url, pg_pid = opts.database_url, None
    if redis_url is None or db_url is None:
        workdir.chmod(0o711)  # the postgres OS user must traverse it
        services = load_script(SERVICES_PATH, "streamtasks_bench_services")
    if redis_url is None:
        rs = services.RedisServer(workdir / "redis").start()
        stack.callback(rs.stop)
        redis_url, redis_pid = rs.url, rs.pid
    if db_url is None:
        pg = services.PostgresServer(workdir / "pg").start()
        stack.callback(pg.stop)
        db_url, pg_pid = pg.create_database("bench"), pg.pid
    return redis_url, db_url, redis_pid, pg_pid


@contextlib.asynccontextmanager
async def target(opts: BenchOptions) -> AsyncIterator[Target]:
    """Throwaway Redis/PostgreSQL unless URLs are given; a fresh schema and key prefix."""
    workdir = Path(tempfile.mkdtemp(prefix="streamtasks-bench-"))
    stack = contextlib.ExitStack()
    token = uuid.uuid4().hex[:8]
    try:
        redis_url, db_url, redis_pid, pg_pid = await asyncio.to_thread(_services, opts, workdir, stack)
        schema = f"bench_{token}"
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute(f"CREATE SCHEMA {schema}")
            await conn.execute(f"SET search_path = {schema}")
            await setup_database(conn, timescaledb=False)
        finally:
            await conn.close()
        tgt = Target(redis_url, _with_search_path(db_url, schema), schema, f"bench:{token}", workdir)
        tgt.redis_pid, tgt.postgres_pid = redis_pid, pg_pid
        try:
            yield tgt
        finally:
            await _cleanup(tgt, db_url)
    finally:
        await asyncio.to_thread(stack.close)
        if not opts.keep_dir:
            shutil.rmtree(workdir, ignore_errors=True)


async def _cleanup(tgt: Target, db_url: str) -> None:
    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {tgt.schema} CASCADE")
        finally:
            await conn.close()
    with contextlib.suppress(Exception):
        redis = Redis.from_url(tgt.redis_url)
        try:
            async for key in redis.scan_iter(match=f"{tgt.prefix}:*", count=1000):
                await redis.delete(key)
        finally:
            await redis.aclose()


# --- entries ---------------------------------------------------------------------------------


def training_entry(key: str, ts_ms: int, pad: int = 0) -> dict[str, str]:
    """One entry of the built-in training wire format (about 330 bytes plus ``pad``)."""
    features = [0.125, 3.5, 17.0, 0.0078125, 42.0, 1.5]
    input_data: dict[str, Any] = {"user_id": ts_ms % 100_000, "features": features, "page": "/home"}
    if pad:
        input_data["blob"] = "x" * pad
    return {
        "model_name": "fraud_detection",
        "request_id": key,
        "input_data": json.dumps(input_data, separators=(",", ":")),
        "metadata": json.dumps(METADATA, separators=(",", ":")),
        "source_ip": "10.1.2.3",
        "_st_mid": key,
        "_st_ts": str(ts_ms),
    }


async def fill(
    redis: Redis, stream: str, n: int, *, pad: int = 0, tag: str = "e", on_chunk: Callable[[int], None]
) -> None:
    """XADD ``n`` training entries with pipelines of :data:`FILL_CHUNK`."""
    now = int(time.time() * 1000)
    for start in range(0, n, FILL_CHUNK):
        pipe = redis.pipeline(transaction=False)
        count = min(FILL_CHUNK, n - start)
        for i in range(start, start + count):
            pipe.xadd(stream, training_entry(f"{tag}-{i}", now, pad))  # type: ignore[arg-type]
        await pipe.execute()
        on_chunk(count)


async def acked(redis: Redis, stream: str, group: str) -> tuple[int, int]:
    """(entries acknowledged by ``group``, consumers in it): entries-read - pending."""
    try:
        groups: list[dict[str, Any]] = await redis.xinfo_groups(stream)
    except rx.ResponseError:
        return 0, 0
    for g in groups:
        name = g.get("name")
        if (name.decode() if isinstance(name, bytes) else name) == group:
            return int(g.get("entries-read") or 0) - int(g["pending"]), int(g["consumers"])
    return 0, 0


# --- processes -------------------------------------------------------------------------------


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


def _rss(procs: Sequence[psutil.Process]) -> int:
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def _category(p: psutil.Process, root_pid: int) -> str:
    if p.pid == root_pid:
        return "router"
    try:
        name = " ".join(p.cmdline()[:2]) or p.name()
    except psutil.Error:
        return "other"
    if "ray::" in name or "default_worker.py" in name:
        return "ray workers"
    return "ray system"


@define
class CpuMeter:
    """CPU seconds per process category between :meth:`start` and :meth:`stop`."""

    root: psutil.Process
    redis_pid: int | None
    postgres_pid: int | None
    seen: dict[int, tuple[str, float, float]] = field(factory=dict)  # pid -> cat, first, last

    def _procs(self) -> Iterator[tuple[str, psutil.Process]]:
        for p in _tree(self.root):
            yield _category(p, self.root.pid), p
        if self.redis_pid is not None:
            with contextlib.suppress(psutil.Error):
                yield "redis-server", psutil.Process(self.redis_pid)
        if self.postgres_pid is not None:
            with contextlib.suppress(psutil.Error):
                for p in _tree(psutil.Process(self.postgres_pid)):
                    yield "postgres", p

    def sample(self) -> None:
        for cat, p in self._procs():
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            used = t.user + t.system
            first = self.seen[p.pid][1] if p.pid in self.seen else used
            self.seen[p.pid] = (cat, first, used)

    def split(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for cat, first, last in self.seen.values():
            out[cat] = round(out.get(cat, 0.0) + last - first, 2)
        return out


@define
class Consumer:
    """A consumer subprocess (the worker or the lean loop) and what we learn about it."""

    kind: str
    proc: subprocess.Popen[bytes]
    started: float
    log: Path
    ps: psutil.Process
    started_wall: float = field(factory=time.time)
    peak_rss: int = 0
    peak_tree_rss: int = 0

    def sample_rss(self) -> None:
        self.peak_rss = max(self.peak_rss, _rss([self.ps]))
        self.peak_tree_rss = max(self.peak_tree_rss, _rss(_tree(self.ps)))

    def check_alive(self) -> None:
        if self.proc.poll() is not None and self.kind == "streamtasks":
            raise click.ClickException(f"the {self.kind} consumer exited early:\n{self.log_tail()}")

    def reading_after(self) -> float | None:
        """Seconds from spawn to the worker's "reading" log line (just before its first read)."""
        with contextlib.suppress(OSError):
            for line in self.log.read_text(errors="replace").splitlines():
                if "streamtasks.worker" in line and " reading " in line:
                    stamp = datetime.strptime(line[:23], LOG_TIME_FORMAT).timestamp()
                    return max(0.0, stamp - self.started_wall)
        return None

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
        return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: itself and its children
            self.proc.wait()


def spawn(kind: str, tgt: Target, train: str, infer: str, n: int | None, opts: BenchOptions) -> Consumer:
    """Start ``streamtasks worker streamtasks.builtins:registry`` or the lean loop."""
    env = {**os.environ, "REDIS_URL": tgt.redis_url, "DATABASE_URL": tgt.database_url}
    env.update(TRAINING_DATA_STREAM=train, INFERENCE_RESULTS_STREAM=infer, PYTHONUNBUFFERED="1")
    env.update(RAY_USAGE_STATS_ENABLED="0", STREAMTASKS_LOG_FORMAT="text", STREAMTASKS_LOG_LEVEL="INFO")
    if kind == "streamtasks":
        argv = [sys.executable, "-m", "streamtasks", "worker", "streamtasks.builtins:registry"]
        if opts.num_cpus:
            argv += ["--num-cpus", str(opts.num_cpus)]
    else:
        argv = [sys.executable, str(LEAN_LOOP_PATH), "--redis-url", tgt.redis_url]
        argv += ["--database-url", tgt.database_url, "--stream", train]
        argv += ["--n", str(n)] if n is not None else ["--idle", "1e9"]
    log = tgt.workdir / f"{kind}-{train.replace(':', '_')}.log"
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Consumer(kind, proc, started, log, psutil.Process(proc.pid))


def group_of(kind: str) -> str:
    # Imported here: importing the built-ins reads the environment, the CLI must not.
    from .builtins import DEFAULT_GROUP

    return DEFAULT_GROUP if kind == "streamtasks" else LEAN_GROUP


# --- drain -----------------------------------------------------------------------------------


@frozen
class DrainResult:
    kind: str
    n: int
    rows: int
    seconds: float
    rows_per_s: float
    steady_rows_per_s: float
    startup_s: float
    first_ack_s: float
    per_entry_us: float  # first ack -> last ack, per entry (start-up excluded)
    peak_rss_mb: float
    peak_tree_rss_mb: float
    cpu_s: dict[str, float]


def steady_rate(samples: Sequence[tuple[float, int]], n: int) -> float:
    """Acked entries/s between STEADY_WINDOW fractions of ``n`` (linear between samples)."""
    lo, hi = STEADY_WINDOW[0] * n, STEADY_WINDOW[1] * n
    a = next((s for s in samples if s[1] >= lo), None)
    b = next((s for s in reversed(samples) if s[1] <= hi), None)
    if a is None or b is None or b[0] <= a[0]:
        return 0.0
    return (b[1] - a[1]) / (b[0] - a[0])


@define
class Watch:
    """Polls a consumer's progress: acked count over time, start-up, RSS, CPU."""

    redis: Redis
    consumer: Consumer
    stream: str
    cpu: CpuMeter
    samples: list[tuple[float, int]] = field(factory=list)
    startup: float | None = None
    last_rss: float = 0.0

    async def poll(self) -> int:
        done, consumers = await acked(self.redis, self.stream, group_of(self.consumer.kind))
        now = time.perf_counter()
        if self.startup is None:
            # The worker: its "reading" log line. The lean loop: it shows in XINFO once it read.
            if self.consumer.kind == "streamtasks":
                self.startup = self.consumer.reading_after()
            elif consumers:
                self.startup = now - self.consumer.started
        self.samples.append((now - self.consumer.started, done))
        if now - self.last_rss >= RSS_POLL_S:
            self.last_rss = now
            self.consumer.sample_rss()
            self.cpu.sample()
        return done

    async def until(self, n: int, on_progress: Callable[[int], None]) -> None:
        last_change, last = time.perf_counter(), -1
        while True:
            done = await self.poll()
            on_progress(done)
            if done >= n:
                return
            if done != last:
                last_change, last = time.perf_counter(), done
            elif time.perf_counter() - last_change > STALL_TIMEOUT_S:
                raise click.ClickException(
                    f"{self.consumer.kind}: no progress for {STALL_TIMEOUT_S:.0f}s at {done}/{n}:\n"
                    + self.consumer.log_tail()
                )
            self.consumer.check_alive()
            await asyncio.sleep(POLL_S)


async def count_rows(tgt: Target, where: str = "") -> int:
    conn = await asyncpg.connect(tgt.database_url)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM training_data {where}"))
    finally:
        await conn.close()


async def truncate(tgt: Target) -> None:
    conn = await asyncpg.connect(tgt.database_url)
    try:
        await conn.execute("TRUNCATE training_data, inference_results")
    finally:
        await conn.close()


async def drain(
    kind: str, tgt: Target, redis: Redis, n: int, opts: BenchOptions, ui: Ui, *, pad: int = 0
) -> DrainResult:
    """Backlog of ``n`` entries, then start ``kind`` and time it until all are acked."""
    await truncate(tgt)
    train, infer = tgt.streams(f"drain-{kind}")
    task = ui.task(f"{kind}: fill {n:,}" + (f" x {pad // 1024} KB" if pad else ""), n)
    await fill(redis, train, n, pad=pad, on_chunk=lambda c: ui.advance(task, c))
    ui.done(task)
    consumer = spawn(kind, tgt, train, infer, n, opts)
    watch = Watch(redis, consumer, train, CpuMeter(consumer.ps, tgt.redis_pid, tgt.postgres_pid))
    task = ui.task(f"{kind}: drain {n:,}", n)
    try:
        watch.cpu.sample()
        await watch.until(n, lambda d: ui.update(task, d))
        watch.cpu.sample()
        consumer.sample_rss()
    finally:
        consumer.stop()
        ui.done(task)
    rows = await count_rows(tgt)
    return _drain_result(kind, n, rows, watch)


def _drain_result(kind: str, n: int, rows: int, watch: Watch) -> DrainResult:
    samples = watch.samples
    seconds = samples[-1][0]
    first_ack = next((t for t, d in samples if d > 0), seconds)
    body = seconds - first_ack
    return DrainResult(
        kind=kind, n=n, rows=rows, seconds=round(seconds, 3), rows_per_s=round(n / seconds),
        steady_rows_per_s=round(steady_rate(samples, n)),
        startup_s=round(watch.startup if watch.startup is not None else seconds, 3),
        first_ack_s=round(first_ack, 3),
        per_entry_us=round(body / max(1, n - 1) * 1e6, 2),
        peak_rss_mb=round(watch.consumer.peak_rss / MB, 1),
        peak_tree_rss_mb=round(watch.consumer.peak_tree_rss / MB, 1),
        cpu_s=watch.cpu.split(),
    )  # fmt: skip


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
    consumer = spawn(kind, tgt, train, infer, None, opts)
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
    for start in range(0, len(fields), FILL_CHUNK):
        pipe = redis.pipeline(transaction=False)
        for f in fields[start : start + FILL_CHUNK]:
            pipe.xadd(stream, f)  # type: ignore[arg-type]
        await pipe.execute()


async def _send_many(redis: Redis, stream: str, fields: list[dict[str, str]]) -> None:
    await Producer(redis).send_many(stream, fields)


async def _gathered_sends(redis: Redis, stream: str, fields: list[dict[str, str]]) -> None:
    producer = Producer(redis)
    await asyncio.gather(*(producer.send(stream, f) for f in fields))


async def _gathered_facade(tgt: Target, stream: str, fields: list[dict[str, str]]) -> None:
    """``AsyncProcessingSystem.send_training_data`` called concurrently, the way an API does."""
    from .config import AsyncProcessingConfig
    from .system import AsyncProcessingSystem

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


class Ui:
    """A rich progress display (on stderr), one line per phase."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<40}"), BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,}"), TimeElapsedColumn(),
            console=console, transient=False,
        )  # fmt: skip

    def task(self, description: str, total: int) -> TaskID:
        return self.progress.add_task(description, total=total)

    def advance(self, task: TaskID, by: int) -> None:
        self.progress.advance(task, by)

    def update(self, task: TaskID, completed: int) -> None:
        self.progress.update(task, completed=completed)

    def done(self, task: TaskID) -> None:
        self.progress.stop_task(task)


def _asdict(value: Any) -> Any:
    return attrs.asdict(value) if attrs.has(type(value)) else value


async def run_bench(opts: BenchOptions, console: Console) -> dict[str, Any]:
    """Run every phase not in ``opts.skip``; returns the results as plain data."""
    ui = Ui(console)
    results: dict[str, Any] = {"options": {"n": opts.n, "rate": opts.rate, "repeat": opts.repeat}}
    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    with ui.progress:
        async with target(opts) as tgt:
            redis = Redis.from_url(tgt.redis_url)
            try:
                await _phases(opts, tgt, redis, ui, results)
            finally:
                await redis.aclose()
    return results


async def _phases(opts: BenchOptions, tgt: Target, redis: Redis, ui: Ui, results: dict[str, Any]) -> None:
    if "drain" not in opts.skip:
        runs: dict[str, list[Any]] = {"lean": [], "streamtasks": []}
        for _ in range(opts.repeat):
            for kind in ("lean", "streamtasks"):
                runs[kind].append(_asdict(await drain(kind, tgt, redis, opts.n, opts, ui)))
        results["drain"] = runs
    if "latency" not in opts.skip:
        results["latency"] = {
            kind: _asdict(await latency(kind, tgt, redis, opts, ui)) for kind in ("lean", "streamtasks")
        }
    if "producer" not in opts.skip:
        results["producer"] = await producer_bench(tgt, redis, opts.producer_n, ui)
    if "big" not in opts.skip and opts.big_n:
        big = await drain("streamtasks", tgt, redis, opts.big_n, opts, ui, pad=opts.big_kb * 1024)
        results["big"] = {**_asdict(big), "entry_kb": opts.big_kb}
    if opts.curve:
        results["curve"] = [
            _asdict(await drain("streamtasks", tgt, redis, size, opts, ui)) for size in opts.curve_sizes
        ]


# --- report ----------------------------------------------------------------------------------


def _k(v: float) -> str:
    return f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}"


def _runs(values: Sequence[float], fmt: Callable[[float], str] = _k) -> str:
    return " / ".join(fmt(v) for v in values)


def _ratio(a: Sequence[float], b: Sequence[float]) -> str:
    return " / ".join(f"{x / y:.2f}x" if y else "-" for x, y in zip(a, b, strict=True))


def report(results: dict[str, Any], console: Console) -> None:
    """Print the results as rich tables."""
    table = Table(title="streamtasks vs the lean loop (same run; 'a / b' = repeated runs)")
    for col in ("metric", "lean loop", "streamtasks", "streamtasks / lean"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    if "drain" in results:
        _drain_rows(table, results["drain"], results["options"]["n"])
    if "latency" in results:
        _latency_rows(table, results["latency"])
    if table.row_count:
        console.print(table)
    if "drain" in results:
        _cpu_table(results["drain"]["streamtasks"][-1], results["drain"]["lean"][-1], console)
    if "producer" in results:
        _producer_table(results["producer"], console)
    if "big" in results:
        _big_line(results["big"], console)
    if "curve" in results:
        _curve_table(results["curve"], console)


def _big_line(big: dict[str, Any], console: Console) -> None:
    console.print(
        f"[bold]Backlog of {big['n']:,} entries of {big['entry_kb']} KB[/]: worker RSS peak "
        f"{big['peak_rss_mb']:.0f} MB (target < 250 MB), Ray tree {big['peak_tree_rss_mb']:.0f} MB, "
        f"drain {big['rows_per_s']:,} rows/s"
    )


def _curve_table(points: list[dict[str, Any]], console: Console) -> None:
    curve = Table(title="Per-entry cost vs backlog size (streamtasks, first ack -> last ack)")
    for col in ("backlog", "µs / entry", "rows/s (drain, start-up incl.)", "steady rows/s", "worker RSS MB"):
        curve.add_column(col, justify="right")
    for c in points:
        curve.add_row(
            f"{c['n']:,}", f"{c['per_entry_us']:.1f}", f"{c['rows_per_s']:,}",
            f"{c['steady_rows_per_s']:,}", f"{c['peak_rss_mb']:.0f}",
        )  # fmt: skip
    console.print(curve)


def _drain_rows(table: Table, drain: dict[str, list[dict[str, Any]]], n: int) -> None:
    def col(kind: str, key: str) -> list[float]:
        return [float(r[key]) for r in drain[kind]]

    def sec(v: float) -> str:
        return f"{v:.2f}s"

    def mb(v: float) -> str:
        return f"{v:.0f} MB"

    for label, key, fmt in (
        (f"drain {n:,} backlog, rows/s (start-up incl.)", "rows_per_s", _k),
        ("steady rows/s (20-80 % of the backlog)", "steady_rows_per_s", _k),
        ("start-up: spawn -> first XREADGROUP", "startup_s", sec),
        ("spawn -> first row committed", "first_ack_s", sec),
        ("peak RSS, consumer process", "peak_rss_mb", mb),
        ("peak RSS, consumer + Ray process tree", "peak_tree_rss_mb", mb),
    ):
        lean, st = col("lean", key), col("streamtasks", key)
        ratio = _ratio(st, lean) if key in ("rows_per_s", "steady_rows_per_s") else ""
        table.add_row(label, _runs(lean, fmt), _runs(st, fmt), ratio)


def _latency_rows(table: Table, lat: dict[str, dict[str, Any]]) -> None:
    lean, st = lat["lean"], lat["streamtasks"]
    for which, label in (("visible_ms", "XADD -> row visible"), ("stored_ms", "XADD -> stored_at")):
        for p in ("p50", "p95", "p99"):
            table.add_row(
                f"{label} {p} at {st['offered_per_s']:,}/s (ms)",
                f"{lean[which][p]:.1f}",
                f"{st[which][p]:.1f}",
                "",
            )


def _cpu_table(st: dict[str, Any], lean: dict[str, Any], console: Console) -> None:
    table = Table(title="CPU seconds during the drain, per process (last run)")
    table.add_column("process")
    table.add_column("lean loop", justify="right")
    table.add_column("streamtasks", justify="right")
    cats = sorted(set(st["cpu_s"]) | set(lean["cpu_s"]), key=lambda c: -st["cpu_s"].get(c, 0.0))
    for cat in cats:
        label = "consumer process" if cat == "router" else cat
        table.add_row(label, f"{lean['cpu_s'].get(cat, 0.0):.1f}", f"{st['cpu_s'].get(cat, 0.0):.1f}")
    table.add_row("wall seconds", f"{lean['seconds']:.1f}", f"{st['seconds']:.1f}")
    console.print(table)


def _producer_table(p: dict[str, Any], console: Console) -> None:
    table = Table(title="Producer: entries/s into Redis (same pre-encoded entries)")
    for col in ("method", "entries/s", "vs raw pipeline"):
        table.add_column(col, justify="right" if col != "method" else "left")
    table.add_row("raw redis-py pipeline loop (1000 per execute)", _k(p["raw_pipeline"]), "1.00x")
    for key, label in (
        ("send_many", "Producer.send_many"),
        ("gathered_sends", "concurrent Producer.send, gathered"),
        ("gathered_facade", "concurrent AsyncProcessingSystem.send_training_data, gathered"),
    ):
        table.add_row(label, _k(p[key]), f"{p[key + '_ratio']:.2f}x")
    console.print(table)


# --- CLI ---------------------------------------------------------------------------------------


@click.command("bench")
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=1000),
    default=DEFAULT_N,
    show_default=True,
    help="Backlog size of the drain runs (the acceptance run uses 200000).",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Drain runs per consumer (alternating lean / streamtasks).",
)
@click.option(
    "--rate",
    type=click.IntRange(min=1),
    default=DEFAULT_RATE,
    show_default=True,
    help="Offered load of the latency runs, entries/s.",
)
@click.option(
    "--latency-seconds", type=click.FloatRange(min=1), default=DEFAULT_LATENCY_SECONDS, show_default=True
)
@click.option("--producer-n", type=click.IntRange(min=1), default=DEFAULT_PRODUCER_N, show_default=True)
@click.option(
    "--big-n",
    type=click.IntRange(min=0),
    default=DEFAULT_BIG_N,
    show_default=True,
    help="Entries of the big-entry RSS check (0: skip it).",
)
@click.option("--big-kb", type=click.IntRange(min=1), default=DEFAULT_BIG_KB, show_default=True)
@click.option("--curve", is_flag=True, help="Also drain backlogs of 10k / 100k / 1M entries (slow).")
@click.option("--curve-sizes", help="Comma-separated backlog sizes for --curve.")
@click.option("--skip", multiple=True, type=click.Choice(["drain", "latency", "producer", "big"]))
@click.option("--num-cpus", type=click.IntRange(min=1), help="CPUs of the worker's local Ray.")
@click.option(
    "--redis-url", help="Use this Redis (own stream names, deleted after) instead of a throwaway one."
)
@click.option(
    "--database-url", help="Use this PostgreSQL (own schema, dropped after) instead of a throwaway one."
)
@click.option("--keep-dir", is_flag=True, help="Keep the work directory (consumer logs).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
def bench_command(as_json: bool, curve_sizes: str | None, skip: tuple[str, ...], **kw: Any) -> None:
    """Benchmark the built-in handlers end to end against the lean loop, in one run."""  # fmt: skip
    sizes = tuple(int(s) for s in curve_sizes.split(",")) if curve_sizes else CURVE_SIZES
    opts = BenchOptions(curve_sizes=sizes, skip=frozenset(skip), **kw)
    console = Console(stderr=as_json)
    # SIGTERM like Ctrl-C: the consumers and throwaway servers are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    results = asyncio.run(run_bench(opts, console))
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        report(results, console)
