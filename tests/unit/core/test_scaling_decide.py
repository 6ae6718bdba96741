"""The autoscaling rule (pure): follows a step load up to the limit, back to the minimum after
a sustained idle period, never runs away on a load the actors keep up with, and never flaps
(hypothesis: any sequence of looks keeps the bounds and the hysteresis)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtasks.errors import ConfigError
from streamtasks.scaling import Autoscale, Observation, Scaler, decide

EVERY = 2.0


class Sim:
    """A group of actors that each settle ``capacity`` entries/s, entries arriving at
    ``arrivals``/s; an actor asked for reads from the next look on."""

    def __init__(self, config: Autoscale, most: int, capacity: float) -> None:
        self.config, self.most, self.capacity = config, most, capacity
        self.state = Scaler.start(config.min, 0.0)
        self.running = config.min
        self.undelivered, self.processed, self.at = 0.0, 0, 0.0
        self.history: list[int] = []
        self.reasons: list[str] = []

    def tick(self, arrivals: float) -> int:
        self.at += EVERY
        can = self.capacity * self.running * EVERY
        waiting = self.undelivered + arrivals * EVERY
        done = min(can, waiting)
        self.undelivered, self.processed = waiting - done, self.processed + int(done)
        pending = min(int(self.undelivered), 10 * self.running)  # a batch or so in flight each
        obs = Observation(
            self.at, int(self.undelivered) - pending, pending, None, self.processed, self.running
        )
        decision, self.state = decide(self.config, self.most, self.state, obs)
        self.running = decision.desired
        self.history.append(decision.desired)
        if decision.changed:
            self.reasons.append(decision.reason)
        return decision.desired


def test_a_step_load_at_twice_one_actors_rate_adds_actors_up_to_the_limit_quickly() -> None:
    """Twice one actor's rate: 2 actors keep up, a third drains the backlog built meanwhile."""
    sim = Sim(Autoscale(min=1, max=3, scale_down_after=60), 3, capacity=100)
    for _ in range(10):  # 20 s of 200 entries/s
        sim.tick(200)
    assert max(sim.history) == 3 and sim.history.index(3) <= 5, sim.history
    assert all(r.startswith("up") for r in sim.reasons), sim.reasons


def test_after_the_load_stops_the_actors_go_back_to_the_minimum_after_the_idle_period() -> None:
    sim = Sim(Autoscale(min=1, max=4, scale_down_after=20), 4, capacity=100)
    for _ in range(10):
        sim.tick(500)
    assert sim.history[-1] == 4
    for _ in range(20):  # 40 s of nothing
        sim.tick(0)
    assert sim.history[-1] == 1
    drained = next(i for i, n in enumerate(sim.history[10:]) if n < 4)
    assert (drained + 1) * EVERY >= 20  # not before the idle period (counted from the last busy look)
    at_min = sim.history[10:].index(1)
    assert (at_min + 1) * EVERY <= 20 + 2 * EVERY  # the minimum within the idle period (and a look)
    assert sim.reasons[-1].endswith("-> 1") or "-> 1:" in sim.reasons[-1]


def test_a_load_the_actors_keep_up_with_adds_none() -> None:
    """Entries are read as they come (none left unread): what is settled is the demand, not
    the capacity, and no rate is measured from it."""
    sim = Sim(Autoscale(min=1, max=8), 8, capacity=1000)
    for _ in range(30):
        sim.tick(100)
    assert set(sim.history) == {1}


def test_before_any_rate_is_known_one_more_at_a_time_once_all_read() -> None:
    state = Scaler.start(1, 0.0)
    config = Autoscale(min=1, max=8)
    first = Observation(0.0, 100, 10, 5.0, 0, 1)
    decision, state = decide(config, 8, state, first)
    assert not decision.changed  # one look: growth unknown
    grown = Observation(2.0, 300, 10, 7.0, 0, 1)  # nothing settled yet: no rate
    decision, state = decide(config, 8, state, grown)
    assert decision.desired == 2 and "one more" in decision.reason
    still_starting = Observation(4.0, 500, 10, 9.0, 0, 1)  # the second is not reading yet
    decision, state = decide(config, 8, state, still_starting)
    assert decision.desired == 2


@pytest.mark.parametrize(
    "kwargs",
    [{"min": 0}, {"min": 3, "max": 2}, {"target_drain": 0}, {"every": 0}, {"scale_down_after": -1}],
)
def test_unusable_options_are_one_clear_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Autoscale(**kwargs)  # type: ignore[arg-type]


def test_the_environment_says_auto_and_its_bounds() -> None:
    env = {
        "STREAMTASKS_ACTORS": "auto",
        "STREAMTASKS_MIN_ACTORS": "2",
        "STREAMTASKS_MAX_ACTORS": "6",
        "STREAMTASKS_TARGET_DRAIN_SECONDS": "10",
        "STREAMTASKS_SCALE_DOWN_AFTER": "90",
    }
    assert Autoscale.from_env(env) == Autoscale(min=2, max=6, target_drain=10, scale_down_after=90)
    assert Autoscale.from_env({"STREAMTASKS_ACTORS": "3"}) is None
    with pytest.raises(ConfigError, match="STREAMTASKS_TARGET_DRAIN_SECONDS"):
        Autoscale.from_env({"STREAMTASKS_ACTORS": "auto", "STREAMTASKS_TARGET_DRAIN_SECONDS": "soon"})
    with pytest.raises(ConfigError, match="below"):
        Autoscale.from_env({**env, "STREAMTASKS_MAX_ACTORS": "1"})


looks = st.lists(
    st.tuples(
        st.floats(0.1, 10),  # seconds since the last look
        st.integers(0, 10**6),  # undelivered
        st.integers(0, 10**4),  # pending
        st.one_of(st.none(), st.floats(0, 3600)),  # oldest age
        st.integers(0, 10**5),  # settled since the last look
        st.integers(0, 12),  # running
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300)
@given(st.integers(1, 4), st.integers(0, 8), st.floats(0, 30), looks)
def test_any_looks_keep_the_bounds_and_never_flap(
    low: int, extra: int, down_after: float, seq: list[tuple[float, int, int, float | None, int, int]]
) -> None:
    """Bounds always; a decrease never within ``scale_down_after`` of the last increase, and
    only to the largest need of the last such period (so never up and down within one)."""
    config = Autoscale(min=low, max=low + extra, scale_down_after=down_after)
    most = low + extra
    state = Scaler.start(low, 0.0)
    at, processed, raised = 0.0, 0, 0.0
    needs: list[tuple[float, int]] = []
    for dt, undelivered, pending, age, settled, running in seq:
        at, processed = at + dt, processed + settled
        before = state.desired
        decision, state = decide(
            config, most, state, Observation(at, undelivered, pending, age, processed, running)
        )
        needs.append((at, decision.keep))
        assert low <= decision.desired <= most and low <= decision.need <= decision.keep <= most
        if decision.desired < before:
            assert at - raised >= down_after
            window = [n for t, n in needs if t > at - down_after or t == at]
            assert decision.desired == max(window) < before
        if decision.desired > before:
            raised = at
            assert decision.desired == decision.need  # up at once to the need
        assert decision.changed == (decision.desired != before)


@given(st.floats(50, 150), st.integers(1, 3))
def test_noisy_rates_on_a_steady_load_settle_without_flapping(mean: float, seed: int) -> None:
    """Capacity noise of +-40% on a steady load: after the ramp, the number changes at most
    once per idle period, and never goes back up after coming down."""
    import random

    rng = random.Random(seed)
    config = Autoscale(min=1, max=10, scale_down_after=30)
    sim = Sim(config, 10, capacity=mean)
    for _ in range(150):
        sim.capacity = mean * rng.uniform(0.6, 1.4)
        sim.tick(250)
    steady = sim.history[20:]
    turns = sum(1 for a, b, c in zip(steady, steady[1:], steady[2:], strict=False) if (b - a) * (c - b) < 0)
    assert turns <= math.ceil(len(steady) * EVERY / config.scale_down_after), steady


def test_a_decrease_goes_to_the_peak_of_the_idle_period_not_the_latest_need() -> None:
    sim = Sim(Autoscale(min=1, max=4, scale_down_after=10), 4, capacity=100)
    for _ in range(10):
        sim.tick(350)  # four actors
    for _ in range(3):
        sim.tick(150)  # two would do
    for _ in range(10):
        sim.tick(0)  # one would do
    downs = [r for r in sim.reasons if r.startswith("down")]
    assert downs[0].startswith("down 4 -> 2"), sim.reasons
    assert downs[-1].startswith("down 2 -> 1"), sim.reasons


def test_a_load_just_below_what_fewer_actors_settle_keeps_them_without_flapping() -> None:
    """198/s on actors of ~100/s each: two barely keep up, so a third added for the backlog stays
    (the headroom), instead of going and coming back with every wobble."""
    sim = Sim(Autoscale(min=1, max=4, scale_down_after=10), 4, capacity=100)
    for i in range(60):
        sim.capacity = 100 * (1.05 if i % 3 else 0.95)  # a little noise
        sim.tick(198)
    settled = sim.history[15:]
    assert len(set(settled)) == 1, sim.history
    assert not [r for r in sim.reasons if r.startswith("down")], sim.reasons
