"""The dead-letter format, and listing / replaying / purging dead letters.

A dead-letter entry is a flat stream entry:

======================  ===========================================================
``stream``, ``id``      where the entry came from (its original stream and entry id)
``group``, ``handler``  the consumer group and the handler that gave up on it
``reason``              a short code: ``handler_error``, ``invalid_json``, ``too_large``,
                        ``rejected``, ``delivery_limit`` ...
``error_type``          the exception class name; ``error`` its message (redacted)
``traceback``           the last 4000 characters of the traceback (redacted)
``attempts``            deliveries it had, the failing one included
``first_failure_ms``    first and last failure, milliseconds since the epoch
``last_failure_ms``
``f:<name>``            every original field, byte for byte
======================  ===========================================================
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from attrs import frozen
from redis.asyncio import Redis

from . import lua
from .keys import DEAD_FIELD_PREFIX, FIELD_ORIGIN_ID, FIELD_ORIGIN_STREAM
from .logs import redact
from .message import RawFields, field_pairs
from .retry import ErrorInfo


def dead_letter_fields(
    *,
    stream: str,
    entry_id: str,
    group: str,
    handler: str,
    error: ErrorInfo,
    attempts: int,
    raw: RawFields | Mapping[str, str],
    now_ms: int | None = None,
) -> list[str | bytes]:
    """The flat field/value list of a dead letter (``first_failure_ms`` is added by the script)."""
    now = str(now_ms if now_ms is not None else int(time.time() * 1000))
    out: list[str | bytes] = [
        "stream", stream,
        "id", entry_id,
        "group", group,
        "handler", handler,
        "reason", error.reason,
        "error_type", error.type,
        "error", redact(error.message),
        "traceback", redact(error.traceback),
        "attempts", str(attempts),
        "last_failure_ms", now,
    ]  # fmt: skip
    pairs = raw.items() if isinstance(raw, Mapping) else field_pairs(raw)
    for name, value in pairs:
        key = name.decode("utf-8", "backslashreplace") if isinstance(name, bytes) else name
        out += [DEAD_FIELD_PREFIX + key, value]
    return out


@frozen
class DeadLetter:
    """A decoded dead-letter entry."""

    dead_id: str
    stream: str
    id: str
    group: str
    handler: str
    reason: str
    error_type: str
    error: str
    traceback: str
    attempts: int
    first_failure_ms: int
    last_failure_ms: int
    fields: Mapping[str, bytes]

    @classmethod
    def from_entry(cls, dead_id: bytes | str, raw: Mapping[bytes, bytes]) -> DeadLetter:
        meta: dict[str, str] = {}
        fields: dict[str, bytes] = {}
        for key, value in raw.items():
            name = key.decode("utf-8", "backslashreplace")
            if name.startswith(DEAD_FIELD_PREFIX):
                fields[name[len(DEAD_FIELD_PREFIX) :]] = value
            else:
                meta[name] = value.decode("utf-8", "backslashreplace")
        return cls(
            dead_id=dead_id.decode() if isinstance(dead_id, bytes) else dead_id,
            stream=meta.get("stream", ""),
            id=meta.get("id", ""),
            group=meta.get("group", ""),
            handler=meta.get("handler", ""),
            reason=meta.get("reason", ""),
            error_type=meta.get("error_type", ""),
            error=meta.get("error", ""),
            traceback=meta.get("traceback", ""),
            attempts=_int(meta.get("attempts")),
            first_failure_ms=_int(meta.get("first_failure_ms")),
            last_failure_ms=_int(meta.get("last_failure_ms")),
            fields=fields,
        )

    def replay_fields(self) -> list[bytes | str]:
        """Original fields plus the origin markers, so idempotency keys survive a replay."""
        out: list[bytes | str] = []
        for name, value in self.fields.items():
            if name in (FIELD_ORIGIN_STREAM, FIELD_ORIGIN_ID):
                continue
            out += [name, value]
        origin_stream = self.fields.get(FIELD_ORIGIN_STREAM, self.stream.encode())
        origin_id = self.fields.get(FIELD_ORIGIN_ID, self.id.encode())
        return [*out, FIELD_ORIGIN_STREAM, origin_stream, FIELD_ORIGIN_ID, origin_id]


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


async def list_dead(redis: Redis, dead_stream: str, count: int = 100, start: str = "-") -> list[DeadLetter]:
    entries: Any = await redis.xrange(dead_stream, min=start, max="+", count=count)
    return [DeadLetter.from_entry(i, f) for i, f in entries]


async def get_dead(redis: Redis, dead_stream: str, dead_id: str) -> DeadLetter | None:
    entries: Any = await redis.xrange(dead_stream, min=dead_id, max=dead_id, count=1)
    return DeadLetter.from_entry(*entries[0]) if entries else None


async def select_dead(
    redis: Redis,
    dead_stream: str,
    *,
    ids: Sequence[str] = (),
    error_type: str | None = None,
    everything: bool = False,
    batch: int = 500,
) -> list[DeadLetter]:
    """Dead letters matching ``ids`` or ``error_type`` (or all of them)."""
    if ids:
        found = [await get_dead(redis, dead_stream, i) for i in ids]
        return [d for d in found if d is not None]
    out: list[DeadLetter] = []
    start = "-"
    while True:
        chunk = await list_dead(redis, dead_stream, batch, start)
        if not chunk:
            return out
        out += [d for d in chunk if everything or d.error_type == error_type or d.reason == error_type]
        start = "(" + chunk[-1].dead_id


async def replay(
    redis: Redis, dead_stream: str, letters: Sequence[DeadLetter], target: str | None = None
) -> list[tuple[str, str]]:
    """Move dead letters back onto their stream with a fresh delivery count.

    Atomic and idempotent per dead letter: each is added to the stream and deleted from the
    dead-letter stream in one script, so replaying the same id twice adds it once.
    Returns ``(dead_id, new_entry_id)`` for each one moved.
    """
    script = redis.register_script(lua.REPLAY)
    moved: list[tuple[str, str]] = []
    for letter in letters:
        stream = target or letter.stream
        new_id: Any = await script(keys=[dead_stream, stream], args=[letter.dead_id, *letter.replay_fields()])
        if new_id:
            moved.append((letter.dead_id, new_id.decode() if isinstance(new_id, bytes) else new_id))
    return moved


async def purge(redis: Redis, dead_stream: str, ids: Sequence[str] = (), everything: bool = False) -> int:
    """Delete dead letters by id, or the whole dead-letter stream. Returns how many went."""
    if everything:
        n = int(await redis.xlen(dead_stream))
        await redis.delete(dead_stream)
        return n
    if not ids:
        return 0
    return int(await redis.xdel(dead_stream, *ids))


__all__ = [
    "DeadLetter",
    "dead_letter_fields",
    "get_dead",
    "list_dead",
    "purge",
    "replay",
    "select_dead",
]
