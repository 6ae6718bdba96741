"""What monitoring reads but did not write, checked in one place.

``status``, the dashboard and ``/metrics`` read keys other processes wrote: the heartbeats
under ``streamtasks:worker:<group>:`` (any process that may write there can put anything
there: an older version, a foreign tool, an attacker), and keys that may turn out to be of
another type than a stream. They may also be run by a Redis user that may not run every
command (a monitoring user, the worker's own restricted user). Neither may blind them:

* :func:`decode_heartbeat` is the one decoder of a heartbeat's value: a
  :class:`Heartbeat` (msgspec checks every field's type), or :class:`Unreadable` with a
  one-line reason;
* :class:`Findings` collects, over one sample, the keys whose value did not fit (skipped and
  counted, each named) and the reads the user may not run (left out, named with the
  command: ``INFO: no permission (NOPERM)``), for the caller to report beside everything it
  could read.

The writer's side is :meth:`streamtasks.worker.events.Snapshot.heartbeat` (plus ``ray``,
:class:`streamtasks.worker.executors.RayResources`); a unit test round-trips it.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

import msgspec
from redis import exceptions as rx

T = TypeVar("T")

#: A heartbeat is a few hundred bytes; a larger value is not one (and is not decoded).
MAX_HEARTBEAT_BYTES = 64 * 1024
#: ``status`` and the dashboard name at most this many unreadable keys (and count the rest).
MAX_NAMED = 10

#: One line of text without control characters: a value shown in a table row or a problem line.
_Line = Annotated[str, msgspec.Meta(max_length=500, pattern="^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$")]
_Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class RayShare(msgspec.Struct, forbid_unknown_fields=False):
    """Ray's resources as a worker saw them: ``total`` and ``available`` per resource."""

    total: dict[_Line, float] = {}
    available: dict[_Line, float] = {}


class Heartbeat(msgspec.Struct, forbid_unknown_fields=False):
    """The value of a heartbeat key (fields a newer version adds are ignored)."""

    ts: Annotated[float, msgspec.Meta(ge=0)]
    consumer: _Line | None = None
    group: _Line | None = None
    host: _Line | None = None
    pid: _Count | None = None
    state: _Line | None = None
    streams: list[_Line] = []
    started_at: float | None = None
    in_flight: _Count | None = None
    failing_loops: list[_Line] = []
    ray: RayShare | None = None

    def __post_init__(self) -> None:
        for name in ("ts", "started_at"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} is not a finite number")


class Unreadable(ValueError):
    """A value monitoring read does not fit the shape it must have; the message says why."""


_DECODER = msgspec.json.Decoder(Heartbeat)


def decode_heartbeat(raw: bytes | str) -> Heartbeat:
    """The heartbeat in ``raw``, or :class:`Unreadable` saying what does not fit."""
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    if len(data) > MAX_HEARTBEAT_BYTES:
        raise Unreadable(f"{len(data)} bytes, more than a heartbeat's {MAX_HEARTBEAT_BYTES}")
    try:
        return _DECODER.decode(data)
    except msgspec.ValidationError as exc:
        raise Unreadable(f"not a heartbeat: {exc}") from None
    except msgspec.DecodeError as exc:
        raise Unreadable(f"not JSON: {exc}") from None


def printable(value: bytes | str) -> str:
    """``value`` as one printable line (a key name may hold any bytes): other characters are
    backslash-escaped."""
    shown = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in shown)


class Findings:
    """What one sample could not use: keys skipped (and why), reads denied by the user's ACL."""

    def __init__(self) -> None:
        self.bad: dict[str, str] = {}  # key -> why it was skipped
        self.denied: dict[str, list[str]] = {}  # command -> keys (in order, no repeats)

    def skip(self, key: bytes | str, why: str) -> None:
        self.bad.setdefault(printable(key), printable(why))

    def deny(self, command: str, key: bytes | str | None = None) -> None:
        keys = self.denied.setdefault(command, [])
        shown = printable(key) if key is not None else None
        if shown is not None and shown not in keys:
            keys.append(shown)

    def denied_any(self, *commands: str) -> bool:
        return any(c in self.denied for c in commands)

    async def read(self, what: str, call: Awaitable[T], default: T, key: bytes | str | None = None) -> T:
        """``await call``, or ``default`` when the user may not run it (named as ``what``)."""
        try:
            return await call
        except rx.NoPermissionError:
            self.deny(what, key)
            return default

    def problems(self) -> list[str]:
        """One line per skipped key (at most :data:`MAX_NAMED`, then how many more)."""
        named = list(self.bad.items())
        lines = [f"{key}: skipped, {why}" for key, why in named[:MAX_NAMED]]
        if len(named) > MAX_NAMED:
            lines.append(f"... and {len(named) - MAX_NAMED} more unreadable keys (skipped)")
        return lines

    def not_checked(self) -> list[str]:
        """One line per command the user may not run: ``XLEN (orders, orders:dead): no
        permission (NOPERM)``."""
        out = []
        for command, keys in self.denied.items():
            on = f" ({', '.join(keys[:MAX_NAMED])}{', ...' if len(keys) > MAX_NAMED else ''})" if keys else ""
            out.append(f"{command}{on}: no permission (NOPERM)")
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: ``{"count", "keys": [{"key", "error"}, ...]}`` (the first :data:`MAX_NAMED`)."""
        return {
            "count": len(self.bad),
            "keys": [{"key": k, "error": why} for k, why in list(self.bad.items())[:MAX_NAMED]],
        }
