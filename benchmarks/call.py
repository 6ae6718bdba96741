#!/usr/bin/env python3
"""``handler.call`` round trips: latency p50/p99 on an idle worker, then N concurrent calls.

Starts a throwaway Redis (unless ``--redis-url``) and ``streamtasks worker call_app:registry``
(actor mode by default, one actor), then times calls from this process::

    python benchmarks/call.py [--mode actors|tasks] [--executor ray|inline] [--calls 500] [--concurrent 1000]
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import click
from harness import SERVICES_PATH, load_script, spawn
from redis.asyncio import Redis

from streamtasks import Producer

BENCH_DIR = Path(__file__).resolve().parent
STREAM = "bench_calls"
READY_TIMEOUT_S = 120.0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def one(producer: Producer, i: int) -> float:
    started = time.perf_counter()
    got = await producer.call(STREAM, {"x": i}, timeout=60)
    assert got == {"x": str(i)}, got
    return (time.perf_counter() - started) * 1000


async def measure(redis_url: str, calls: int, concurrent: int) -> dict[str, float]:
    redis = Redis.from_url(redis_url)
    async with Producer(redis) as producer:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:  # the worker is up once a call is answered
            try:
                await producer.call(STREAM, {"x": -1}, timeout=5)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
        for i in range(50):  # warm up
            await one(producer, i)
        idle = [await one(producer, i) for i in range(calls)]
        started = time.perf_counter()
        burst = await asyncio.gather(*(one(producer, i) for i in range(concurrent)))
        took = time.perf_counter() - started
        reads = producer._replies.reads if producer._replies else 0
    await redis.aclose()
    return {
        "idle_p50_ms": statistics.median(idle), "idle_p99_ms": percentile(idle, 99),
        "idle_mean_ms": statistics.fmean(idle), "concurrent": concurrent,
        "concurrent_total_s": took, "concurrent_p50_ms": statistics.median(burst),
        "concurrent_p99_ms": percentile(burst, 99), "waiter_reads": reads,
    }  # fmt: skip


@click.command()
@click.option("--redis-url", default=None, help="An existing Redis (default: a throwaway one).")
@click.option("--mode", type=click.Choice(["actors", "tasks"]), default="actors", show_default=True)
@click.option("--executor", type=click.Choice(["ray", "inline"]), default="ray", show_default=True)
@click.option("--calls", type=click.IntRange(min=10), default=500, show_default=True)
@click.option("--concurrent", type=click.IntRange(min=1), default=1000, show_default=True)
def main(redis_url: str | None, mode: str, executor: str, calls: int, concurrent: int) -> None:
    """Time handler.call round trips against a real worker."""
    workdir = Path(tempfile.mkdtemp(prefix="streamtasks-call-"))
    server = None
    if redis_url is None:
        services = load_script(SERVICES_PATH, "streamtasks_bench_services")
        server = services.RedisServer(workdir / "redis").start()
        redis_url = server.url
    argv = [sys.executable, "-m", "streamtasks", "worker", "call_app:registry", "--mode", mode,
            "--redis-url", redis_url]  # fmt: skip
    argv += ["--actors", "1"] if mode == "actors" else ["--executor", executor]
    path = os.pathsep.join(p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH")) if p)
    worker = spawn("worker", "bench-call", argv, {"PYTHONPATH": path}, workdir / "worker.log", cwd=BENCH_DIR)
    try:
        result = asyncio.run(measure(redis_url, calls, concurrent))
    finally:
        worker.stop()
        if server is not None:
            server.stop()
    label = f"{mode}" + (f"/{executor}" if mode == "tasks" else "")
    print(f"handler.call round trip ({label}, {calls} sequential calls on an idle worker):")
    idle = (result["idle_p50_ms"], result["idle_p99_ms"], result["idle_mean_ms"])
    print("  p50 {:.2f} ms   p99 {:.2f} ms   mean {:.2f} ms".format(*idle))
    print(f"{concurrent} concurrent calls: all answered in {result['concurrent_total_s']:.2f} s; "
          f"p50 {result['concurrent_p50_ms']:.1f} ms, p99 {result['concurrent_p99_ms']:.1f} ms; "
          f"{result['waiter_reads']} blocking reads by the one waiter")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
