"""The :class:`Producer`: XADD with automatic pipelining of concurrent sends.

``await producer.send(stream, fields)`` from many coroutines at once (the way an API server
calls it) does not cost a round trip each: sends that arrive while one pipeline is in flight
are queued and go out together in the next one. ``send_many`` pipelines explicitly.

Every entry gets a producer-assigned message id in the reserved field ``_st_mid`` (unless
``message_id`` is given), so a retried send of the same message is stored once by the
built-in handlers.

Sharded streams (``stream_handler("orders", shards=16)``): ``send("orders", fields, key=k)``
writes to ``orders:{i}`` with ``i`` = CRC-32 of ``k`` modulo 16, so one key's entries keep
their order within one shard; without a key, the shards take turns (:mod:`streamtasks.shards`
says where the count comes from).

Delayed entries (``send(..., delay=30)`` or ``eta=datetime``; ``send_many`` takes one for all or
one per entry): the entry waits in Redis until it is due (:mod:`streamtasks.delayed`), written
in the same pipelines as the plain sends (one script call per stream and pipeline in
``send_many``); the send returns its message id, since its entry id is made when it is moved.

Priority levels (``stream_handler("orders", priorities=3)``): ``send("orders", fields,
priority=2)`` writes to level 2, ``orders:p2`` (level 0, the default, is ``orders`` itself);
a level composes with a shard (``orders:p2:{5}``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from redis.asyncio import Redis

from . import otel
from .calls import Calls
from .coalesce import MAX_PIPELINE, Coalescer, Row, write_rows
from .delayed import Delay, due_ms, due_times
from .keys import FIELD_MESSAGE_ID, level_stream, validate_name
from .message import FieldValue, encode_fields
from .results import ReplyWaiter
from .results import new_message_id as new_message_id
from .shards import ShardCounts

log = logging.getLogger("streamtasks.producer")


#: A queued send: target stream, fields, maxlen, due time (ms; None: now), its future.
#: One entry of a pipeline: target stream, fields, due time (ms; None: now).


class Producer(Calls):
    """Adds entries to streams. ``Producer(redis)`` or ``Producer(url="redis://...")``.

    ``maxlen`` (approximate ``MAXLEN ~``) bounds every stream written; careful: trimming can
    delete entries no consumer group has read yet (ack-aware trimming is the handler option
    ``trim_acked_after``). ``shards`` maps sharded stream names to their shard counts. Given a
    ``url`` (or none: the environment's), the producer connects on first use, to one node or
    a Redis Cluster (:func:`streamtasks.connect.connect`).
    """

    def __init__(
        self,
        redis: Redis | None = None,
        *,
        url: str | None = None,
        maxlen: int | None = None,
        message_ids: bool = True,
        shards: Mapping[str, int] | None = None,
    ) -> None:
        self._redis = redis
        self._url = url
        self._owns_redis = redis is None
        self._connecting: asyncio.Lock | None = None
        self.maxlen = maxlen
        """Approximate ``MAXLEN ~`` of every stream written (``None``: no trimming)."""
        self.message_ids = message_ids
        """Give every entry a message id (``_st_mid``, the idempotency key)."""
        self._sharding = ShardCounts(shards)
        self.shards = self._sharding.known
        """Shard counts of sharded streams, by stream name."""
        self._coalesced = Coalescer(self._client)
        self._replies: ReplyWaiter | None = None  # made by the first call

    @property
    def flushes(self) -> int:
        """Coalesced pipelines sent so far (for tests and benchmarks)."""
        return self._coalesced.flushes

    @property
    def redis(self) -> Redis:
        """The client (after the first send when the producer connects by itself)."""
        if self._redis is None:
            raise RuntimeError("the producer has not connected yet (send something first)")
        return self._redis

    async def _client(self) -> Redis:
        if self._redis is None:
            self._connecting = self._connecting or asyncio.Lock()
            async with self._connecting:
                if self._redis is None:
                    from .config import RedisConfig
                    from .connect import connect

                    self._redis = await connect(self._url or RedisConfig.from_env().url)
        return self._redis

    async def shard_count(self, stream: str, shards: int | None = None) -> int:
        """How many shards ``stream`` has (0: not sharded); see :class:`ShardCounts`."""
        return await self._sharding.count(stream, shards, self._client)

    def target(
        self, stream: str, key: str | bytes | None = None, shards: int | None = None, priority: int = 0
    ) -> str:
        """The stream an entry for ``stream`` goes to: its level ``priority``'s (0: ``stream``),
        and there a shard when ``stream`` is sharded (``shards``, or the producer's map;
        :meth:`shard_count` also asks Redis)."""
        level = level_stream(stream, _checked_level(priority))
        return self._sharding.target(level, key, shards or self.shards.get(stream) or 0)

    def _prepare(
        self, fields: Mapping[str, FieldValue], message_id: str | None, delayed: bool = False
    ) -> dict[str, str | bytes]:
        encoded = encode_fields(fields)
        if message_id is not None:
            encoded[FIELD_MESSAGE_ID] = message_id
        elif (self.message_ids or delayed) and FIELD_MESSAGE_ID not in encoded:
            encoded[FIELD_MESSAGE_ID] = new_message_id()
        return encoded

    async def send(
        self,
        stream: str,
        fields: Mapping[str, FieldValue],
        *,
        message_id: str | None = None,
        maxlen: int | None = None,
        key: str | bytes | None = None,
        shards: int | None = None,
        delay: Delay | None = None,
        eta: datetime | None = None,
        priority: int = 0,
    ) -> str:
        """Add one entry; returns its entry id. Concurrent calls share pipelines. On a sharded
        stream (``shards``, or the producer's ``shards`` map), ``key`` picks the shard;
        ``priority`` picks the level of a prioritized stream. With ``delay`` (seconds or a
        timedelta) or ``eta`` (a timezone-aware datetime) in the future, the entry waits in
        Redis until then, and its message id is returned."""
        validate_name("stream", stream)
        due = due_ms(delay, eta, time.time())
        encoded = self._prepare(fields, message_id, due is not None)
        level, count = await self._level_of(stream, priority, key is not None, shards)
        return await self._add(self.target(level, key, count), encoded, maxlen or self.maxlen, due)

    async def _level_of(self, stream: str, priority: int, keyed: bool, shards: int | None) -> tuple[str, int]:
        """The stream of ``stream``'s level ``priority`` (0: ``stream`` itself) and its shard
        count (``shards``, the producer's map by the declared stream, or the recorded one)."""
        level = level_stream(stream, _checked_level(priority))
        return level, await self._sharding.keyed(
            level, keyed, shards or self.shards.get(stream), self._client
        )

    async def _add(
        self, target: str, encoded: dict[str, str | bytes], maxlen: int | None, due: int | None = None
    ) -> str:
        """XADD (coalesced), in a ``send`` span when the caller is traced."""
        span = otel.send_span(target, encoded)  # None unless the caller is traced
        if span is None:
            return await self._coalesced.add(target, encoded, maxlen, due)
        try:
            entry_id = await self._coalesced.add(target, encoded, maxlen, due)
        except BaseException as exc:
            otel.end_send(span, None, exc)
            raise
        otel.end_send(span, entry_id)
        return entry_id

    async def _count(self, stream: str, keyed: bool, shards: int | None) -> int:
        """The shard count of ``stream`` (:class:`~streamtasks.shards.ShardCounts`)."""
        return await self._sharding.keyed(stream, keyed, shards, self._client)

    async def send_many(
        self,
        stream: str,
        items: Iterable[Mapping[str, FieldValue]],
        *,
        maxlen: int | None = None,
        chunk: int = MAX_PIPELINE,
        keys: Sequence[str | bytes] | None = None,
        shards: int | None = None,
        delay: Delay | Sequence[Delay] | None = None,
        eta: datetime | Sequence[datetime] | None = None,
        priority: int = 0,
    ) -> list[str]:
        """Add many entries with explicit pipelines of ``chunk`` XADDs; returns their ids.
        On a sharded stream, ``keys`` (one per item) pick the shards; ``priority``: the level of
        a prioritized stream, for every entry. ``delay`` / ``eta``: one
        for all entries or one per entry, as for :meth:`send` (a delayed entry's message id is
        returned)."""
        validate_name("stream", stream)
        limit = maxlen or self.maxlen
        entries = list(items)
        dues: Sequence[int | None] = [None] * len(entries)
        if delay is not None or eta is not None:
            dues = due_times(len(entries), delay, eta, time.time())
        ids: list[str] = []
        batch: list[Row] = []
        level, count = await self._level_of(stream, priority, bool(keys), shards)
        for i, fields in enumerate(entries):
            target = self.target(level, keys[i] if keys is not None else None, count)
            encoded = self._prepare(fields, None, dues[i] is not None)
            otel.inject(encoded)  # the caller's trace context, if it is traced
            batch.append((target, encoded, dues[i]))
            if len(batch) >= chunk:
                ids += await write_rows(await self._client(), batch, limit)
                batch = []
        if batch:
            ids += await write_rows(await self._client(), batch, limit)
        return ids

    async def ping(self) -> bool:
        """Whether Redis answers ``PING``."""
        return bool(await (await self._client()).ping())

    async def close(self) -> None:
        """Wait for the sends under way, then close the connection (if this producer opened it)."""
        if self._replies is not None:
            await self._replies.close()
        await self._coalesced.wait()
        if self._owns_redis and self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Sender(Protocol):
    """What ``Handler.send`` needs: a :class:`Producer`, or a stand-in such as the in-memory
    app of :mod:`streamtasks.testing`."""

    async def send(
        self,
        stream: str,
        fields: Mapping[str, FieldValue],
        *,
        key: str | bytes | None = None,
        shards: int | None = None,
        delay: Delay | None = None,
        eta: datetime | None = None,
    ) -> str: ...

    async def call(
        self,
        stream: str,
        fields: Mapping[str, FieldValue],
        *,
        timeout: float | None = ...,
        message_id: str | None = None,
        key: str | bytes | None = None,
        shards: int | None = None,
        result_type: Any = ...,
    ) -> Any: ...

    async def result(
        self,
        stream: str,
        message_id: str,
        *,
        timeout: float | None = None,
        key: str | bytes | None = None,
        shards: int | None = None,
        result_type: Any = ...,
    ) -> Any: ...


#: A stand-in for the default producer in this context (``streamtasks.testing`` sets it).
sender_override: contextvars.ContextVar[Sender | None] = contextvars.ContextVar(
    "streamtasks_sender_override", default=None
)


def current_sender() -> Sender:
    """The override of this context if one is set, else :func:`default_producer`."""
    return sender_override.get() or default_producer()


_default: Producer | None = None


def default_producer() -> Producer:
    """A process-wide producer configured from the environment (``REDIS_URL`` ...)."""
    global _default
    if _default is None:
        _default = Producer()
    return _default


def _checked_level(priority: object) -> int:
    """``priority`` if it is a level (an int >= 0), else ValueError. The producer does not know
    how many levels a stream has: ``handler.send(..., priority=k)`` checks that too."""
    if isinstance(priority, bool) or not isinstance(priority, int) or priority < 0:
        raise ValueError(f"priority must be an int >= 0, got {priority!r}")
    return priority
