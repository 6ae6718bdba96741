"""Every Redis key, stream and reserved field name streamtasks uses, built in one place."""

from __future__ import annotations

import re
import zlib

from redis.crc import key_slot

from .errors import ConfigError

#: Default consumer-group name of a :class:`~streamtasks.Registry`.
DEFAULT_GROUP = "streamtasks"

#: Fields streamtasks itself adds to an entry start with this prefix.
RESERVED_PREFIX = "_st_"
#: Producer-assigned message id: the idempotency key of the built-in handlers.
FIELD_MESSAGE_ID = "_st_mid"
#: Optional producer timestamp (milliseconds since the epoch); defaults to the entry id's time.
FIELD_PRODUCED_AT = "_st_ts"
#: Set on a replayed entry: the stream and entry id it originally had.
FIELD_ORIGIN_STREAM = "_st_origin_stream"
FIELD_ORIGIN_ID = "_st_origin_id"
#: On an entry that was sent with a delay: when it was due (milliseconds since the epoch).
FIELD_DUE = "_st_due"
#: On an entry of a periodic handler: the tick it stands for (milliseconds since the epoch).
FIELD_TICK = "_st_tick"

#: Set by ``handler.call``: the reply stream of the waiting caller's process, notified (with
#: the stored result) when the entry is settled.
FIELD_REPLY = "_st_reply"
#: W3C trace context of the producer (``traceparent``, ``tracestate``, ``baggage`` ... as the
#: configured OpenTelemetry propagator writes them, each under this prefix).
TRACE_FIELD_PREFIX = "_st_trace_"

#: In a dead-letter entry, the original fields are stored under this prefix.
DEAD_FIELD_PREFIX = "f:"

_KEY_PREFIX = "streamtasks"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:{}\-]{1,200}$")


def validate_name(kind: str, name: str) -> str:
    """Return ``name`` if it is a sane stream or group name, else raise :class:`ConfigError`."""
    if not _NAME_RE.match(name):
        raise ConfigError(f"invalid {kind} name {name!r}: use 1-200 of A-Z a-z 0-9 _ . : - {{ }}")
    return name


def dead_letter_stream(stream: str) -> str:
    """The default dead-letter stream of ``stream``: ``<stream>:dead``."""
    return f"{stream}:dead"


def failures_key(stream: str, group: str) -> str:
    """Hash of entry id -> JSON failure record (first/last failure, last error) while retrying.

    Named after the stream (like the dead-letter stream) so that a stream named with a hash
    tag, ``{orders}``, keeps all three keys in one Redis Cluster slot.
    """
    return f"{stream}:failures:{group}"


def delayed_key(stream: str) -> str:
    """Sorted set of the delayed entries of ``stream``: message id -> due time (ms)."""
    return f"{stream}:delayed"


def delayed_fields_key(stream: str) -> str:
    """Hash of the delayed entries of ``stream``: message id -> its fields (netstrings)."""
    return f"{stream}:delayed:fields"


def tick_key(stream: str) -> str:
    """Hash of the periodic handler of ``stream``: the last tick claimed, the next one, its
    schedule. Named after the stream, like the delayed keys, so on Redis Cluster a stream
    with a hash tag (or a shard) keeps them in its slot: one script names them together."""
    return f"{stream}:tick"


def schedule_keys(stream: str) -> list[str]:
    """The keys of ``stream``'s delayed entries and periodic ticks (one script names them
    with the stream)."""
    return [delayed_key(stream), delayed_fields_key(stream), tick_key(stream)]


def shard_stream(stream: str, shard: int) -> str:
    """Shard ``shard`` of the sharded stream ``stream``: ``<stream>:{<shard>}``.

    The hash tag ``{<shard>}`` puts each shard in its own Redis Cluster slot (spread over the
    masters), and its dead-letter stream and failures hash (named after it) in the same slot.
    """
    return f"{stream}:{{{shard}}}"


def shard_streams(stream: str, shards: int) -> list[str]:
    """Every shard of ``stream``: ``<stream>:{0}`` ... ``<stream>:{shards-1}``."""
    return [shard_stream(stream, i) for i in range(shards)]


_SHARD_RE = re.compile(r"^(?P<base>.+):\{(?P<shard>\d+)\}$")


def shard_base(stream: str) -> str | None:
    """The sharded stream ``stream`` is a shard of (``orders`` for ``orders:{3}``), else None."""
    m = _SHARD_RE.match(stream)
    return m.group("base") if m else None


def pick_shard(key: str | bytes, shards: int) -> int:
    """The shard of ``key``: CRC-32 of its bytes modulo ``shards`` (stable across processes
    and languages, unlike Python's ``hash``). Entries with one key share a shard, so their
    order is kept."""
    data = key.encode() if isinstance(key, str) else key
    return zlib.crc32(data) % shards


def same_slot_problem(stream: str, others: list[str]) -> str | None:
    """Why ``stream`` and ``others`` (its dead-letter stream, failures hash) could not be used
    together by one script on Redis Cluster, or None when they share a slot."""
    slot = key_slot(stream.encode())
    apart = [k for k in others if key_slot(k.encode()) != slot]
    if not apart:
        return None
    return (
        f"on Redis Cluster the keys of stream {stream!r} must share a hash slot, but "
        f"{', '.join(map(repr, apart))} would not: name the stream with a hash tag "
        f"(e.g. '{{{stream}}}', whose ':dead' stream then shares it), or shard it "
        f"(stream_handler(..., shards=N))"
    )


#: The most shards a stream may have (a recorded count above it is not trusted).
MAX_SHARDS = 4096


def shard_count_key(stream: str) -> str:
    """Where the workers serving sharded ``stream`` record its shard count, for producers that
    were not told it (``Producer.send(stream, fields, key=...)``)."""
    return f"{_KEY_PREFIX}:shards:{stream}"


def heartbeat_key(group: str, consumer: str) -> str:
    """A live worker's heartbeat (a JSON string with a TTL)."""
    return f"{_KEY_PREFIX}:worker:{group}:{consumer}"


def heartbeat_pattern(group: str) -> str:
    return f"{_KEY_PREFIX}:worker:{group}:*"


def result_key(stream: str, ident: str) -> str:
    """The stored result of the message ``ident`` (its idempotency key) handled from ``stream``:
    named after the stream, so a stream named with a hash tag keeps it in the entry's slot."""
    return f"{stream}:result:{ident}"


def reply_stream(token: str) -> str:
    """The reply stream of one producer process (``handler.call``'s waiter)."""
    return f"{_KEY_PREFIX}:reply:{{{token}}}"


# -- flow control: priority levels, rate limits, concurrency ------------------------------------

_LEVEL_RE = re.compile(r"^(?P<base>.+):p(?P<level>[1-9][0-9]*)$")


def level_stream(stream: str, level: int) -> str:
    """Priority level ``level`` of ``stream`` (``stream_handler(..., priorities=N)``): level 0
    is ``stream`` itself, so the stream's backlog, its dead letters and producers that know
    nothing of priorities stay at the default level; level ``k`` is ``<stream>:p<k>``.

    A level shards like any stream (``orders:p1:{3}``: shard 3 of level 1), and a hash tag
    in ``stream`` (``{orders}:p1``) or its shard's (``{3}``) keeps every level of one shard
    in one Redis Cluster slot with its dead-letter stream and failures hash.
    """
    return stream if level == 0 else f"{stream}:p{level}"


def level_streams(stream: str, levels: int) -> list[str]:
    """Every level of ``stream``, level 0 (the highest) first."""
    return [level_stream(stream, level) for level in range(levels)]


def level_of(stream: str) -> tuple[str, int]:
    """``(prioritized stream, level)`` of a stream name: ``("orders", 1)`` for ``orders:p1``
    and for its shard ``orders:p1:{3}``; ``(stream, 0)`` (or its shard's base) otherwise."""
    m = _LEVEL_RE.match(shard_base(stream) or stream)
    if m is None:
        return shard_base(stream) or stream, 0
    return m.group("base"), int(m.group("level"))


def rate_key(group: str, stream: str) -> str:
    """The GCRA state of the rate limit of ``group``'s handler declared on ``stream`` (one
    for all its shards and levels).

    A key of its own, not in the stream's slot: the limit is one number for streams that
    live in many slots (shards), and the script that moves it names no other key, so on Redis
    Cluster it may live in any slot (CROSSSLOT cannot happen)."""
    return f"{_KEY_PREFIX}:rate:{group}:{stream}"


def concurrency_key(group: str, stream: str) -> str:
    """The semaphore of ``max_concurrency`` of ``group``'s handler declared on ``stream``
    (a sorted set of slots held; its own slot on Redis Cluster, as :func:`rate_key`)."""
    return f"{_KEY_PREFIX}:concurrency:{group}:{stream}"


def actors_key(group: str, consumer: str) -> str:
    """An actor-mode worker's actors, per group of handlers (a JSON string with a TTL)."""
    return f"{_KEY_PREFIX}:actors:{group}:{consumer}"


def actors_pattern(group: str) -> str:
    return f"{_KEY_PREFIX}:actors:{group}:*"
