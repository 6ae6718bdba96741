"""Reading: consumer groups and ``XREADGROUP``.

Every lane is read with its own ``XREADGROUP`` and its own ``COUNT`` (its batch size, which
its bytes budget bounds), so a lane of big entries is never read at another lane's count,
and on Redis Cluster no read names keys of two slots (``CROSSSLOT``). The reads go out as one
pipeline (a cluster pipeline splits it per node and runs the nodes side by side) without
blocking; only when every lane came back empty does the worker block: one ``XREADGROUP
BLOCK`` over all lanes with the smallest lane's ``COUNT`` where their streams share a node
and slot (always on one node), else a short sleep (:data:`CLUSTER_POLL_S`). A single lane
is read with one blocking ``XREADGROUP``, which returns at once when entries wait.

Entries stay the flat ``[name, value, ...]`` lists hiredis returns (no redis-py reply parser
runs on them), with no per-entry dict on the hot path. A missing
group (Redis restarted without persistence, a failover lost it, or it was deleted) is
recreated just after the last entry this worker read (:func:`~streamtasks.streams.restart_point`), so nothing
added since is skipped.

On one node the blocking read has a connection of its own, whose ``CLIENT ID`` the reader
knows: :meth:`Reader.unblock` (a worker's stop) ends a read in progress at once with
``CLIENT UNBLOCK``, which Redis answers as if its ``BLOCK`` had run out (no entry is
delivered by it), instead of waiting up to ``block`` seconds for it. After a failed read that
connection goes back to the pool and the next read takes one from it: the pool connects it
where the server is *now* (for a ``redis+sentinel://`` URL, the master the sentinels name after
a failover), whereas redis-py 8 reconnects a connection it kept to the address it had before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.crc import key_slot

from ..connect import is_cluster
from ..redisutil import REDIS_DOWN, text
from .groups import Groups
from .lanes import Lane
from .priority import Priorities
from .run import RawEntry

log = logging.getLogger("streamtasks.worker")

#: XREADGROUP block (seconds) while some stream is left out of the read because its lane is
#: full: the read returns soon enough to pick that stream up again when a batch finishes.
BUSY_BLOCK = 0.005
#: On Redis Cluster with lanes in several slots (no blocking read can name them all): pause
#: this long after a round of reads that found nothing.
CLUSTER_POLL_S = 0.05
#: The command name the reads are sent as: a cluster client has no reply parser registered
#: for the lower-case name, so replies stay hiredis' flat lists.
_XREADGROUP = "xreadgroup"
#: Seconds between two ``CLIENT UNBLOCK`` of a read that did not reach Redis yet.
UNBLOCK_RETRY_S = 0.02


def read_plan(lanes: Sequence[Lane], all_lanes: int, block: float) -> tuple[dict[Lane, int], float]:
    """COUNT of each lane's XREADGROUP (its own batch size), and how long (seconds) a read
    that found nothing may block.

    While a busy stream is left out (its lane is full), block only briefly: its capacity may
    free up any moment, and a long block on the idle streams would starve it."""
    counts = {lane: lane.batch_size for lane in lanes}
    return counts, block if len(lanes) == all_lanes else min(block, BUSY_BLOCK)


def blocking_count(counts: Mapping[Lane, int]) -> int:
    """COUNT of the one blocking XREADGROUP over several lanes: the smallest lane's, so no
    stream returns more than its own lane asked for."""
    return min(counts.values())


class Reader:
    """Groups and reads for one consumer of one group."""

    def __init__(self, redis: Redis, group: str, consumer: str, lanes: Mapping[str, Lane]) -> None:
        self.redis = redis
        self.group = group
        self.consumer = consumer
        self.lanes = lanes
        #: What to read of prioritized streams (.priority); it links their lanes' levels.
        self.priorities = Priorities(lanes)
        self.cluster = is_cluster(redis)
        self.groups = Groups(redis, group, consumer, lanes, self.cluster)
        # One node: a client of our own without redis-py's XREADGROUP reply parser (its
        # callback table ignores case). A cluster's table does not: the lower-case name does it.
        # It holds one connection, so a blocking read can be ended by its CLIENT ID.
        self._client = redis
        if not self.cluster:
            self._client = Redis(connection_pool=redis.connection_pool, single_connection_client=True)
            self._client.response_callbacks.pop("XREADGROUP", None)
        self._client_id: int | None = None  # of the blocking read's connection, when known
        self._can_unblock = not self.cluster  # and the user may run CLIENT ID
        self._blocking = False  # a blocking XREADGROUP is in flight
        self._unblocked = False  # stopped: no blocking read any more

    async def ensure_groups(self) -> None:
        """Create the lanes' groups where missing (:meth:`.groups.Groups.ensure`)."""
        await self.groups.ensure()

    def readable(self) -> list[Lane]:
        """The lanes to read now: those with room; of a prioritized stream, as its levels' plan
        says (:func:`~.priority.read_levels`)."""
        return self.priorities.readable(self.lanes.values())

    async def read(self, lanes: Sequence[Lane], block: float) -> dict[Lane, list[RawEntry]]:
        """Read ``lanes``, each at its own COUNT; entries by lane (see the module docstring).
        Raises Redis' errors, except that a missing group is recreated."""
        counts, block = read_plan(lanes, len(self.lanes), block)
        try:
            out = await self._read_each(counts) if len(counts) > 1 else {}
            if not out:
                out = await self._read_blocking(counts, block)
        except rx.ResponseError as exc:
            if not _group_lost(exc):
                raise
            await self.groups.recreate()
            return {}
        self.priorities.saw(lanes, out)
        return out

    async def _read_each(self, counts: Mapping[Lane, int]) -> dict[Lane, list[RawEntry]]:
        """One non-blocking XREADGROUP per lane, all in one pipeline."""
        pipe = self._client.pipeline(transaction=False)
        for lane, count in counts.items():
            pipe.execute_command(
                _XREADGROUP, "GROUP", self.group, self.consumer, "COUNT", count, "STREAMS", lane.stream, ">"
            )
        out: dict[Lane, list[RawEntry]] = {}
        lost: Exception | None = None
        for reply in await pipe.execute(raise_on_error=False):
            if isinstance(reply, Exception):
                lost = lost or reply
                continue
            self._collect(reply, out)
        if lost is not None and (not out or _group_lost(lost)):
            if not out:
                raise lost
            await self.groups.recreate()  # what the other lanes read is kept
        return out

    async def _read_blocking(self, counts: Mapping[Lane, int], block: float) -> dict[Lane, list[RawEntry]]:
        """One XREADGROUP BLOCK over every lane (they share a slot, or Redis is one node);
        on a cluster with lanes in several slots, a short pause instead."""
        streams = [lane.stream for lane in counts]
        if self.cluster and len({key_slot(s.encode()) for s in streams}) > 1:
            await asyncio.sleep(min(block, CLUSTER_POLL_S))
            return {}
        if self._can_unblock and self._client_id is None:
            try:
                self._client_id = int(await self._client.client_id())
            except rx.ResponseError:  # NOPERM: the least-privilege ACL has no CLIENT
                self._can_unblock = False  # a stop waits for the read's block instead
        if self._unblocked:
            return {}
        command: Any = self._client.execute_command
        self._blocking = True
        try:
            reply = await command(
                _XREADGROUP,
                "GROUP",
                self.group,
                self.consumer,
                "COUNT",
                blocking_count(counts),
                "BLOCK",
                max(1, int(block * 1000)),
                "STREAMS",
                *streams,
                *[">"] * len(streams),
            )
        except Exception:
            self._client_id = None  # the next read is on a new connection:
            await self._client.aclose(close_connection_pool=False)  # (see the module docstring)
            raise
        except BaseException:
            self._client_id = None
            raise
        finally:
            self._blocking = False
        if not reply:
            self._client_id = None  # idle: asked again before the next read, in case redis-py reconnected
        out: dict[Lane, list[RawEntry]] = {}
        self._collect(reply, out)
        return out

    async def unblock(self) -> None:
        """End a blocking read in flight at once (``CLIENT UNBLOCK``: it returns as if its
        block had run out, and delivered nothing), and start no new one. Until the read
        returns, the unblock is sent again every :data:`UNBLOCK_RETRY_S` (it may reach
        Redis, on another connection, before the read does). On a cluster, without the
        permission (``client|id``, ``client|unblock``), or with Redis unreachable, the read
        ends by itself within its block."""
        self._unblocked = True
        while self._blocking and self._client_id is not None and self._can_unblock:
            try:
                if await self.redis.client_unblock(self._client_id):
                    return
            except (*REDIS_DOWN, rx.ResponseError):
                return
            await asyncio.sleep(UNBLOCK_RETRY_S)

    async def unblock_when(self, stopping: asyncio.Event) -> None:
        """A worker's loop: :meth:`unblock` once ``stopping`` is set."""
        await stopping.wait()
        await self.unblock()

    async def close(self) -> None:
        """Give the blocking read's connection back to the pool."""
        if not self.cluster:
            await self._client.aclose(close_connection_pool=False)

    def _collect(self, reply: Any, out: dict[Lane, list[RawEntry]]) -> None:
        streams = reply.items() if isinstance(reply, dict) else reply or ()  # RESP3 / RESP2
        for raw_stream, entries in streams:
            if entries:
                out[self.lanes[text(raw_stream)]] = [(text(i), f, 1) for i, f in entries]


def _group_lost(exc: Exception) -> bool:
    # NOGROUP: the group is gone; UNBLOCKED: the stream was deleted while we waited.
    return str(exc).startswith(("NOGROUP", "UNBLOCKED"))
