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


def heartbeat_key(group: str, consumer: str) -> str:
    """A live worker's heartbeat (a JSON string with a TTL)."""
    return f"{_KEY_PREFIX}:worker:{group}:{consumer}"


def heartbeat_pattern(group: str) -> str:
    return f"{_KEY_PREFIX}:worker:{group}:*"


def actors_key(group: str, consumer: str) -> str:
    """An actor-mode worker's actors, per group of handlers (a JSON string with a TTL)."""
    return f"{_KEY_PREFIX}:actors:{group}:{consumer}"


def actors_pattern(group: str) -> str:
    return f"{_KEY_PREFIX}:actors:{group}:*"
