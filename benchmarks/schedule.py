#!/usr/bin/env python3
"""Acceptance runs of delayed entries and periodic handlers (issue 26), by hand, not in CI:

    python benchmarks/schedule.py delayed   [--n 10000 --spread 60 --workers 3 --cluster]
    python benchmarks/schedule.py periodic  [--run 120 --stop 30 --workers 3]
    python benchmarks/schedule.py send-many [--n 100000]

* ``delayed``: N entries with delays spread over 0..SPREAD s (``send_many``), WORKERS
  ``streamtasks worker`` processes (task mode, inline executor: the figures are about Redis and
  the mover, not Ray), one of them kill -9'd at 1/3 and 2/3 of the spread and restarted. Then:
  every entry handled (counted idempotently, by message id), redeliveries, each entered the
  stream once, none handled before its due time, lateness percentiles (first handling).
  ``--cluster`` runs it on a throwaway Redis Cluster (3 masters + 1 replica each), stream
  ``{delayed}``.
* ``periodic``: WORKERS workers with ``every=1s`` handlers (``catch_up`` latest and all) for RUN
  s: entries per tick; then all stopped STOP s and restarted: what each policy ran for the gap.
* ``send-many``: ``send_many`` with a delay vs plain, same N, same pipeline size: the ratio.

Throwaway servers (``scripts/services.py``) in a temp directory; results as JSON lines.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent), str(BENCH_DIR.parent / "scripts")]

import click  # noqa: E402
import services  # noqa: E402

from streamtasks import Producer  # noqa: E402
from streamtasks.connect import connect  # noqa: E402


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


class Workers:
    """``streamtasks worker schedule_app:registry`` processes, each a consumer of its own."""

    def __init__(self, url: str, stream: str, count: int) -> None:
        self.url, self.stream = url, stream
        self.env = {**os.environ, "SCHEDULE_REDIS_URL": url, "SCHEDULE_STREAM": stream,
                    "SCHEDULE_CLUSTER": "1" if stream.startswith("{") else "",
                    "PYTHONPATH": os.pathsep.join([str(BENCH_DIR), str(BENCH_DIR.parent)])}  # fmt: skip
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count
        self.logs = Path(tempfile.mkdtemp(prefix="schedule-bench-"))

    def start(self, i: int) -> None:
        argv = [sys.executable, "-m", "streamtasks", "worker", "schedule_app:registry", "--mode", "tasks",
                "--executor", "inline", "--consumer", f"bench-{i}-{time.time():.0f}", "--redis-url", self.url,
                "--visibility-timeout", "5"]  # fmt: skip
        log = open(self.logs / f"worker-{i}.log", "ab")  # noqa: SIM115  (the process keeps it)
        self.procs[i] = subprocess.Popen(argv, env=self.env, stdout=log, stderr=log)

    def start_all(self) -> None:
        for i in range(len(self.procs)):
            self.start(i)

    def kill9(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None:
            proc.kill()
            proc.wait()

    def kill_all(self) -> None:
        for i in range(len(self.procs)):
            self.kill9(i)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            if proc is not None:
                proc.wait(60)


async def _wait_handled(redis: Any, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if int(await redis.hlen("bench:late")) >= n:
            return
        await asyncio.sleep(0.5)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def delayed_run(url: str, stream: str, n: int, spread: float, workers: int) -> None:
    redis = await connect(url)
    workers_ = Workers(url, stream, workers)
    try:
        await _delayed(redis, workers_, stream, n, spread)
    finally:
        workers_.kill_all()
        await redis.aclose()


async def _delayed(redis: Any, workers_: Workers, stream: str, n: int, spread: float) -> None:
    workers_.start_all()
    await asyncio.sleep(3)  # the workers start (imports, groups)
    delays = [random.uniform(0, spread) for _ in range(n)]
    started = time.time()
    sent = await Producer(redis).send_many(stream, [{"n": str(i)} for i in range(n)], delay=delays)
    emit(step="sent", n=n, seconds=round(time.time() - started, 2))
    kills = []
    for at in (spread / 3, 2 * spread / 3):
        await asyncio.sleep(max(0.0, started + at - time.time()))
        workers_.kill9(0)
        kills.append(time.time())
        emit(step="kill -9 worker 0", at=round(time.time() - started, 1))
        await asyncio.sleep(1.0)
        workers_.start(0)
    await _wait_handled(redis, n, spread + 120)
    workers_.stop_all()
    late = {k.decode(): float(v) for k, v in (await redis.hgetall("bench:late")).items()}
    deliveries = [int(v) for v in (await redis.hgetall("bench:deliveries")).values()]
    in_stream: dict[str, int] = {}
    moved_late: list[float] = []  # from the due time to the XADD (the entry id's time)
    due_at: dict[str, float] = {}
    last = "-"
    while True:
        page: Any = await redis.xrange(stream, min=last, max="+", count=5000)
        page = [e for e in page if e[0].decode() != last]
        if not page:
            break
        for entry_id, fields in page:
            mid = fields[b"_st_mid"].decode()
            in_stream[mid] = in_stream.get(mid, 0) + 1
            due_at[mid] = int(fields[b"_st_due"]) / 1000
            moved_late.append(int(entry_id.split(b"-")[0]) / 1000 - due_at[mid])
        last = page[-1][0].decode()
    values = list(late.values())
    # entries due within the visibility timeout after a kill may have been read by the killed
    # worker: they wait for the reclaim (5 s); the others show the steady lateness
    calm = [v for mid, v in late.items() if not any(k - 1 <= due_at.get(mid, 0) <= k + 6 for k in kills)]
    emit(
        step="result", sent=len(sent), handled=len(late), missing=len(set(sent) - set(late)),
        entered_stream_twice=sum(1 for v in in_stream.values() if v > 1),
        not_in_stream=len(set(sent) - set(in_stream)),
        redelivered=sum(1 for d in deliveries if d > 1), early=sum(1 for v in values if v < 0),
        lateness_p50=round(_percentile(values, 0.5), 3), lateness_p99=round(_percentile(values, 0.99), 3),
        lateness_max=round(max(values), 3), still_scheduled=int(await redis.zcard(f"{stream}:delayed")),
        moved_late_p50=round(_percentile(moved_late, 0.5), 3),
        moved_late_p99=round(_percentile(moved_late, 0.99), 3),
        moved_late_max=round(max(moved_late), 3), moved_early=sum(1 for v in moved_late if v < 0),
        calm_lateness_p99=round(_percentile(calm, 0.99), 3), calm_entries=len(calm),
    )  # fmt: skip


async def periodic_run(url: str, run: float, stop: float, workers: int) -> None:
    redis = await connect(url)
    workers_ = Workers(url, "delayed", workers)
    try:
        await _periodic(redis, workers_, run, stop)
    finally:
        workers_.kill_all()
        await redis.aclose()


async def _periodic(redis: Any, workers_: Workers, run: float, stop: float) -> None:
    workers_.start_all()
    started = time.time()
    await asyncio.sleep(run)
    workers_.stop_all()
    stopped = time.time()
    first = {name: await _ticks(redis, name) for name in ("latest", "all")}
    in_window = [t for t in first["latest"] if started + 4 <= t <= stopped - 1]  # the workers were up
    emit(step="running", seconds=round(stopped - started, 1), ticks_latest=len(first["latest"]),
         ticks_all=len(first["all"]), twice=sum(1 for c in first["latest"].values() if c > 1)
         + sum(1 for c in first["all"].values() if c > 1),
         missing_in_window=_gaps(in_window))  # fmt: skip
    await asyncio.sleep(stop)
    restarted = time.time()
    workers_.start_all()
    deadline = time.monotonic() + 120  # the workers start (slow on a loaded machine), then claim
    while time.monotonic() < deadline:
        now = [await _ticks(redis, name) for name in ("latest", "all")]
        if all(max(t) > max(first[n]) for t, n in zip(now, ("latest", "all"), strict=True)):
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(3)
    workers_.stop_all()
    for name in ("latest", "all"):
        ticks = await _ticks(redis, name)
        added = {float(k): int(v) for k, v in (await redis.hgetall(f"bench:{name}:added")).items()}
        before = max(first[name])
        after = sorted(t for t in ticks if t > before)
        # the first claim after the restart added its entries in one script: one XADD time
        claim = [t for t in after if added[t] - added[after[0]] < 50]
        emit(step=f"after {stop:.0f}s stopped", catch_up=name, restarted_after=round(restarted - stopped, 1),
             missed_ticks=int(max(claim) - before), first_claim_entries=len(claim),
             twice=sum(1 for c in ticks.values() if c > 1))  # fmt: skip


async def _ticks(redis: Any, name: str) -> dict[float, int]:
    return {float(k): int(v) for k, v in (await redis.hgetall(f"bench:{name}")).items()}


def _gaps(ticks: list[float]) -> int:
    ordered = sorted(ticks)
    return sum(int(b - a) - 1 for a, b in itertools.pairwise(ordered))


async def send_many_run(url: str, n: int) -> None:
    redis = await connect(url)
    producer = Producer(redis)
    items = [{"n": str(i), "payload": "x" * 100} for i in range(n)]
    rates = {}
    for kind in ("plain", "delayed", "plain", "delayed"):
        await redis.flushall()
        started = time.perf_counter()
        await producer.send_many("s", items, delay=3600 if kind == "delayed" else None)
        rates.setdefault(kind, []).append(n / (time.perf_counter() - started))
    best = {k: max(v) for k, v in rates.items()}
    emit(step="send_many", n=n, plain_per_s=round(best["plain"]), delayed_per_s=round(best["delayed"]),
         ratio=round(best["delayed"] / best["plain"], 2))  # fmt: skip
    await redis.aclose()


def _on_sigterm(*_: Any) -> None:
    raise SystemExit(1)  # the finally blocks stop the workers and the servers


def _servers(cluster: bool) -> Any:
    signal.signal(signal.SIGTERM, _on_sigterm)
    root = Path(tempfile.mkdtemp(prefix="schedule-servers-"))
    if cluster:
        return services.RedisClusterServers(root / "cluster").start()
    return services.RedisServer(root / "redis").start()


@click.group()
def main() -> None:
    """Acceptance runs of delayed entries and periodic handlers."""


@main.command()
@click.option("--n", default=10_000, show_default=True)
@click.option("--spread", default=60.0, show_default=True)
@click.option("--workers", default=3, show_default=True)
@click.option("--cluster", is_flag=True, help="On a throwaway Redis Cluster (stream {delayed}).")
def delayed(n: int, spread: float, workers: int, cluster: bool) -> None:
    """N delayed entries over 0..SPREAD s, WORKERS workers, one kill -9'd twice."""
    server = _servers(cluster)
    try:
        asyncio.run(delayed_run(server.url, "{delayed}" if cluster else "delayed", n, spread, workers))
    finally:
        server.kill()


@main.command()
@click.option("--run", "run_s", default=120.0, show_default=True)
@click.option("--stop", "stop_s", default=30.0, show_default=True)
@click.option("--workers", default=3, show_default=True)
def periodic(run_s: float, stop_s: float, workers: int) -> None:
    """every=1s for RUN s with WORKERS workers; all stopped STOP s; catch-up after it."""
    server = _servers(False)
    try:
        asyncio.run(periodic_run(server.url, run_s, stop_s, workers))
    finally:
        server.kill()


@main.command("send-many")
@click.option("--n", default=100_000, show_default=True)
def send_many(n: int) -> None:
    """send_many with a delay vs plain send_many."""
    server = _servers(False)
    try:
        asyncio.run(send_many_run(server.url, n))
    finally:
        server.kill()


if __name__ == "__main__":
    main()
