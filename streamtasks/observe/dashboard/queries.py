"""The dashboard's reads and actions on Redis, with their inputs checked first.

Every input comes from a URL or a request body, so each is validated into a plain value
before it reaches Redis, and a bad one raises :class:`BadInput` (a 4xx): a stream must be one
of the targets, an id must look like an entry id, a page size is 1..:data:`MAX_PAGE`, a
filter is at most :data:`MAX_FILTER_CHARS` characters and is only ever compared for equality.
Replay and purge are :mod:`streamtasks.deadletter`'s, the same atomic operations as
``streamtasks dlq``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from attrs import frozen
from redis.asyncio import Redis

from ... import deadletter
from ...deadletter import DeadLetter
from ...redisutil import id_seconds, text
from ..inspect import sample_stream
from ..readings import Findings
from .config import Targets

MAX_PAGE = 500
DEFAULT_PAGE = 50
MAX_FILTER_CHARS = 200
#: Dead letters scanned (newest first) to fill one filtered page.
SCAN_CAP = 20_000
SCAN_CHUNK = 500
#: Field values longer than this are cut on the stream page.
VALUE_PREVIEW_CHARS = 300
_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
MAX_ID_PART = 2**64 - 1


class BadInput(ValueError):
    """A request the dashboard will not run; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def known_stream(targets: Targets, stream: str) -> str:
    if stream not in targets.streams:
        raise BadInput("unknown stream", 404)
    return stream


def entry_id(value: Any) -> str:
    if not isinstance(value, str) or not _ID.match(value) or max(map(int, value.split("-"))) > MAX_ID_PART:
        raise BadInput("an id looks like 1700000000000-0")
    return value


def below(an_id: str) -> str | None:
    """The greatest entry id smaller than ``an_id`` (an inclusive bound), None below 0-0."""
    ms, seq = map(int, an_id.split("-"))
    if seq:
        return f"{ms}-{seq - 1}"
    return f"{ms - 1}-{MAX_ID_PART}" if ms else None


def page_size(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_PAGE
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise BadInput(f"limit must be 1..{MAX_PAGE}")
    return int(value)


def millis(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 15:
        raise BadInput(f"{name} is milliseconds since the epoch")
    return int(value)


def text_filter(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_FILTER_CHARS:
        raise BadInput(f"{name} must be text of at most {MAX_FILTER_CHARS} characters")
    return value


def only_params(query: Mapping[str, str], allowed: Sequence[str]) -> None:
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        raise BadInput(f"unknown parameter(s): {', '.join(unknown)[:200]}; allowed: {', '.join(allowed)}")


# -- the stream page -------------------------------------------------------------------------


async def stream_detail(redis: Redis, targets: Targets, stream: str, limit: int) -> dict[str, Any]:
    """The stream's numbers, its pending entries (owner, idle, deliveries) and newest entries;
    what the Redis user may not read is left out and named in ``not_checked``."""
    now = time.time()
    f = Findings()
    sample = await sample_stream(redis, stream, targets.group, targets.dead_of(stream), now=now, findings=f)
    pending: list[dict[str, Any]] = []
    if sample["group_exists"] and sample["pending"]:
        rows = await f.read(
            "XPENDING", redis.xpending_range(stream, targets.group, "-", "+", limit), [], key=stream
        )
        for row in rows:
            pid = text(row["message_id"])
            idle = int(row["time_since_delivered"]) / 1000.0
            pending.append(
                {
                    "id": pid,
                    "consumer": text(row["consumer"]),
                    "idle": idle,
                    "deliveries": int(row["times_delivered"]),
                    "age": max(0.0, now - id_seconds(pid)),
                }
            )
    newest = []
    latest: Any = await f.read("XREVRANGE", redis.xrevrange(stream, "+", "-", count=limit), [], key=stream)
    for raw_id, fields in latest:
        newest.append({"id": text(raw_id), "fields": {text(k): _preview(v) for k, v in fields.items()}})
    sample["pending_entries"] = pending
    sample["newest"] = newest
    sample["retention"] = None  # trimming/retention state: not tracked by streamtasks yet
    sample["not_checked"] = f.not_checked()
    return sample


def _preview(value: bytes) -> str:
    out = value.decode("utf-8", "backslashreplace")
    return out if len(out) <= VALUE_PREVIEW_CHARS else out[:VALUE_PREVIEW_CHARS] + "…"


# -- dead letters ----------------------------------------------------------------------------


@frozen
class DeadFilter:
    """Which dead letters: by handler, by reason (or error type), dead-lettered in [since, until)."""

    handler: str | None = None
    reason: str | None = None
    since: int | None = None
    until: int | None = None

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> DeadFilter:
        for key in ("since", "until"):
            if data.get(key) is not None and not isinstance(data.get(key), (str, int)):
                raise BadInput(f"{key} is milliseconds since the epoch")
        since, until = (millis(None if data.get(k) is None else str(data[k]), k) for k in ("since", "until"))
        return cls(
            text_filter(data.get("handler"), "handler"),
            text_filter(data.get("reason"), "reason"),
            since,
            until,
        )

    def matches(self, d: DeadLetter) -> bool:
        if self.handler is not None and d.handler != self.handler:
            return False
        return self.reason is None or self.reason in (d.reason, d.error_type)

    def id_range(self) -> tuple[str | None, str]:
        """Inclusive XREVRANGE bounds (max, min) from the time filter (a dead letter's id is
        its time); max is None when nothing can match."""
        top = "+" if self.until is None else below(f"{self.until}-0")
        return top, "-" if self.since is None else f"{self.since}-0"


async def find_dead(
    redis: Redis,
    dead_stream: str,
    flt: DeadFilter,
    limit: int,
    before: str | None = None,
    cap: int = SCAN_CAP,
) -> tuple[list[DeadLetter], str | None, bool]:
    """Up to ``limit`` matching dead letters, newest first, older than ``before``.

    Returns the page, the cursor of the next page (or None) and whether the scan stopped at
    ``cap`` entries before filling the page.
    """
    top, bottom = flt.id_range()
    if before is not None and top is not None:
        top = min(top, below(before), key=_order) if top != "+" else below(before)
    found: list[DeadLetter] = []
    scanned = 0
    last: str | None = None
    while top is not None:
        if scanned >= cap:
            return found, last, True
        chunk: Any = await redis.xrevrange(dead_stream, top, bottom, count=SCAN_CHUNK)
        if not chunk:
            break
        for raw_id, fields in chunk:
            scanned += 1
            letter = DeadLetter.from_entry(raw_id, fields)
            if flt.matches(letter):
                found.append(letter)
                if len(found) == limit:
                    return found, letter.dead_id, False
        last = text(chunk[-1][0])
        top = below(last)
    return found, None, False


def _order(an_id: str | None) -> tuple[int, int]:
    if an_id is None:
        return (-1, -1)
    ms, seq = map(int, an_id.split("-"))
    return ms, seq


async def matching_all(redis: Redis, dead_stream: str, flt: DeadFilter) -> list[DeadLetter]:
    """Every dead letter matching ``flt`` (for "replay / purge all matching")."""
    out: list[DeadLetter] = []
    before: str | None = None
    while True:
        page, before, _ = await find_dead(redis, dead_stream, flt, MAX_PAGE, before, cap=10**12)
        out += page
        if before is None:
            return out


def ids_of(body: Mapping[str, Any]) -> list[str]:
    ids = body.get("ids")
    if not isinstance(ids, list) or not ids or len(ids) > MAX_PAGE:
        raise BadInput(f"ids must be a list of 1..{MAX_PAGE} dead-letter ids")
    return list(dict.fromkeys(entry_id(i) for i in ids))


async def replay(redis: Redis, targets: Targets, stream: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """Replay the dead letters named by ``ids``, or all matching ``match`` (see :func:`selection`)."""
    dead = targets.dead_of(stream)
    if set(body) - {"ids", "match", "confirm"}:
        raise BadInput("a replay takes ids or match, and confirm")
    letters = await selection(redis, dead, stream, body)
    moved = await deadletter.replay(redis, dead, letters, target=stream)
    return {"replayed": len(moved), "moved": [{"dead_id": a, "new_id": b} for a, b in moved]}


async def purge(redis: Redis, targets: Targets, stream: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """Delete dead letters by ``ids``, all matching ``match``, or ``all``; a purge of more than
    named ids needs ``confirm`` equal to the stream's name."""
    dead = targets.dead_of(stream)
    if set(body) - {"ids", "match", "all", "confirm"}:
        raise BadInput("a purge takes ids, match or all, and confirm")
    if body.get("all") is True:
        _confirmed(body, stream)
        return {"purged": await deadletter.purge(redis, dead, everything=True)}
    letters = await selection(redis, dead, stream, body)
    return {"purged": await deadletter.purge(redis, dead, [d.dead_id for d in letters])}


async def selection(redis: Redis, dead: str, stream: str, body: Mapping[str, Any]) -> list[DeadLetter]:
    if "ids" in body:
        if "match" in body:
            raise BadInput("give ids or match, not both")
        found = [await deadletter.get_dead(redis, dead, i) for i in ids_of(body)]
        return [d for d in found if d is not None]
    match = body.get("match")
    if not isinstance(match, dict) or set(match) - {"handler", "reason", "since", "until"}:
        raise BadInput("give ids, or match with handler / reason / since / until")
    _confirmed(body, stream)
    return await matching_all(redis, dead, DeadFilter.parse(match))


def _confirmed(body: Mapping[str, Any], stream: str) -> None:
    if body.get("confirm") != stream:
        raise BadInput("confirm with the stream's name to act on more than named ids")
