"""The worker: one module per stage of the path an entry takes.

========================  =================================================================
:mod:`.read`              consumer groups and ``XREADGROUP`` (restart point after NOGROUP)
:mod:`.lanes`             per-handler queues, in-flight batches, held ids, batch sizing
:mod:`.dispatch`          start batches on the executor, deadlines, settle each batch
:mod:`.executors`         where a batch runs: Ray (one task per batch) or inline
:mod:`.run`               the batch runner inside the Ray task: decode, call, outcomes
:mod:`.settle`            the settlement plan and the pipeline that applies it
:mod:`.pending`           this consumer's pending entries: lease, retry delay, hand-back
:mod:`.recovery`          reclaim (XAUTOCLAIM, delivery limit, lost ids) and leases
:mod:`.health`            Redis outages: backoff, one report per incident (per worker in actor mode)
:mod:`.gaps`              entries trimmed before delivery; a Redis that came back older
:mod:`.preflight`         start-up check of the Redis user's permissions
:mod:`.shutdown`          hand back, grace period, sign off
:mod:`.supervise`         background loops: logged, visible and restarted when they fail
:mod:`.events`            events the worker emits and its read-only snapshot
:mod:`.tally`             counters and histograms of settled batches, summable (metrics)
:mod:`.trim`              ack-aware trimming
:mod:`.startup`           the executor's start beside the groups' creation
:mod:`.inline_start`      the worker process handles entries while Ray starts
:mod:`.worker`            :class:`Worker`, the composition
:mod:`.actors`            actor mode: a :class:`Worker` in each Ray actor, supervised
========================  =================================================================
"""

from .events import Event, Events, LaneSnapshot, Snapshot
from .executors import Executor, InlineExecutor, RayExecutor
from .run import BatchResult, RawEntry, run_batch
from .worker import Worker, WorkerSettings, default_consumer_name

__all__ = [
    "BatchResult",
    "Event",
    "Events",
    "Executor",
    "InlineExecutor",
    "LaneSnapshot",
    "RawEntry",
    "RayExecutor",
    "Snapshot",
    "Worker",
    "WorkerSettings",
    "default_consumer_name",
    "run_batch",
]
