"""Gauges sampled from Redis, the worker and its cluster *at scrape time* (so a scrape agrees
with ``XINFO``/``XPENDING`` read at the same moment), with
:func:`~streamtasks.observe.inspect.sample_stream`: length, lag, pending, oldest pending age and
idle, dead letters, consumers and their idle time; delayed entries scheduled and the seconds to
the next due time, a periodic handler's last tick; priority levels' lag and pending, the flow
limits and the concurrency slots held; this worker's heartbeat age and the number of live
workers of the group; keys skipped and reads denied; batches in flight / queued per lane (from
the worker's snapshot); and the cluster's resources in use (the worker's
:class:`~streamtasks.worker.executors.Cluster`: Ray's)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily, Metric
from redis import exceptions as rx

from .. import keys
from ..fanout import declared_stream
from ..redisutil import REDIS_DOWN
from ..worker.events import Snapshot
from ..worker.executors import Cluster
from .discover import live_workers
from .inspect import sample_or_skip
from .readings import Findings
from .totals import level_totals

if TYPE_CHECKING:
    from ..worker.events import Serving

log = logging.getLogger("streamtasks.metrics")

#: A scrape waits at most this long for Redis (and Ray) before answering with what it has.
SAMPLE_TIMEOUT_S = 5.0


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
        found = Findings()
        samples = await asyncio.gather(
            *(
                sample_or_skip(w.redis, s, w.group, lane.dead_letter_stream, now, False, found)
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
                    and s["pending"] is not None
                ):
                    value = 0.0  # nothing pending: age 0 rather than a gap in the graph
                if value is not None:
                    fam.add_metric(values, float(value))
            consumers.add_metric(values, len(s["consumers"]))
            for c in s["consumers"]:
                c_idle.add_metric([*values, c["name"]], c["idle"])
                c_pending.add_metric([*values, c["name"]], c["pending"])
        heartbeats = await self._heartbeat_metrics(now, found)
        scheduled = _schedule_metrics(samples)
        flow = [*_level_metrics(samples, w.group), *await _flow_metrics(w)]
        per_stream = [*fams.values(), consumers, c_idle, c_pending, *scheduled, *flow]
        return [*per_stream, *heartbeats, *_findings_metrics(found)]

    async def _heartbeat_metrics(self, now: float, found: Findings) -> list[Metric]:
        w = self.worker
        age = _gauge(
            "streamtasks_worker_heartbeat_age_seconds",
            "Age of this worker's heartbeat key (actor mode: the oldest of its actors').",
            (),
        )
        live = _gauge("streamtasks_live_workers", "Workers of the group with a live heartbeat.", ("group",))
        workers = await live_workers(w.redis, w.group, now=now, findings=found)
        if not found.denied_any("SCAN", "MGET"):
            live.add_metric([w.group], len(workers))
        ages = {x["consumer"]: x["heartbeat_age"] for x in workers}
        consumers = w.heartbeat_consumers()
        if consumers and all(c in ages for c in consumers):  # one missing: no sample
            age.add_metric([], max(ages[c] for c in consumers))
        return [age, live]


def _findings_metrics(found: Findings) -> list[Metric]:
    """Keys skipped because their value does not fit, and reads the Redis user may not run."""
    unreadable = _gauge(
        "streamtasks_unreadable_keys",
        "Keys monitoring read and skipped because their value or type does not fit (e.g. a "
        "malformed heartbeat); status and the dashboard name them.",
        (),
    )
    unreadable.add_metric([], len(found.bad))
    denied = _gauge(
        "streamtasks_monitoring_denied",
        "1 for each Redis command this scrape needed and the Redis user may not run (NOPERM): "
        "the gauges it feeds are left out.",
        ("command",),
    )
    for command in found.denied:
        denied.add_metric([command], 1)
    return [unreadable, denied]


def _schedule_metrics(samples: Sequence[dict[str, Any]]) -> list[Metric]:
    """Per stream: delayed entries waiting, seconds to the soonest due time (negative:
    overdue; absent when none waits), and the time of a periodic handler's last tick."""
    count = _gauge("streamtasks_scheduled_entries", "Delayed entries waiting to be due.", ("stream",))
    due = _gauge(
        "streamtasks_scheduled_next_due_seconds",
        "Seconds until the soonest delayed entry is due (negative: overdue).",
        ("stream",),
    )
    last = _gauge(
        "streamtasks_periodic_last_tick_timestamp_seconds",
        "When the last tick of the stream's periodic handler was (seconds since the epoch).",
        ("stream",),
    )
    for s in samples:
        if s.get("scheduled") is not None:  # None: the user may not read it
            count.add_metric([s["stream"]], s["scheduled"])
        if s.get("next_due_in") is not None:
            due.add_metric([s["stream"]], s["next_due_in"])
        if s.get("periodic") and s["periodic"]["last_tick"] is not None:
            last.add_metric([s["stream"]], s["periodic"]["last_tick"])
    return [count, due, last]


def _level_metrics(samples: Sequence[dict[str, Any]], group: str) -> list[Metric]:
    """Per level of each prioritized stream: its lag and pending, its shards added up."""
    labels = ("stream", "level", "group")
    lag = _gauge("streamtasks_priority_level_lag", "Entries not yet delivered, per priority level.", labels)
    pending = _gauge(
        "streamtasks_priority_level_pending", "Delivered, not acked, per priority level.", labels
    )
    for base, total in level_totals(samples).items():
        for row in total["levels"]:
            values = [base, str(row["level"]), group]
            if row["lag"] is not None:
                lag.add_metric(values, float(row["lag"]))
            pending.add_metric(values, float(row["pending"]))
    return [lag, pending]


async def _flow_metrics(w: Serving) -> list[Metric]:
    """The flow limits of the worker's handlers, and the concurrency slots held right now
    (by every worker: the semaphore's unexpired members)."""
    labels = ("stream", "group")
    limits = _gauge("streamtasks_flow_limit", "A handler's flow limit (rate: calls/s).", (*labels, "limit"))
    held = _gauge(
        "streamtasks_concurrency_slots_held", "max_concurrency slots held now, all workers.", labels
    )
    seen: set[str] = set()
    for spec in w.registry.handlers.values():
        stream = declared_stream(spec)
        if stream in seen:
            continue
        seen.add(stream)
        if spec.rate_limit is not None:
            limits.add_metric([stream, w.group, "rate"], spec.rate_limit.per_second)
        if spec.max_concurrency is not None:
            limits.add_metric([stream, w.group, "concurrency"], float(spec.max_concurrency))
            now_ms = int(time.time() * 1000)
            count = await w.redis.zcount(keys.concurrency_key(w.group, stream), now_ms, "+inf")
            held.add_metric([stream, w.group], float(count))
    return [limits, held]


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
