"""The :class:`Worker`: a short composition of the stages, supervising every loop it starts.

read (:mod:`.read`) -> lanes (:mod:`.lanes`) -> dispatch (:mod:`.dispatch`, on an
:mod:`executor <.executors>`, running :mod:`.run`) -> settle (:mod:`.settle`); recovery
(:mod:`.recovery`) and shutdown (:mod:`.shutdown`) beside them. The worker emits
:mod:`events <.events>` and answers :meth:`Worker.snapshot`; nothing outside reads its stages.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence

from redis.asyncio import Redis

from ..redisutil import REDIS_DOWN
from ..registry import Registry
from .dispatch import Dispatcher
from .events import Events, ExecutorStarted, Listener, Snapshot, StateChanged
from .executors import Executor
from .gaps import GapWatch
from .health import RedisHealth
from .heartbeat import Heartbeat
from .hygiene import Hygiene
from .lanes import Lane
from .loops import Loops
from .pending import PendingEntries
from .preflight import check_handlers
from .read import Reader
from .recovery import Leases, Reclaimer
from .settings import WorkerSettings
from .settle import Settler
from .shutdown import Shutdown
from .startup import start_unless_stopped
from .supervise import Supervisor
from .tally import Tally
from .timers import Timers
from .trim import Trimmer

log = logging.getLogger("streamtasks.worker")


class Worker:
    """Serves a :class:`Registry` from Redis with an :class:`Executor` until :meth:`stop`."""

    def __init__(
        self,
        registry: Registry,
        redis: Redis,
        executor: Executor,
        settings: WorkerSettings | None = None,
        listeners: Sequence[Listener] = (),
        tally: Tally | None = None,
    ) -> None:
        if not registry.handlers:
            raise ValueError("the registry has no handlers")
        s = self.settings = settings or WorkerSettings()
        self.registry, self.redis, self.executor = registry, redis, executor
        self.group, self.consumer = registry.group, s.consumer
        self.lanes = {
            name: Lane(spec, spec.max_in_flight if s.prefetch is None else s.prefetch, s.max_batch_bytes)
            for name, spec in registry.handlers.items()
        }
        self.events = Events()
        #: Every count of this worker (a new incarnation for each worker, unless given one).
        self.tally = tally or Tally(uuid.uuid4().hex)
        self.events.subscribe(self.tally)
        for listener in listeners:
            self.events.subscribe(listener)
        emit = self.events.emit
        self.health = RedisHealth(emit)
        self.supervisor = Supervisor(emit)
        self.pending = PendingEntries(redis, self.group, self.consumer)
        settler = Settler(redis, self.pending, s.visibility_ms, s.dead_letter_maxlen)
        self.dispatcher = Dispatcher(executor, settler, self.health, emit, self._batch_done, self.supervisor)
        self.dispatcher.flows.bind(self.lanes)  # rate limits, max_concurrency (.flow)
        self.reader = Reader(redis, self.group, self.consumer, self.lanes)
        self.gaps = GapWatch(redis, self.group, self.lanes, self.health, emit, s.gap_check_interval)
        self.events.subscribe(self.gaps.on_event)
        self.reclaimer = Reclaimer(
            redis, self.group, self.consumer, s.visibility_ms, self.dispatcher, emit, self._start
        )
        self.leases = Leases(self.pending, s.visibility_timeout, self.health, self.dispatcher.flows)
        self.shutdown = Shutdown(redis, self.pending, s.grace_period, emit)
        self.trimmer = Trimmer(redis, self.health, emit)
        self.timers = Timers(redis, registry.handlers.values(), self.group, self.health, emit, s)
        self.hygiene = Hygiene(redis, self.group, self.consumer, self.lanes, s.consumer_grace, self.health)
        self.cluster = executor.cluster
        self.heartbeat = Heartbeat(redis, self.group, s, self.snapshot, self.cluster)
        self.started_at, self.state = time.time(), "starting"
        self.reading = asyncio.Event()  # set once the first XREADGROUP was sent
        self._stopping = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._executor_started = False
        self.loops = Loops(self, self._stopping)

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop reading; in-flight batches finish (within the grace period) and are settled."""
        self._stopping.set()
        self._wakeup.set()
        self.reclaimer.due.set()

    def reclaim_soon(self) -> None:
        """Look for claimable entries now (another consumer's were just handed over)."""
        self.reclaimer.due.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def heartbeat_consumers(self) -> list[str]:
        return [self.consumer]

    async def run(self) -> None:
        """Serve until :meth:`stop`; then hand back unstarted entries and drain."""
        specs = (lane.spec for lane in self.lanes.values())
        await check_handlers(self.redis, specs, self.group, self.consumer)  # before anything
        self.loops.start_heartbeat()
        try:
            await self._start_up()
            if not self._executor_started:  # stop() during start-up: nothing was read
                return
            self.loops.start()
            streams = ", ".join(self.lanes)
            extra = {"consumer": self.consumer, "group": self.group, "streams": list(self.lanes)}
            log.info("worker %s reading %s as group %s", self.consumer, streams, self.group, extra=extra)
            self._set_state("reading")
            await self._read_loop()
        finally:
            await self._drain()

    async def _start_up(self) -> None:
        groups = self.reader.ensure_groups()
        self._executor_started = await start_unless_stopped(self.executor.start(), groups, self._stopping)
        if self._executor_started:
            self.events.emit(ExecutorStarted())

    def snapshot(self) -> Snapshot:
        lanes = {
            name: lane.snapshot(self.tally.lane(name, lane.spec.name)) for name, lane in self.lanes.items()
        }
        return Snapshot(
            consumer=self.consumer,
            group=self.group,
            state=self.state,
            started_at=self.started_at,
            lanes=lanes,
            redis_down_since=self.health.down_since,
            failing_loops=dict(self.supervisor.failing),
        )

    def _set_state(self, state: str) -> None:
        self.state = state
        self.heartbeat.due.set()
        self.events.emit(StateChanged(state))

    # -- the data path ---------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while not self.stopping:
            readable = self.reader.readable()
            if not readable:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            self.reading.set()
            try:
                got = await self.reader.read(readable, self.settings.block)
            except REDIS_DOWN as exc:
                await self.health.failed(exc, "reading")
                continue
            self.health.ok()
            for lane, entries in got.items():
                self.gaps.saw(lane, entries)
                lane.sample_size(entries)
                lane.accept(entries)
            self._start()

    def _start(self) -> None:
        if not self.stopping:
            self.dispatcher.start(self.lanes.values())

    def _batch_done(self) -> None:
        self._start()
        self._wakeup.set()

    # -- shutdown --------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Hand back unstarted entries at once, finish in-flight ones within the grace period."""
        self._stopping.set()
        self._set_state("draining")
        await self.reader.close()
        await self.shutdown.hand_back_queued(self.lanes)
        await self.shutdown.finish_in_flight(self.lanes)
        await self.supervisor.close()
        await self.shutdown.sign_off(self.lanes)
        if self._executor_started:
            await self.executor.close()
        self._set_state("stopped")
