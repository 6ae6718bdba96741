"""Small Redis helpers every stage shares: the errors that mean "Redis is unavailable", and
reply values as text (replies are bytes with RESP2/``decode_responses=False``)."""

from __future__ import annotations

from typing import Any

from redis import exceptions as rx

#: Errors meaning Redis cannot be reached right now: wait and retry, never drop an entry.
#: On Redis Cluster also: the cluster is down or a slot has no master yet (a failover in
#: progress), or a retry was asked for (TRYAGAIN during a resharding).
REDIS_DOWN = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.BusyLoadingError,
    ConnectionError,
    OSError,
    rx.ClusterDownError,
    rx.TryAgainError,
    rx.SlotNotCoveredError,
)


def text(value: Any) -> str:
    """A reply value as ``str`` (bytes decoded as UTF-8 with replacement)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def id_seconds(entry_id: str) -> float:
    """The XADD time carried by an entry id ``"<ms>-<seq>"``, in seconds since the epoch
    (unchecked: for ids Redis gave; :func:`streamtasks.message.id_datetime` checks one)."""
    return int(entry_id.partition("-")[0]) / 1000.0


def flat_fields(fields: Any) -> list[bytes]:
    """An entry's fields as the flat ``[name, value, ...]`` list hiredis returns, whether a
    reply parser made them a dict or not (None: no fields)."""
    if not fields:
        return []
    return [b for kv in fields.items() for b in kv] if isinstance(fields, dict) else list(fields)


def id_key(entry_id: str) -> tuple[int, int]:
    """An entry id as a sortable ``(ms, seq)``."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
