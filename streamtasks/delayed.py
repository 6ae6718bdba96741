"""Delayed entries: when one is due, the format it waits in, and scheduling, listing,
cancelling and moving them.

``send(..., delay=30)`` or ``eta=datetime`` does not add the entry to its stream: it waits in
Redis, in two keys of the stream's Cluster slot (:mod:`streamtasks.keys`):

* ``<stream>:delayed``, a sorted set: message id -> due time (milliseconds since the epoch);
* ``<stream>:delayed:fields``, a hash: message id -> the entry's fields, as netstrings
  (``<len>:<name>,<len>:<value>,...``, :func:`streamtasks.deadletter.pack_fields`), the
  message id (``_st_mid``) and the due time (``_st_due``) among them.

The sorted set holds only ids, so finding what is due, listing and cancelling by id stay
cheap however big the entries are; both keys are written together by one script
(:data:`~streamtasks.lua.SCHEDULE`), and an entry is identified by its message id: sending the
same message id again replaces it. A worker serving the stream moves due entries into it with
:data:`~streamtasks.lua.MOVE_DUE` (:func:`move_due`): atomically, so with any number of workers
each enters the stream once. A producer in another language schedules an entry the same way:
``HSET <stream>:delayed:fields <mid> <netstrings>`` and ``ZADD <stream>:delayed <due ms> <mid>``
in one ``MULTI``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from attrs import frozen
from redis.asyncio import Redis

from . import lua
from .connect import queue_script
from .deadletter import MAX_INLINE_FIELDS, pack_fields, unpack_fields
from .keys import FIELD_DUE, FIELD_MESSAGE_ID, delayed_fields_key, delayed_key
from .redisutil import text

#: A delay: seconds, or a :class:`~datetime.timedelta`.
Delay = float | int | timedelta
#: A delayed entry has at most this many fields (the mover's XADD is a Lua call, which takes
#: at most ~8,000 values).
MAX_DELAYED_FIELDS = MAX_INLINE_FIELDS
#: The latest due time: the end of year 9999 (UTC), in milliseconds.
MAX_DUE_MS = 253_402_300_799_999
#: Delayed entries one call of the mover script moves at most (it runs again at once if more
#: were due): bounds how long one call holds Redis.
MOVE_COUNT = 100


def due_ms(delay: Delay | None, eta: datetime | None, now: float) -> int | None:
    """When an entry sent at ``now`` (seconds since the epoch) with ``delay`` or ``eta`` is due,
    in milliseconds; None when it is due now or earlier (it is added to its stream at once).
    A bad value is a :class:`ValueError` of one line."""
    if delay is not None and eta is not None:
        raise ValueError("give delay= or eta=, not both")
    if eta is not None:
        if not isinstance(eta, datetime):
            raise ValueError(f"eta must be a datetime, got {type(eta).__name__}")
        if eta.tzinfo is None or eta.utcoffset() is None:
            raise ValueError(
                f"eta {eta.isoformat()} has no time zone: give an aware datetime, "
                "e.g. datetime(2030, 1, 1, 9, tzinfo=ZoneInfo('Europe/Berlin'))"
            )
        due = eta.timestamp() * 1000
    elif delay is not None:
        due = now * 1000 + seconds(delay, "delay") * 1000
    else:
        return None
    if due > MAX_DUE_MS:
        raise ValueError("delay/eta goes past the year 9999")
    return math.ceil(due) if due > now * 1000 else None


def seconds(value: Delay, name: str) -> float:
    """``value`` (seconds or a timedelta) as seconds: finite and >= 0, else ValueError."""
    if isinstance(value, timedelta):
        out = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out = float(value)
    else:
        raise ValueError(f"{name} must be seconds or a timedelta, got {type(value).__name__}")
    if not math.isfinite(out) or out < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return out


def due_times(count: int, delay: Any, eta: Any, now: float) -> list[int | None]:
    """:func:`due_ms` for ``count`` entries: ``delay`` / ``eta`` one for all, or a sequence of
    one per entry (``send_many``)."""
    per_delay = isinstance(delay, Sequence) and not isinstance(delay, (str, bytes))
    per_eta = isinstance(eta, Sequence) and not isinstance(eta, (str, bytes))
    for name, per, value in (("delay", per_delay, delay), ("eta", per_eta, eta)):
        if per and len(value) != count:
            raise ValueError(f"{name} has {len(value)} values for {count} entries")
    return [due_ms(delay[i] if per_delay else delay, eta[i] if per_eta else eta, now) for i in range(count)]


def scheduled_fields(encoded: dict[str, str | bytes], due: int) -> bytes:
    """What the fields hash keeps of an entry (its message id set by the caller): netstrings."""
    if len(encoded) + 1 > MAX_DELAYED_FIELDS:
        raise ValueError(f"a delayed entry has at most {MAX_DELAYED_FIELDS - 1} fields, got {len(encoded)}")
    encoded[FIELD_DUE] = str(due)
    return pack_fields([(_b(k), _b(v)) for k, v in encoded.items()])


async def queue_schedule(
    redis: Redis, client: Any, stream: str, items: Sequence[tuple[str, int, bytes]]
) -> Any:
    """Queue on ``client`` (a pipeline of ``redis``, or ``redis`` itself: then run)
    :data:`~streamtasks.lua.SCHEDULE` for ``items`` (message id, due ms, packed fields)."""
    script = redis.register_script(lua.SCHEDULE)
    args = [value for mid, due, packed in items for value in (mid, str(due), packed)]
    return await queue_script(script, [delayed_key(stream), delayed_fields_key(stream)], args, client)


@frozen
class ScheduledEntry:
    """A delayed entry as ``scheduled list`` shows it. ``fields`` is None when the hash holds no
    readable fields for it (``problem`` says why)."""

    message_id: str
    due_ms: int
    fields: tuple[tuple[bytes, bytes], ...] | None
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        shown = None if self.fields is None else {_shown(k): _shown(v) for k, v in self.fields}
        return {
            "message_id": self.message_id,
            "due_ms": self.due_ms,
            "fields": shown,
            "problem": self.problem,
        }


async def list_scheduled(redis: Redis, stream: str, count: int = 100) -> tuple[int, list[ScheduledEntry]]:
    """How many entries of ``stream`` are scheduled, and the ``count`` due soonest."""
    total = int(await redis.zcard(delayed_key(stream)))
    rows: Any = await redis.zrange(delayed_key(stream), 0, count - 1, withscores=True)
    if not rows:
        return total, []
    packed: Any = await redis.hmget(delayed_fields_key(stream), [mid for mid, _ in rows])
    return total, [_entry(mid, score, data) for (mid, score), data in zip(rows, packed, strict=True)]


def _entry(mid: bytes, score: float, data: bytes | None) -> ScheduledEntry:
    name = text(mid)
    if data is None:
        return ScheduledEntry(name, int(score), None, "no fields (the mover drops it)")
    try:
        return ScheduledEntry(name, int(score), tuple(unpack_fields(data)))
    except ValueError as exc:
        return ScheduledEntry(
            name, int(score), None, f"fields are not netstrings ({exc}): dead-lettered when due"
        )


async def cancel(redis: Redis, stream: str, message_ids: Sequence[str] = (), everything: bool = False) -> int:
    """Cancel delayed entries of ``stream`` by message id, or all of them; returns how many
    were still scheduled (an entry already moved into the stream is not touched)."""
    if not message_ids and not everything:
        return 0
    script = redis.register_script(lua.CANCEL_SCHEDULED)
    keys = [delayed_key(stream), delayed_fields_key(stream)]
    return int(await script(keys=keys, args=[] if everything else list(message_ids)))


@frozen
class MoveResult:
    """One call of the mover script: entries moved, dead-lettered (malformed) and missing
    (no fields), the next due time (ms, None: nothing scheduled) and Redis' clock (ms)."""

    moved: int
    bad: int
    missing: int
    next_due_ms: int | None
    now_ms: int


async def move_due(
    redis: Redis, stream: str, dead_letter_stream: str, group: str, handler: str, count: int = MOVE_COUNT
) -> MoveResult:
    """Move up to ``count`` due entries of ``stream`` into it (:data:`~streamtasks.lua.MOVE_DUE`)."""
    script = redis.register_script(lua.MOVE_DUE)
    keys = [delayed_key(stream), delayed_fields_key(stream), stream, dead_letter_stream]
    args: list[Any] = [count, group, handler, 2 * MAX_DELAYED_FIELDS]
    moved, bad, missing, nxt, now = await script(keys=keys, args=args)
    return MoveResult(int(moved), int(bad), int(missing), None if not nxt else int(float(nxt)), int(now))


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _shown(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


__all__ = [
    "FIELD_MESSAGE_ID",
    "MAX_DELAYED_FIELDS",
    "MoveResult",
    "ScheduledEntry",
    "cancel",
    "due_ms",
    "due_times",
    "list_scheduled",
    "move_due",
    "queue_schedule",
]
