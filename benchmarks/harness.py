"""What every benchmark phase shares: the services, the entries, the consumer processes and
how they are watched (acked count over time, start-up, peak RSS, CPU per process group).

Not part of the package: imported by the scripts beside it (``run.py``, ``noop_ray.py``), which
are run as ``python benchmarks/<script>.py`` (their directory is then first on ``sys.path``).
Needs the ``bench`` extra (``pip install -e '.[bench]'``: psutil, FastStream).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import click
import psutil
from attrs import define, field, frozen
from redis import exceptions as rx
from redis.asyncio import Redis
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
LEAN_LOOP_PATH = BENCH_DIR / "lean_loop.py"
SERVICES_PATH = REPO_ROOT / "scripts" / "services.py"
LEAN_GROUP = "lean-loop"

FILL_CHUNK = 1000
POLL_S = 0.05
RSS_POLL_S = 0.2
#: Steady throughput is measured between these fractions of N acknowledged.
STEADY_WINDOW = (0.2, 0.8)
#: A consumer that makes no progress for this long has failed.
STALL_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 40.0
MB = 1024 * 1024
LOG_TIME_FORMAT = "%Y-%m-%d %H:%M:%S,%f"
METADATA = {"api": "v1", "region": "eu-west-1"}
#: ``JOB_TRACING=1``: the job's entries carry trace context and its handler is traced
#: (benchmarks/job_streamtasks.py), to measure tracing's cost at 100 % sampling.
JOB_TRACING = bool(os.environ.get("JOB_TRACING"))


def load_script(path: Path, name: str) -> ModuleType:
    """Import a file of the source checkout (the service helpers) by path."""
    if name in sys.modules:
        return sys.modules[name]
    if not path.exists():
        raise click.ClickException(f"{path} not found: run the benchmarks from a source checkout")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise click.ClickException(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


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


def _services(
    redis_url: str | None, db_url: str | None, workdir: Path, stack: contextlib.ExitStack
) -> tuple[str, str, Any, Any]:
    """(redis url, database url, redis pid, postgres pid): given, or throwaway servers."""
    redis_pid = pg_pid = None
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


SchemaSetup = Callable[[asyncpg.Connection], Any]


@contextlib.asynccontextmanager
async def target(
    redis_url: str | None, database_url: str | None, setup: SchemaSetup, *, keep_dir: bool = False
) -> AsyncIterator[Target]:
    """Throwaway Redis/PostgreSQL unless URLs are given; a fresh schema and key prefix.

    ``setup(conn)`` creates the tables, with ``search_path`` already set to the run's schema.
    """
    workdir = Path(tempfile.mkdtemp(prefix="streamtasks-bench-"))
    stack = contextlib.ExitStack()
    token = uuid.uuid4().hex[:8]
    try:
        redis_url, db_url, redis_pid, pg_pid = await asyncio.to_thread(
            _services, redis_url, database_url, workdir, stack
        )
        schema = f"bench_{token}"
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute(f"CREATE SCHEMA {schema}")
            await conn.execute(f"SET search_path = {schema}")
            await setup(conn)
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
        if not keep_dir:
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


async def sql(tgt: Target, query: str) -> Any:
    """One statement in the run's schema; returns the first value of the first row."""
    conn = await asyncpg.connect(tgt.database_url)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


# --- entries ---------------------------------------------------------------------------------


def job_entry(key: str, ts_ms: int, pad: int = 0) -> dict[str, str]:
    """The five fields of the job (issue 10): model, request id, input JSON, metadata JSON, IP."""
    features = [0.125, 3.5, 17.0, 0.0078125, 42.0, 1.5]
    input_data: dict[str, Any] = {"user_id": ts_ms % 100_000, "features": features, "page": "/home"}
    if pad:
        input_data["blob"] = "x" * pad
    entry = {
        "model_name": "fraud_detection",
        "request_id": key,
        "input_data": json.dumps(input_data, separators=(",", ":")),
        "metadata": json.dumps(METADATA, separators=(",", ":")),
        "source_ip": "10.1.2.3",
    }
    if JOB_TRACING:  # each entry sent from a traced request of its own (W3C trace context)
        entry["_st_trace_traceparent"] = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
    return entry


def training_entry(key: str, ts_ms: int, pad: int = 0) -> dict[str, str]:
    """One entry of the built-in training wire format (about 330 bytes plus ``pad``)."""
    return {**job_entry(key, ts_ms, pad), "_st_mid": key, "_st_ts": str(ts_ms)}


Entry = Callable[[str, int, int], dict[str, str]]


async def fill(
    redis: Redis,
    stream: str,
    n: int,
    *,
    pad: int = 0,
    tag: str = "e",
    on_chunk: Callable[[int], None],
    entry: Entry = training_entry,
) -> None:
    """XADD ``n`` entries (training format by default) with pipelines of :data:`FILL_CHUNK`."""
    now = int(time.time() * 1000)
    for start in range(0, n, FILL_CHUNK):
        pipe = redis.pipeline(transaction=False)
        count = min(FILL_CHUNK, n - start)
        for i in range(start, start + count):
            pipe.xadd(stream, entry(f"{tag}-{i}", now, pad))  # type: ignore[arg-type]
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
    """``router`` (the spawned process: router, driver, supervisor), Ray's, or other children."""
    if p.pid == root_pid:
        return "router"
    try:
        cmd = " ".join(p.cmdline()[:3]) or p.name()
    except psutil.Error:
        return "children"
    if "ray::" in cmd or "default_worker.py" in cmd:
        return "ray workers"
    return "ray system" if "ray" in cmd else "children"


SERVICES = ("redis-server", "postgres")


@define
class CpuMeter:
    """CPU seconds per process category between the first and the last :meth:`sample`."""

    root: psutil.Process
    redis_pid: int | None
    postgres_pid: int | None
    seen: dict[int, tuple[str, float, float]] = field(factory=dict)  # pid -> cat, first, last
    sampled: bool = False

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
            # Processes born in the run (the consumer's tree, its PostgreSQL backends) count
            # from zero, start-up included; the services' processes from the first sample.
            if p.pid in self.seen:
                first = self.seen[p.pid][1]
            else:
                first = used if cat in SERVICES and not self.sampled else 0.0
            self.seen[p.pid] = (cat, first, used)
        self.sampled = True

    def split(self, digits: int | None = 2) -> dict[str, float]:
        out: dict[str, float] = {}
        for cat, first, last in self.seen.values():
            out[cat] = out.get(cat, 0.0) + last - first
        return {cat: round(v, digits) for cat, v in out.items()} if digits is not None else out


@define
class Consumer:
    """A consumer subprocess (the worker, the lean loop, a peer) and what we learn about it."""

    kind: str
    group: str
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
        if self.proc.poll() is not None and self.kind != "lean":
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


def spawn(
    kind: str, group: str, argv: list[str], env: dict[str, str], log: Path, *, cwd: Path | None = None
) -> Consumer:
    """Start ``argv`` in its own session (so a stuck tree can be killed whole), output to ``log``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0", **env}
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Consumer(kind, group, proc, started, log, psutil.Process(proc.pid))


# --- watching a drain ------------------------------------------------------------------------


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
    n: int = 0
    #: (acked, CPU split) when the acked count first reached each STEADY_WINDOW fraction of n.
    cpu_marks: list[tuple[int, dict[str, float]]] = field(factory=list)

    async def poll(self) -> int:
        done, consumers = await acked(self.redis, self.stream, self.consumer.group)
        now = time.perf_counter()
        if self.startup is None:
            # The worker: its "reading" log line. The others: they show in XINFO once they read.
            if self.consumer.kind == "streamtasks":
                self.startup = self.consumer.reading_after()
            elif consumers:
                self.startup = now - self.consumer.started
        self.samples.append((now - self.consumer.started, done))
        if now - self.last_rss >= RSS_POLL_S:
            self.last_rss = now
            self.consumer.sample_rss()
            self.cpu.sample()
        marks = self.cpu_marks
        if self.n and len(marks) < len(STEADY_WINDOW) and done >= STEADY_WINDOW[len(marks)] * self.n:
            self.cpu.sample()
            marks.append((done, self.cpu.split(digits=None)))
        return done

    def steady_cpu_us(self) -> dict[str, float]:
        """CPU µs per entry by process group between the STEADY_WINDOW marks (start-up excluded)."""
        if len(self.cpu_marks) < 2 or self.cpu_marks[1][0] <= self.cpu_marks[0][0]:
            return {}
        (a, lo), (b, hi) = self.cpu_marks
        return {cat: round((hi[cat] - lo.get(cat, 0.0)) / (b - a) * 1e6, 1) for cat in hi}

    async def until(self, n: int, on_progress: Callable[[int], None]) -> None:
        self.n, self.cpu_marks = n, []
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
    cpu_s: dict[str, float]  # CPU seconds by process group, spawn -> last ack
    steady_cpu_us: dict[str, float]  # CPU µs per entry by process group, 20 % -> 80 % acked


async def watch_drain(
    consumer: Consumer, tgt: Target, redis: Redis, stream: str, n: int, ui: Ui, table: str
) -> DrainResult:
    """Watch ``consumer`` until all ``n`` entries of ``stream`` are acked; stop it; count rows."""
    watch = Watch(redis, consumer, stream, CpuMeter(consumer.ps, tgt.redis_pid, tgt.postgres_pid))
    task = ui.task(f"{consumer.kind}: drain {n:,}", n)
    try:
        watch.cpu.sample()
        await watch.until(n, lambda d: ui.update(task, d))
        watch.cpu.sample()
        consumer.sample_rss()
    finally:
        consumer.stop()
        ui.done(task)
    rows = int(await sql(tgt, f"SELECT count(*) FROM {table}"))
    return drain_result(consumer.kind, n, rows, watch)


def drain_result(kind: str, n: int, rows: int, watch: Watch) -> DrainResult:
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
        cpu_s=watch.cpu.split(), steady_cpu_us=watch.steady_cpu_us(),
    )  # fmt: skip


# --- progress display ------------------------------------------------------------------------


class Ui:
    """A rich progress display (on stderr with ``--json``), one line per phase."""

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
