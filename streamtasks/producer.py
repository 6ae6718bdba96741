"""The :class:`Producer`: XADD with automatic pipelining of concurrent sends.

``await producer.send(stream, fields)`` from many coroutines at once (the way an API server
calls it) does not cost a round trip each: sends that arrive while one pipeline is in flight
are queued and go out together in the next one. ``send_many`` pipelines explicitly.

Every entry gets a producer-assigned message id in the reserved field ``_st_mid`` (unless
``message_id`` is given), so a retried send of the same message is stored once by the
built-in handlers.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from redis.asyncio import Redis

from .keys import FIELD_MESSAGE_ID, validate_name
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
    delete entries no consumer group has read yet.
    """

    def __init__(
        self,
        redis: Redis | None = None,
        *,
        url: str | None = None,
        maxlen: int | None = None,
        message_ids: bool = True,
    ) -> None:
        if redis is None:
            from .config import RedisConfig

            redis = Redis.from_url(url or RedisConfig.from_env().url)
            self._owns_redis = True
        else:
            self._owns_redis = False
        self.redis = redis
        self.maxlen = maxlen
        self.message_ids = message_ids
        self._queue: list[_Item] = []
        self._flusher: asyncio.Task[None] | None = None
        self.flushes = 0  # coalesced pipelines sent (for tests and benchmarks)

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
    ) -> str:
        """Add one entry; returns its entry id. Concurrent calls share pipelines."""
        validate_name("stream", stream)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._queue.append((stream, self._prepare(fields, message_id), maxlen or self.maxlen, future))
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
    ) -> list[str]:
        """Add many entries with explicit pipelines of ``chunk`` XADDs; returns their ids."""
        validate_name("stream", stream)
        limit = maxlen or self.maxlen
        ids: list[str] = []
        batch: list[dict[str, str | bytes]] = []
        for fields in items:
            batch.append(self._prepare(fields, None))
            if len(batch) >= chunk:
                ids += await self._pipeline(stream, batch, limit)
                batch = []
        if batch:
            ids += await self._pipeline(stream, batch, limit)
        return ids

    async def _pipeline(
        self, stream: str, batch: list[dict[str, str | bytes]], maxlen: int | None
    ) -> list[str]:
        pipe = self.redis.pipeline(transaction=False)
        for encoded in batch:
            pipe.xadd(stream, encoded, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
        return [_text(i) for i in await pipe.execute()]

    async def _flush_all(self) -> None:
        # Yield once so every send() issued in this loop iteration joins the first pipeline.
        await asyncio.sleep(0)
        while self._queue:
            items, self._queue = self._queue[:MAX_PIPELINE], self._queue[MAX_PIPELINE:]
            await self._flush(items)

    async def _flush(self, items: list[_Item]) -> None:
        self.flushes += 1
        pipe = self.redis.pipeline(transaction=False)
        for stream, encoded, maxlen, _ in items:
            pipe.xadd(stream, encoded, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
        try:
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
        return bool(await self.redis.ping())

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._owns_redis:
            await self.redis.aclose()

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Sender(Protocol):
    """What ``Handler.send`` needs: a :class:`Producer`, or a stand-in such as the in-memory
    app of :mod:`streamtasks.testing`."""

    async def send(self, stream: str, fields: Mapping[str, FieldValue]) -> str: ...


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
