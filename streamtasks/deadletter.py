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
``f:<name>``            every original field, name and value byte for byte (a name that is
                        not UTF-8 too), in the entry's order
``packed_fields``       instead of ``f:<name>``, for an entry of more than
                        :data:`MAX_INLINE_FIELDS` fields: all of them in one value, as
                        netstrings ``<len>:<name>,<len>:<value>,...`` (bytes as they were)
======================  ===========================================================

Why ``packed_fields``: the dead letter is written by a Lua script (added and acked in one
step), and Lua passes at most ~8,000 values to one command, while an entry may have any
number of fields. Replay sends the fields back as separate fields again: by the Lua script
when they fit, else by a ``WATCH``/``MULTI`` transaction on the dead-letter stream, which is
as atomic (the dead letter is added to its stream and deleted together, or not at all).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from attrs import Factory, field, frozen
from redis.asyncio import Redis
from redis.exceptions import WatchError

from . import lua
from .connect import is_cluster
from .errors import StreamtasksError
from .keys import DEAD_FIELD_PREFIX, FIELD_ORIGIN_ID, FIELD_ORIGIN_STREAM
from .logs import redact
from .message import RawFields, field_pairs
from .redisutil import flat_fields
from .retry import ErrorInfo

#: Entries with more fields than this are dead-lettered with their fields packed into one
#: value (``packed_fields``): a Lua script can hand at most ~8,000 values to one command.
MAX_INLINE_FIELDS = 1000
PACKED_FIELDS = "packed_fields"
#: Replays whose ``XADD`` needs more values than this go through WATCH/MULTI, not Lua.
MAX_SCRIPT_VALUES = 2 * MAX_INLINE_FIELDS + 8
#: Attempts of a WATCH/MULTI replay before giving up (each conflict is a concurrent write
#: to the dead-letter stream).
WATCH_ATTEMPTS = 100
_PREFIX = DEAD_FIELD_PREFIX.encode()
_ORIGIN_NAMES = (FIELD_ORIGIN_STREAM.encode(), FIELD_ORIGIN_ID.encode())


def pack_fields(pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
    """``<len>:<bytes>,`` for every name and value, in order (netstrings)."""
    out = bytearray()
    for name, value in pairs:
        for part in (name, value):
            out += b"%d:%b," % (len(part), part)
    return bytes(out)


def unpack_fields(packed: bytes) -> list[tuple[bytes, bytes]]:
    """The inverse of :func:`pack_fields`; ``ValueError`` if ``packed`` is not its output."""
    parts: list[bytes] = []
    pos = 0
    while pos < len(packed):
        colon = packed.index(b":", pos)
        length = int(packed[pos:colon])
        end = colon + 1 + length
        if length < 0 or packed[end : end + 1] != b",":
            raise ValueError(f"bad netstring at byte {pos}")
        parts.append(packed[colon + 1 : end])
        pos = end + 1
    if len(parts) % 2:
        raise ValueError("an odd number of netstrings")
    return list(zip(parts[0::2], parts[1::2], strict=True))


def _as_bytes(name: bytes | str) -> bytes:
    return name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")


def _pairs_of(fields: Mapping[str, bytes]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((_as_bytes(name), value) for name, value in fields.items())


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
    originals = [(_as_bytes(name), _as_bytes(value)) for name, value in pairs]
    if len(originals) > MAX_INLINE_FIELDS:
        return [*out, PACKED_FIELDS, pack_fields(originals)]
    for name, value in originals:
        out += [_PREFIX + name, value]
    return out


@frozen
class DeadLetter:
    """A decoded dead-letter entry."""

    dead_id: str
    """The dead letter's own id, in the dead-letter stream."""
    stream: str
    """The stream the entry came from."""
    id: str
    """The entry's id in that stream."""
    group: str
    """The consumer group that gave up on it."""
    handler: str
    """The handler's name (``module.function``)."""
    reason: str
    """A reason code: ``handler_error``, ``invalid_json``, ``too_large``, ``rejected``,
    ``delivery_limit``, ``invalid`` ..."""
    error_type: str
    """The error's type name."""
    error: str
    """The error's message (passwords redacted)."""
    traceback: str
    """The traceback, truncated and redacted."""
    attempts: int
    """Attempts made."""
    first_failure_ms: int
    """When the first attempt failed (ms since the epoch)."""
    last_failure_ms: int
    """When the last attempt failed (ms since the epoch)."""
    fields: Mapping[str, bytes]
    """The original fields by name; a name that is not UTF-8 is decoded with ``surrogateescape``
    (``name.encode("utf-8", "surrogateescape")`` gives its bytes back)."""
    pairs: tuple[tuple[bytes, bytes], ...] = field(
        default=Factory(lambda self: _pairs_of(self.fields), takes_self=True)
    )
    """The original fields as they were: bytes, in order, repeated names included."""

    @classmethod
    def from_entry(cls, dead_id: bytes | str, raw: RawFields) -> DeadLetter:
        """Parse a dead-letter entry (a mapping, or the flat list of a raw read)."""
        meta: dict[str, str] = {}
        pairs: list[tuple[bytes, bytes]] = []
        for key, value in field_pairs(raw):
            if key.startswith(_PREFIX):
                pairs.append((key[len(_PREFIX) :], value))
            elif key == PACKED_FIELDS.encode():
                try:
                    pairs += unpack_fields(value)
                except ValueError:  # not written by us: keep it as it is, listing goes on
                    pairs.append((key, value))
            else:
                meta[key.decode("utf-8", "backslashreplace")] = value.decode("utf-8", "backslashreplace")
        fields = {name.decode("utf-8", "surrogateescape"): value for name, value in pairs}
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
            pairs=tuple(pairs),
        )

    def as_dict(self, full: bool = False) -> dict[str, Any]:
        """JSON-able: what ``dlq list`` and the dashboard show (``full``: with the traceback and
        the original fields, bytes shown as UTF-8, anything else backslash-escaped)."""
        out: dict[str, Any] = {
            "dead_id": self.dead_id,
            "stream": self.stream,
            "id": self.id,
            "group": self.group,
            "handler": self.handler,
            "reason": self.reason,
            "error_type": self.error_type,
            "error": self.error,
            "attempts": self.attempts,
            "first_failure_ms": self.first_failure_ms,
            "last_failure_ms": self.last_failure_ms,
        }
        if full:
            out["traceback"] = self.traceback
            out["fields"] = {_shown(k): _shown(v) for k, v in self.pairs}
        return out

    def replay_fields(self) -> list[bytes | str]:
        """Original fields, byte for byte, plus the origin markers (so idempotency keys
        survive a replay)."""
        out: list[bytes | str] = []
        for name, value in self.pairs:
            if name not in _ORIGIN_NAMES:
                out += [name, value]
        origin_stream = self.fields.get(FIELD_ORIGIN_STREAM, self.stream.encode())
        origin_id = self.fields.get(FIELD_ORIGIN_ID, self.id.encode())
        return [*out, FIELD_ORIGIN_STREAM, origin_stream, FIELD_ORIGIN_ID, origin_id]


def _shown(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _raw_client(redis: Redis) -> Redis:
    """A client on the same pool whose XRANGE replies stay flat ``[name, value, ...]`` lists:
    redis-py's parser makes a dict of them, which loses a repeated field name."""
    raw = Redis(connection_pool=redis.connection_pool)
    raw.response_callbacks.pop("XRANGE", None)
    return raw


async def _xrange(redis: Redis, dead_stream: str, start: str, end: str, count: int) -> list[DeadLetter]:
    if is_cluster(redis):  # a cluster's callback table is case-sensitive: the lower-case name is raw
        raw: Any = redis  # RedisCluster.execute_command is untyped
        entries: Any = await raw.execute_command("xrange", dead_stream, start, end, "COUNT", count)
    else:
        entries = await _raw_client(redis).xrange(dead_stream, min=start, max=end, count=count)
    return [DeadLetter.from_entry(i, flat_fields(f)) for i, f in entries]


async def list_dead(redis: Redis, dead_stream: str, count: int = 100, start: str = "-") -> list[DeadLetter]:
    return await _xrange(redis, dead_stream, start, "+", count)


async def get_dead(redis: Redis, dead_stream: str, dead_id: str) -> DeadLetter | None:
    found = await _xrange(redis, dead_stream, dead_id, dead_id, 1)
    return found[0] if found else None


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
        fields = letter.replay_fields()
        new_id: Any
        if len(fields) <= MAX_SCRIPT_VALUES:
            new_id = await script(keys=[dead_stream, stream], args=[letter.dead_id, *fields])
        else:
            new_id = await _replay_watched(redis, dead_stream, letter.dead_id, stream, fields)
        if new_id:
            moved.append((letter.dead_id, new_id.decode() if isinstance(new_id, bytes) else new_id))
    return moved


async def _replay_watched(
    redis: Redis, dead_stream: str, dead_id: str, stream: str, fields: Sequence[bytes | str]
) -> Any:
    """:data:`lua.REPLAY` for a letter too big for Lua: add and delete in one MULTI/EXEC,
    under WATCH of the dead-letter stream (a concurrent replay or write makes us look again)."""
    async with redis.pipeline(transaction=True) as pipe:
        for _ in range(WATCH_ATTEMPTS):
            try:
                await pipe.watch(dead_stream)
                if not await pipe.xrange(dead_stream, min=dead_id, max=dead_id, count=1):
                    return None  # replayed (or purged) meanwhile
                pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                pipe.execute_command("XADD", stream, "*", *fields)
                pipe.xdel(dead_stream, dead_id)
                new_id, _ = await pipe.execute()
                return new_id
            except WatchError:
                continue
    raise StreamtasksError(f"replay of {dead_id}: {dead_stream} kept changing ({WATCH_ATTEMPTS} tries)")


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
    "MAX_INLINE_FIELDS",
    "PACKED_FIELDS",
    "DeadLetter",
    "dead_letter_fields",
    "get_dead",
    "list_dead",
    "pack_fields",
    "purge",
    "replay",
    "select_dead",
    "unpack_fields",
]
