"""Where a producer's entries for a sharded stream go: the shard count it was told (on the
send, or ``Producer(shards={...})``), else the one the workers serving the stream recorded in
Redis (``keys.shard_count_key``: looked up once, trusted :data:`SHARDS_TTL_S`, concurrent sends
sharing one lookup, the value checked); a key picks the shard (CRC-32 of the key modulo the
count), key-less sends take turns. A key for a stream nothing says is sharded is an error,
never an entry in the unsharded stream no worker reads."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from redis.asyncio import Redis

from .errors import ConfigError
from .keys import MAX_SHARDS, pick_shard, shard_count_key, shard_stream

#: Seconds a producer trusts the shard count it looked up for a stream (or that it has none).
SHARDS_TTL_S = 30.0

Client = Callable[[], Awaitable[Redis]]


class ShardCounts:
    """The shard counts one producer knows, was told or looked up, and its key-less turns."""

    def __init__(self, known: Mapping[str, int] | None = None) -> None:
        self.known = dict(known or {})
        self._recorded: dict[str, tuple[int, float]] = {}  # stream -> (shards looked up, when)
        self._lookups: dict[str, asyncio.Task[int]] = {}
        self._turns: dict[str, Iterator[int]] = {}

    async def count(self, stream: str, shards: int | None, client: Client) -> int:
        """``shards``, the count this producer was told, or the recorded one (0: none)."""
        known = shards or self.known.get(stream)
        if known:
            return known
        recorded = self._recorded.get(stream)
        if recorded is not None and time.monotonic() - recorded[1] < SHARDS_TTL_S:
            return recorded[0]
        lookup = self._lookups.get(stream)
        if lookup is None:
            lookup = self._lookups[stream] = asyncio.ensure_future(self._look_up(stream, client))
            lookup.add_done_callback(lambda _: self._lookups.pop(stream, None))
        return await asyncio.shield(lookup)

    async def keyed(self, stream: str, keyed: bool, shards: int | None, client: Client) -> int:
        """:meth:`count`; a key for a stream nothing says is sharded is an error."""
        count = await self.count(stream, shards, client)
        if keyed and not count:
            raise ConfigError(
                f"a key was given for stream {stream!r}, but nothing says it is sharded: no worker "
                f"recorded its shards ({shard_count_key(stream)}) and this producer was not told "
                f"them; pass shards= (on the send, or Producer(shards={{{stream!r}: N}})), start "
                "the workers that serve it first, or send without a key"
            )
        return count

    def target(self, stream: str, key: str | bytes | None, count: int) -> str:
        """The stream an entry goes to: ``stream`` itself, or the shard of ``key`` (key-less
        entries take turns)."""
        if not count:
            return stream
        if key is None:
            turn = self._turns.setdefault(stream, itertools.cycle(range(count)))
            return shard_stream(stream, next(turn) % count)
        return shard_stream(stream, pick_shard(key, count))

    async def _look_up(self, stream: str, client: Client) -> int:
        key = shard_count_key(stream)
        raw = await (await client()).get(key)
        count = 0 if raw is None else recorded_count(key, raw)
        self._recorded[stream] = (count, time.monotonic())
        return count


def recorded_count(key: str, raw: Any) -> int:
    """A recorded shard count, checked: a value another process wrote that does not fit is an
    error naming the key, never a guess."""
    value = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_SHARDS:
        raise ConfigError(f"{key} holds {value[:40]!r}, not a shard count (1-{MAX_SHARDS})")
    return int(value)
