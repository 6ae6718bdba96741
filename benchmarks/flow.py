#!/usr/bin/env python3
"""Flow control, measured with real workers (acceptance of issue 26; run by hand, not in CI).

    python benchmarks/flow.py rate        [--rate 200 --seconds 60 --workers 2 --actors 2]
    python benchmarks/flow.py priorities  [--backlog 50000 --urgent 1000 --workers 2 --actors 2]

``rate``: a backlog on a handler with ``rate_limit="<rate>/s"`` served by ``--workers``
``streamtasks worker`` processes of ``--actors`` Ray actors each (every process its own local
Ray); over ``--seconds`` after a warm-up it reports the measured rate (goal within 5 % of the
limit), the most calls in any 1-s window (goal at most 110 %), dead letters (goal 0), calls
that were not a first attempt and the workers' ``streamtasks_entries_retried_total`` (goal 0),
and entries delivered more than once while waiting (goal 0).

``priorities``: ``--backlog`` entries at level 2 of a ``priorities=3`` handler; once the
workers are busy with it, ``--urgent`` entries at level 0: how many level-2 entries were done
between that send and the last level-0 one (goal: fewer than 5,000), and how long the level-0
entries took.

A throwaway redis-server in a temp directory; JSON lines on stdout.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent), str(BENCH_DIR.parent / "scripts")]

import click  # noqa: E402
import services  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from streamtasks import Producer  # noqa: E402

GROUP = "flow-bench"
WARMUP_S = 5.0
STOP_TIMEOUT_S = 60.0


def emit(**row: Any) -> None:
    print(json.dumps(row), flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[Any]:
    with tempfile.TemporaryDirectory(prefix="st-flow-") as tmp:
        server = services.RedisServer(Path(tmp) / "redis")
        server.start()
        try:
            yield server
        finally:
            server.kill()


@contextlib.contextmanager
def workers(
    url: str, stream: str, n: int, actors: int, env: dict[str, str], logs: Path
) -> Iterator[list[int]]:
    """``n`` worker processes serving ``stream``; yields their metrics ports; SIGTERM after."""
    procs, ports = [], []
    for i in range(n):
        port = _free_port()
        argv = [
            sys.executable, "-m", "streamtasks", "worker", "flow_app:registry", "--streams", stream,
            "--redis-url", url, "--actors", str(actors), "--num-cpus", str(max(2, actors)),
            "--metrics-port", str(port), "--consumer", f"bench-{i}",
        ]  # fmt: skip
        full_env = {**os.environ, **env, "FLOW_REDIS_URL": url, "PYTHONPATH": str(BENCH_DIR)}
        log = open(logs / f"worker-{i}.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen(argv, env=full_env, stdout=log, stderr=subprocess.STDOUT))
        ports.append(port)
    try:
        yield ports
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()


async def _actors_reading(redis: Redis, wanted: int, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reading = 0
        async for key in redis.scan_iter(match=f"streamtasks:worker:{GROUP}:*"):
            body = await redis.get(key)
            reading += bool(body and re.search(rb'"state": "reading"', body) and re.search(rb"-a\d+$", key))
        if reading >= wanted:
            return
        await asyncio.sleep(0.5)
    raise click.ClickException(f"fewer than {wanted} actors reading after {timeout:.0f}s")


def _counter(ports: list[int], name: str) -> list[float]:
    """Each worker's ``name`` counter (summed over its label sets), from its /metrics."""
    out = []
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            lines = r.read().decode().splitlines()
        out.append(sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name + "{")))
    return out


def max_window(times: list[float], width: float = 1.0) -> int:
    """The most calls in any window [t, t + width) that starts at a call."""
    return max(bisect.bisect_left(times, t + width) - i for i, t in enumerate(times))


async def rate_phase(
    rate: int, seconds: float, n_workers: int, actors: int, logs: Path, dump: Path | None = None
) -> dict[str, Any]:
    with redis_server() as server:
        redis = Redis.from_url(server.url)
        backlog = int(rate * (seconds + WARMUP_S + 30) * 1.2)
        await Producer(redis).send_many("flow:limited", ({"n": i} for i in range(backlog)))
        env = {"FLOW_RATE": str(rate)}
        with workers(server.url, "flow:limited", n_workers, actors, env, logs) as ports:
            await _actors_reading(redis, n_workers * actors)
            await asyncio.sleep(WARMUP_S)
            start = time.time()
            await asyncio.sleep(seconds)
            end = time.time()
            pending = await redis.xpending_range("flow:limited", GROUP, "-", "+", backlog)
            redelivered = sum(1 for p in pending if int(p["times_delivered"]) > 1)
            retried = sum(_counter(ports, "streamtasks_entries_retried_total"))
            handled = _counter(ports, "streamtasks_entries_handled_total")
        rows = [r.decode().split("|") for r in await redis.lrange("flow:calls", 0, -1)]
        if dump is not None:  # every call: time, attempt, pid of the actor that made it
            await asyncio.to_thread(dump.write_text, json.dumps({"start": start, "end": end, "calls": rows}))
        calls = sorted(float(t) for t, *_ in rows)
        window = [t for t in calls if start <= t < end]
        consumers = await redis.xinfo_consumers("flow:limited", GROUP)
        result = {
            "phase": "rate", "limit_per_s": rate, "seconds": seconds, "workers": n_workers, "actors": actors,
            "calls_in_window": len(window), "measured_per_s": round(len(window) / (end - start), 2),
            "ratio": round(len(window) / (end - start) / rate, 4),
            "max_1s_window": max_window(window), "max_1s_ratio": round(max_window(window) / rate, 4),
            "dead_letters": int(await redis.xlen("flow:limited:dead")),
            "not_first_attempt": sum(1 for _, a, *_ in rows if a != "1"), "retried_total": retried,
            "waiting_redelivered": redelivered, "pending_when_measured": len(pending),
            "handled_per_worker": handled, "consumers": len(consumers),
        }  # fmt: skip
        await redis.aclose()
        return result


async def priorities_phase(
    backlog: int, urgent: int, n_workers: int, actors: int, logs: Path
) -> dict[str, Any]:
    with redis_server() as server:
        redis = Redis.from_url(server.url)
        producer = Producer(redis)
        await producer.send_many("flow:jobs", ({"n": i} for i in range(backlog)), priority=2)
        with workers(server.url, "flow:jobs", n_workers, actors, {}, logs):
            await _actors_reading(redis, n_workers * actors)
            while int(await redis.llen("flow:order")) < min(5000, backlog // 10):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            before = int(await redis.llen("flow:order"))
            sent = time.time()
            await producer.send_many("flow:jobs", ({"n": i} for i in range(urgent)), priority=0)
            while int(await redis.hget("flow:levels", "0") or 0) < urgent:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            took = time.time() - sent
        order = await redis.lrange("flow:order", before, -1)
        last = max(i for i, level in enumerate(order) if level == b"0")
        result = {
            "phase": "priorities", "backlog_level_2": backlog, "urgent_level_0": urgent,
            "workers": n_workers, "actors": actors, "level_2_done_before_send": before,
            "level_2_done_meanwhile": order[: last + 1].count(b"2"), "level_0_seconds": round(took, 3),
        }  # fmt: skip
        await redis.aclose()
        return result


@click.command()
@click.argument("phase", type=click.Choice(["rate", "priorities"]))
@click.option("--rate", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--seconds", type=click.FloatRange(min=5), default=60.0, show_default=True)
@click.option("--backlog", type=click.IntRange(min=1000), default=50_000, show_default=True)
@click.option("--urgent", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--workers", "n_workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--actors", type=click.IntRange(min=1), default=2, show_default=True)
@click.option(
    "--keep-logs", type=click.Path(file_okay=False, path_type=Path), help="Keep the workers' logs here."
)
@click.option(
    "--dump", type=click.Path(dir_okay=False, path_type=Path), help="rate: write every call (JSON)."
)
def main(
    phase: str, rate: int, seconds: float, backlog: int, urgent: int, n_workers: int, actors: int,
    keep_logs: Path | None, dump: Path | None,
) -> None:  # fmt: skip
    """Measure a rate limit or priority levels with real workers (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="st-flow-logs-") as tmp:
        logs = keep_logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        if phase == "rate":
            emit(**asyncio.run(rate_phase(rate, seconds, n_workers, actors, logs, dump)))
        else:
            emit(**asyncio.run(priorities_phase(backlog, urgent, n_workers, actors, logs)))


if __name__ == "__main__":
    main()
