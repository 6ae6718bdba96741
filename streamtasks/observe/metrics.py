"""Prometheus metrics and health endpoints of one worker process.

Two sources feed one private :class:`~prometheus_client.CollectorRegistry` (nothing global is
created at import time, so several workers can live in one process, e.g. in tests):

* :class:`SettledObserver` -- the worker's counts, read from its one
  :class:`~streamtasks.worker.tally.Tally` at scrape time (in actor mode: its actors' added
  up): entries handled / retried / dead-lettered / failed / reclaimed / lost / trimmed,
  handler batch duration (``BatchResult.duration``), batch sizes, and the end-to-end latency
  of each done entry, from its XADD (the entry id's milliseconds) to the moment its XACK was
  sent.
* :class:`RedisCollector` -- gauges sampled from Redis *at scrape time* (so a scrape agrees with
  ``XINFO``/``XPENDING`` read at the same moment) with :func:`~streamtasks.observe.inspect.sample_stream`:
  length, lag, pending, oldest pending age and idle, dead letters, consumers and their idle
  time; this worker's heartbeat age and the number of live workers of the group; batches in
  flight / queued per lane (from :meth:`Worker.snapshot`); and the cluster's resources in use
  (the worker's :class:`~streamtasks.worker.executors.Cluster`: Ray's).

The HTTP endpoints (``/metrics``, ``/healthz``, ``/readyz``) are in :mod:`.http`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from redis import exceptions as rx

from .. import keys
from ..logs import redact
from ..redisutil import REDIS_DOWN
from ..worker.events import Snapshot
from ..worker.executors import Cluster
from ..worker.tally import Buckets, Tally
from .inspect import group_info, sample_stream

if TYPE_CHECKING:
    from ..worker.events import Serving

log = logging.getLogger("streamtasks.metrics")

#: A scrape waits at most this long for Redis (and Ray) before answering with what it has.
SAMPLE_TIMEOUT_S = 5.0
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
        trimmed = CounterMetricFamily(
            "streamtasks_entries_trimmed",
            "Entries deleted by ack-aware trimming (every group had acked them), and dead letters "
            "past their retention; held_by: what kept the rest (a group, or retention).",
            labels=("stream", "held_by"),
        )
        for (stream, held_by), removed in sorted(self.tally.trimmed.items()):
            trimmed.add_metric([stream, held_by], float(removed))
        for lane in self.tally.lanes.values():
            lost.add_metric([lane.stream], float(lane.lost))
            reclaimed.add_metric([lane.stream], float(lane.reclaimed))
            labels = [lane.stream, lane.handler]
            values = {"handled": lane.handled, "retried": lane.retried, "dead": lane.dead,
                      "failed": lane.retried + lane.dead, "batches": lane.batches}  # fmt: skip
            for key, amount in values.items():
                families[key].add_metric(labels, float(amount))
            for key in histograms:
                buckets: Buckets = getattr(lane, key)
                families[key].add_metric(labels, buckets.cumulative(), buckets.total)
        yield from families.values()
        yield from (lost, reclaimed, trimmed)

    def describe(self) -> Iterator[Metric]:
        return iter(())


def _gauge(name: str, doc: str, labels: Sequence[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


class RedisCollector:
    """Gauges sampled from Redis, the Worker and Ray; :meth:`refresh` before each scrape."""

    def __init__(self, worker: Serving) -> None:
        self.worker = worker
        self._metrics: list[Metric] = []

    async def refresh(self) -> None:
        """Sample everything now; what cannot be sampled in time is left out of this scrape."""
        metrics = self._lane_metrics()
        try:
            metrics += await asyncio.wait_for(self._redis_metrics(), SAMPLE_TIMEOUT_S)
            up = 1.0
        except (*REDIS_DOWN, rx.ResponseError, asyncio.TimeoutError) as exc:
            log.debug("metrics: sampling Redis failed: %s", exc)
            up = 0.0
        redis_up = _gauge("streamtasks_redis_up", "1 if the last Redis sample succeeded.", ())
        redis_up.add_metric([], up)
        metrics.append(redis_up)
        with contextlib.suppress(asyncio.TimeoutError):
            metrics += await asyncio.wait_for(
                asyncio.to_thread(_cluster_metrics, self.worker.cluster), SAMPLE_TIMEOUT_S
            )
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._metrics

    def _lane_metrics(self) -> list[Metric]:
        snap = self.worker.snapshot()
        in_flight = _gauge("streamtasks_batches_in_flight", "Batches running on the executor.", ("stream",))
        queued = _gauge("streamtasks_batches_queued", "Batches read and waiting for a slot.", ("stream",))
        held = _gauge(
            "streamtasks_entries_held", "Entries this worker holds (queued or running).", ("stream",)
        )
        for name, lane in snap.lanes.items():
            in_flight.add_metric([name], lane.in_flight)
            queued.add_metric([name], lane.queued)
            held.add_metric([name], lane.held)
        info = _gauge("streamtasks_worker_info", "This worker (value 1).", ("group", "consumer", "state"))
        info.add_metric([snap.group, snap.consumer, snap.state], 1)
        started = _gauge("streamtasks_worker_start_time_seconds", "When this worker started.", ())
        started.add_metric([], snap.started_at)
        failing = _gauge(
            "streamtasks_background_loop_failing", "1 while a background loop is failing.", ("loop",)
        )
        for loop in snap.failing_loops:
            failing.add_metric([loop], 1)
        return [in_flight, queued, held, info, started, failing, *_actor_metrics(snap)]

    async def _redis_metrics(self) -> list[Metric]:
        w = self.worker
        now = time.time()
        samples = await asyncio.gather(
            *(
                sample_stream(w.redis, s, w.group, lane.dead_letter_stream, now=now, throughput=False)
                for s, lane in w.registry.handlers.items()
            )
        )
        lbl = ("stream", "group")
        fams = {
            "length": _gauge("streamtasks_stream_length", "XLEN of the stream.", lbl),
            "lag": _gauge(
                "streamtasks_group_lag", "Entries not yet delivered to the group (XINFO GROUPS lag).", lbl
            ),
            "pending": _gauge(
                "streamtasks_group_pending", "Delivered, not yet acked entries (XPENDING).", lbl
            ),
            "oldest_pending_age": _gauge(
                "streamtasks_oldest_pending_age_seconds",
                "Seconds since XADD of the oldest pending entry.",
                lbl,
            ),
            "oldest_pending_idle": _gauge(
                "streamtasks_oldest_pending_idle_seconds",
                "Seconds since the oldest pending entry was delivered or its lease renewed.",
                lbl,
            ),
            "dead_letters": _gauge("streamtasks_dead_letters", "XLEN of the dead-letter stream.", lbl),
        }
        consumers = _gauge("streamtasks_group_consumers", "Consumers in the group (XINFO CONSUMERS).", lbl)
        c_lbl = ("stream", "group", "consumer")
        c_idle = _gauge("streamtasks_consumer_idle_seconds", "Seconds since the consumer last read.", c_lbl)
        c_pending = _gauge("streamtasks_consumer_pending", "Entries pending on the consumer.", c_lbl)
        for s in samples:
            values = [s["stream"], w.group]
            for key, fam in fams.items():
                value = s[key]
                if (
                    key in ("oldest_pending_age", "oldest_pending_idle")
                    and value is None
                    and s["group_exists"]
                ):
                    value = 0.0  # nothing pending: age 0 rather than a gap in the graph
                if value is not None:
                    fam.add_metric(values, float(value))
            consumers.add_metric(values, len(s["consumers"]))
            for c in s["consumers"]:
                c_idle.add_metric([*values, c["name"]], c["idle"])
                c_pending.add_metric([*values, c["name"]], c["pending"])
        return [*fams.values(), consumers, c_idle, c_pending, *await self._heartbeat_metrics(now)]

    async def _heartbeat_metrics(self, now: float) -> list[Metric]:
        w = self.worker
        age = _gauge(
            "streamtasks_worker_heartbeat_age_seconds",
            "Age of this worker's heartbeat key (actor mode: the oldest of its actors').", (),
        )  # fmt: skip
        ages: list[float] = []
        consumers = w.heartbeat_consumers()
        for consumer in consumers:
            raw = await w.redis.get(keys.heartbeat_key(w.group, consumer))
            with contextlib.suppress(TypeError, ValueError, KeyError):  # missing or malformed: none
                ages.append(max(0.0, now - float(json.loads(raw or "")["ts"])))
        if ages and len(ages) == len(consumers):  # one missing: no sample, as for a worker without one
            age.add_metric([], max(ages))
        live = _gauge("streamtasks_live_workers", "Workers of the group with a live heartbeat.", ("group",))
        count = 0
        async for _ in w.redis.scan_iter(match=keys.heartbeat_pattern(w.group), count=500):
            count += 1
        live.add_metric([w.group], count)
        return [age, live]


def _actor_metrics(snap: Snapshot) -> list[Metric]:
    """Actor mode: per group of handlers (``handlers``: its streams), the actors wanted,
    reading, and asked of Ray but not reading yet."""
    if not snap.actors:
        return []
    actors = _gauge(
        "streamtasks_actors",
        "Actors of a group of handlers: desired, running (reading) and starting (not placed or "
        "not reading yet).",
        ("handlers", "state"),
    )
    for group in snap.actors:
        handlers = ",".join(group.handlers)
        for state, value in (
            ("desired", group.desired),
            ("running", group.running),
            ("starting", group.starting),
        ):
            actors.add_metric([handlers, state], value)
    return [actors]


def _cluster_metrics(cluster: Cluster | None) -> list[Metric]:
    """The cluster's resources (total and in use), if the worker runs on one; in a thread."""
    found = None if cluster is None else cluster.resources()
    if found is None:
        return []
    total_g = _gauge("streamtasks_ray_cluster_resources", "Ray cluster resources.", ("resource",))
    used_g = _gauge("streamtasks_ray_resources_used", "Ray cluster resources in use.", ("resource",))
    for name, amount in found["total"].items():
        total_g.add_metric([name], amount)
        used_g.add_metric([name], max(0.0, amount - found["available"].get(name, 0.0)))
    return [total_g, used_g]


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
        if snap.redis_down_since is not None:
            return "Redis unreachable (the worker is reconnecting)"
        cluster = w.cluster
        if cluster is not None and not await asyncio.to_thread(cluster.connected):
            return "Ray is not connected"
        return None
