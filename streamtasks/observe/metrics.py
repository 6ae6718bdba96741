"""Prometheus metrics and health endpoints of one worker process.

Two sources feed one private :class:`~prometheus_client.CollectorRegistry` (nothing global is
created at import time, so several workers can live in one process, e.g. in tests):

* :class:`SettledObserver` -- the worker's counts, read from its one
  :class:`~streamtasks.worker.tally.Tally` at scrape time (in actor mode: its actors' added
  up): entries handled / retried / dead-lettered / failed / reclaimed / lost / trimmed,
  delayed entries moved into their stream, periodic ticks added and skipped,
  handler batch duration (``BatchResult.duration``), batch sizes, and the end-to-end latency
  of each done entry, from its XADD (the entry id's milliseconds) to the moment its XACK was
  sent.
* :class:`~.gauges.RedisCollector` -- gauges sampled from Redis, the worker and its cluster at
  scrape time (:mod:`.gauges`).

The HTTP endpoints (``/metrics``, ``/healthz``, ``/readyz``) are in :mod:`.http`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from redis import exceptions as rx

from ..logs import redact
from ..redisutil import REDIS_DOWN
from ..worker.tally import Buckets, Tally
from .gauges import SAMPLE_TIMEOUT_S, RedisCollector
from .inspect import group_info

if TYPE_CHECKING:
    from ..worker.events import Serving

log = logging.getLogger("streamtasks.metrics")

_LANE_LABELS = ("stream", "handler")


class SettledObserver:
    """Counters and histograms of a worker's :class:`Tally`, exposed as a collector of its
    registry: what the worker settled, found lost, reclaimed and trimmed."""

    def __init__(self, registry: CollectorRegistry, tally: Tally) -> None:
        self.tally = tally
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        counters = {
            "handled": ("streamtasks_entries_handled", "Entries whose handler succeeded (acked)."),
            "retried": ("streamtasks_entries_retried", "Failed attempts scheduled for a retry."),
            "dead": ("streamtasks_entries_dead_lettered", "Entries moved to the dead-letter stream."),
            "failed": ("streamtasks_entries_failed", "Failed attempts (retried + dead-lettered)."),
            "batches": ("streamtasks_batches", "Batches settled."),
        }
        histograms = {
            "duration": (
                "streamtasks_batch_duration_seconds",
                "Handler time per batch (in the Ray task or actor).",
            ),
            "latency": (
                "streamtasks_end_to_end_latency_seconds",
                "From XADD (the entry id's time) to the XACK of a done entry.",
            ),
            "size": ("streamtasks_batch_size", "Entries per settled batch."),
        }
        families: dict[str, Any] = {
            key: CounterMetricFamily(name, doc, labels=_LANE_LABELS) for key, (name, doc) in counters.items()
        }
        for key, (name, doc) in histograms.items():
            families[key] = HistogramMetricFamily(name, doc, labels=_LANE_LABELS)
        lost = CounterMetricFamily(
            "streamtasks_entries_lost",
            "Entries Redis no longer had when this worker came to them: trimmed or deleted before "
            "delivery, or while pending.",
            labels=("stream",),
        )
        reclaimed = CounterMetricFamily(
            "streamtasks_entries_reclaimed",
            "Entries idle past the visibility timeout (a dead consumer's) claimed to run again.",
            labels=("stream",),
        )
        waits = CounterMetricFamily(
            "streamtasks_flow_waits",
            "Times a flow limit (rate_limit, max_concurrency) held entries of a batch back to wait "
            "(held by the worker, not an attempt).",
            labels=(*_LANE_LABELS, "limit"),
        )
        trimmed = CounterMetricFamily(
            "streamtasks_entries_trimmed",
            "Entries deleted by ack-aware trimming (every group had acked them), and dead letters "
            "past their retention; held_by: what kept the rest (a group, or retention).",
            labels=("stream", "held_by"),
        )
        timed = {
            "moved": ("streamtasks_delayed_moved", "Delayed entries moved into their stream when due."),
            "ticks": ("streamtasks_periodic_ticks", "Entries a periodic handler got, one per tick."),
            "ticks_skipped": (
                "streamtasks_periodic_ticks_skipped",
                "Missed ticks not run after an outage (the handler's catch_up policy, or its bound).",
            ),
        }
        timers = {
            key: CounterMetricFamily(name, doc, labels=("stream",)) for key, (name, doc) in timed.items()
        }
        for (stream, held_by), removed in sorted(self.tally.trimmed.items()):
            trimmed.add_metric([stream, held_by], float(removed))
        for lane in self.tally.lanes.values():
            lost.add_metric([lane.stream], float(lane.lost))
            for limit, count in (("rate", lane.rate_waits), ("concurrency", lane.concurrency_waits)):
                if count:
                    waits.add_metric([lane.stream, lane.handler, limit], float(count))
            reclaimed.add_metric([lane.stream], float(lane.reclaimed))
            for key, family in timers.items():
                family.add_metric([lane.stream], float(getattr(lane, key)))
            labels = [lane.stream, lane.handler]
            values = {
                "handled": lane.handled,
                "retried": lane.retried,
                "dead": lane.dead,
                "failed": lane.retried + lane.dead,
                "batches": lane.batches,
            }
            for key, amount in values.items():
                families[key].add_metric(labels, float(amount))
            for key in histograms:
                buckets: Buckets = getattr(lane, key)
                families[key].add_metric(labels, buckets.cumulative(), buckets.total)
        yield from families.values()
        yield from (lost, reclaimed, waits, trimmed, *timers.values())

    def describe(self) -> Iterator[Metric]:
        return iter(())


class WorkerMetrics:
    """The registry, observer and collector of one worker; attaches the observer to it."""

    def __init__(self, worker: Serving) -> None:
        self.worker = worker
        self.registry = CollectorRegistry(auto_describe=False)
        self.observer = SettledObserver(self.registry, worker.tally)
        self.collector = RedisCollector(worker)
        self.registry.register(self.collector)

    async def exposition(self) -> bytes:
        """Sample Redis/Ray and return the text exposition of every metric."""
        await self.collector.refresh()
        return bytes(generate_latest(self.registry))

    async def readiness(self) -> str | None:
        """``None`` when ready, else why not (Redis, a missing group, Ray, stopping)."""
        w = self.worker
        snap = w.snapshot()
        if snap.state != "reading":
            return f"worker is {snap.state}"
        if snap.failing_loops:
            loop, error = sorted(snap.failing_loops.items())[0]
            return f"background loop {loop!r} is failing: {redact(error)}"
        try:
            await asyncio.wait_for(w.redis.ping(), SAMPLE_TIMEOUT_S)
            for stream in snap.lanes:
                if await group_info(w.redis, stream, w.group) is None:
                    return f"consumer group {w.group!r} missing on {stream!r}"
        except (*REDIS_DOWN, asyncio.TimeoutError) as exc:
            return f"Redis unreachable: {type(exc).__name__}"
        except rx.NoPermissionError:
            return "the Redis user may not run XINFO GROUPS: no permission (NOPERM)"
        if snap.redis_down_since is not None:
            return "Redis unreachable (the worker is reconnecting)"
        cluster = w.cluster
        if cluster is not None and not await asyncio.to_thread(cluster.connected):
            return "Ray is not connected"
        return None
