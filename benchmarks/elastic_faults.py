"""``benchmarks/elastic.py``'s fault runs: kill -9 of an actor, worker restarts, a Sentinel
failover; and the two-node Ray cluster of ``step --cluster``. Workers serve
``elastic_app:registry`` (beside this file), whose handlers record what they did in a ledger
Redis of their own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import harness
from redis.asyncio import Redis

BENCH_DIR = Path(__file__).resolve().parent
STREAM, GROUP = "work", "elastic"
READY = re.compile(r"worker \S+ reading")


def _cluster_env() -> None:
    """The cluster's processes import this directory's app; and when a Ray token is at hand the
    cluster uses it, as a worker joining with ``--ray-address`` will (a driver with token
    authentication on a cluster without it sees every actor it makes die at once)."""
    os.environ["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR), os.environ.get("PYTHONPATH", "")])
    token = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    if "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN") or os.path.isfile(token)):
        os.environ["RAY_AUTH_MODE"] = "token"


def two_node_cluster() -> Any:
    """A Ray cluster of two nodes (one CPU each) on this machine, as the test suite starts one."""
    _cluster_env()
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    return cluster


def one_node_cluster() -> Any:
    _cluster_env()
    from ray.cluster_utils import Cluster

    return Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})


def stop_cluster(cluster: Any) -> None:
    """Leave the cluster (:func:`nodes_of_actors` joined it), then stop it."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()


def nodes_of_actors(address: str) -> dict[str, int]:
    """How many live streamtasks actors each node of the cluster at ``address`` runs."""
    import ray
    from ray._private import state

    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    rows = state.actors().values()
    alive = [r for r in rows if r.get("State") == "ALIVE" and "WorkerActor" in str(r.get("ActorClassName"))]
    counts: dict[str, int] = {}
    for row in alive:
        node = str(row["Address"]["NodeID"])[:12]
        counts[node] = counts.get(node, 0) + 1
    return counts


@contextlib.asynccontextmanager
async def redises(count: int) -> AsyncIterator[list[Any]]:
    """``count`` throwaway redis-servers."""
    services = harness.load_script(harness.SERVICES_PATH, "streamtasks_bench_services")
    root = Path(tempfile.mkdtemp(prefix="streamtasks-elastic-"))
    servers = [services.RedisServer(root / f"redis-{i}").start() for i in range(count)]
    try:
        yield servers
    finally:
        for server in servers:
            server.kill()
        shutil.rmtree(root, ignore_errors=True)


def worker(redis_url: str, ledger_url: str, args: list[str], log: Path, ray: str | None) -> Any:
    env = {"ELASTIC_LEDGER_URL": ledger_url, "PYTHONPATH": str(BENCH_DIR), "STREAMTASKS_LOG_LEVEL": "INFO"}
    argv = [
        sys.executable,
        "-m",
        "streamtasks",
        "worker",
        "elastic_app:registry",
        "--redis-url",
        redis_url,
        *args,
    ]
    if ray is not None:
        argv += ["--ray-address", ray]
    return harness.spawn("elastic", GROUP, argv, env, log, cwd=BENCH_DIR)


async def ready(w: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not READY.search(w.log.read_text(errors="replace")):
        w.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not start:\n{w.log_tail()}")
        await asyncio.sleep(0.1)


async def until(check: Callable[[], Any], timeout: float, what: str) -> float:
    start = time.monotonic()
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"{what}: not within {timeout:.0f}s")
        await asyncio.sleep(0.02)


async def send(redis: Redis, keys: list[str], **fields: str) -> None:
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        entry: dict[Any, Any] = {"k": key, **fields}
        pipe.xadd(STREAM, entry)
    await pipe.execute()


# -- kill -9 of an actor ----------------------------------------------------------------------


async def kill_runs(runs: int) -> list[float]:
    """Seconds from kill -9 of the actor running the marker to the marker running elsewhere."""
    cluster = one_node_cluster()
    took: list[float] = []
    try:
        async with redises(2) as (target, ledger_server):
            redis, ledger = Redis.from_url(target.url), Redis.from_url(ledger_server.url)
            for run in range(runs):
                await redis.flushall()
                await ledger.flushall()
                args = ["--actors", "2", "--visibility-timeout", "30"]
                w = worker(
                    target.url,
                    ledger_server.url,
                    args,
                    Path(tempfile.gettempdir()) / f"kill-{run}.log",
                    str(cluster.address),
                )
                try:
                    await ready(w)
                    await send(redis, [f"marker-{run}"], pid="1")
                    await send(redis, [f"f{run}-{i}" for i in range(200)])
                    await until(lambda: _len(ledger, 1), 60, "the marker ran")
                    first: Any = await ledger.lindex("pids", 0)
                    pid = int(first.split()[0])
                    os.kill(pid, signal.SIGKILL)
                    took.append(await until(lambda: _len(ledger, 2), 60, "the marker ran again"))
                    await ledger.set("release", 1)
                    await until(lambda: _handled(ledger, 201), 60, "all handled")
                    text = await asyncio.to_thread(w.log.read_text)
                    deaths = [line for line in text.splitlines() if " died: " in line]
                    said = f"{len(deaths)} death line(s), {text.count('Traceback')} tracebacks, "
                    said += f"{text.count('A worker died or was killed')} raylet lines"
                    print(
                        f"run {run + 1}: {took[-1]:.2f}s; {said}; {deaths[-1] if deaths else ''}",
                        file=sys.stderr,
                    )
                finally:
                    w.stop()
            await redis.aclose()
            await ledger.aclose()
    finally:
        stop_cluster(cluster)
    return took


async def _len(ledger: Redis, n: int) -> bool:
    return int(await ledger.llen("pids")) >= n


async def _handled(ledger: Redis, n: int) -> bool:
    return int(await ledger.hlen("handled")) >= n


# -- restarts ---------------------------------------------------------------------------------


async def _consumers(redis: Redis) -> int:
    try:
        return len(await redis.xinfo_consumers(STREAM, GROUP))
    except Exception:
        return 0


async def restart_runs(restarts: int, grace: float) -> dict[str, Any]:
    """``restarts`` workers restarted beside a live one while entries keep coming (every tenth
    an actor-mode worker of 2 actors, the others task mode in-process)."""
    cluster = one_node_cluster()
    inline = ["--mode", "tasks", "--executor", "inline", "--consumer-grace", str(grace)]
    logs = Path(tempfile.mkdtemp(prefix="streamtasks-restarts-"))
    try:
        async with redises(2) as (target, ledger_server):
            redis, ledger = Redis.from_url(target.url), Redis.from_url(ledger_server.url)
            keep = worker(
                target.url, ledger_server.url, ["--consumer", "keep", *inline], logs / "keep.log", None
            )
            await ready(keep)
            sent: list[str] = []
            stop = asyncio.Event()

            async def produce() -> None:
                while not stop.is_set():
                    batch = [f"e{len(sent) + i}" for i in range(10)]
                    await send(redis, batch, sleep="0.005")
                    sent.extend(batch)
                    await asyncio.sleep(0.05)

            producer = asyncio.create_task(produce())
            most, kinds = 0, {"SIGTERM": 0, "kill -9": 0}
            for i in range(restarts):
                actors = i % 10 == 9
                args = ["--actors", "2", "--consumer-grace", str(grace)] if actors else inline
                w = worker(
                    target.url,
                    ledger_server.url,
                    args,
                    logs / f"w{i}.log",
                    str(cluster.address) if actors else None,
                )
                await ready(w)
                await asyncio.sleep(0.3)
                if i % 2:
                    os.killpg(w.proc.pid, signal.SIGKILL)
                    w.proc.wait()
                    kinds["kill -9"] += 1
                else:
                    w.stop()
                    kinds["SIGTERM"] += 1
                most = max(most, await _consumers(redis))
            stop.set()
            await producer
            settle = await until(lambda: _handled(ledger, len(set(sent))), 120, "every entry handled")
            after_settle = await _consumers(redis)
            gone = await until(lambda: _eq(_consumers(redis), 1), 60 + grace, "back to the live consumer")
            handled = await ledger.hgetall("handled")
            twice = sum(1 for v in handled.values() if int(v) > 1)
            removed = await asyncio.to_thread(_removals, logs)
            keep.stop()
            await redis.aclose()
            await ledger.aclose()
    finally:
        stop_cluster(cluster)
        shutil.rmtree(logs, ignore_errors=True)
    return {
        "restarts": restarts,
        "by": kinds,
        "grace_s": grace,
        "most_consumers_at_once": most,
        "consumers_when_settled": after_settle,
        "settled_s": round(settle, 1),
        "consumers_at_the_end": 1,
        "back_to_1_after_settling_s": round(gone, 1),
        "hygiene_rounds_that_removed": removed,
        "sent": len(sent),
        "lost": len(set(sent)) - len(handled),
        "handled_twice": twice,
    }


def _removals(logs: Path) -> int:
    """Hygiene rounds that removed consumers, over every worker's log."""
    return sum(len(re.findall(r"removed \d+ consumers", p.read_text())) for p in logs.glob("*.log"))


async def _eq(value: Any, n: int) -> bool:
    return bool(await value == n)


# -- Sentinel failover ------------------------------------------------------------------------


async def _failover(sentinels: Any, old_port: int) -> tuple[Any, float]:
    """The new master, and when the sentinels all named it (monotonic)."""
    master = await asyncio.to_thread(sentinels.wait_failover, old_port)
    return master, time.monotonic()


async def sentinel_run(seconds: float, rate: float) -> dict[str, Any]:
    """kill -9 of the master a third into ``seconds`` of ``rate`` entries/s (each chunk waits
    for the replica, ``WAIT 1``, before it counts as sent; after the failover there is no
    replica to wait for, so entries count as sent once the new master took them)."""
    from streamtasks.connect import connect
    from streamtasks.redisutil import REDIS_DOWN

    services = harness.load_script(harness.SERVICES_PATH, "streamtasks_bench_services")
    root = Path(tempfile.mkdtemp(prefix="streamtasks-sentinel-"))
    sentinels = services.RedisSentinelServers(root / "sentinel").start()
    cluster = one_node_cluster()
    try:
        async with redises(1) as (ledger_server,):
            ledger = Redis.from_url(ledger_server.url)
            redis = await connect(sentinels.url)
            w = worker(
                sentinels.url, ledger_server.url, ["--actors", "2"], root / "worker.log", str(cluster.address)
            )
            await ready(w)
            sent: dict[str, int] = {}
            killed_at: list[float] = []
            start = time.monotonic()
            n = 0
            while time.monotonic() - start < seconds:
                if not killed_at and time.monotonic() - start > seconds / 3:
                    old = await asyncio.to_thread(sentinels.kill_master)
                    killed_at.append(time.monotonic())
                    moved = asyncio.create_task(_failover(sentinels, old.port))
                keys = [f"s{n + i}" for i in range(max(1, int(rate / 10)))]
                try:
                    pipe = redis.pipeline(transaction=False)
                    for key in keys:
                        pipe.xadd(STREAM, {"k": key, "sleep": "0.002"})
                    if not killed_at:
                        pipe.execute_command("WAIT", 1, 2000)
                    replies = await pipe.execute()
                    if killed_at or replies[-1] >= 1:
                        n += len(keys)
                        for key in keys:
                            sent[key] = sent.get(key, 0) + 1
                except REDIS_DOWN:
                    pass  # sent again (as new keys) once the new master answers
                await asyncio.sleep(0.1)
            failover, moved_at = await moved
            failover_s = moved_at - killed_at[0]
            settle = await until(lambda: _handled(ledger, len(sent)), 120, "every entry handled")
            handled = await ledger.hgetall("handled")
            log = w.log.read_text()
            w.stop()
            await redis.aclose()
            await ledger.aclose()
    finally:
        stop_cluster(cluster)
        sentinels.kill()
        shutil.rmtree(root, ignore_errors=True)
    back = re.findall(r"Redis is back after ([\d.]+)s", log)
    return {
        "sent": len(sent),
        "handled": len(handled),
        "lost": len(set(sent) - {k.decode() if isinstance(k, bytes) else k for k in handled}),
        "handled_twice": sum(1 for v in handled.values() if int(v) > 1),
        "failover_s": round(failover_s, 1),
        "new_master_port": failover.port,
        "outage_lines": log.count("Redis unavailable"),
        "back_lines": back,
        "settled_s": round(settle, 1),
    }
