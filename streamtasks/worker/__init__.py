"""The worker: one module per stage of the path an entry takes.

========================  =================================================================
:mod:`.read`              consumer groups and ``XREADGROUP`` (restart point after NOGROUP)
:mod:`.lanes`             per-handler queues, in-flight batches, held ids, batch sizing
:mod:`.dispatch`          start batches on the executor, deadlines, settle each batch
:mod:`.executors`         where a batch runs (the Executor protocol) and the inline executor
:mod:`.run`               the batch runner (in a thread, an actor or a Ray task): decode, call, outcomes
:mod:`.settle`            the settlement plan and the pipeline that applies it
:mod:`.pending`           this consumer's pending entries: lease, retry delay, hand-back
:mod:`.recovery`          reclaim (XAUTOCLAIM, delivery limit, lost ids) and leases
:mod:`.health`            Redis outages: backoff, one report per incident (per worker in actor mode)
:mod:`.gaps`              entries trimmed before delivery; a Redis that came back older
:mod:`.preflight`         start-up check of the Redis user's permissions
:mod:`.shutdown`          hand back, grace period, sign off
:mod:`.supervise`         background loops: logged, visible and restarted when they fail
:mod:`.events`            the worker's face: events, its read-only snapshot, ``Serving``
:mod:`.tally`             every count of a worker: counters and histograms, summable
:mod:`.heartbeat`         the heartbeat key, written in one place
:mod:`.settings`          :class:`WorkerSettings` and the consumer name
:mod:`.trim`              ack-aware trimming
:mod:`.startup`           the executor's start beside the groups' creation
:mod:`.worker`            :class:`Worker`, the composition
========================  =================================================================

No module here imports Ray: Ray's executor and actor mode are in :mod:`streamtasks.ray`.
"""

from .events import Event, Events, LaneSnapshot, Snapshot
from .executors import Cluster, Executor, InlineExecutor
from .run import BatchResult, RawEntry, run_batch
from .settings import WorkerSettings, default_consumer_name
from .worker import Worker

__all__ = [
    "BatchResult",
    "Cluster",
    "Event",
    "Events",
    "Executor",
    "InlineExecutor",
    "LaneSnapshot",
    "RawEntry",
    "Snapshot",
    "Worker",
    "WorkerSettings",
    "default_consumer_name",
    "run_batch",
]
