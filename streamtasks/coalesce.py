"""Coalescing: ``Producer.send`` called from many coroutines at once (the way an API server
calls it) does not cost a round trip each. Sends that arrive while one pipeline is in flight
are queued and go out together in the next one (at most :data:`MAX_PIPELINE` a pipeline);
each send's future gets its entry id (a delayed entry's: its message id)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from .delayed import queue_schedule, scheduled_fields
from .keys import FIELD_MESSAGE_ID

#: At most this many sends go into one coalesced pipeline.
MAX_PIPELINE = 1000

#: (stream, fields, due time in ms or None): one entry of ``send_many``
Row = tuple[str, dict[str, str | bytes], int | None]
#: (stream, fields, MAXLEN, due time in ms or None, the send's future)
_Item = tuple[str, dict[str, str | bytes], int | None, int | None, "asyncio.Future[str]"]


class Coalescer:
    """The sends under way of one producer, flushed in pipelines by one task at a time."""

    def __init__(self, client: Callable[[], Awaitable[Redis]]) -> None:
        self.client = client
        self.queue: list[_Item] = []
        self.flushes = 0
        self._flusher: asyncio.Task[None] | None = None

    def add(
        self, stream: str, encoded: dict[str, str | bytes], maxlen: int | None, due: int | None
    ) -> asyncio.Future[str]:
        """Queue one send; its future gets the entry id."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.queue.append((stream, encoded, maxlen, due, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_all())
        return future

    async def wait(self) -> None:
        """Wait for the sends under way (their errors go to their futures)."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def _flush_all(self) -> None:
        # Yield once so every send() issued in this loop iteration joins the first pipeline.
        await asyncio.sleep(0)
        while self.queue:
            items, self.queue = self.queue[:MAX_PIPELINE], self.queue[MAX_PIPELINE:]
            await self._flush(items)

    async def _flush(self, items: list[_Item]) -> None:
        self.flushes += 1
        try:
            redis = await self.client()
            pipe = redis.pipeline(transaction=False)
            for stream, encoded, maxlen, due, _ in items:
                if due is None:
                    pipe.xadd(stream, encoded, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
                else:
                    mid = text(encoded[FIELD_MESSAGE_ID])
                    await queue_schedule(redis, pipe, stream, [(mid, due, scheduled_fields(encoded, due))])
            results = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # the whole pipeline failed (connection lost ...)
            for *_, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, encoded, _, due, future), result in zip(items, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(text(result if due is None else encoded[FIELD_MESSAGE_ID]))


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def write_rows(redis: Redis, rows: list[Row], maxlen: int | None) -> list[str]:
    """``send_many``'s explicit pipeline: XADD the plain entries of ``rows``; the delayed ones
    go in one script call per stream. Returns entry ids, and message ids for the delayed ones."""
    pipe = redis.pipeline(transaction=False)
    slots: list[int | str] = []  # per entry: its XADD's place in the replies, or its message id
    added = 0
    delayed: dict[str, list[tuple[str, int, bytes]]] = {}
    for target, encoded, due in rows:
        if due is None:
            pipe.xadd(target, encoded, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
            slots.append(added)
            added += 1
        else:
            mid = text(encoded[FIELD_MESSAGE_ID])
            delayed.setdefault(target, []).append((mid, due, scheduled_fields(encoded, due)))
            slots.append(mid)
    for target, scheduled in delayed.items():
        await queue_schedule(redis, pipe, target, scheduled)
    replies = await pipe.execute()
    return [text(replies[s]) if isinstance(s, int) else s for s in slots]
