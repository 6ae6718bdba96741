"""``streamtasks worker --metrics-port``: /metrics, /healthz, /readyz of a real worker process
(real Redis, joined to the session's Ray), compared with what Redis says directly."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from obs_app import DONE_KEY, GATE_KEY
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from support.http import get, wait_ready
from support.modes import MODE, one_consumer
from support.procs import free_port
from support.waiting import wait_until

from streamtasks.keys import heartbeat_key

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "streamtasks"]
GROUP = "obs-tests"
pytestmark = pytest.mark.integration


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of one /metrics scrape."""
    status, text = await get(port, "/metrics")
    assert status == 200, text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: dict[Any, float], name: str, **labels: str) -> float:
    return metrics[(name, tuple(sorted(labels.items())))]


def start_worker(
    spawn: Any, redis_url: str, ray_address: str, port: int, streams: str, consumer: str, *args: str
) -> Any:
    worker = spawn(
        [*CLI, "worker", "obs_app:registry", "--redis-url", redis_url, "--ray-address", ray_address,
         "--streams", streams, "--consumer", consumer, "--metrics-port", str(port), *args],
        cwd=HERE,
    )  # fmt: skip
    worker.wait_for_log(r"metrics on http://", timeout=30)
    return worker


async def group_row(redis: Redis, stream: str) -> dict[str, Any]:
    rows = await redis.xinfo_groups(stream)
    return next(r for r in rows if r["name"] == GROUP.encode())


async def test_metrics_gauges_match_xinfo_and_xpending_for_a_stalled_backlog(
    redis: Redis, redis_url: str, ray_address: str, spawn: Any
) -> None:
    """With 3 dead letters, one batch stuck behind a gate and a backlog, /metrics reports the
    same length, lag, pending, dead letters and oldest-pending age/idle that XINFO GROUPS,
    XPENDING and XLEN give when read right after the scrape; once the gate opens the backlog
    drains and the counters show every entry."""
    port = free_port()
    for _ in range(3):
        await redis.xadd("obs_work", {"bad": "1"})
    args, consumer = one_consumer("obs-metrics-1")  # actor mode: one actor, obs-metrics-1-a0
    worker = start_worker(spawn, redis_url, ray_address, port, "obs_work", "obs-metrics-1", *args[2:])
    await wait_ready(port)
    assert await get(port, "/healthz") == (200, "ok\n")
    await wait_until(lambda: _xlen_is(redis, "obs_work:dead", 3), timeout=60)

    pipe = redis.pipeline(transaction=True)  # all at once, so the first read takes a full batch
    pipe.xadd("obs_work", {"gate": "1"})
    for i in range(30):
        pipe.xadd("obs_work", {"n": str(i)})
    await pipe.execute()

    async def stalled() -> bool:  # one batch running (gated), one prefetched, the rest undelivered
        row = await group_row(redis, "obs_work")
        return int(row["pending"]) == 10 and int(row["lag"]) == 21

    await wait_until(stalled, timeout=30)
    await asyncio.sleep(1.0)  # let the oldest pending entry age a little
    metrics = await scrape(port)
    checked = time.time()
    row = await group_row(redis, "obs_work")
    summary = await redis.xpending("obs_work", GROUP)
    oldest = summary["min"].decode()
    [detail] = await redis.xpending_range("obs_work", GROUP, oldest, oldest, 1)
    lbl = {"stream": "obs_work", "group": GROUP}
    seen = {
        "length": (value(metrics, "streamtasks_stream_length", **lbl), await redis.xlen("obs_work")),
        "lag": (value(metrics, "streamtasks_group_lag", **lbl), int(row["lag"])),
        "pending": (value(metrics, "streamtasks_group_pending", **lbl), int(summary["pending"])),
        "dead_letters": (
            value(metrics, "streamtasks_dead_letters", **lbl),
            await redis.xlen("obs_work:dead"),
        ),
        "oldest_pending_age": (
            value(metrics, "streamtasks_oldest_pending_age_seconds", **lbl),
            checked - int(oldest.split("-")[0]) / 1000,
        ),
        "oldest_pending_idle": (
            value(metrics, "streamtasks_oldest_pending_idle_seconds", **lbl),
            detail["time_since_delivered"] / 1000,
        ),
    }
    print("metrics vs redis:", seen)
    for key in ("length", "lag", "pending", "dead_letters"):
        assert seen[key][0] == seen[key][1], (key, seen[key])
    assert seen == {**seen, "length": (34, 34), "lag": (21, 21), "pending": (10, 10), "dead_letters": (3, 3)}
    # Ages: the scrape came first, so its value is at most the time between the two reads
    # smaller (well under 1 s here), and never larger.
    for key in ("oldest_pending_age", "oldest_pending_idle"):
        scraped, direct = seen[key]
        assert direct - 1.0 <= scraped <= direct + 0.01, (key, seen[key])
    assert seen["oldest_pending_age"][0] >= 1.0
    assert value(metrics, "streamtasks_group_consumers", **lbl) == 1
    assert value(metrics, "streamtasks_consumer_pending", **lbl, consumer=consumer) == 10
    assert value(metrics, "streamtasks_batches_in_flight", stream="obs_work") == 1
    assert value(metrics, "streamtasks_batches_queued", stream="obs_work") == 1
    assert value(metrics, "streamtasks_live_workers", group=GROUP) == 1
    assert 0 <= value(metrics, "streamtasks_worker_heartbeat_age_seconds") < 5
    assert value(metrics, "streamtasks_redis_up") == 1
    assert value(metrics, "streamtasks_ray_cluster_resources", resource="CPU") >= 1
    if MODE == "tasks":  # the gated batch's task holds a CPU (an actor holds none it is not asked for)
        assert value(metrics, "streamtasks_ray_resources_used", resource="CPU") >= 1

    await redis.set(GATE_KEY, "1")

    async def drained() -> bool:
        row = await group_row(redis, "obs_work")
        return int(row["pending"]) == 0 and int(row["lag"]) == 0

    await wait_until(drained, timeout=60)
    handler = {"stream": "obs_work", "handler": "obs_app.work"}
    scraped: dict[Any, float] = {}

    async def counted() -> bool:  # actor mode: the worker process polls its actors' tallies
        scraped.update(await scrape(port))
        return value(scraped, "streamtasks_entries_handled_total", **handler) == 31

    await wait_until(counted, timeout=10 if MODE == "actors" else 0.1, interval=0.2)
    metrics = scraped
    assert value(metrics, "streamtasks_entries_dead_lettered_total", **handler) == 3
    assert value(metrics, "streamtasks_entries_failed_total", **handler) == 3
    assert value(metrics, "streamtasks_end_to_end_latency_seconds_count", **handler) == 31
    assert value(metrics, "streamtasks_batch_size_sum", **handler) == 34
    assert value(metrics, "streamtasks_group_pending", **lbl) == 0
    assert value(metrics, "streamtasks_oldest_pending_age_seconds", **lbl) == 0
    worker.terminate()
    assert worker.wait(30) == 0, worker.output_tail()


async def _xlen_is(redis: Redis, stream: str, n: int) -> bool:
    return int(await redis.xlen(stream)) == n


# Sleeps placed just above the lower edge of latency buckets (0.1-0.25, 0.25-0.5, 0.5-1,
# 1-2.5 s), so the time between the XADD and the handler's start, and between its completion
# and the XACK, cannot move an entry across the upper edge: that was up to 150 ms with two test
# sessions on two cores (a 0.35 s sleep measured 0.48 s, and over 0.5 s at its XACK). A
# latency is never below its sleep. The first entry pays for the Ray worker importing the app
# (~80 ms seen): it gets the wide 2.5-5 s bucket.
SLEEPS = [3.5] + [0.11, 0.26, 0.55, 1.1] * 2


@pytest.mark.parametrize("mode", ["tasks", "actors"])
async def test_latency_histogram_agrees_with_independently_measured_latency(
    redis: Redis, redis_url: str, ray_address: str, spawn: Any, mode: str
) -> None:
    """Entries XADDed at known times, each handled after a known sleep: the end-to-end latency
    histogram has the same count in every bucket as the latencies the test measures itself
    (XADD call -> handler completion), and its sum is within a few ms per entry of theirs. In
    actor mode too, where each actor keeps the histogram of its own batches and the worker
    process adds them up."""
    port = free_port()
    args = ["--mode", mode] + (["--actors", "2"] if mode == "actors" else [])
    consumer = f"obs-latency-{mode}"
    worker = start_worker(spawn, redis_url, ray_address, port, "obs_latency", consumer, *args)
    await wait_ready(port)
    independent = []
    for sleep in SLEEPS:
        sent = time.time()
        entry_id = (await redis.xadd("obs_latency", {"sleep": str(sleep)})).decode()

        async def done(entry_id: str = entry_id) -> bool:
            return bool(await redis.hexists(DONE_KEY, entry_id))

        await wait_until(done, timeout=30, interval=0.01)
        independent.append(float(await redis.hget(DONE_KEY, entry_id)) - sent)

    async def all_acked() -> bool:
        return int((await redis.xpending("obs_latency", GROUP))["pending"]) == 0

    await wait_until(all_acked, timeout=10, interval=0.01)
    handler = {"stream": "obs_latency", "handler": "obs_app.latency"}
    name = "streamtasks_end_to_end_latency_seconds"

    async def counted() -> bool:  # actor mode: the worker process polls its actors every second
        counts = await scrape(port)
        return counts.get((f"{name}_count", tuple(sorted(handler.items())))) == len(SLEEPS)

    await wait_until(counted, timeout=10, interval=0.2)
    metrics = await scrape(port)
    assert value(metrics, "streamtasks_batches_total", **handler) == len(SLEEPS)
    assert value(metrics, "streamtasks_batch_size_sum", **handler) == len(SLEEPS)
    assert value(metrics, "streamtasks_batch_duration_seconds_count", **handler) == len(SLEEPS)
    handler_time = value(metrics, "streamtasks_batch_duration_seconds_sum", **handler)
    assert sum(SLEEPS) <= handler_time <= sum(SLEEPS) + 0.05 * len(SLEEPS)  # the sleeps, and a bit
    assert value(metrics, f"{name}_count", **handler) == len(SLEEPS)
    for le in ("0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "+Inf"):
        expected = sum(1 for lat in independent if lat <= float(le))
        assert value(metrics, f"{name}_bucket", **handler, le=le) == expected, (le, independent)
    total = value(metrics, f"{name}_sum", **handler)
    diff = total - sum(independent)
    print(f"latency: histogram sum {total:.4f}s, independent sum {sum(independent):.4f}s, "
          f"diff {diff * 1000:.1f} ms over {len(SLEEPS)} entries; independent {independent}")  # fmt: skip
    # The histogram measures from the id's millisecond (<= 1 ms + one round trip after the
    # test's clock read) to the XACK (after the handler's clock read, plus the Ray result and
    # settle pipeline): per entry at most a few ms below, some ms above.
    assert -0.005 * len(SLEEPS) <= diff <= 0.1 * len(SLEEPS)
    worker.terminate()
    assert worker.wait(30) == 0, worker.output_tail()


async def test_an_actor_mode_worker_shows_its_actors_heartbeats_with_rays_resources(
    redis: Redis, redis_url: str, ray_address: str, spawn: Any
) -> None:
    """Actor mode, whatever mode the run is in: once its actors read, the worker process' own
    heartbeat is gone; ``/metrics`` gives the age of its actors' heartbeats, and each actor's
    heartbeat carries Ray's resources, as a task-mode worker's does (the dashboard shows them)."""
    port = free_port()
    args = ["--mode", "actors", "--actors", "2"]
    worker = start_worker(spawn, redis_url, ray_address, port, "obs_latency", "obs-actors", *args)
    await wait_ready(port)
    actors = ["obs-actors-a0", "obs-actors-a1"]

    async def actors_beat_with_ray() -> bool:
        beats = [await redis.get(heartbeat_key(GROUP, a)) for a in actors]
        return all(b and (json.loads(b).get("ray") or {}).get("total", {}).get("CPU") for b in beats)

    await wait_until(actors_beat_with_ray, timeout=30, interval=0.2)
    assert not await redis.exists(heartbeat_key(GROUP, "obs-actors"))
    metrics = await scrape(port)
    assert 0 <= value(metrics, "streamtasks_worker_heartbeat_age_seconds") < 5
    worker.terminate()
    assert worker.wait(30) == 0, worker.output_tail()
