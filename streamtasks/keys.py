"""Every Redis key, stream and reserved field name streamtasks uses, built in one place."""

from __future__ import annotations

import re

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


def heartbeat_key(group: str, consumer: str) -> str:
    """A live worker's heartbeat (a JSON string with a TTL)."""
    return f"{_KEY_PREFIX}:worker:{group}:{consumer}"


def heartbeat_pattern(group: str) -> str:
    return f"{_KEY_PREFIX}:worker:{group}:*"
