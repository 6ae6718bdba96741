"""Rate-limit values (pure): the strict parser of ``rate_limit="100/s"``, and GCRA's arithmetic
(:func:`streamtasks.limits.gcra`): over any window of W seconds at most W / T + burst calls
are granted, whatever the order and size of the requests."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamtasks import Message, Registry
from streamtasks.errors import ConfigError
from streamtasks.limits import BURST_SECONDS, US, RateLimit, Shape, gcra


@pytest.mark.parametrize(
    ("text", "count", "period"),
    [
        ("100/s", 100, 1.0),
        ("5/m", 5, 60.0),
        ("7/h", 7, 3600.0),
        ("1/s", 1, 1.0),
        ("999999999/h", 999999999, 3600.0),
    ],
)
def test_a_rate_is_whole_calls_per_second_minute_or_hour(text: str, count: int, period: float) -> None:
    limit = RateLimit.parse(text)
    assert (limit.count, limit.period) == (count, period)
    assert str(limit) == text


@pytest.mark.parametrize(
    "text",
    ["", "100", "100/", "/s", "0/s", "-1/s", "+1/s", "1.5/s", "1e3/s", " 100/s", "100/s ", "100 /s",
     "100/ s", "100/S", "100/sec", "100/d", "100/s\n", "\n100/s", "0100/s", "1000000000/s", "\u0661\u0660/s",
     "100/s/s", "100//s"],
)  # fmt: skip
def test_anything_else_is_a_one_line_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match=r"invalid rate_limit .*'<calls>/s'") as caught:
        RateLimit.parse(text)
    assert "\n" not in str(caught.value).replace(repr(text), "")


@pytest.mark.parametrize("value", [None, 100, 1.5, b"100/s", ["100/s"]])
def test_a_value_that_is_not_a_string_is_a_config_error(value: object) -> None:
    with pytest.raises(ConfigError, match="invalid rate_limit"):
        RateLimit.parse(value)


@given(st.text(max_size=20))
def test_the_parser_accepts_exactly_the_documented_form(text: str) -> None:
    head, sep, unit = text.partition("/")
    documented = (
        sep == "/" and unit in ("s", "m", "h") and head.isascii() and head.isdigit()
        and not head.startswith("0") and 1 <= len(head) <= 9
    )  # fmt: skip
    try:
        limit = RateLimit.parse(text)
    except ConfigError:
        assert not documented
    else:
        assert documented and str(limit) == text and limit.count == int(head)


@given(st.integers(1, 999_999_999), st.sampled_from("smh"))
def test_the_emission_interval_never_grants_faster_than_asked(count: int, unit: str) -> None:
    limit = RateLimit.parse(f"{count}/{unit}")
    assert limit.interval_us * count >= limit.period * US  # rounded up: never above the rate
    assert limit.burst >= 1 and limit.burst == max(1, math.ceil(count * BURST_SECONDS / limit.period))


def test_a_bad_rate_limit_fails_at_decoration_time() -> None:
    registry = Registry()
    with pytest.raises(ConfigError, match="invalid rate_limit 'fast'"):
        registry.stream_handler("s", rate_limit="fast")
    with pytest.raises(ValueError, match="max_concurrency"):

        @registry.stream_handler("s", max_concurrency=0)
        def handle(msg: Message) -> None: ...

    with pytest.raises(ValueError, match="priorities"):
        registry.stream_handler("s", priorities=0)
    with pytest.raises(ValueError, match="priorities"):
        registry.stream_handler("s", priorities=11)
    assert registry.streams == []


def test_a_new_limit_grants_its_burst_at_once_then_one_call_per_interval() -> None:
    shape = RateLimit.parse("200/s").shape
    assert (shape.interval_us, shape.bank, shape.peak_interval_us, shape.burst) == (5000, 50, 4855, 5)
    assert int(shape.most_in(US)) == 210 and shape.most_in(60 * US) == 12_050
    first = gcra((0, 0), US, shape, 25, 2)
    assert (first.granted, first.wait_us) == (5, 9710)  # 2 more when the peak lets them
    later = gcra(first.tats, US + 9710, shape, 20, 2)
    assert later.granted == 2


def test_calls_a_stall_left_unused_are_made_up_at_the_peak_rate_not_at_once() -> None:
    shape = RateLimit.parse("200/s").shape
    tats = gcra((0, 0), US, shape, 5, 5).tats
    for step in range(1, 41):  # a second of 200/s, asked for on time: 5 every 25 ms
        grant = gcra(tats, US + step * 25_000, shape, 100, 5)
        tats = grant.tats
        assert grant.granted == 5
    after_stall = US + 40 * 25_000 + 200_000  # then nobody asks for 200 ms: 40 calls unused
    per_second = []
    for second in range(10):  # then ask every 5 ms for 10 s
        made = 0
        for step in range(200):
            grant = gcra(tats, after_stall + (second * 200 + step) * 5_000, shape, 100, 1)
            tats = grant.tats
            made += grant.granted
        per_second.append(made)
    assert all(200 < n <= shape.most_in(US) for n in per_second[:6])  # above the rate, under the peak
    assert sum(per_second) >= 10 * 200 + 40  # the 40 were made up


requests = st.lists(
    st.tuples(st.integers(0, 30_000), st.integers(0, 40), st.integers(1, 40)), min_size=1, max_size=60
)  # (microseconds since the last request, calls wanted, chunk)
shapes = st.builds(
    lambda interval, burst, more, faster: Shape(interval, burst + more, max(1, interval - faster), burst),
    st.integers(1, 50_000), st.integers(1, 12), st.integers(0, 40), st.integers(0, 5_000),
)  # fmt: skip


@given(shapes, requests)
def test_no_window_ever_gets_more_than_the_shape_allows(
    shape: Shape, asks: list[tuple[int, int, int]]
) -> None:
    tats, now, grants = (0, 0), 10**12, []
    for gap, want, chunk in asks:
        now += gap
        grant = gcra(tats, now, shape, want, chunk)
        tats = grant.tats
        assert 0 <= grant.granted <= want
        grants.append((now, grant.granted))
    for i, (start, _) in enumerate(grants):
        for end, _ in grants[i:]:
            assert sum(n for t, n in grants if start <= t <= end) <= shape.most_in(end - start)


@given(shapes, requests)
def test_waiting_the_wait_given_gets_the_calls_it_was_for(
    shape: Shape, asks: list[tuple[int, int, int]]
) -> None:
    tats, now = (0, 0), 10**12
    for gap, want, chunk in asks:
        now += gap
        grant = gcra(tats, now, shape, want, chunk)
        tats = grant.tats
        if grant.granted < want:
            assert grant.wait_us > 0
            retry = gcra(tats, now + grant.wait_us, shape, want - grant.granted, chunk)
            assert retry.granted >= min(want - grant.granted, chunk, shape.burst)
