"""The pool's actors: made per group of handlers, each served by a supervised loop that lives
through the actor's deaths, added and removed while the pool runs.

An actor is a *slot*: its index (its consumer is ``<consumer>-a<index>``; a removed actor's
index is used again by the next one added), its group and its Ray handle. The slot's loop
(``actor-<index>``) asks the actor who it is (pid, node: that waits until Ray placed it), then
awaits its ``run``. When ``run`` fails because the actor died, the loop hands the dead
incarnation's entries over (:mod:`.deaths`), logs one line, and calls ``run`` again on the
incarnation Ray restarted (a new actor if Ray gave up on it). A restarted actor reads nothing
until that call: so nothing reads under the dead consumer's name while its entries are handed
over. Removing an actor stops it the graceful way (its worker's stop: in-flight batches settle,
unstarted entries are handed back, the consumer leaves the group), then frees its resources.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import ray
from attrs import define, evolve, field, frozen
from ray.exceptions import RayActorError
from redis import exceptions as rx
from redis.asyncio import Redis

from .. import logs
from ..redisutil import REDIS_DOWN
from ..registry import Registry
from ..worker import WorkerSettings
from ..worker.supervise import Supervisor
from .actor import WorkerActor
from .deaths import Identity, RayletDeathLines, actor_table_entry, confirm, death_line, hand_back, why
from .placement import actor_options, asks

log = logging.getLogger("streamtasks.worker")

#: Seconds between two starts of an actor that keeps dying before it answers (its start
#: fails: a bad runtime environment, a handler's module that cannot be imported), doubled up to
#: :data:`RESTART_MAX_S`.
RESTART_FIRST_S = 0.5
RESTART_MAX_S = 30.0
#: Seconds an actor Ray is restarting may take before the worker says it is not running.
RESTART_WARN_S = 30.0
#: Seconds a removed actor has to give its last report (its counts since the last poll).
LAST_REPORT_S = 5.0


@frozen
class ActorGroup:
    """Handlers that share their Ray options, and how their actors are made."""

    index: int
    registry: Registry
    options: dict[str, Any]
    threads: int

    @property
    def label(self) -> str:
        """The group as people read it: its streams."""
        return ", ".join(self.registry.streams)

    @property
    def asks(self) -> str:
        return asks(self.registry, self.options)


@define
class Slot:
    index: int
    group: ActorGroup
    handle: Any
    consumer: str
    identity: Identity | None = None  # the serving incarnation, once it answered
    created_at: float = field(factory=time.monotonic)
    stopping: bool = False
    failures: int = 0  # failed calls in a row before an incarnation answered
    down_since: float = 0.0  # monotonic time of the first of them
    said: bool = False  # that it is not running was logged


class Actors:
    """Makes, serves and stops the pool's actors."""

    def __init__(
        self,
        redis: Redis,
        redis_url: str,
        settings: WorkerSettings,
        env: dict[str, str],
        supervisor: Supervisor,
        stopping: Callable[[], bool],
    ) -> None:
        self.redis, self.redis_url, self.settings, self.env = redis, redis_url, settings, env
        self.supervisor = supervisor
        self.stopping = stopping
        self.slots: dict[int, Slot] = {}
        #: Called with the index and last report of an actor removed for good.
        self.on_removed: Callable[[int, Any], None] = lambda index, report: None

    def consumer(self, index: int) -> str:
        """Actor ``index``'s consumer name: each actor is a consumer of its own."""
        return f"{self.settings.consumer}-a{index}"

    def of(self, group: ActorGroup) -> list[Slot]:
        return [s for s in self.slots.values() if s.group.index == group.index]

    def add(self, group: ActorGroup) -> Slot:
        """A new actor of ``group`` (asks Ray for its resources; it reads once placed), under
        the lowest index free."""
        index = next(i for i in range(len(self.slots) + 1) if i not in self.slots)
        slot = Slot(index, group, self._make(group, index), self.consumer(index))
        self.slots[index] = slot
        self.supervisor.spawn(f"actor-{index}", functools.partial(self._serve, slot))
        return slot

    def _make(self, group: ActorGroup, index: int) -> Any:
        remote = ray.remote(WorkerActor).options(
            max_restarts=-1, max_concurrency=16, **actor_options(group.options, self.env)
        )
        settings = evolve(self.settings, consumer=self.consumer(index), timers=False)
        return remote.remote(group.registry, self.redis_url, settings, group.threads, logs.configured())

    async def remove(self, slot: Slot) -> None:
        """Stop ``slot``'s actor the graceful way (its worker's stop: in-flight batches settle,
        unstarted entries are handed back, the consumer leaves the group); its loop frees it
        once it has drained. An actor that never answered (not placed) read nothing: it is
        freed at once."""
        slot.stopping = True
        if slot.identity is None:
            with contextlib.suppress(Exception):
                ray.kill(slot.handle)
            return
        with contextlib.suppress(Exception):  # it died meanwhile: its loop hands its entries over
            await slot.handle.stop.remote()

    async def _serve(self, slot: Slot) -> None:
        try:
            while not (self.stopping() or slot.stopping):
                try:
                    slot.identity = await slot.handle.identity.remote()  # placed and started
                    RayletDeathLines.watch(slot.identity.pid)
                    slot.failures, slot.said = 0, False
                    self.supervisor.healthy(f"actor-{slot.index}")
                    await slot.handle.run.remote()
                except RayActorError as exc:
                    if self.stopping() or slot.stopping:  # a death while stopping: no restart
                        if slot.identity is not None:
                            await self._died(slot, exc)
                        return
                    await self._died(slot, exc)
                    continue
                if not (self.stopping() or slot.stopping):
                    raise RuntimeError(f"actor {slot.index} stopped serving")
        finally:
            if slot.stopping and not self.stopping():  # removed (scaled down): free it now
                await self._forget(slot)

    async def _died(self, slot: Slot, exc: RayActorError) -> None:
        """The actor's ``run`` (or its start) failed: if its incarnation is dead, hand its
        entries over, log it, and make a new actor when Ray will not restart it."""
        known, slot.identity = slot.identity, None
        if known is None:  # died before it answered, so before this pool let it read
            await self._start_failed(slot, exc)
            return
        death = await asyncio.to_thread(confirm, slot.handle, known, exc)
        if death is None:  # the same process runs on (a broken connection): a call joins its run
            log.debug("actor %d: call failed, but its process lives on: %s", slot.index, exc)
            await asyncio.sleep(RESTART_FIRST_S)
            return
        moved = await self._hand_back(slot)
        log.warning(death_line(slot.index, slot.consumer, known, death, moved))
        if death.state == "DEAD":
            self._replace(slot)
        slot.failures, slot.down_since = 1, time.monotonic()

    async def _start_failed(self, slot: Slot, exc: RayActorError) -> None:
        """A call before the actor answered failed. While Ray (re)starts it (calls to a
        restarting actor fail too) that is waited out quietly, for :data:`RESTART_WARN_S` before
        it is said; an actor Ray gave up on (its start failed: a bad runtime environment, a
        module that cannot be imported) is said at once and made again, with backoff."""
        if slot.failures == 0:
            slot.down_since = time.monotonic()
        slot.failures += 1
        delay = min(RESTART_FIRST_S * 2 ** (slot.failures - 1), RESTART_MAX_S)
        row = await asyncio.to_thread(actor_table_entry, slot.handle._actor_id.hex())
        state = str((row or {}).get("State") or "unknown")
        down_for = time.monotonic() - slot.down_since
        if state == "DEAD" or (down_for >= RESTART_WARN_S and not slot.said):
            slot.said = True
            self.supervisor.failed(f"actor-{slot.index}", exc)
            log.warning(
                "actor %d (%s) is not running after %.0fs: %s (Ray reports it %s); again in %.1fs",
                slot.index,
                slot.consumer,
                down_for,
                why(exc),
                state,
                delay,
            )
        if state == "DEAD":
            self._replace(slot)
        await asyncio.sleep(delay if state == "DEAD" else RESTART_FIRST_S)

    def _replace(self, slot: Slot) -> None:
        """A new actor in ``slot``: Ray gave up on its actor (dead for good)."""
        if not (self.stopping() or slot.stopping):
            slot.handle = self._make(slot.group, slot.index)

    async def _hand_back(self, slot: Slot) -> dict[str, int] | None:
        """The dead consumer's entries made claimable, and the live actors asked to claim now;
        None when Redis did not answer (they are reclaimed after the visibility timeout)."""
        try:
            registry = slot.group.registry
            moved = await hand_back(self.redis, registry.group, slot.consumer, registry.streams)
        except (*REDIS_DOWN, rx.ResponseError):  # unavailable, or refused: the timeout decides
            return None
        if moved:
            for other in self.slots.values():
                if other is not slot and other.identity is not None:
                    with contextlib.suppress(Exception):
                        other.handle.reclaim_now.remote()
        return moved

    async def _forget(self, slot: Slot) -> None:
        """A removed actor drained: its last report taken, its resources freed."""
        report = None
        with contextlib.suppress(Exception):
            report = await asyncio.wait_for(slot.handle.report.remote(), LAST_REPORT_S)
        self.slots.pop(slot.index, None)
        with contextlib.suppress(Exception):
            ray.kill(slot.handle)
        self.on_removed(slot.index, report)

    async def stop_all(self) -> None:
        """Stop every actor: the placed ones the graceful way, at once (each drains by itself);
        one Ray never placed read nothing and is freed (a stop would wait for its placement)."""
        stops = []
        for slot in list(self.slots.values()):
            if slot.identity is None:
                with contextlib.suppress(Exception):
                    ray.kill(slot.handle)
            else:
                stops.append(slot.handle.stop.remote())
        await asyncio.gather(*stops, return_exceptions=True)

    def kill_all(self) -> None:
        for slot in self.slots.values():
            with contextlib.suppress(Exception):
                ray.kill(slot.handle)


def groups_of(parts: Iterable[tuple[Registry, dict[str, Any]]]) -> list[ActorGroup]:
    """One :class:`ActorGroup` per group of handlers with equal Ray options."""
    out = []
    for i, (registry, options) in enumerate(parts):
        threads = max(spec.max_in_flight for spec in registry.handlers.values())
        out.append(ActorGroup(i, registry, options, threads))
    return out
