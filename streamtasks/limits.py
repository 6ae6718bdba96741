"""Flow-control values: a handler's rate limit, parsed strictly, and GCRA as a pure function.

``rate_limit="100/s"`` (also ``/m``, ``/h``) counts *handler calls*: one entry for a
per-entry handler, one batch for a batch handler (the unit ``max_concurrency`` counts too).
All workers and actors share one limit per handler, kept in Redis by the :data:`GCRA
<streamtasks.lua.GCRA>` script; :func:`gcra` is the same arithmetic in Python, for the
in-memory app (:mod:`streamtasks.testing`) and for the tests that hold the two equal.

GCRA (the generic cell rate algorithm) keeps one number per limit: the *theoretical arrival
time* ``tat`` of the next call. Every call granted moves it on by the emission interval ``T``
(``period / count``, rounded *up* to whole microseconds, so the rate granted is never above
the one asked for); a grant must leave ``tat <= now + burst * T``. Hence the guarantee: over
any window of ``W`` seconds at most ``W / T + burst`` calls are granted, whoever asks and in
whatever order. ``burst`` (the tolerance) is :data:`BURST_SECONDS` worth of calls, at least
one: 5 at 200/s, 3 at 100/s, 1 at 40/s and below.
"""

from __future__ import annotations

import math
import re

from attrs import frozen

from .errors import ConfigError

#: The burst tolerance, in seconds of the rate: the most calls granted at one instant.
BURST_SECONDS = 0.025
#: Seconds per unit of ``"N/unit"``.
UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE_RE = re.compile(r"([1-9][0-9]{0,8})/([smh])")
US = 1_000_000


@frozen
class RateLimit:
    """``count`` calls per ``period`` seconds (``RateLimit.parse("100/s")``)."""

    count: int
    period: float

    @classmethod
    def parse(cls, text: object) -> RateLimit:
        """``"<N>/s"``, ``"<N>/m"`` or ``"<N>/h"`` with N a whole number from 1 to 999,999,999
        and nothing else (no spaces, signs, decimals or other units); else :class:`ConfigError`."""
        match = _RATE_RE.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ConfigError(
                f"invalid rate_limit {text!r}: use '<calls>/s', '<calls>/m' or '<calls>/h' "
                "with a whole number of calls >= 1 (e.g. '100/s')"
            )
        return cls(int(match.group(1)), UNITS[match.group(2)])

    @property
    def interval_us(self) -> int:
        """The emission interval ``T`` in whole microseconds, rounded up (never faster)."""
        return max(1, math.ceil(self.period * US / self.count))

    @property
    def burst(self) -> int:
        """Calls that may be granted at one instant (:data:`BURST_SECONDS` of the rate, >= 1)."""
        return max(1, math.ceil(self.count * BURST_SECONDS / self.period))

    @property
    def per_second(self) -> float:
        return self.count / self.period

    def __str__(self) -> str:
        unit = next(u for u, s in UNITS.items() if s == self.period)
        return f"{self.count}/{unit}"


@frozen
class Grant:
    """What one GCRA request got: ``granted`` calls now, and when ``granted`` is less than
    asked, ``wait_us``: how long until ``chunk`` more (at most ``burst``, at least one) would
    be granted, nobody else asking."""

    granted: int
    wait_us: int
    tat_us: int  # the limit's new state


def gcra(tat_us: int, now_us: int, interval_us: int, burst: int, want: int, chunk: int) -> Grant:
    """Grant up to ``want`` calls at ``now_us`` to a limit whose state is ``tat_us`` (0: new).

    The same arithmetic as :data:`streamtasks.lua.GCRA` (whole microseconds throughout)."""
    tat = max(tat_us, now_us)
    ceiling = now_us + burst * interval_us
    granted = max(0, min(want, (ceiling - tat) // interval_us))
    tat += granted * interval_us
    wait = 0
    rest = want - granted
    if rest > 0:
        wait = max(0, tat + min(rest, max(1, chunk), burst) * interval_us - ceiling)
    return Grant(granted, wait, tat if granted else tat_us)
