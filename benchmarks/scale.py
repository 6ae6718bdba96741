#!/usr/bin/env python3
"""Past one Redis node: Redis Cluster, sharded streams, ack-aware trimming, big entries.

    python benchmarks/scale.py big        [--n 80 --kb 5120]   # driver RSS, big entries + idle stream
                                       # (SCALE_STREAMTASKS_PATH=<checkout>: that worker instead)
    python benchmarks/scale.py throughput [--n 100000]         # 16 shards: one node vs 3 masters
    python benchmarks/scale.py acceptance [--n 200000]         # cluster: 2 workers, once, order, spread
    python benchmarks/scale.py failover   [--n 60000]          # kill -9 a master mid-run
    python benchmarks/scale.py soak       [--n 1000000 --rate 20000]  # trim_acked_after=0 on one node
    python benchmarks/scale.py two-groups [--n 100000]         # one group stopped: trimming waits

Throwaway servers (``scripts/services.py``) in a temp directory, removed after. Except ``big``
(the real ``streamtasks worker`` with Ray, whose driver RSS is the point), workers run in this
process on the ``InlineExecutor`` (handlers are no-ops or one RPUSH per batch): the figures are
about Redis and the worker's read/settle path, not Ray. Results go to stdout as JSON lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent), str(BENCH_DIR.parent / "scripts")]

import click  # noqa: E402
import psutil  # noqa: E402
import scale_app  # noqa: E402
import services  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from streamtasks import Producer  # noqa: E402
from streamtasks.connect import connect  # noqa: E402
from streamtasks.keys import shard_streams  # noqa: E402
from streamtasks.worker import InlineExecutor, Worker, WorkerSettings  # noqa: E402

ORDERS = shard_streams("orders", scale_app.SHARDS)
GROUP = scale_app.registry.group


def emit(**row: Any) -> None:
    print(json.dumps(row), flush=True)


@contextlib.contextmanager
def servers(kind: str) -> Iterator[Any]:
    with tempfile.TemporaryDirectory(prefix="st-scale-") as tmp:
        server: Any = (
            services.RedisClusterServers(Path(tmp) / "cluster")
            if kind == "cluster"
            else services.RedisServer(Path(tmp) / "redis")
        )
        server.start()
        try:
            yield server
        finally:
            server.kill()


async def acked(redis: Redis, streams: list[str], group: str) -> int:
    """Entries of ``streams`` delivered to ``group`` and acked."""
    total = 0
    for s in streams:
        with contextlib.suppress(Exception):
            for g in await redis.xinfo_groups(s):
                if g["name"] in (group, group.encode()):
                    total += int(g["entries-read"] or 0) - int(g["pending"])
    return total


@contextlib.asynccontextmanager
async def inline_workers(registry: Any, redis: Redis, n: int, **settings: Any) -> AsyncIterator[list[Worker]]:
    workers = [
        Worker(registry, redis, InlineExecutor(), WorkerSettings(consumer=f"w{i}", block=0.2, **settings))
        for i in range(n)
    ]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield workers
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks, return_exceptions=True)


async def send_keyed(redis: Redis, n: int, keys_n: int = 1000) -> float:
    """Send ``n`` entries with keys to the 16-shard stream; returns seconds taken."""
    producer = Producer(redis, shards={"orders": scale_app.SHARDS})
    started = time.perf_counter()
    chunk = 5000
    for start in range(0, n, chunk):
        items = [{"key": f"k{i % keys_n}", "seq": i // keys_n} for i in range(start, min(n, start + chunk))]
        await producer.send_many("orders", items, keys=[str(it["key"]) for it in items])
    return time.perf_counter() - started


async def drain_time(redis: Redis, n: int, workers: int) -> float:
    registry = scale_app.registry.only(["orders"])
    started = time.perf_counter()
    async with inline_workers(registry, redis, workers):
        while await acked(redis, ORDERS, GROUP) < n:  # noqa: ASYNC110 - polling Redis
            await asyncio.sleep(0.2)
    return time.perf_counter() - started


# --- phases ------------------------------------------------------------------------------------


async def throughput(n: int) -> None:
    for kind in ("one node", "cluster"):
        with servers("cluster" if kind == "cluster" else "node") as server:
            redis = await connect(server.url)
            send_s = await send_keyed(redis, n)
            drain_s = await drain_time(redis, n, workers=2)
            emit(
                phase="throughput",
                target=kind,
                n=n,
                send_per_s=round(n / send_s),
                drain_per_s=round(n / drain_s),
            )
            await redis.aclose()


async def acceptance(n: int) -> None:
    os.environ["SCALE_RECORD"] = "1"
    with servers("cluster") as server:
        os.environ.update(SCALE_REDIS_URL=server.url, SCALE_CLUSTER="1")
        redis = await connect(server.url)
        keys_n = 1000
        await send_keyed(redis, n, keys_n)
        drain_s = await drain_time(redis, n, workers=2)
        per_shard = {s: int(await redis.llen(f"handled:{s}")) for s in ORDERS}
        seen: Counter[str] = Counter()
        key_shard: dict[str, set[str]] = {}
        for s in ORDERS:
            for item in await redis.lrange(f"handled:{s}", 0, -1):
                seen[item.decode()] += 1
                key_shard.setdefault(item.decode().split(":")[0], set()).add(s)
        order_ok = True
        for s in ORDERS:  # stream order of each key's entries = send order
            last: dict[str, int] = {}
            for _, f in await redis.xrange(s):
                k, q = f[b"key"].decode(), int(f[b"seq"])
                order_ok &= last.get(k, -1) < q
                last[k] = q
        even = n / len(ORDERS)
        emit(
            phase="acceptance", n=n, drain_per_s=round(n / drain_s), handled=sum(seen.values()),
            distinct=len(seen), duplicates=sum(c - 1 for c in seen.values() if c > 1),
            keys_on_one_shard=all(len(v) == 1 for v in key_shard.values()), stream_order_kept=order_ok,
            shard_load_min_pct=round(100 * min(per_shard.values()) / even - 100, 1),
            shard_load_max_pct=round(100 * max(per_shard.values()) / even - 100, 1),
            masters=len({redis.get_node_from_key(s).name for s in ORDERS}),  # type: ignore[attr-defined]
        )  # fmt: skip
        await redis.aclose()


class LogCount(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage()[:160])


async def failover(n: int) -> None:
    os.environ["SCALE_RECORD"] = "1"
    counter = LogCount()
    logging.getLogger("streamtasks").addHandler(counter)
    with servers("cluster") as server:
        os.environ.update(SCALE_REDIS_URL=server.url, SCALE_CLUSTER="1")
        redis = await connect(server.url)
        producer = Producer(redis, shards={"orders": scale_app.SHARDS})
        sent: set[str] = set()
        failed_sends = 0
        victim = max(
            server.masters_now(), key=lambda m: sum(redis.get_node_from_key(s).port == m.port for s in ORDERS)
        )  # type: ignore[attr-defined]
        registry = scale_app.registry.only(["orders"])
        async with inline_workers(registry, redis, 2, visibility_timeout=5, reclaim_interval=0.5) as workers:
            for i in range(n):
                if i == n // 3:
                    await asyncio.to_thread(victim.kill)
                    killed_at = time.monotonic()
                item = {"key": f"k{i % 1000}", "seq": i // 1000}
                try:
                    await producer.send("orders", item, key=str(item["key"]))
                    sent.add(f"{item['key']}:{item['seq']}")
                except Exception:
                    failed_sends += 1
                    await asyncio.sleep(0.05)
            await asyncio.to_thread(server.wait_ok, 60)
            deadline = time.monotonic() + 120
            handled: set[str] = set()
            while time.monotonic() < deadline:
                handled = set()
                for s in ORDERS:
                    with contextlib.suppress(Exception):
                        handled |= {x.decode() for x in await redis.lrange(f"handled:{s}", 0, -1)}
                pending = 0
                for s in ORDERS:
                    with contextlib.suppress(Exception):
                        pending += int((await redis.xpending(s, GROUP))["pending"])
                if sent <= handled and pending == 0:
                    break
                await asyncio.sleep(1)
            running = [not w.stopping for w in workers]
        dead = 0
        for s in ORDERS:
            with contextlib.suppress(Exception):
                dead += int(await redis.xlen(f"{s}:dead"))
        emit(
            phase="failover", n=n, acked_by_redis=len(sent), failed_sends=failed_sends,
            handled=len(handled & sent), dead_letters=dead, missing=len(sent - handled),
            pending=pending, workers_running=running,
            seconds_after_kill=round(time.monotonic() - killed_at, 1),
            log_lines=counter.lines,
        )  # fmt: skip
        await redis.aclose()


async def soak(n: int, rate: int) -> None:
    with servers("node") as server:
        redis = await connect(server.url)
        producer = Producer(redis)
        curve: list[tuple[int, int, int]] = []
        async with inline_workers(scale_app.soak, redis, 1):
            started = time.perf_counter()
            sent = 0
            next_sample = 0.0
            while sent < n:
                elapsed = time.perf_counter() - started
                due = min(n, int(rate * elapsed)) - sent
                if due > 0:
                    await producer.send_many("{soak}", [{"i": sent + j} for j in range(due)])
                    sent += due
                if elapsed >= next_sample:
                    mem = int((await redis.info("memory"))["used_memory"])
                    curve.append((round(elapsed), int(await redis.xlen("{soak}")), mem // 1024 // 1024))
                    next_sample += 2.0
                await asyncio.sleep(0.01)
            while await acked(redis, ["{soak}"], "soak") < n:  # noqa: ASYNC110 - polling Redis
                await asyncio.sleep(0.2)
            await asyncio.sleep(2)
            final = int(await redis.xlen("{soak}"))
        emit(
            phase="soak", n=n, rate=rate, seconds=round(time.perf_counter() - started),
            max_len=max(c[1] for c in curve), final_len=final, curve_s_len_mb=curve,
        )  # fmt: skip
        await redis.aclose()


async def two_groups(n: int) -> None:
    """A stream with two groups, one consuming and one stopped; trimming in between."""
    from streamtasks.worker.trim import trim_once

    async def consume(redis: Redis, group: str) -> int:
        got = 0
        while True:
            reply: Any = await redis.xreadgroup(group, "c", {"s": ">"}, count=5000)
            entries = reply[0][1] if isinstance(reply, list) and reply else (reply or {}).get(b"s", [[]])[0]
            if not entries:
                return got
            await redis.xack("s", group, *[i for i, _ in entries])
            got += len(entries)

    with servers("node") as server:
        redis = await connect(server.url)
        await Producer(redis).send_many("s", [{"i": i} for i in range(n)])
        for g in ("consuming", "stopped"):
            await redis.xgroup_create("s", g, id="0")
        consumed = await consume(redis, "consuming")
        first = await trim_once(redis, "s", 0)
        kept = int(await redis.xlen("s"))
        read_late = await consume(redis, "stopped")
        retained = await trim_once(redis, "s", 3600)
        final = await trim_once(redis, "s", 0)
        emit(
            phase="two-groups", n=n, consumed_by_a=consumed, trimmed_while_b_stopped=first.removed,
            held_by=first.held_by, length_while_b_stopped=kept, b_read_when_started=read_late,
            trimmed_with_1h_retention=retained.removed, trimmed_with_0s_retention=final.removed,
            final_length=int(await redis.xlen("s")),
        )  # fmt: skip
        await redis.aclose()


def _hwm(pid: int) -> int:
    """The process' peak RSS (``VmHWM``), which sampling would miss between two polls."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def big(n: int, kb: int) -> None:
    with servers("node") as server:
        import redis as sync_redis

        r = sync_redis.Redis.from_url(server.url)
        pad = b"x" * (kb * 1024)
        for start in range(0, n, 4):
            pipe = r.pipeline(transaction=False)
            for i in range(start, min(n, start + 4)):
                pipe.xadd("big", {"i": str(i), "pad": pad})
            pipe.execute()
        # SCALE_STREAMTASKS_PATH: run the worker from another checkout (a before/after figure).
        tree = os.environ.get("SCALE_STREAMTASKS_PATH") or str(BENCH_DIR.parent)
        env = {**os.environ, "REDIS_URL": server.url, "PYTHONPATH": f"{BENCH_DIR}:{tree}",
               "RAY_USAGE_STATS_ENABLED": "0"}  # fmt: skip
        argv = [sys.executable, "-m", "streamtasks", "worker", "big_app:registry"]
        # cwd: ``python -m`` puts the working directory first on sys.path, before PYTHONPATH
        proc = subprocess.Popen(argv, env=env, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        peak, started = 0, time.monotonic()
        ps = psutil.Process(proc.pid)
        while time.monotonic() - started < 600:
            with contextlib.suppress(psutil.Error, OSError):
                peak = max(peak, ps.memory_info().rss, _hwm(proc.pid))
            groups = {g["name"].decode(): g for g in r.xinfo_groups("big")} if r.exists("big") else {}
            g = groups.get(GROUP)
            if g and int(g["entries-read"] or 0) >= n and int(g["pending"]) == 0:
                break
            time.sleep(0.1)
        drained = time.monotonic() - started
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(60)
        emit(
            phase="big", n=n, entry_kb=kb, driver_rss_peak_mb=peak // 1024 // 1024, seconds=round(drained, 1)
        )


PHASES = ["big", "throughput", "acceptance", "failover", "soak", "two-groups"]


@click.command()
@click.argument(
    "phase", type=click.Choice(["big", "throughput", "acceptance", "failover", "soak", "two-groups"])
)
@click.option("--n", type=int, default=None, help="Entries (default per phase, see the module docstring).")
@click.option("--kb", type=int, default=5120, show_default=True, help="big: entry size.")
@click.option("--rate", type=int, default=20000, show_default=True, help="soak: entries/s offered.")
def main(phase: str, n: int | None, kb: int, rate: int) -> None:
    """Run one phase; print its figures as one JSON line."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    defaults = {
        "big": 80,
        "throughput": 100_000,
        "acceptance": 200_000,
        "failover": 60_000,
        "soak": 1_000_000,
        "two-groups": 100_000,
    }
    count = n or defaults[phase]
    if phase == "big":
        big(count, kb)
    elif phase == "soak":
        asyncio.run(soak(count, rate))
    elif phase == "two-groups":
        asyncio.run(two_groups(count))
    else:
        asyncio.run({"throughput": throughput, "acceptance": acceptance, "failover": failover}[phase](count))


if __name__ == "__main__":
    main()
