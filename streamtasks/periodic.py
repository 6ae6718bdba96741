"""What ``@registry.periodic(...)`` declares: a schedule (``every=`` or ``cron=`` with ``tz=``)
and a catch-up policy, checked when the handler is decorated.

The arithmetic (which tick is due, the next one, catch-up after an outage) is
:mod:`streamtasks.schedule`'s; the worker's ticker (:mod:`streamtasks.worker.timers`) claims
ticks in Redis. Cron expressions are read by `cronsim <https://pypi.org/project/cronsim/>`_,
which follows Debian's cron, its DST rules included.
"""

from __future__ import annotations

import zoneinfo
from datetime import datetime, timedelta, timezone
from typing import Any

from attrs import frozen
from cronsim import CronSim, CronSimError

#: ``catch_up=``: after ticks were missed (no worker ran), run the latest one only, none of
#: them, or all of them (at most :data:`streamtasks.schedule.MAX_CATCH_UP`, the newest).
CATCH_UP = ("latest", "none", "all")


@frozen
class Periodic:
    """A periodic handler's schedule: ``every_ms`` (ticks at multiples of it since the Unix
    epoch) or ``cron`` in time zone ``tz``; and its ``catch_up`` policy."""

    every_ms: int | None
    cron: str | None
    tz: str = "UTC"
    catch_up: str = "latest"

    @classmethod
    def of(
        cls, every: float | timedelta | None, cron: str | None, tz: Any = None, catch_up: str = "latest"
    ) -> Periodic:
        """The checked declaration; a bad one is a :class:`ValueError` of one line."""
        if (every is None) == (cron is None):
            raise ValueError("give every= (seconds or a timedelta) or cron= (an expression), one of them")
        if catch_up not in CATCH_UP:
            raise ValueError(f"catch_up must be one of {', '.join(CATCH_UP)}, got {catch_up!r}")
        if every is not None:
            if tz is not None:
                raise ValueError("tz= applies to cron=: every= ticks are counted from the Unix epoch")
            return cls(_every_ms(every), None, "UTC", catch_up)
        name = _zone_name(tz)
        _check_cron(cron, zone(name))
        return cls(None, cron, name, catch_up)

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zone(self.tz)

    def describe(self) -> str:
        """``every 5m``, ``cron '0 9 * * MON-FRI' (Europe/Berlin)``: what status shows."""
        if self.every_ms is not None:
            return f"every {_duration(self.every_ms)}"
        return f"cron {self.cron!r} ({self.tz})"


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone ``name``; :class:`ValueError` of one line if there is none."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' (where the "
            f"system has no time zone data, pip install tzdata) ({type(exc).__name__})"
        ) from None


def _zone_name(tz: Any) -> str:
    if tz is None:
        return "UTC"
    if isinstance(tz, zoneinfo.ZoneInfo):
        return str(tz.key)
    if tz is timezone.utc:
        return "UTC"
    if not isinstance(tz, str) or not tz:
        raise ValueError(f"tz must be an IANA time zone name or a ZoneInfo, got {tz!r}")
    zone(tz)
    return tz


def _every_ms(every: float | timedelta) -> int:
    if isinstance(every, timedelta):
        ms = every / timedelta(milliseconds=1)
    elif isinstance(every, (int, float)) and not isinstance(every, bool):
        ms = every * 1000
    else:
        raise ValueError(f"every must be seconds or a timedelta, got {type(every).__name__}")
    # NaN fails the first test; seconds as a float are milliseconds up to rounding (1.001 s)
    if not ms >= 1 or ms > 2**53 or abs(ms - round(ms)) > 1e-6:
        raise ValueError(f"every must be a whole number of milliseconds >= 1, got {every!r}")
    return round(ms)


def _check_cron(cron: Any, tz: zoneinfo.ZoneInfo) -> None:
    if not isinstance(cron, str) or not cron.strip():
        raise ValueError(f"cron must be a cron expression such as '*/5 * * * *', got {cron!r}")
    try:
        CronSim(cron, datetime.now(tz).replace(microsecond=0))
    except (CronSimError, ValueError, IndexError, KeyError) as exc:
        raise ValueError(f"invalid cron expression {cron!r}: {exc}") from None


def _duration(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
