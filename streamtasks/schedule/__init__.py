"""The pure arithmetic of periodic handlers: which ticks of a schedule (``every=`` or ``cron=``
in a time zone, DST included) are due, the next one, and what a catch-up policy makes of
missed ticks. No I/O: the worker's ticker (:mod:`streamtasks.worker.timers`) and the
in-memory app (:mod:`streamtasks.testing`) run the same code.
"""

from __future__ import annotations

from .ticks import (
    MAX_CATCH_UP,
    ON_TIME_MS,
    SKIP_COUNT_LIMIT,
    TickPlan,
    plan_ticks,
    tick_after,
    tick_at_or_before,
    tick_message_id,
    ticks_between,
)

__all__ = [
    "MAX_CATCH_UP",
    "ON_TIME_MS",
    "SKIP_COUNT_LIMIT",
    "TickPlan",
    "plan_ticks",
    "tick_after",
    "tick_at_or_before",
    "tick_message_id",
    "ticks_between",
]
