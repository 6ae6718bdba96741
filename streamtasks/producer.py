"""The :class:`Producer`: XADD with automatic pipelining of concurrent sends.

``await producer.send(stream, fields)`` from many coroutines at once (the way an API server
calls it) does not cost a round trip each: sends that arrive while one pipeline is in flight
are queued and go out together in the next one. ``send_many`` pipelines explicitly.

Every entry gets a producer-assigned message id in the reserved field ``_st_mid`` (unless
``message_id`` is given), so a retried send of the same message is stored once by the
built-in handlers.

Sharded streams (``stream_handler("orders", shards=16)``): ``send("orders", fields, key=k,
shards=16)`` -- or ``Producer(shards={"orders": 16})`` once -- writes to ``orders:{i}`` with
``i`` = CRC-32 of ``k`` modulo 16, so one key's entries keep their order within one shard;
without a key, the shards take turns.

Priority levels (``stream_handler("orders", priorities=3)``): ``send("orders", fields,
priority=2)`` writes to level 2, ``orders:p2`` (level 0, the default, is ``orders`` itself);
a level composes with a shard (``orders:p2:{5}``).
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from redis.asyncio import Redis

from .keys import FIELD_MESSAGE_ID, level_stream, pick_shard, shard_stream, validate_name
from .message import FieldValue, encode_fields

log = logging.getLogger("streamtasks.producer")

#: At most this many sends go into one coalesced pipeline.
MAX_PIPELINE = 1000

_Item = tuple[str, dict[str, str | bytes], int | None, "asyncio.Future[str]"]


def new_message_id() -> str:
    return uuid.uuid4().hex


class Producer:
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
        self.message_ids = message_ids
        self.shards = dict(shards or {})
        self._turns: dict[str, Iterator[int]] = {}
        self._queue: list[_Item] = []
        self._flusher: asyncio.Task[None] | None = None
        self.flushes = 0  # coalesced pipelines sent (for tests and benchmarks)

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

    def target(
        self, stream: str, key: str | bytes | None = None, shards: int | None = None, priority: int = 0
    ) -> str:
        """The stream an entry for ``stream`` goes to: its level ``priority``'s (0: ``stream``),
        and there a shard when ``stream`` is sharded."""
        count = shards or self.shards.get(stream)
        stream = level_stream(stream, _level(priority))
        if not count:
            return stream
        if key is None:
            turn = self._turns.setdefault(stream, itertools.cycle(range(count)))
            return shard_stream(stream, next(turn) % count)
        return shard_stream(stream, pick_shard(key, count))

    def _prepare(self, fields: Mapping[str, FieldValue], message_id: str | None) -> dict[str, str | bytes]:
        encoded = encode_fields(fields)
        if message_id is not None:
            encoded[FIELD_MESSAGE_ID] = message_id
        elif self.message_ids and FIELD_MESSAGE_ID not in encoded:
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
        priority: int = 0,
    ) -> str:
        """Add one entry; returns its entry id. Concurrent calls share pipelines. On a sharded
        stream (``shards``, or the producer's ``shards`` map), ``key`` picks the shard;
        ``priority`` picks the level of a prioritized stream."""
        validate_name("stream", stream)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        target = self.target(stream, key, shards, priority)
        self._queue.append((target, self._prepare(fields, message_id), maxlen or self.maxlen, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_all())
        return await future

    async def send_many(
        self,
        stream: str,
        items: Iterable[Mapping[str, FieldValue]],
        *,
        maxlen: int | None = None,
        chunk: int = MAX_PIPELINE,
        keys: Sequence[str | bytes] | None = None,
        shards: int | None = None,
        priority: int = 0,
    ) -> list[str]:
        """Add many entries with explicit pipelines of ``chunk`` XADDs; returns their ids.
        On a sharded stream, ``keys`` (one per item) pick the shards; ``priority``: the level."""
        validate_name("stream", stream)
        _level(priority)
        limit = maxlen or self.maxlen
        ids: list[str] = []
        batch: list[tuple[str, dict[str, str | bytes]]] = []
        for i, fields in enumerate(items):
            target = self.target(stream, keys[i] if keys is not None else None, shards, priority)
            batch.append((target, self._prepare(fields, None)))
            if len(batch) >= chunk:
                ids += await self._pipeline(batch, limit)
                batch = []
        if batch:
            ids += await self._pipeline(batch, limit)
        return ids

    async def _pipeline(
        self, batch: list[tuple[str, dict[str, str | bytes]]], maxlen: int | None
    ) -> list[str]:
        pipe = (await self._client()).pipeline(transaction=False)
        for target, encoded in batch:
            pipe.xadd(target, encoded, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
        return [_text(i) for i in await pipe.execute()]

    async def _flush_all(self) -> None:
        # Yield once so every send() issued in this loop iteration joins the first pipeline.
        await asyncio.sleep(0)
        while self._queue:
            items, self._queue = self._queue[:MAX_PIPELINE], self._queue[MAX_PIPELINE:]
            await self._flush(items)

    async def _flush(self, items: list[_Item]) -> None:
        self.flushes += 1
        try:
            pipe = (await self._client()).pipeline(transaction=False)
            for stream, encoded, maxlen, _ in items:
                pipe.xadd(stream, encoded, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
            results = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # the whole pipeline failed (connection lost ...)
            for *_, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), result in zip(items, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(_text(result))

    async def ping(self) -> bool:
        return bool(await (await self._client()).ping())

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._owns_redis and self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _level(priority: object) -> int:
    """``priority`` if it is a level (an int >= 0), else ValueError. The producer does not know
    how many levels a stream has: ``handler.send(..., priority=k)`` checks that too."""
    if isinstance(priority, bool) or not isinstance(priority, int) or priority < 0:
        raise ValueError(f"priority must be an int >= 0, got {priority!r}")
    return priority


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
    ) -> str: ...


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
