"""Inline start: the worker process handles entries itself while Ray starts.

A local Ray takes 2.5-4 s to start on a small machine and joining a cluster about a second;
with ``--inline-start`` the worker does not wait for it. Beside the real worker (task or actor
mode) it runs a second :class:`Worker` with an :class:`InlineExecutor`, as its own consumer
``<consumer>-inline``, over the handlers that can run in this process. Once the real worker
is warm (task mode: it settled its first batch, so Ray's worker processes are up; actor mode:
every actor reads) or stops, the inline one stops the usual graceful way: its running batches
finish and are settled here, the entries it read but did not start are handed back (``XCLAIM``
with a large idle time) and the real worker reclaims them within a second. Every guarantee is
the one of a worker stopping on SIGTERM: nothing runs twice, nothing is lost.

Only handlers that ask Ray for nothing this process lacks run here: no ``num_gpus``,
``memory``, custom ``resources``, and no ``runtime_env`` beyond environment variables this
process already has; the others need what the cluster gives them. Their resources
(``@registry.resource``, e.g. a connection pool) are opened in this process for the start and
closed once the inline worker stopped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping

from attrs import evolve
from redis.asyncio import Redis

from ..registry import HandlerSpec, Registry
from ..resources import close_process_resources
from ..worker import InlineExecutor, Worker, WorkerSettings
from ..worker.events import BatchSettled, Event, Reclaimed, Serving, StateChanged

log = logging.getLogger("streamtasks.worker")

#: Ray options that only weigh a task for scheduling: a handler with these may run here.
SCHEDULING_ONLY = frozenset({"num_cpus"})
#: States of the real worker that end the inline start at once.
STOPPING_STATES = frozenset({"draining", "stopped"})
#: Seconds the inline worker goes on beside a real worker that reads but settled no batch yet.
OVERLAP_LIMIT_S = 10.0
#: Seconds the inline consumer waits for the real worker to reclaim what it handed back, so it
#: can leave the group (it is not left behind as an idle consumer).
FORGET_WITHIN_S = 15.0
FORGET_POLL_S = 0.5


def runs_here(spec: HandlerSpec, environ: Mapping[str, str]) -> bool:
    """True when the handler asks Ray for nothing this process lacks: scheduling weights only,
    and a ``runtime_env`` (if any) of environment variables this process already has."""
    options = dict(spec.ray_options)
    runtime_env = options.pop("runtime_env", None) or {}
    env_vars = dict(runtime_env.get("env_vars") or {}) if isinstance(runtime_env, Mapping) else None
    if env_vars is None or set(runtime_env) - {"env_vars"}:
        return False
    same_env = all(environ.get(name) == value for name, value in env_vars.items())
    return same_env and set(options) <= SCHEDULING_ONLY


class InlineStart:
    """Runs the inline worker until ``serving`` is warm (or stops); see the module's docstring.

    Warm means, with ``first_batch`` (task mode), the first batch the real worker settled
    itself: Ray's first task also starts its worker processes (a second or more), so the inline
    worker goes on until then (at most :data:`OVERLAP_LIMIT_S` after the real worker reads).
    Without it (actor mode, whose actors run their batches as soon as they read): reading.
    """

    def __init__(
        self,
        registry: Registry,
        redis: Redis,
        settings: WorkerSettings,
        serving: Serving,
        first_batch: bool = True,
    ) -> None:
        self.serving = serving
        self.first_batch = first_batch
        self.consumer = f"{settings.consumer}-inline"
        here = evolve(settings, consumer=self.consumer, timers=False)  # the real worker runs them
        self.worker = Worker(registry, redis, InlineExecutor(), here, listeners=[self._forward])
        self._task: asyncio.Task[None] | None = None
        self._forwarding: Event | None = None
        serving.events.subscribe(self._watch)

    @classmethod
    def of(
        cls,
        registry: Registry,
        redis: Redis,
        settings: WorkerSettings,
        serving: Serving,
        first_batch: bool = True,
    ) -> InlineStart | None:
        """The inline start over the handlers that may run here; None when there are none."""
        streams = [stream for stream, spec in registry.handlers.items() if runs_here(spec, os.environ)]
        skipped = sorted(set(registry.handlers) - set(streams))
        if skipped:
            log.info("inline start: not for %s (Ray options: they run on Ray only)", ", ".join(skipped))
        return cls(registry.only(streams), redis, settings, serving, first_batch) if streams else None

    def _watch(self, event: Event) -> None:
        if event is self._forwarding:
            return  # the inline worker's own batch, passed on
        state = event.state if isinstance(event, StateChanged) else None
        if state == "reading" and self.first_batch:
            asyncio.get_running_loop().call_later(OVERLAP_LIMIT_S, self._hand_over)
        elif isinstance(event, BatchSettled) or state in STOPPING_STATES or state == "reading":
            self._hand_over()  # the real worker settled a batch (it is warm), reads, or stops

    def _hand_over(self) -> None:
        self.worker.stop()

    def _forward(self, event: Event) -> None:
        """What the inline worker settled counts for the real one (metrics, snapshot totals)."""
        if isinstance(event, (BatchSettled, Reclaimed)):
            self._forwarding = event
            try:
                self.serving.events.emit(event)
            finally:
                self._forwarding = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="streamtasks:inline-start")

    async def stop(self) -> None:
        """Stop (if the hand-over did not) and wait until every entry read here is settled."""
        self.worker.stop()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        """Serve until the hand-over; errors are logged, never raised (the real worker goes on)."""
        if self.worker.stopping:  # handed over (or stopped) before it began
            return
        try:
            await self.worker.run()
        except Exception:
            log.exception("inline start failed; the worker goes on without it")
        finally:
            await self._close()
        if not self.serving.stopping:  # the real worker serves on: it reclaims what was handed back
            await self._leave_group()
        handled = sum(lane.handled for lane in self.worker.snapshot().lanes.values())
        log.info(
            "inline start: %d entries handled in this process while Ray was starting",
            handled,
            extra={"consumer": self.consumer, "handled": handled},
        )

    async def _leave_group(self) -> None:
        """Delete the inline consumer from the group once nothing is pending on it (the real
        worker reclaims the entries handed back within a second or two)."""
        deadline = time.monotonic() + FORGET_WITHIN_S
        while not await self.worker.shutdown.sign_off(self.worker.lanes):
            if time.monotonic() > deadline or self.serving.stopping:
                return  # stays, idle, like any consumer that stopped with entries pending
            await asyncio.sleep(FORGET_POLL_S)

    async def _close(self) -> None:
        try:
            await close_process_resources()
        except Exception:
            log.exception("closing the inline start's resources failed")
