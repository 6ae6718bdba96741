"""``status`` shows actor-mode workers' actors (their pool's key in Redis), and a key written
by anything else is reported in one line, left out, and never breaks ``status``
(hand-picked bodies, and hypothesis for any JSON)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamtasks import keys
from streamtasks.cli.status import render
from streamtasks.observe.discover import _actor_pool
from streamtasks.observe.inspect import gather_status

pytestmark = pytest.mark.integration

GOOD = {
    "consumer": "w1",
    "group": "g",
    "host": "h",
    "pid": 7,
    "ts": 1.0,
    "auto": True,
    "groups": [
        {
            "handlers": ["jobs"],
            "desired": 3,
            "running": 2,
            "starting": 1,
            "min": 1,
            "max": 4,
            "reason": "up 2 -> 3: backlog 900",
        }
    ],
}


async def test_status_shows_the_actors_and_reports_a_malformed_key(redis: aioredis.Redis) -> None:
    await redis.xgroup_create("jobs", "g", "0", mkstream=True)
    await redis.set(keys.actors_key("g", "w1"), json.dumps(GOOD), ex=30)
    await redis.set(keys.actors_key("g", "bad"), '{"groups": [{"desired": -1}]}', ex=30)
    await redis.set(keys.actors_key("g", "junk"), b"\xff\xfe not json", ex=30)
    status = await gather_status(redis, ["jobs"], "g")
    [pool] = status["actors"]
    assert pool["consumer"] == "w1" and pool["groups"][0]["desired"] == 3
    skipped = {k["key"]: k["error"] for k in status["bad_keys"]["keys"]}
    assert set(skipped) == {keys.actors_key("g", "bad"), keys.actors_key("g", "junk")}
    assert all("not an actor pool" in why for why in skipped.values())
    assert status["bad_keys"]["count"] == 2  # skipped and named, as a bad heartbeat is
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(render(status))
    shown = console.export_text()
    assert "2 / 3" in shown and "1-4" in shown and "up 2 -> 3: backlog 900" in shown
    assert shown.count("skipped, not an actor pool") == 2


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "consumer": json_values,
            "groups": st.lists(
                st.dictionaries(
                    st.sampled_from(["handlers", "desired", "running", "starting", "min", "max", "reason"]),
                    json_values,
                ),
                max_size=2,
            ),
        },
    ),
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
def test_any_json_reads_as_a_pool_or_one_value_error(body: Any) -> None:
    try:
        pool = _actor_pool(json.dumps(body), 10.0)
    except (ValueError, TypeError, KeyError):
        return
    assert isinstance(pool["consumer"], str) and pool["consumer"]
    for g in pool["groups"]:
        assert all(isinstance(g[k], int) and g[k] >= 0 for k in ("desired", "running", "starting"))
        assert all(isinstance(h, str) for h in g["handlers"])
