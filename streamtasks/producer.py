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
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from redis.asyncio import Redis

from . import otel
from .calls import Calls
from .keys import FIELD_MESSAGE_ID, pick_shard, shard_stream, validate_name
from .message import FieldValue, encode_fields
from .results import ReplyWaiter
from .results import new_message_id as new_message_id

log = logging.getLogger("streamtasks.producer")

#: At most this many sends go into one coalesced pipeline.
MAX_PIPELINE = 1000

_Item = tuple[str, dict[str, str | bytes], int | None, "asyncio.Future[str]"]


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
        self.message_ids = message_ids
        self.shards = dict(shards or {})
        self._turns: dict[str, Iterator[int]] = {}
        self._queue: list[_Item] = []
        self._flusher: asyncio.Task[None] | None = None
        self.flushes = 0  # coalesced pipelines sent (for tests and benchmarks)
        self._replies: ReplyWaiter | None = None  # made by the first call

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

    def target(self, stream: str, key: str | bytes | None = None, shards: int | None = None) -> str:
        """The stream an entry for ``stream`` goes to: a shard when ``stream`` is sharded."""
        count = shards or self.shards.get(stream)
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
    ) -> str:
        """Add one entry; returns its entry id. Concurrent calls share pipelines. On a sharded
        stream (``shards``, or the producer's ``shards`` map), ``key`` picks the shard."""
        validate_name("stream", stream)
        target = self.target(stream, key, shards)
        return await self._add(target, self._prepare(fields, message_id), maxlen or self.maxlen)

    async def _add(self, target: str, encoded: dict[str, str | bytes], maxlen: int | None) -> str:
        """XADD (coalesced), in a ``send`` span when the caller is traced."""
        span = otel.send_span(target, encoded)  # None unless the caller is traced
        if span is None:
            return await self._enqueue(target, encoded, maxlen)
        try:
            entry_id = await self._enqueue(target, encoded, maxlen)
        except BaseException as exc:
            otel.end_send(span, None, exc)
            raise
        otel.end_send(span, entry_id)
        return entry_id

    async def _enqueue(self, target: str, encoded: dict[str, str | bytes], maxlen: int | None) -> str:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._queue.append((target, encoded, maxlen, future))
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
    ) -> list[str]:
        """Add many entries with explicit pipelines of ``chunk`` XADDs; returns their ids.
        On a sharded stream, ``keys`` (one per item) pick the shards."""
        validate_name("stream", stream)
        limit = maxlen or self.maxlen
        ids: list[str] = []
        batch: list[tuple[str, dict[str, str | bytes]]] = []
        for i, fields in enumerate(items):
            target = self.target(stream, keys[i] if keys is not None else None, shards)
            encoded = self._prepare(fields, None)
            otel.inject(encoded)  # the caller's trace context, if it is traced
            batch.append((target, encoded))
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
        if self._replies is not None:
            await self._replies.close()
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._owns_redis and self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


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
