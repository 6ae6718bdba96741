"""Dispatch: start queued batches on the executor, bound each by its deadline, settle it.

A batch's settlement is shielded from cancellation and retried through Redis outages: once a
handler ran, its outcome is applied exactly once (the scripts make a late or repeated
settlement of an entry no longer ours a no-op). A settlement that fails otherwise (a Redis
permission taken away) is logged, shows as the failing ``settle`` step (``/readyz``, the
heartbeat) until one succeeds again, and lets go of the batch's entries: their leases are no
longer renewed, so they are reclaimed and run again after the visibility timeout instead of
staying pending forever. When none of the entries it failed on is this consumer's any more
(another consumer reclaimed and settled them), the step no longer counts as failing either:
a consumer with nothing more to settle would otherwise say so until its next batch.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

from ..redisutil import REDIS_DOWN
from ..registry import HandlerSpec
from .events import BatchSettled, BatchStarted, Event
from .executors import Executor
from .flow import Flows
from .health import RedisHealth
from .lanes import Batch, Lane
from .pending import PendingEntries
from .run import BatchResult, RawEntry
from .settle import Settler
from .supervise import Supervisor

log = logging.getLogger("streamtasks.worker")

#: Seconds added to a batch's handler timeout before the worker gives up waiting on it.
DEADLINE_SLACK_S = 10.0


def batch_deadline(spec: HandlerSpec, size: int) -> float | None:
    """A worker-side cap for a batch (sync handlers can't be interrupted in-process)."""
    if spec.timeout is None:
        return None
    calls = 1 if spec.batch else max(1, -(-size // spec.concurrency) if spec.is_async else size)
    return spec.timeout * calls + DEADLINE_SLACK_S


class Dispatcher:
    """Runs batches of the lanes on the executor and settles them."""

    def __init__(
        self,
        executor: Executor,
        settler: Settler,
        health: RedisHealth,
        emit: Callable[[Event], None],
        on_finished: Callable[[], None],
        supervisor: Supervisor | None = None,
    ) -> None:
        self.executor = executor
        self.settler = settler
        self.health = health
        self.emit = emit
        self.on_finished = on_finished  # a batch finished: its lane has room again
        self.supervisor = supervisor or Supervisor(emit)
        self.unsettled: dict[str, set[str]] = {}  # stream -> ids a failed settlement let go of
        #: Rate limits and max_concurrency of the lanes bound to them (.flow): a held-back
        #: handler wakes the dispatcher (``on_finished``) when it may start again.
        s = settler
        self.flows = Flows(s.redis, s.group, s.consumer, s.visibility_ms, on_finished, emit, health)

    def start(self, lanes: Iterable[Lane]) -> None:
        """Start every queued batch that fits under its lane's ``max_in_flight`` (the levels of
        a prioritized stream: under theirs together, in the order :mod:`.priority` says)."""
        for lane in lanes:
            if lane.levels is None:
                while lane.can_start:
                    self._launch(lane)
            elif lane.spec.level == 0:
                while (chosen := lane.levels.next_to_start()) is not None:
                    self._launch(chosen)

    def _launch(self, lane: Lane) -> None:
        batch = lane.queue.popleft()
        if lane.flow is not None:
            lane.flow.admitting = True  # one admission at a time: its lanes start nothing more
        task = asyncio.create_task(self._run(lane, batch))
        lane.in_flight[task] = batch
        task.add_done_callback(functools.partial(self._finished, lane))

    def _finished(self, lane: Lane, task: asyncio.Task[None]) -> None:
        batch = lane.in_flight.pop(task, None)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log.error(
                "settling a batch of %s failed",
                lane.stream,
                exc_info=error,
                extra={"stream": lane.stream, "handler": lane.spec.name},
            )
            self.supervisor.failed("settle", error)
            if batch is not None:  # reclaimed after the visibility timeout, not leased forever
                ids = [e[0] for e in batch.entries]
                lane.release(ids)
                self.unsettled.setdefault(lane.stream, set()).update(ids)
        self.on_finished()

    async def _run(self, lane: Lane, batch: Batch) -> None:
        spec, hold = lane.spec, None
        if lane.flow is not None:  # a limited handler: admit what may start now (.flow)
            admitted = await lane.flow.admit(lane, batch)
            if admitted is None:
                return  # the batch waits, queued again
            spec, hold = admitted
        try:
            self.emit(BatchStarted(lane.stream, len(batch.entries)))
            result = await self.execute(spec, batch.entries)
            await asyncio.shield(self.settle(lane, batch.entries, result))
        finally:
            if lane.flow is not None:
                await asyncio.shield(lane.flow.release(hold))

    async def execute(self, spec: HandlerSpec, entries: Sequence[RawEntry]) -> BatchResult:
        """Run ``entries``; a batch that fails or times out as a whole gets the policy's
        outcome for every entry."""
        pending = self.executor.submit(spec, entries)
        deadline = batch_deadline(spec, len(entries))
        try:
            return await asyncio.wait_for(_wait(pending), deadline)
        except asyncio.TimeoutError:
            self.executor.cancel(pending)
            error: BaseException = TimeoutError(f"batch of {len(entries)} exceeded {deadline:.0f}s")
        except asyncio.CancelledError:
            self.executor.cancel(pending)
            raise
        except Exception as exc:  # the executor itself failed: Ray worker lost past its retries
            error = exc
        log.warning(
            "batch of %d on %s failed as a whole: %s",
            len(entries),
            spec.stream,
            error,
            extra={
                "stream": spec.stream,
                "handler": spec.name,
                "batch_entries": len(entries),
                "batch_first_id": entries[0][0] if entries else None,
                "batch_last_id": entries[-1][0] if entries else None,
            },
        )
        return BatchResult(len(entries), spec.retry.decide_all(error, [e[2] for e in entries]))

    async def settle(self, lane: Lane, entries: Sequence[RawEntry], result: BatchResult) -> None:
        """Apply ``result``, waiting out Redis outages; then release the entries."""
        async with lane.lease_lock:  # no lease renewal overrides a retry's idle time
            while True:
                try:
                    plan = await self.settler.apply(lane.spec, entries, result)
                    self.health.ok()
                    break
                except REDIS_DOWN as exc:
                    await self.health.failed(exc, "settling")
            lane.release([e[0] for e in entries])
        self.unsettled.clear()
        self.supervisor.healthy("settle")
        self.emit(BatchSettled(lane.spec, entries, plan, result))

    async def settled_elsewhere(self, pending: PendingEntries) -> None:
        """``settle`` stops failing once no entry a failed settlement let go of is still
        pending on this consumer (another consumer reclaimed it, or it was acked)."""
        for stream, ids in list(self.unsettled.items()):
            ids &= await pending.mine(stream, ids)
            if not ids:
                del self.unsettled[stream]
        if not self.unsettled and "settle" in self.supervisor.failing:
            log.info("the entries this worker failed to settle were taken over by other consumers")
            self.supervisor.healthy("settle")


async def _wait(pending: Awaitable[BatchResult]) -> BatchResult:
    return await pending
