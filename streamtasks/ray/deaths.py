"""An actor's death, as Ray reports it: confirmed, its entries handed to the live actors at
once, and told in one log line.

**How the death becomes known.** The worker process awaits each actor's ``run`` call; when
the actor's process dies the call fails with a :class:`~ray.exceptions.RayActorError`. On Ray
2.60 a kill -9 of a restartable actor's process ends the call with ``ActorUnavailableError``
about 1.3-1.6 s later (Ray waits ``timeout_ms_task_wait_for_death_info`` for the cause),
``ActorDiedError`` when the actor is gone for good. ``ActorUnavailableError`` alone only says
the connection broke ("the task may or may not have been executed"), so it is not taken as
proof: the GCS actor table (``ray._private.state.actors``, answered by the GCS itself, no
dashboard needed) is asked whether the incarnation that served (the pid and node it reported
when it started) still is the live one. Ray restarts an actor only once its process is known
dead (the raylet saw it exit, or its node was declared dead), so a new pid, a restarting or a
dead actor means the old process is gone. The same incarnation still alive (a connection that
broke, the process running on) is left alone: its entries keep their leases.

**Whose entries.** Exactly the dead consumer's (``<consumer>-a<i>``): ``XPENDING`` with its
name, then the RESET script (:mod:`streamtasks.worker.pending`) on those ids, which touches an
entry only while it is still pending on that consumer, and makes it claimable at once (idle
far past any visibility timeout). The live actors' reclaim (asked to run at once) claims them
with their delivery counter raised, as after a visibility timeout, so an entry that kills
every actor that runs it is dead-lettered after its retries. No entry of a live consumer is
touched, and no idle time decides anything.

**No race with the restarted incarnation.** Ray restarts the actor under the same consumer
name, but a restarted actor reads nothing until the worker process calls its ``run`` again,
which it does only after the hand-back. Entries of that name are then all the dead
incarnation's.

Ray also prints ``(raylet) A worker died or was killed ...`` for each such death;
:class:`RayletDeathLines` keeps those lines out for this worker's own actors (their death is
the one line logged here) and lets every other Ray error through.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

import ray
from attrs import frozen
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from redis import exceptions as rx
from redis.asyncio import Redis

from ..redisutil import text
from ..worker.pending import HANDBACK_IDLE_MS, PendingEntries

log = logging.getLogger("streamtasks.worker")

#: Pending entries read per ``XPENDING`` page of a dead consumer.
PAGE = 1000


@frozen
class Identity:
    """An actor incarnation: its process and node (reported by the actor when it starts)."""

    pid: int
    node_id: str
    node_ip: str

    def where(self) -> str:
        return f"pid {self.pid} on node {self.node_ip} ({self.node_id[:12]})"


@frozen
class Death:
    """A confirmed death: why, and what the GCS says now."""

    why: str
    state: str  # the actor's state in the GCS now (ALIVE: restarted already)
    new_pid: int | None  # the restarted incarnation's pid, when there is one


def actor_table_entry(actor_id: str) -> dict[str, Any] | None:
    """The GCS' row for ``actor_id`` (None when the GCS cannot be asked)."""
    try:
        from ray._private import state

        row: dict[str, Any] = state.actors(actor_id)
    except Exception:  # another Ray, or the GCS unreachable: no proof
        return None
    return row or None


def confirm(handle: Any, known: Identity, error: RayActorError) -> Death | None:
    """The death of the incarnation ``known`` if the GCS confirms it (blocking: in a thread),
    else None (the same process still runs, or no proof: its entries wait for the visibility
    timeout, as before)."""
    row = actor_table_entry(handle._actor_id.hex())
    if row is None:
        return Death(why(error), "DEAD", None) if isinstance(error, ActorDiedError) else None
    state = str(row.get("State") or "")
    pid = int(row.get("Pid") or 0)
    node = str((row.get("Address") or {}).get("NodeID") or "")
    if state == "ALIVE" and pid == known.pid and node == known.node_id:
        return None
    return Death(why(error, row), state, pid if state == "ALIVE" and pid else None)


def why(error: RayActorError, row: dict[str, Any] | None = None) -> str:
    """Why the actor ended, in a few words (Ray's exit type and detail when it gave them)."""
    said = " ".join(str(getattr(error, "error_msg", "") or error).split())
    exit_type = re.search(r"[Ww]orker exit type: (\w+)", said)
    detail = re.search(r"[Ww]orker exit detail: ([^.]+)", said)
    if exit_type:
        return f"{exit_type[1]}: {detail[1] if detail else 'no detail'}"
    cause = str((row or {}).get("DeathCause") or "").strip()
    if cause:
        return " ".join(cause.split())[:200]
    if isinstance(error, ActorUnavailableError):
        return "its process ended (killed or crashed: Ray lost the connection to it)"
    last = [line for line in str(getattr(error, "error_msg", "") or error).splitlines() if line.strip()]
    # Ray's message: a sentence, or a creation task's traceback ending in its error
    return " ".join((last[-1] if last else type(error).__name__).split())[:200]


async def hand_back(redis: Redis, group: str, consumer: str, streams: Iterable[str]) -> dict[str, int]:
    """Make every entry pending on ``consumer`` claimable at once; how many, by stream."""
    pending = PendingEntries(redis, group, consumer)
    moved: dict[str, int] = {}
    for stream in streams:
        start = "-"
        while True:
            try:
                rows = await redis.xpending_range(stream, group, start, "+", PAGE, consumername=consumer)
            except rx.ResponseError as exc:  # NOGROUP: no group (yet) on that stream, nothing held
                if "NOGROUP" not in str(exc):
                    raise
                break
            ids = [text(row["message_id"]) for row in rows]
            if ids:
                moved[stream] = moved.get(stream, 0) + await pending.reset(stream, ids, HANDBACK_IDLE_MS)
            if len(ids) < PAGE:
                break
            start = "(" + ids[-1]
    return {stream: n for stream, n in moved.items() if n}


def death_line(
    index: int, consumer: str, known: Identity | None, death: Death, moved: dict[str, int] | None
) -> str:
    """The one line a death is logged as (``moved`` None: Redis did not answer the hand-over)."""
    where = known.where() if known is not None else "pid unknown"
    if moved is None:
        held, went = "its", "not handed over (Redis unavailable): reclaimed after the visibility timeout"
    else:
        held = str(sum(moved.values()))
        each = ", ".join(f"{n} of {s}" for s, n in moved.items())
        went = f"handed to the live actors, claimable at once ({each})" if moved else "nothing to hand over"
    after = f"Ray restarted it as pid {death.new_pid}" if death.new_pid else f"Ray reports it {death.state}"
    return f"actor {index} ({consumer}, {where}) died: {death.why}; it held {held} entries: {went}; {after}"


class RayletDeathLines:
    """Drops Ray's ``(raylet) A worker died or was killed ...`` line for the pids of this
    worker's actors (their death is logged once, by the pool); every other line Ray prints,
    and that line for any other process, goes through. Installed once per process by
    wrapping ``ray._private.worker.print_to_stdstream``, through which the driver prints the
    errors the raylet publishes."""

    _lock = threading.Lock()
    _pids: set[int] = set()  # one set for the process, like the wrapper
    _installed = False

    @classmethod
    def watch(cls, pid: int) -> None:
        with cls._lock:
            cls._pids.add(pid)
            if not cls._installed:
                cls._installed = _install(cls.keep)

    @classmethod
    def keep(cls, data: Any) -> bool:
        """False for a raylet line about one of our actors' processes dying."""
        if not isinstance(data, dict) or data.get("pid") != "raylet":
            return True
        lines = [str(line) for line in data.get("lines") or ()]
        for line in lines:
            found = re.search(r"A worker died or was killed.*?Worker PID: (\d+)", line)
            if found is None or int(found[1]) not in cls._pids:
                return True
        return not lines


def _install(keep: Callable[[Any], bool]) -> bool:
    try:
        from ray._private import worker as ray_worker
    except ImportError:
        return False
    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None:
        return False

    def print_to_stdstream(data: Any, ignore_prefix: bool) -> None:
        if keep(data):
            original(data, ignore_prefix)

    ray_worker.print_to_stdstream = print_to_stdstream
    return True


def identity_here() -> Identity:
    """This process' identity (called inside the actor)."""
    import os

    context = ray.get_runtime_context()
    node_id = context.get_node_id()
    ip = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
    return Identity(os.getpid(), str(node_id), str(ip))
