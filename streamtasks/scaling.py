"""How many actors a group of handlers needs: the autoscaling rule, pure.

Every few seconds (:attr:`Autoscale.every`) the controller (:mod:`streamtasks.ray.controller`)
looks at a group of handlers: its backlog (entries undelivered plus pending, over its
streams), how old the oldest pending entry is, how many entries its actors have settled so
far (a counter) and how many of them read. :func:`decide` turns that into the number of
actors, with the reason in words:

* **per-actor rate**: entries settled per second per reading actor, measured over intervals
  that began and ended with entries left unread (every actor was reading as fast as it could:
  a capacity, not the demand) and the same actors reading, and smoothed (:data:`SMOOTHING`);
* **arrival rate**: the backlog's growth (unread plus pending) plus what was settled, per second;
* **need**: enough actors to keep up with arrivals *and* drain the backlog within
  :attr:`Autoscale.target_drain` seconds: ``ceil((arrivals + backlog / target_drain) / rate)``.
  Before any rate is measured: one more actor while the backlog grows (or its oldest entry
  is older than the target), once every actor asked for reads;
* **up** at once to the need (never above :attr:`Autoscale.max`);
* **down** never sooner than :attr:`Autoscale.scale_down_after` seconds after the last
  increase, and then only to the largest need of the last such period, counted with
  :data:`HEADROOM` (never below :attr:`Autoscale.min`): the number follows the period's peak
  down, so a producer that stops has the actors back at the minimum one period after the
  backlog drained, and a load just below what one actor fewer settles keeps them.

The hysteresis is in the last two: a need that jumps around (noisy rates) lifts the number
to its peaks and holds it there; it comes down only once a whole period stayed lower, so the
number never goes up and then down within a period.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

from attrs import field, frozen

from .config import env_int
from .errors import ConfigError

#: Weight of the newest measurement in the per-actor rate (exponential moving average).
SMOOTHING = 0.5
#: A scale-down keeps this much capacity above the demand: a load just below what fewer
#: actors settle does not take one away only to ask for it back at its next peak.
HEADROOM = 1.15
#: Environment variables of the options (the CLI's and the facade's).
ENV_ACTORS = "STREAMTASKS_ACTORS"
ENV_MIN, ENV_MAX = "STREAMTASKS_MIN_ACTORS", "STREAMTASKS_MAX_ACTORS"
ENV_DRAIN, ENV_DOWN = "STREAMTASKS_TARGET_DRAIN_SECONDS", "STREAMTASKS_SCALE_DOWN_AFTER"


def _positive(_inst: object, attr: object, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{getattr(attr, 'name', attr)} must be > 0, not {value!r}")


@frozen
class Autoscale:
    """``--actors auto``: between ``min`` and ``max`` actors per group of handlers (``max``
    None: the cluster's CPUs at start shared out among the groups, at least ``min``)."""

    min: int = 1
    max: int | None = None
    target_drain: float = field(default=30.0, validator=_positive)
    scale_down_after: float = 60.0
    every: float = field(default=2.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.min < 1:
            raise ConfigError(f"--min-actors must be at least 1, not {self.min}")
        if self.max is not None and self.max < self.min:
            raise ConfigError(f"--max-actors {self.max} is below --min-actors {self.min}")
        if self.scale_down_after < 0:
            raise ConfigError("--scale-down-after must be >= 0")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Autoscale | None:
        """``STREAMTASKS_ACTORS=auto`` and its companions; None unless it says ``auto``."""
        env = os.environ if environ is None else environ
        if (env.get(ENV_ACTORS) or "").strip().lower() != "auto":
            return None
        raw_max = env.get(ENV_MAX) or ""
        return cls(
            min=env_int(env, ENV_MIN, 1, minimum=1),
            max=env_int(env, ENV_MAX, 1, minimum=1) if raw_max.strip() else None,
            target_drain=_env_seconds(env, ENV_DRAIN, 30.0),
            scale_down_after=_env_seconds(env, ENV_DOWN, 60.0),
        )


def _env_seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}={raw!r} must be a finite number >= 0")
    return value


@frozen
class Observation:
    """A group of handlers at one look."""

    at: float  # seconds (monotonic)
    undelivered: int  # entries not read yet (the groups' lag)
    pending: int  # entries read, not yet acked (running, queued, retries)
    oldest_age: float | None  # seconds since the XADD of the oldest pending entry
    processed: int  # entries its actors acked or dead-lettered so far (a counter)
    running: int  # actors reading

    @property
    def backlog(self) -> int:
        return self.undelivered + self.pending


@frozen
class Decision:
    desired: int
    need: int  # actors needed now
    keep: int  # actors not to go below: the need with HEADROOM (a scale-down looks at these)
    reason: str
    changed: bool


@frozen
class Scaler:
    """What :func:`decide` remembers between two looks."""

    desired: int
    raised_at: float  # when ``desired`` last went up (or the start)
    rate: float | None = None  # entries/s one busy actor settles (smoothed)
    last: Observation | None = None
    needs: tuple[tuple[float, int], ...] = ()  # (at, need) within the last scale_down_after

    @classmethod
    def start(cls, desired: int, at: float) -> Scaler:
        return cls(desired, at)


def decide(config: Autoscale, most: int, state: Scaler, obs: Observation) -> tuple[Decision, Scaler]:
    """The number of actors after ``obs`` (between ``config.min`` and ``most``), and the new state."""
    rate, arrivals = _rates(state, obs)
    need, keep, why_need = _need(config, state, obs, rate, arrivals)
    need, keep = (min(max(n, config.min), most) for n in (need, keep))
    needs = (*((t, n) for t, n in state.needs if t > obs.at - config.scale_down_after), (obs.at, keep))
    desired, reason = state.desired, ""
    if need > state.desired:
        desired, reason = need, f"up {state.desired} -> {need}: {why_need}"
    elif keep < state.desired and obs.at - state.raised_at >= config.scale_down_after:
        peak = max(n for _, n in needs)
        if peak < state.desired:
            desired = peak
            reason = (
                f"down {state.desired} -> {peak}: {peak} or fewer needed for "
                f"{config.scale_down_after:.0f}s ({why_need})"
            )
    if state.desired > most:  # the limit shrank (never below min)
        desired, reason = most, f"down {state.desired} -> {most}: at most {most}"
    changed = desired != state.desired
    new = Scaler(desired, obs.at if desired > state.desired else state.raised_at, rate, obs, needs)
    return Decision(desired, need, keep, reason or f"stay at {desired}: {why_need}", changed), new


def _rates(state: Scaler, obs: Observation) -> tuple[float | None, float | None]:
    """The smoothed per-actor rate and the arrival rate (None: not known yet)."""
    prev = state.last
    if prev is None or obs.at <= prev.at:
        return state.rate, None
    dt = obs.at - prev.at
    done = max(0, obs.processed - prev.processed) / dt
    arrivals = max(0.0, (obs.backlog - prev.backlog) / dt + done)
    # Entries left unread at both looks: every actor read as fast as it could (a full lane
    # reads no more), so what they settled is their capacity, not the demand; and as many
    # actors read at both looks (one that started in between read only part of the time).
    busy = prev.undelivered > 0 and obs.undelivered > 0 and prev.running == obs.running > 0
    if not busy or done <= 0:
        return state.rate, arrivals
    measured = done / obs.running
    rate = measured if state.rate is None else SMOOTHING * measured + (1 - SMOOTHING) * state.rate
    return rate, arrivals


def _need(
    config: Autoscale, state: Scaler, obs: Observation, rate: float | None, arrivals: float | None
) -> tuple[int, int, str]:
    """Actors needed now, actors to keep (the need with :data:`HEADROOM`), and why."""
    waiting = f"backlog {obs.backlog:,}" + (f" (oldest {obs.oldest_age:.0f}s)" if obs.oldest_age else "")
    if rate is not None:
        demand = (arrivals or 0.0) + obs.backlog / config.target_drain
        need = math.ceil(demand / rate - 1e-9)
        keep = math.ceil(demand * HEADROOM / rate - 1e-9)
        arriving = f", {arrivals:,.0f}/s arriving" if arrivals is not None else ""
        return (
            need,
            keep,
            (
                f"{waiting}{arriving}; ~{rate:,.0f}/s per actor: {need} to keep up and drain it "
                f"within {config.target_drain:.0f}s"
            ),
        )
    if obs.backlog <= 0:
        return config.min, config.min, f"{waiting}, no rate measured yet"
    growing = state.last is not None and obs.backlog > state.last.backlog
    stale = obs.oldest_age is not None and obs.oldest_age > config.target_drain
    if (growing or stale) and obs.running >= state.desired:
        why = "growing" if growing else f"older than {config.target_drain:.0f}s"
        return state.desired + 1, state.desired + 1, f"{waiting} {why}, no rate measured yet: one more"
    return state.desired, state.desired, f"{waiting}, no rate measured yet"
