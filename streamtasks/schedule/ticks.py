"""Ticks of a :class:`~streamtasks.periodic.Periodic` schedule, in milliseconds since the epoch.

* ``every=``: the multiples of the interval since the Unix epoch (``every=timedelta(hours=1)``
  ticks on the hour, UTC), so every worker computes the same ticks without talking to another.
* ``cron=``: the matches of the expression in the schedule's time zone, by cronsim, which
  follows Debian's cron at DST changes: a job at a fixed time in the hour the clock skips runs
  right after the change, one in the hour that repeats runs once; jobs that run at least
  hourly keep their minutes in both (a repeated hour runs them twice, at distinct instants).
  Two matches at one instant (two times inside a skipped hour) are one tick.

:func:`plan_ticks` is what a ticker does on waking: given the last tick claimed (in Redis)
and the time now, the ticks to add by the catch-up policy, what they skip, and the next tick.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime

from attrs import frozen
from cronsim import CronSim

from ..periodic import Periodic

#: ``catch_up="all"`` runs at most this many missed ticks (the newest); older ones are skipped.
MAX_CATCH_UP = 1000
#: Ticks that came due within this span after the last one claimed are late, not missed: a
#: ticker that woke late (a loaded machine) runs them all, whatever the catch-up policy; a
#: longer span is an outage, and the policy decides. ``catch_up="none"`` still runs the latest
#: tick when it is at most this late.
ON_TIME_MS = 5000
#: Skipped ticks of a cron schedule are counted up to this many (a longer outage reports this).
SKIP_COUNT_LIMIT = 10_000
_TICK_NAMESPACE = uuid.UUID("6f1b7a52-3c52-4d8e-9a57-9d0c2b1e4a11")


def tick_message_id(stream: str, tick_ms: int) -> str:
    """The message id (``_st_mid``) of ``stream``'s entry for ``tick_ms``: the same for every
    worker that computes it, so a tick added twice would be recognisable (and is not added
    twice: the claim is atomic)."""
    return uuid.uuid5(_TICK_NAMESPACE, f"{stream}\x00{tick_ms}").hex


def _local(p: Periodic, ms: int) -> datetime:
    """``ms`` in the schedule's zone, floored to the second (cronsim's reverse iteration wants
    no microseconds)."""
    return datetime.fromtimestamp(ms // 1000, p.zone)


def _ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


def _cron(p: Periodic, start: datetime, reverse: bool = False) -> Iterator[int]:
    assert p.cron is not None
    last = None
    for dt in CronSim(p.cron, start, reverse=reverse):
        ms = _ms(dt)
        if ms != last:  # two matches at one instant (a skipped hour) are one tick
            yield ms
        last = ms


def tick_after(p: Periodic, t_ms: int) -> int | None:
    """The first tick later than ``t_ms`` (None: a cron expression with no match in 50 years)."""
    if p.every_ms is not None:
        return t_ms - t_ms % p.every_ms + p.every_ms
    return next(_cron(p, _local(p, t_ms)), None)


def tick_at_or_before(p: Periodic, t_ms: int) -> int | None:
    """The latest tick at or before ``t_ms`` (None: none in the 50 years before)."""
    if p.every_ms is not None:
        return t_ms - t_ms % p.every_ms
    # Cron ticks are whole seconds, so (t - 1 s, t] holds at most one; cronsim's reverse
    # iteration from an exact match skips that match, so look there first.
    close = tick_after(p, t_ms - 1000)
    if close is not None and close <= t_ms:
        return close
    return next(_cron(p, _local(p, t_ms), reverse=True), None)


def ticks_between(p: Periodic, after_ms: int, upto_ms: int, limit: int) -> list[int]:
    """The newest ``limit`` ticks in ``(after_ms, upto_ms]``, oldest first."""
    last = tick_at_or_before(p, upto_ms)
    if last is None or last <= after_ms or limit <= 0:
        return []
    if p.every_ms is not None:
        count = min(limit, (last - after_ms - 1) // p.every_ms + 1)
        return [last - (count - 1 - i) * p.every_ms for i in range(count)]
    out = [last]
    for tick in _cron(p, _local(p, last), reverse=True):
        if tick <= after_ms or len(out) >= limit:
            break
        if tick < out[-1]:
            out.append(tick)
    return out[::-1]


def count_between(p: Periodic, after_ms: int, upto_ms: int, limit: int = SKIP_COUNT_LIMIT) -> int:
    """How many ticks fall in ``(after_ms, upto_ms]`` (a cron schedule's: at most ``limit``)."""
    if p.every_ms is not None:
        last = tick_at_or_before(p, upto_ms)
        return 0 if last is None or last <= after_ms else (last - after_ms - 1) // p.every_ms + 1
    return len(ticks_between(p, after_ms, upto_ms, limit))


@frozen
class TickPlan:
    """What a ticker does now: add ``ticks`` (oldest first), record ``upto`` as the last tick
    handled (ticks skipped by the policy included, so they are not considered again), report
    ``skipped`` ticks, and wake for ``next`` (None: the schedule has no next tick)."""

    ticks: tuple[int, ...]
    upto: int
    skipped: int
    next: int | None


def plan_ticks(p: Periodic, last: int | None, now_ms: int) -> TickPlan:
    """The ticks due at ``now_ms`` after ``last`` (the last tick claimed; None when no tick was
    ever claimed: the schedule starts now, with the next tick, and misses nothing before)."""
    latest = tick_at_or_before(p, now_ms)
    nxt = tick_after(p, now_ms)
    if last is None:
        return TickPlan((), now_ms if latest is None else latest, 0, nxt)
    if latest is None or latest <= last:
        return TickPlan((), last, 0, nxt)
    if p.catch_up == "all" or latest - last <= ON_TIME_MS:  # all, or late rather than missed
        ticks = ticks_between(p, last, latest, MAX_CATCH_UP)
    elif p.catch_up == "latest" or now_ms - latest <= ON_TIME_MS:
        ticks = [latest]
    else:  # "none", and the latest tick is late: it was missed
        ticks = []
    due = count_between(p, last, latest)
    return TickPlan(tuple(ticks), latest, max(0, due - len(ticks)), nxt)
