"""The worker's router: read -> batch -> dispatch -> settle, plus recovery.

One :class:`Worker` per process. It reads every stream of its registry with one
``XREADGROUP``, groups entries into batches per handler, runs each batch on the executor
(one Ray task per batch), and settles the outcome of every entry:

* done  -> ``XACK`` (after the handler returned, never before);
* retry -> the entry stays pending; its idle time is set so that it becomes claimable
  exactly ``delay`` seconds from now, and any worker's reclaim step runs it again;
* dead  -> added to the dead-letter stream and acked in one Lua script.

Delayed retries live in the pending list (PEL), not in a side structure: the entry keeps its
id (so idempotency keys stay stable), the retry count *is* Redis' delivery counter (so it
survives restarts), and a crashed worker's entries are recovered by the very same
``XAUTOCLAIM`` step. The price: a retry delay is capped at the visibility timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, Protocol

from attrs import define, field, frozen
from redis import exceptions as rx
from redis.asyncio import Redis

from . import keys, lua
from .deadletter import dead_letter_fields
from .executors import BatchResult, Executor, RawEntry
from .registry import HandlerSpec, Registry
from .retry import Dead, ErrorInfo, RetryLater

log = logging.getLogger("streamtasks.worker")

#: XREADGROUP block (seconds) while some stream is left out of the read because its lane is
#: full: the read returns soon enough to pick that stream up again when a batch finishes.
BUSY_BLOCK = 0.005
#: Entries in a lane's first read when its stream was empty at start (sizes still unknown).
FIRST_READ_COUNT = 50
#: Idle time given to entries handed back on shutdown: far past any visibility timeout.
HANDBACK_IDLE_MS = 10**12
_REDIS_DOWN = (rx.ConnectionError, rx.TimeoutError, rx.BusyLoadingError, ConnectionError, OSError)


def default_consumer_name() -> str:
    """``<host>-<pid>-<random>``: unique per process, readable in ``XINFO CONSUMERS``."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@frozen
class WorkerSettings:
    """Knobs of the read/settle loop. Times in seconds."""

    consumer: str = field(factory=default_consumer_name)
    block: float = 1.0
    visibility_timeout: float = 30.0
    reclaim_interval: float = 1.0
    grace_period: float = 30.0
    prefetch: int | None = None  # batches read ahead per handler; default: max_in_flight
    heartbeat_interval: float = 2.0
    heartbeat_ttl: float = 10.0
    dead_letter_maxlen: int = 0  # approximate MAXLEN of dead-letter streams; 0 = unbounded
    max_batch_bytes: int = 4 * 1024 * 1024  # big entries make smaller batches; 0 = count only

    @property
    def visibility_ms(self) -> int:
        return int(self.visibility_timeout * 1000)


@define
class Batch:
    entries: list[RawEntry]

    @property
    def ids(self) -> list[str]:
        return [e[0] for e in self.entries]


@define
class Counters:
    handled: int = 0
    retried: int = 0
    dead: int = 0
    batches: int = 0
    reclaimed: int = 0
    lost: int = 0


@define(eq=False)
class Lane:
    """One handler and its stream: queue of read batches, batches in flight, held ids."""

    spec: HandlerSpec
    prefetch: int
    max_batch_bytes: int = 0  # 0: batches bounded by count only
    entry_bytes: int = 0  # running estimate of an entry's size, sampled from reads
    queue: deque[Batch] = field(factory=deque)
    in_flight: dict[asyncio.Task[None], Batch] = field(factory=dict)
    held: dict[str, float] = field(factory=dict)  # entry id -> last lease renewal (monotonic)
    cursor: str = "0-0"
    last_id: str | None = None
    counters: Counters = field(factory=Counters)

    @property
    def stream(self) -> str:
        return self.spec.stream

    @property
    def free_batches(self) -> int:
        return self.spec.max_in_flight + self.prefetch - len(self.in_flight) - len(self.queue)

    @property
    def batch_size(self) -> int:
        """``spec.batch_size``, fewer when entries are big: a batch stays under max_batch_bytes,
        so memory is bounded by bytes (in-flight + prefetched batches), not only by count."""
        if not self.max_batch_bytes:
            return self.spec.batch_size
        if not self.entry_bytes:  # the stream was empty at start: a small read measures entries
            return min(self.spec.batch_size, FIRST_READ_COUNT)
        return max(1, min(self.spec.batch_size, self.max_batch_bytes // self.entry_bytes))

    def sample_size(self, entries: Sequence[RawEntry]) -> None:
        """Update the entry-size estimate from one entry of a read (cheap: one entry a read)."""
        size = sum(map(len, entries[len(entries) // 2][1]))
        self.entry_bytes = size if not self.entry_bytes else (3 * self.entry_bytes + size) // 4

    def accept(self, entries: Sequence[RawEntry]) -> None:
        """Split entries into batches of ``batch_size`` and queue them."""
        size = self.batch_size
        now = time.monotonic()
        for start in range(0, len(entries), size):
            chunk = list(entries[start : start + size])
            self.queue.append(Batch(chunk))
            for entry_id, _, _ in chunk:
                self.held[entry_id] = now


@define
class Settlement:
    """What to do with each entry of a settled batch."""

    done: list[str] = field(factory=list)
    retried_before: list[str] = field(factory=list)  # done entries with a failure record
    delays: dict[int, list[str]] = field(factory=dict)  # idle ms to set -> entry ids
    dead: list[tuple[RawEntry, ErrorInfo]] = field(factory=list)

    @classmethod
    def of(cls, entries: Sequence[RawEntry], result: BatchResult, idle_for: Any) -> Settlement:
        plan = cls()
        for index, entry in enumerate(entries):
            outcome = result.failed.get(index)
            if outcome is None:
                plan.done.append(entry[0])
                if entry[2] > 1:
                    plan.retried_before.append(entry[0])
            elif isinstance(outcome, RetryLater):
                plan.delays.setdefault(idle_for(outcome.delay), []).append(entry[0])
            else:
                plan.dead.append((entry, outcome.error))
        return plan


class Observer(Protocol):
    """Told about every settled batch (metrics plug in here)."""

    def settled(
        self, spec: HandlerSpec, entries: Sequence[RawEntry], plan: Settlement, result: BatchResult
    ) -> None: ...


#: Failures this soon after Redis came back belong to the same incident (each pooled
#: connection finds out on its own that the server went away).
INCIDENT_WINDOW_S = 10.0


class RedisHealth:
    """Reconnect backoff shared by every loop: one log line per outage, not per retry.

    One outage is one incident even though every loop and every pooled connection trips
    over it separately: a failure within :data:`INCIDENT_WINDOW_S` of recovering is logged
    at debug level only.
    """

    def __init__(self) -> None:
        self.down_since: float | None = None
        self.back_at: float | None = None
        self.quiet = False
        self.delay = 0.1

    async def failed(self, exc: BaseException, doing: str) -> None:
        if self.down_since is None:
            now = time.monotonic()
            self.down_since = now
            self.quiet = self.back_at is not None and now - self.back_at < INCIDENT_WINDOW_S
            log.log(
                logging.DEBUG if self.quiet else logging.WARNING,
                "Redis unavailable while %s (%s: %s); retrying with backoff", doing, type(exc).__name__, exc,
            )  # fmt: skip
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, 5.0)

    def ok(self) -> None:
        if self.down_since is not None:
            if not self.quiet:
                log.warning("Redis is back after %.1fs", time.monotonic() - self.down_since)
            self.down_since = None
            self.back_at = time.monotonic()
            self.delay = 0.1


class Worker:
    """Serves a :class:`Registry` from Redis with an :class:`Executor` until :meth:`stop`."""

    def __init__(
        self,
        registry: Registry,
        redis: Redis,
        executor: Executor,
        settings: WorkerSettings | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        self.registry = registry
        self.redis = redis
        self.executor = executor
        self.settings = settings or WorkerSettings()
        self.group = registry.group
        self.consumer = self.settings.consumer
        self.lanes = {
            s: Lane(
                spec,
                self.settings.prefetch if self.settings.prefetch is not None else spec.max_in_flight,
                self.settings.max_batch_bytes,
            )
            for s, spec in registry.handlers.items()
        }
        if not self.lanes:
            raise ValueError("the registry has no handlers")
        self.observers = list(observers)
        self.health = RedisHealth()
        self.started_at = time.time()
        self.reading = asyncio.Event()  # set once the first XREADGROUP was sent
        self._stopping = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        # XREADGROUP through a client without redis-py's reply parser: entries stay the flat
        # [name, value, ...] lists hiredis returns, with no per-entry dict on the hot path.
        self._reader = Redis(connection_pool=redis.connection_pool)
        self._reader.response_callbacks.pop("XREADGROUP", None)
        self._reclaim_script = redis.register_script(lua.RECLAIM)
        self._reset_script = redis.register_script(lua.RESET)
        self._dead_script = redis.register_script(lua.DEAD_LETTER)

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop reading; in-flight batches finish (within the grace period) and are settled."""
        self._stopping.set()
        self._wakeup.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        """Serve until :meth:`stop`; then hand back unstarted entries and drain."""
        await self._ensure_groups()
        await self.executor.start()
        for loop in (self._reclaim_loop, self._lease_loop, self._heartbeat_loop):
            self._spawn(loop())
        log.info("worker %s reading %s as group %s", self.consumer, ", ".join(self.lanes), self.group)
        try:
            await self._read_loop()
        finally:
            await self._drain()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- read ------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while not self.stopping:
            readable = [lane for lane in self.lanes.values() if lane.free_batches > 0]
            if not readable:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            response = await self._read(readable)
            streams = response.items() if isinstance(response, dict) else response or ()  # RESP3 / RESP2
            for raw_stream, entries in streams:
                lane = self.lanes[_text(raw_stream)]
                decoded = [(i.decode(), f, 1) for i, f in entries]
                if decoded:
                    lane.last_id = decoded[-1][0]
                    lane.sample_size(decoded)
                    lane.accept(decoded)
            self._dispatch()

    async def _read(self, lanes: list[Lane]) -> Any:
        count = max(lane.batch_size for lane in lanes)
        # While a busy stream is left out (its lane is full), block only briefly: its capacity
        # may free up any moment, and a long block on the idle streams would starve it.
        block = self.settings.block if len(lanes) == len(self.lanes) else min(self.settings.block, BUSY_BLOCK)
        try:
            self.reading.set()
            response = await self._reader.xreadgroup(
                self.group,
                self.consumer,
                {lane.stream: ">" for lane in lanes},
                count=count,
                block=max(1, int(block * 1000)),
            )
        except rx.ResponseError as exc:
            # NOGROUP: the group is gone; UNBLOCKED: the stream was deleted while we waited.
            if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                raise
            await self._recreate_groups()
            return None
        except _REDIS_DOWN as exc:
            await self.health.failed(exc, "reading")
            return None
        self.health.ok()
        return response

    # -- groups ----------------------------------------------------------------------------

    async def _ensure_groups(self) -> None:
        for lane in self.lanes.values():
            with contextlib.suppress(rx.ResponseError):  # BUSYGROUP: it exists
                await self.redis.xgroup_create(lane.stream, self.group, id="0", mkstream=True)
            # Size the first read from the newest entry, so a backlog of big entries is not
            # read a full count at a time before the lane has measured them.
            newest: Any = await self.redis.xrevrange(lane.stream, count=1)
            if newest:
                lane.sample_size([(_text(newest[0][0]), newest[0][1] and _flat(newest[0][1]), 1)])

    async def _recreate_groups(self) -> None:
        """After NOGROUP (Redis restarted without persistence, or the group was deleted).

        The group is recreated just after the last entry this worker read, so entries added
        since are not skipped; if the stream itself is new (Redis lost it), from the start.
        """
        for lane in self.lanes.values():
            start, stream_lost = await self._restart_point(lane)
            try:
                await self.redis.xgroup_create(lane.stream, self.group, id=start, mkstream=True)
            except rx.ResponseError:
                continue  # BUSYGROUP: this one still exists (or another worker beat us)
            if stream_lost:
                cause = "the stream is new: Redis lost it (restart without persistence?)"
            else:
                cause = "the group was deleted (or Redis restarted and the stream was written again since)"
            log.warning(
                "consumer group %s on %s was missing; %s; recreated from %s; %d entries this "
                "worker held are no longer tracked (their acks are no-ops), and entries pending "
                "on other consumers of the old group cannot be recovered",
                self.group, lane.stream, cause, start, len(lane.held),
            )  # fmt: skip
        await asyncio.sleep(0.05)

    async def _restart_point(self, lane: Lane) -> tuple[str, bool]:
        """Where to recreate the group, and whether the stream itself was lost."""
        try:
            info: dict[Any, Any] = await self.redis.xinfo_stream(lane.stream)
        except rx.ResponseError:
            return "0", True  # no such stream
        last = _text(info.get("last-generated-id") or info.get(b"last-generated-id") or b"0-0")
        if lane.last_id is None:
            return "0", False
        if _id_key(last) >= _id_key(lane.last_id):
            return lane.last_id, False
        return "0", True  # ids went backwards: a new stream under the old name

    # -- dispatch and run --------------------------------------------------------------------

    def _dispatch(self) -> None:
        for lane in self.lanes.values():
            while lane.queue and len(lane.in_flight) < lane.spec.max_in_flight and not self.stopping:
                batch = lane.queue.popleft()
                task = asyncio.create_task(self._run(lane, batch))
                lane.in_flight[task] = batch
                task.add_done_callback(functools.partial(self._finished, lane))

    def _finished(self, lane: Lane, task: asyncio.Task[None]) -> None:
        lane.in_flight.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("settling a batch of %s failed", lane.stream, exc_info=task.exception())
        self._dispatch()
        self._wakeup.set()

    async def _run(self, lane: Lane, batch: Batch) -> None:
        result = await self._execute(lane.spec, batch)
        await asyncio.shield(self._settle_until_done(lane, batch, result))

    async def _execute(self, spec: HandlerSpec, batch: Batch) -> BatchResult:
        pending = self.executor.submit(spec, batch.entries)
        deadline = _batch_deadline(spec, len(batch.entries))
        try:
            return await asyncio.wait_for(_wait(pending), deadline)
        except asyncio.TimeoutError:
            self.executor.cancel(pending)
            error: BaseException = TimeoutError(f"batch of {len(batch.entries)} exceeded {deadline:.0f}s")
        except asyncio.CancelledError:
            self.executor.cancel(pending)
            raise
        except Exception as exc:  # the executor itself failed: Ray worker lost past its retries
            error = exc
        log.warning("batch of %d on %s failed as a whole: %s", len(batch.entries), spec.stream, error)
        failed = {i: spec.retry.decide(error, attempt) for i, (_, _, attempt) in enumerate(batch.entries)}
        return BatchResult(len(batch.entries), failed)

    # -- settle ------------------------------------------------------------------------------

    async def _settle_until_done(self, lane: Lane, batch: Batch, result: BatchResult) -> None:
        while True:
            try:
                await self.settle(lane, batch.entries, result)
                self.health.ok()
                break
            except _REDIS_DOWN as exc:
                await self.health.failed(exc, "settling")
        for entry_id in batch.ids:
            lane.held.pop(entry_id, None)

    async def settle(self, lane: Lane, entries: Sequence[RawEntry], result: BatchResult) -> None:
        """Turn the outcomes of ``entries`` into one pipeline of XACK / retry / dead-letter."""
        plan = Settlement.of(entries, result, self._idle_for)
        stream, failures = lane.stream, keys.failures_key(lane.stream, self.group)
        pipe = self.redis.pipeline(transaction=False)
        if plan.done:
            pipe.xack(stream, self.group, *plan.done)
        if plan.retried_before:
            pipe.hdel(failures, *plan.retried_before)
        now_ms = int(time.time() * 1000)
        for idle, ids in plan.delays.items():
            for entry_id in ids:
                pipe.hsetnx(failures, entry_id, now_ms)  # keeps the first failure time
            await self._reset_script(
                keys=[stream], args=[self.group, self.consumer, idle, -1, *ids], client=pipe
            )
        for entry, error in plan.dead:
            await self._add_dead(pipe, lane.spec, entry, error, now_ms)
        if len(pipe):
            await pipe.execute()
        if plan.dead:
            _log_dead(lane.stream, plan.dead)
        lane.counters.handled += len(plan.done)
        lane.counters.retried += sum(len(ids) for ids in plan.delays.values())
        lane.counters.dead += len(plan.dead)
        lane.counters.batches += 1
        for observer in self.observers:
            observer.settled(lane.spec, entries, plan, result)

    def _idle_for(self, delay: float) -> int:
        """Idle time that makes an entry claimable ``delay`` seconds from now."""
        return max(0, self.settings.visibility_ms - int(delay * 1000))

    async def _add_dead(
        self, pipe: Any, spec: HandlerSpec, entry: RawEntry, error: ErrorInfo, now_ms: int
    ) -> None:
        entry_id, raw, attempt = entry
        fields = dead_letter_fields(
            stream=spec.stream, entry_id=entry_id, group=self.group, handler=spec.name,
            error=error, attempts=attempt, raw=raw, now_ms=now_ms,
        )  # fmt: skip
        await self._dead_script(
            keys=[spec.stream, spec.dead_letter_stream, keys.failures_key(spec.stream, self.group)],
            args=[self.group, self.consumer, entry_id, self.settings.dead_letter_maxlen, now_ms, *fields],
            client=pipe,
        )

    # -- recovery: reclaim, lease ------------------------------------------------------------

    async def _reclaim_loop(self) -> None:
        while not self.stopping:
            claimed_any = False
            for lane in self.lanes.values():
                try:
                    claimed_any |= await self._reclaim(lane)
                    self.health.ok()
                except _REDIS_DOWN as exc:
                    await self.health.failed(exc, "reclaiming")
                except rx.ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
            if not claimed_any:  # a full page may mean more are waiting: go again at once
                await _sleep_unless(self._stopping, self.settings.reclaim_interval)

    async def _reclaim(self, lane: Lane) -> bool:
        """Claim entries idle past the visibility timeout; True if a full page came back."""
        want = lane.free_batches * lane.batch_size
        if want <= 0:
            return False
        cursor, entries, counts, deleted = await self._reclaim_script(
            keys=[lane.stream],
            args=[self.group, self.consumer, self.settings.visibility_ms, lane.cursor, want],
        )
        lane.cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if deleted:
            lane.counters.lost += len(deleted)
            log.error(
                "%d pending entries of %s were trimmed or deleted before being handled",
                len(deleted),
                lane.stream,
            )
        limit = lane.spec.retry.max_retries + 1
        fresh: list[RawEntry] = []
        exhausted: list[RawEntry] = []
        for (raw_id, raw_fields), count in zip(entries, counts, strict=True):
            entry = (raw_id.decode(), raw_fields or [], int(count))
            (exhausted if entry[2] > limit else fresh).append(entry)
        if exhausted:
            await self._dead_letter_exhausted(lane, exhausted)
        if fresh:
            lane.counters.reclaimed += len(fresh)
            lane.accept(fresh)
            self._dispatch()  # now: the read loop may be blocked on XREADGROUP for a while
        return len(entries) >= want

    async def _dead_letter_exhausted(self, lane: Lane, entries: list[RawEntry]) -> None:
        error = ErrorInfo(
            type="DeliveryLimitExceeded",
            message=f"delivered more than {lane.spec.retry.max_retries + 1} times without "
            "completing (the worker running it died or timed out each time)",
            reason="delivery_limit",
        )
        failed = {i: Dead(error) for i in range(len(entries))}
        await self.settle(lane, entries, BatchResult(len(entries), failed))

    async def _lease_loop(self) -> None:
        """Renew the lease (idle time) of every held entry before the visibility timeout."""
        period = self.settings.visibility_timeout / 3
        while not self.stopping:
            await _sleep_unless(self._stopping, period)
            for lane in self.lanes.values():
                stale = [i for i, t in lane.held.items() if time.monotonic() - t >= period]
                if stale:
                    try:
                        await self._reset(lane.stream, stale, idle=0)
                    except _REDIS_DOWN as exc:
                        await self.health.failed(exc, "renewing leases")
                        continue
                    except rx.ResponseError as exc:
                        # NOGROUP: the read loop recreates the group; keep renewing after it
                        if "NOGROUP" not in str(exc):
                            raise
                        continue
                    now = time.monotonic()
                    for entry_id in stale:
                        if entry_id in lane.held:
                            lane.held[entry_id] = now

    async def _reset(self, stream: str, ids: Sequence[str], idle: int, retrycount: int = -1) -> int:
        touched = 0
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            touched += int(
                await self._reset_script(
                    keys=[stream], args=[self.group, self.consumer, idle, retrycount, *chunk]
                )
            )
        return touched

    # -- heartbeat ---------------------------------------------------------------------------

    def heartbeat(self) -> dict[str, Any]:
        return {
            "consumer": self.consumer,
            "group": self.group,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "streams": list(self.lanes),
            "started_at": self.started_at,
            "ts": time.time(),
            "in_flight": sum(len(lane.in_flight) for lane in self.lanes.values()),
        }

    async def _heartbeat_loop(self) -> None:
        key = keys.heartbeat_key(self.group, self.consumer)
        ttl = max(1, int(self.settings.heartbeat_ttl))
        while not self.stopping:
            with contextlib.suppress(*_REDIS_DOWN):  # the read loop reports outages
                await self.redis.set(key, json.dumps(self.heartbeat()), ex=ttl)
            await _sleep_unless(self._stopping, self.settings.heartbeat_interval)

    # -- shutdown ----------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Hand back unstarted entries at once, finish in-flight ones within the grace period."""
        self._stopping.set()
        await self._hand_back_queued()
        tasks = [t for lane in self.lanes.values() for t in lane.in_flight]
        if tasks:
            log.info("finishing %d in-flight batch(es) (grace %.0fs)", len(tasks), self.settings.grace_period)
            _, late = await asyncio.wait(tasks, timeout=self.settings.grace_period)
            if late:
                await self._abandon(late)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._sign_off()
        await self.executor.close()

    async def _hand_back_queued(self) -> None:
        for lane in self.lanes.values():
            by_attempt: dict[int, list[str]] = {}
            while lane.queue:
                for entry_id, _, attempt in lane.queue.popleft().entries:
                    by_attempt.setdefault(attempt, []).append(entry_id)
                    lane.held.pop(entry_id, None)
            for attempt, ids in by_attempt.items():
                with contextlib.suppress(*_REDIS_DOWN):
                    # RETRYCOUNT attempt-1: an entry that never started does not use an attempt
                    await self._reset(lane.stream, ids, HANDBACK_IDLE_MS, retrycount=attempt - 1)
                    log.info("handed back %d unstarted entries of %s", len(ids), lane.stream)

    async def _abandon(self, late: Iterable[asyncio.Task[None]]) -> None:
        """Past the grace period: cancel what still runs and make its entries claimable."""
        for lane in self.lanes.values():
            for task in late:
                batch = lane.in_flight.get(task)
                if batch is None:
                    continue
                task.cancel()
                with contextlib.suppress(*_REDIS_DOWN):
                    await self._reset(lane.stream, batch.ids, HANDBACK_IDLE_MS)
                log.warning(
                    "grace period over: handed back %d running entries of %s", len(batch.ids), lane.stream
                )

    async def _sign_off(self) -> None:
        with contextlib.suppress(*_REDIS_DOWN, rx.ResponseError):
            await self.redis.delete(keys.heartbeat_key(self.group, self.consumer))
            for lane in self.lanes.values():
                info = await self.redis.xpending_range(
                    lane.stream, self.group, "-", "+", 1, consumername=self.consumer
                )
                if not info:  # nothing pending on us (no scheduled retries): forget this consumer
                    await self.redis.xgroup_delconsumer(lane.stream, self.group, self.consumer)


def _log_dead(stream: str, dead: list[tuple[RawEntry, ErrorInfo]]) -> None:
    """One line per settled batch, not per entry: a flood of bad input stays readable."""
    (entry_id, _, attempt), error = dead[0]
    more = f" and {len(dead) - 1} more" if len(dead) > 1 else ""
    log.warning(
        "dead-lettered %s/%s%s after %d attempt(s): %s: %s",
        stream, entry_id, more, attempt, error.type, error.message[:200],
    )  # fmt: skip


def _batch_deadline(spec: HandlerSpec, size: int) -> float | None:
    """A router-side cap for a batch (sync handlers can't be interrupted in-process)."""
    if spec.timeout is None:
        return None
    calls = 1 if spec.batch else max(1, -(-size // spec.concurrency) if spec.is_async else size)
    return spec.timeout * calls + 10.0


async def _wait(pending: Awaitable[BatchResult]) -> BatchResult:
    return await pending


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


def _flat(fields: Any) -> list[bytes]:
    return [b for kv in fields.items() for b in kv] if isinstance(fields, dict) else list(fields)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
