"""Flow-control values: a handler's rate limit, parsed strictly, and GCRA as a pure function.

``rate_limit="100/s"`` (also ``/m``, ``/h``) counts *handler calls*: one entry for a
per-entry handler, one batch for a batch handler (the unit ``max_concurrency`` counts too).
All workers and actors share one limit per handler, kept in Redis by the :data:`GCRA
<streamtasks.lua.GCRA>` script; :func:`gcra` is the same arithmetic in Python, for the
in-memory app (:mod:`streamtasks.testing`) and for the tests that hold the two equal.

GCRA (the generic cell rate algorithm) keeps, per limit, the *theoretical arrival time*
``tat`` of the next call; every call granted moves it on by the emission interval, and a
grant must leave ``tat <= now + tolerance * interval``. Two of them act together (the dual
GCRA of traffic shaping), and a call is granted only when both allow it:

* the **rate**: interval ``T = period / count`` (rounded *up* to whole microseconds: never
  above the rate asked for), tolerance ``bank`` = :data:`BANK_SECONDS` of the rate. Calls a
  stall left unused (every worker paused, a slow network) are kept up to ``bank`` and made
  up later, so the long-run rate holds on a busy machine;
* the **peak**: interval ``T / (1 + CATCH_UP)`` (3 % faster), tolerance ``burst`` =
  :data:`BURST_SECONDS` of the rate: making up never runs more than 3 % over the rate, and
  at one instant at most ``burst`` calls are granted.

Hence the guarantee: over any window of ``W`` seconds at most ``min(W / T + bank,
W / T_peak + burst)`` calls are granted, whoever asks and in whatever order. At 200/s:
``burst`` 5, ``bank`` 50, at most 210 calls in any second (105 %), 12,050 in any minute.
"""

from __future__ import annotations

import math
import re

from attrs import frozen

from .errors import ConfigError

#: The peak's tolerance, in seconds of the rate: the most calls granted at one instant.
BURST_SECONDS = 0.025
#: The rate's tolerance, in seconds of the rate: calls a stall leaves unused and that are made
#: up later (at the peak rate).
BANK_SECONDS = 0.25
#: The peak rate is this much faster than the rate (making up what a stall left unused).
CATCH_UP = 0.03
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
    def shape(self) -> Shape:
        """The two GCRAs of this limit (see the module docstring)."""
        interval = self.interval_us
        bank = max(self.burst, math.ceil(self.count * BANK_SECONDS / self.period))
        return Shape(interval, bank, max(1, math.ceil(interval / (1 + CATCH_UP))), self.burst)

    @property
    def per_second(self) -> float:
        return self.count / self.period

    def __str__(self) -> str:
        unit = next(u for u, s in UNITS.items() if s == self.period)
        return f"{self.count}/{unit}"


@frozen
class Shape:
    """The two GCRAs of a limit: the rate (``interval_us``, tolerance ``bank``) and the peak
    (``peak_interval_us`` <= ``interval_us``, tolerance ``burst`` <= ``bank``)."""

    interval_us: int
    bank: int
    peak_interval_us: int
    burst: int

    @property
    def cells(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """``(interval_us, tolerance)`` of the rate, then of the peak."""
        return (self.interval_us, self.bank), (self.peak_interval_us, self.burst)

    def most_in(self, window_us: int) -> float:
        """The most calls granted in any window of ``window_us`` microseconds."""
        return min(window_us / interval + tolerance for interval, tolerance in self.cells)


@frozen
class Grant:
    """What one request got: ``granted`` calls now, and when ``granted`` is less than asked,
    ``wait_us``: how long until ``chunk`` more (at most ``burst``, at least one) would be
    granted, nobody else asking; ``tats``: the limit's new state (rate's, peak's)."""

    granted: int
    wait_us: int
    tats: tuple[int, int]


def gcra(tats: tuple[int, int], now_us: int, shape: Shape, want: int, chunk: int) -> Grant:
    """Grant up to ``want`` calls at ``now_us`` to a limit in state ``tats`` ((0, 0): new).

    The same arithmetic as :data:`streamtasks.lua.GCRA` (whole microseconds throughout)."""
    # ahead of what a grant can leave (a clock that went back, a foreign write): the furthest
    tat = [
        min(max(t, now_us), now_us + tol * interval)
        for t, (interval, tol) in zip(tats, shape.cells, strict=True)
    ]
    cells = list(zip(tat, shape.cells, strict=True))
    granted = max(0, min(want, *((now_us + tol * interval - t) // interval for t, (interval, tol) in cells)))
    wait = 0
    if granted < want:
        need = min(want - granted, max(1, chunk), shape.burst)
        wait = max(0, *(t + (granted + need - tol) * interval - now_us for t, (interval, tol) in cells))
    if not granted:
        return Grant(0, wait, tats)
    return Grant(
        granted, wait, (tat[0] + granted * shape.interval_us, tat[1] + granted * shape.peak_interval_us)
    )
