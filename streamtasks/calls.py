"""``Producer.call`` and ``Producer.result``: send and wait for a handler's answer
(:mod:`streamtasks.results` has the format and the waiter)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from . import keys as _keys
from .errors import ResultNotFound
from .keys import FIELD_REPLY, validate_name
from .message import FieldValue
from .results import DEFAULT_CALL_TIMEOUT, ReplyWaiter, decode_outcome, new_message_id, result_ident


class Calls:
    """The request-reply half of :class:`~streamtasks.Producer` (a mixin: the producer
    provides the client, the shard choice, the encoding and the coalesced send)."""

    maxlen: int | None
    _replies: ReplyWaiter | None

    async def _client(self) -> Redis:
        raise NotImplementedError

    def target(self, stream: str, key: str | bytes | None = None, shards: int | None = None) -> str:
        raise NotImplementedError

    def _prepare(self, fields: Mapping[str, FieldValue], message_id: str | None) -> dict[str, str | bytes]:
        raise NotImplementedError

    async def _add(self, target: str, encoded: dict[str, str | bytes], maxlen: int | None) -> str:
        raise NotImplementedError

    async def _count(self, stream: str, keyed: bool, shards: int | None) -> int:
        raise NotImplementedError

    async def call(
        self,
        stream: str,
        fields: Mapping[str, FieldValue],
        *,
        timeout: float | None = DEFAULT_CALL_TIMEOUT,
        message_id: str | None = None,
        key: str | bytes | None = None,
        shards: int | None = None,
        result_type: Any = Any,
    ) -> Any:
        """Send an entry to a handler declared with ``results=True`` and wait for its return
        value (decoded into ``result_type``); see :meth:`streamtasks.Handler.call`. On a sharded
        stream without ``key``, the message id picks the shard."""
        validate_name("stream", stream)
        mid = message_id or new_message_id()
        count = await self._count(stream, key is not None, shards)
        target = self.target(stream, mid if key is None else key, count)
        redis, waiter = await self._waiter()
        ident = result_ident(mid)
        future = waiter.expect(ident, redis)
        try:
            encoded = self._prepare(fields, mid)
            encoded[FIELD_REPLY] = waiter.stream
            await self._add(target, encoded, self.maxlen)
        except BaseException:
            waiter.forget(ident, future)
            raise
        return decode_outcome(await waiter.wait(redis, target, ident, future, timeout), result_type)

    async def result(
        self,
        stream: str,
        message_id: str,
        *,
        timeout: float | None = None,
        key: str | bytes | None = None,
        shards: int | None = None,
        result_type: Any = Any,
    ) -> Any:
        """The stored result of message ``message_id`` sent to ``stream`` (``key``: the shard
        key its call was given, if any). Raises :class:`~streamtasks.errors.DeadLettered` for a
        dead-lettered entry. Without ``timeout``: :class:`~streamtasks.errors.ResultNotFound`
        if none is stored (yet, or any more). With one: waits for it, notified for the calls
        this producer made; :class:`~streamtasks.errors.CallTimeout` when it has not come."""
        count = await self._count(stream, key is not None, shards)
        target = self.target(stream, message_id if key is None else key, count)
        ident = result_ident(message_id)
        if not timeout:
            stored = await (await self._client()).get(_keys.result_key(target, ident))
            if stored is None:
                raise ResultNotFound(f"no result stored for message {message_id} on {target}")
            return decode_outcome(stored, result_type)
        redis, waiter = await self._waiter()
        future = waiter.expect(ident, redis)  # before looking: a notification on the way is kept
        stored = await redis.get(_keys.result_key(target, ident))
        if stored is not None:
            waiter.forget(ident, future)
            return decode_outcome(stored, result_type)
        return decode_outcome(await waiter.wait(redis, target, ident, future, timeout), result_type)

    async def _waiter(self) -> tuple[Redis, ReplyWaiter]:
        redis = await self._client()
        waiter = self._replies = self._replies or ReplyWaiter()
        await waiter.ensure(redis)
        return redis, waiter
