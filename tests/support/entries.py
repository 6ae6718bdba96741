"""Writing entries with a raw XADD and reading what the test apps recorded."""

from __future__ import annotations

from typing import Any


async def xadd_many(redis: Any, stream: str, n: int, **extra: str) -> list[str]:
    """Append ``n`` entries ``{"n": i, **extra}`` in one round trip; their ids."""
    pipe = redis.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(stream, {"n": str(i), **extra})
    return [i.decode() for i in await pipe.execute()]


async def handled(redis: Any, stream: str) -> dict[str, int]:
    """How often the test apps handled each entry of ``stream`` (their ``handled:`` hash)."""
    raw = await redis.hgetall(f"handled:{stream}")
    return {k.decode().split("|")[0]: int(v) for k, v in raw.items()}


async def pending(redis: Any, stream: str, group: str) -> int:
    """Entries of ``stream`` delivered to ``group`` and not acked yet."""
    return int((await redis.xpending(stream, group))["pending"])
