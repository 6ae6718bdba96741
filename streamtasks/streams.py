"""Pure rules about a stream and its consumer groups, from what ``XINFO`` says.

No I/O: the worker's stages (:mod:`streamtasks.worker.gaps`, :mod:`streamtasks.worker.trim`,
:mod:`streamtasks.worker.read`), ``status``, the metrics and the dashboard all apply the same rules.

* Where a stream and a group are (:class:`StreamState`, :class:`GroupState`) and how many
  entries were removed before the group read them (:func:`lost_before_delivery`).
* A Redis that came back older (:func:`rewind`).
* Where ack-aware trimming may cut (:func:`trim_point`, see :mod:`streamtasks.worker.trim`).
* Where to recreate a lost group (:func:`restart_point`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from attrs import frozen

from .redisutil import id_key, text

#: ``held_by`` when the retention, not a group, keeps the rest.
RETENTION = "retention"
#: ``held_by`` of a stream without consumer groups (never trimmed).
NO_GROUP = "no consumer group"


@frozen
class StreamState:
    """What ``XINFO STREAM`` says about where a stream is."""

    length: int
    first_id: str | None  # None: empty
    last_generated_id: str
    entries_added: int | None  # None: Redis < 7 keeps no such counter

    @property
    def removed(self) -> int | None:
        """Entries ever trimmed or deleted from the stream (None: Redis < 7 cannot tell)."""
        return None if self.entries_added is None else max(0, self.entries_added - self.length)

    @classmethod
    def of(cls, info: Mapping[Any, Any]) -> StreamState:
        i = {text(k): v for k, v in info.items()}
        first = i.get("recorded-first-entry-id") or _entry_id(i.get("first-entry"))
        added = i.get("entries-added")
        return cls(
            length=int(i.get("length") or 0),
            first_id=text(first) if first and int(i.get("length") or 0) else None,
            last_generated_id=text(i.get("last-generated-id") or "0-0"),
            entries_added=None if added is None else int(added),
        )


@frozen
class GroupState:
    """What ``XINFO GROUPS`` says about where a consumer group is."""

    last_delivered_id: str
    entries_read: int | None  # None: Redis cannot tell (e.g. the group was set to an arbitrary id)

    @classmethod
    def of(cls, info: Mapping[Any, Any]) -> GroupState:
        i = {text(k): v for k, v in info.items()}
        read = i.get("entries-read")
        return cls(text(i.get("last-delivered-id") or "0-0"), None if read is None else int(read))


def lost_before_delivery(stream: StreamState, group: GroupState) -> int:
    """Entries removed (trimmed or deleted) from ``stream`` before ``group`` read them.

    Exact while the group's position is before the stream's first entry (everything left is
    unread) or at its end (nothing is); 0 when Redis keeps no counters or the group is part-way
    through the stream (then it cannot be told without reading the rest, and is told later)."""
    if stream.entries_added is None or group.entries_read is None:
        return 0
    position = id_key(group.last_delivered_id)
    if position >= id_key(stream.last_generated_id) or stream.first_id is None:
        unread = 0
    elif position < id_key(stream.first_id):
        unread = stream.length
    else:
        return 0
    return max(0, stream.entries_added - group.entries_read - unread)


def undelivered(lag: int | None, length: int | None, lost: int) -> int | None:
    """Entries still in the stream that the group was not given yet: its ``lag`` less the
    entries removed before it read them (``lost``, :func:`lost_before_delivery`), and never
    more than the stream's ``length`` (after a trim Redis may count removed entries in the lag
    when it cannot tell how many). None when Redis cannot tell the lag."""
    if lag is None:
        return None
    waiting = max(0, lag - lost)
    return waiting if length is None else min(waiting, max(0, length))


def rewind(last_read: str | None, newest_now: str) -> bool:
    """True when Redis now has nothing as new as ``last_read``, the newest id this worker read
    (from the same stream): its writes since a snapshot are gone."""
    return last_read is not None and id_key(newest_now) < id_key(last_read)


@frozen
class GroupPosition:
    """What trimming needs of one consumer group."""

    name: str
    last_delivered: str
    oldest_pending: str | None  # None: nothing pending


@frozen
class TrimPoint:
    """Entries below ``minid`` may go (None: none may); ``held_by`` keeps the rest."""

    minid: str | None
    held_by: str


def after(entry_id: str) -> str:
    """The smallest id greater than ``entry_id``."""
    ms, seq = id_key(entry_id)
    return f"{ms}-{seq + 1}"


def cap_id(now_ms: int, keep_ms: int | None) -> str | None:
    """Entries added in the last ``keep_ms`` are kept: the id below which the rest is older."""
    return None if keep_ms is None else f"{max(0, now_ms - keep_ms)}-0"


def trim_point(groups: Sequence[GroupPosition], cap: str | None) -> TrimPoint:
    """The pure rule (see the module docstring); ``cap`` from :func:`cap_id`."""
    if not groups:
        return TrimPoint(None, NO_GROUP)
    bounds = [(g.oldest_pending or after(g.last_delivered), g.name) for g in groups]
    minid, holder = min(bounds, key=lambda b: id_key(b[0]))
    if cap is not None and id_key(cap) < id_key(minid):
        return TrimPoint(cap, RETENTION)
    return TrimPoint(minid, holder)


def restart_point(last_generated: str | None, last_read: str | None) -> tuple[str, bool]:
    """Where to recreate a lost group, and whether the stream itself was lost.

    ``last_generated`` is the stream's ``last-generated-id`` (None: no such stream);
    ``last_read`` the newest id this worker read (None: it read nothing)."""
    if last_generated is None:
        return "0", True
    if last_read is None:
        return "0", False
    if id_key(last_generated) >= id_key(last_read):
        return last_read, False
    return "0", True  # ids went backwards: a new stream under the old name


def _entry_id(entry: Any) -> Any:
    if isinstance(entry, (list, tuple)) and entry:
        return entry[0]
    return None
