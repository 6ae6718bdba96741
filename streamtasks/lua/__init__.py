"""Lua scripts: each step that must be atomic on Redis is one script.

Every script that moves an entry checks first that it is still pending on *this* consumer,
so a worker whose lease was lost can never steal an entry back or settle it twice.

Lua hands at most ~8,000 values to one command (``unpack`` and the C stack), while Redis
accepts entries of any number of fields. No script here ``unpack``s a list whose length
the entry decides: the dead-letter fields of a big entry arrive packed into one value
(:mod:`streamtasks.deadletter`), and a replay too big for :data:`REPLAY` is done with
``WATCH``/``MULTI`` instead. Loops over ARGV (``RESET``) have no such limit.

They live by what they serve (:mod:`.delivery`, :mod:`.timers`, :mod:`.flow`) and are all
imported here: ``lua.RECLAIM``.
"""

from __future__ import annotations

from .delivery import (
    DEAD_LETTER,
    FORGET_CONSUMER,
    NOTIFY,
    RECLAIM,
    REPAIR_READ_COUNTER,
    REPLAY,
    RESET,
    SETTLE_RESULT,
    TRIM_ACKED,
)
from .flow import GCRA, SEM_ACQUIRE, SEM_RENEW
from .timers import CANCEL_SCHEDULED, CLAIM_TICKS, MOVE_DUE, SCHEDULE

__all__ = [
    "CANCEL_SCHEDULED",
    "CLAIM_TICKS",
    "DEAD_LETTER",
    "FORGET_CONSUMER",
    "GCRA",
    "MOVE_DUE",
    "NOTIFY",
    "RECLAIM",
    "REPAIR_READ_COUNTER",
    "REPLAY",
    "RESET",
    "SCHEDULE",
    "SEM_ACQUIRE",
    "SEM_RENEW",
    "SETTLE_RESULT",
    "TRIM_ACKED",
]
