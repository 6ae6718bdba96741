"""One malformed key never blinds monitoring (issue 25, item 2), against a real redis-server:
a heartbeat key with a value that is not a heartbeat (``{"ts": "soon"}``, ``"streams": 5``,
``"ray": "lots"``, bytes that are not JSON, a hash where a string belongs), a dead-letter
stream or named stream of another type, groups and consumers with odd names. ``status``
(text and ``--json``), ``gather_status``, discovery, the dashboard's sampler, its pages and
``/metrics`` never raise; they report the well-formed workers and streams beside the bad key,
which is skipped, counted and named as a problem."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis as syncredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from rich.console import Console
from support.dashboard import APP, served

from streamtasks.app import load_registry
from streamtasks.cli.common import EXIT_UNHEALTHY
from streamtasks.cli.status import render
from streamtasks.deadletter import list_dead
from streamtasks.keys import heartbeat_key
from streamtasks.observe.dashboard import Targets
from streamtasks.observe.dashboard.sampler import Sampler
from streamtasks.observe.discover import discover_groups, live_workers
from streamtasks.observe.inspect import gather_status
from streamtasks.observe.metrics import WorkerMetrics
from streamtasks.observe.readings import Findings, Heartbeat
from streamtasks.worker import InlineExecutor, Worker, WorkerSettings

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent
GROUP = "obs-tests"
GOOD = "good-worker"

#: The issue's values, and two more kinds of key that do not fit.
BAD_VALUES: dict[str, bytes] = {
    "ts-text": b'{"ts": "soon", "consumer": "x", "streams": ["obs_work"]}',
    "streams-int": b'{"ts": 1700000000, "consumer": "x", "streams": 5}',
    "ray-text": b'{"ts": 1700000000, "consumer": "x", "ray": "lots"}',
    "not-json": b"\xff\xfe not json",
}


def good_beat(consumer: str = GOOD, /, **extra: Any) -> bytes:
    body = {
        "consumer": consumer,
        "group": GROUP,
        "host": "h1",
        "pid": 4242,
        "state": "reading",
        "streams": ["obs_work"],
        "started_at": time.time() - 5,
        "ts": time.time(),
        "in_flight": 0,
        "failing_loops": [],
        "ray": {"total": {"CPU": 2.0}, "available": {"CPU": 1.0}},
        **extra,
    }
    return json.dumps(body).encode()


async def setup_good(redis: Redis) -> None:
    """A stream with its group and 3 entries, and one live, well-formed worker."""
    await redis.xgroup_create("obs_work", GROUP, id="0", mkstream=True)
    for i in range(3):
        await redis.xadd("obs_work", {"n": str(i)})
    await redis.set(heartbeat_key(GROUP, GOOD), good_beat(), ex=60)


async def put_bad(redis: Redis, name: str) -> str:
    """Write bad key ``name`` (a :data:`BAD_VALUES` value, or ``hash``); its key."""
    key = heartbeat_key(GROUP, f"bad-{name}")
    if name == "hash":
        await redis.hset(key, "ts", "1")
    else:
        await redis.set(key, BAD_VALUES[name], ex=60)
    return key


def text_of(status: dict[str, Any], width: int = 200) -> str:
    out = io.StringIO()
    Console(file=out, width=width).print(render(status))
    return out.getvalue()


def assert_reported_beside(status: dict[str, Any], bad: list[str]) -> None:
    """The good worker and stream are there; each bad key is skipped, counted and named."""
    assert [w["consumer"] for w in status["workers"]] == [GOOD], status["workers"]
    [work] = [s for s in status["streams"] if s["stream"] == "obs_work"]
    assert (work["length"], work["undelivered"], work["group_exists"]) == (3, 3, True)
    assert status["bad_keys"]["count"] == len(bad)
    assert sorted(k["key"] for k in status["bad_keys"]["keys"]) == sorted(bad)
    for key in bad:
        assert any(p.startswith(f"{key}: skipped, ") for p in status["problems"]), (key, status["problems"])
    assert status["ok"] is False
    json.dumps(status, allow_nan=False)


@pytest.mark.parametrize("name", [*BAD_VALUES, "hash"])
async def test_gather_status_and_the_sampler_report_the_good_worker_beside_a_bad_heartbeat(
    redis: Redis, name: str
) -> None:
    await setup_good(redis)
    key = await put_bad(redis, name)
    status = await gather_status(redis, ["obs_work"], GROUP)
    assert_reported_beside(status, [key])
    assert key in text_of(status) and key in text_of(status, 80)

    sampler = Sampler(redis, Targets.of(load_registry(APP), ["obs_work"]))
    sample = await sampler.sample()
    assert [w["consumer"] for w in sample["workers"]] == [GOOD]
    assert any(p.startswith(f"{key}: skipped, ") for p in sample["problems"])
    assert sample["services"]["ray"]["cluster_resources"] == {"CPU": 2.0}


async def test_status_cli_json_and_text_name_every_bad_key_and_show_the_good_worker(
    redis: Redis, redis_url: str
) -> None:
    """``streamtasks status APP --json`` (before: exit 1, ``Error: could not convert string to
    float: 'soon'``, no JSON) and the table at 80 columns, with all the bad keys at once."""
    await setup_good(redis)
    bad = [await put_bad(redis, name) for name in [*BAD_VALUES, "hash"]]
    env = {**os.environ, "COLUMNS": "80"}
    args = [sys.executable, "-m", "streamtasks", "status", "obs_app:registry", "--redis-url", redis_url]
    as_json, table = await asyncio.gather(
        asyncio.to_thread(
            subprocess.run, [*args, "--json"], capture_output=True, text=True, cwd=HERE, env=env
        ),
        asyncio.to_thread(subprocess.run, args, capture_output=True, text=True, cwd=HERE, env=env),
    )
    assert as_json.returncode == EXIT_UNHEALTHY, as_json.stdout + as_json.stderr
    status = json.loads(as_json.stdout)
    status["streams"] = [s for s in status["streams"] if s["stream"] == "obs_work"]
    assert_reported_beside(status, bad)
    assert table.returncode == EXIT_UNHEALTHY and "Traceback" not in table.stderr + table.stdout
    assert GOOD in table.stdout
    for key in bad:
        assert key in table.stdout.replace("\n", ""), table.stdout


async def test_the_dashboard_pages_and_api_show_the_bad_key_beside_the_good_worker(redis: Redis) -> None:
    await setup_good(redis)
    key = await put_bad(redis, "ts-text")
    async with served(redis) as server, aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/api/overview") as r:
            assert r.status == 200
            overview = await r.json()
        async with http.get(f"{server.url}/") as r:
            assert r.status == 200
            page = await r.text()
    assert [w["consumer"] for w in overview["workers"]] == [GOOD]
    assert overview["bad_keys"]["count"] == 1 and key in overview["problems"][-1]
    assert key in page and GOOD in page


async def test_metrics_count_the_bad_keys_and_the_live_workers_beside_them(redis: Redis) -> None:
    """``/metrics`` of a worker whose group has malformed heartbeats: its own heartbeat age,
    the live workers that are well-formed, and ``streamtasks_unreadable_keys``."""
    registry = load_registry(APP).only(["obs_work"])
    worker = Worker(registry, redis, InlineExecutor(), WorkerSettings(consumer=GOOD))
    metrics = WorkerMetrics(worker)
    await setup_good(redis)
    for name in [*BAD_VALUES, "hash"]:
        await put_bad(redis, name)
    await metrics.exposition()
    value = metrics.registry.get_sample_value
    assert value("streamtasks_redis_up") == 1.0
    assert value("streamtasks_unreadable_keys") == 5.0
    assert value("streamtasks_live_workers", {"group": GROUP}) == 1.0
    age = value("streamtasks_worker_heartbeat_age_seconds")
    assert age is not None and 0 <= age < 30
    assert value("streamtasks_stream_length", {"stream": "obs_work", "group": GROUP}) == 3.0

    await redis.set(heartbeat_key(GROUP, GOOD), b'{"ts": "soon"}')  # its own heartbeat, malformed
    await metrics.exposition()
    assert value("streamtasks_worker_heartbeat_age_seconds") is None
    assert value("streamtasks_unreadable_keys") == 6.0 and value("streamtasks_redis_up") == 1.0


# -- the property: any value in any key monitoring reads ---------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
#: Every field of a heartbeat value that monitoring decodes (the decoder's own list, so a
#: field it gains is fuzzed too).
FIELDS = Heartbeat.__struct_fields__
NAMES = st.binary(min_size=1, max_size=12)


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity too: what Python writes


#: A heartbeat value: any bytes, any JSON, or a good heartbeat with one field replaced.
BEAT_VALUES = (
    st.binary(max_size=64)
    | JSON.map(_json)
    | st.tuples(st.sampled_from(FIELDS), JSON).map(lambda fv: good_beat("odd", **{fv[0]: fv[1]}))
)
HOSTILE = st.one_of(
    st.tuples(st.just("beat"), BEAT_VALUES),
    st.tuples(st.just("beat-type"), st.sampled_from(["hash", "list", "set", "zset", "stream"])),
    st.tuples(st.just("dead-type"), st.sampled_from(["string", "hash"])),
    st.tuples(
        st.just("dead-fields"), st.lists(st.tuples(NAMES, st.binary(max_size=16)), min_size=1, max_size=4)
    ),
    st.tuples(st.just("named-type"), st.sampled_from(["string", "hash", "list"])),
    st.tuples(st.just("group-name"), NAMES),
    st.tuples(st.just("consumer-name"), NAMES),
    st.tuples(st.just("stream-name"), NAMES),
)
_odd = itertools.count()


async def _put_hostile(redis: Redis, kind: str, value: Any) -> bytes | None:
    """Write one hostile thing; the heartbeat key it is in, if it is one."""
    beat = heartbeat_key(GROUP, f"odd{next(_odd)}").encode()
    if kind == "beat":
        await redis.set(beat, value, ex=60)
        return beat
    if kind == "beat-type":
        await _of_type(redis, beat, value)
        return beat
    if kind == "dead-type":
        await _of_type(redis, b"obs_work:dead", value)
    elif kind == "dead-fields":
        await redis.xadd("obs_work:dead", dict(value))
    elif kind == "named-type":
        await _of_type(redis, b"obs_latency", value)
    elif kind == "group-name":
        await redis.xgroup_create("obs_work", value, id="0")
    elif kind == "consumer-name":
        await redis.xgroup_createconsumer("obs_work", GROUP, value)
    elif kind == "stream-name":
        await redis.xgroup_create(value, b"g-" + value, id="$", mkstream=True)
    return None


async def _of_type(redis: Redis, key: bytes, kind: str) -> None:
    if kind == "string":
        await redis.set(key, b"\x00not a stream")
    elif kind == "hash":
        await redis.hset(key, "a", "b")
    elif kind == "list":
        await redis.rpush(key, "a")
    elif kind == "set":
        await redis.sadd(key, "a")
    elif kind == "zset":
        await redis.zadd(key, {"a": 1.0})
    else:
        await redis.xadd(key, {"a": "b"})


async def _monitor_everything(redis_url: str, hostile: tuple[str, Any]) -> None:
    redis = Redis.from_url(redis_url)
    try:
        await redis.flushall()
        await setup_good(redis)
        beat = await _put_hostile(redis, *hostile)
        named = await gather_status(redis, ["obs_work", "obs_latency"], GROUP, named=["obs_work"])
        every = await gather_status(redis, None, None)
        for status in (named, every):
            json.dumps(status, allow_nan=False)
            for width in (80, 200):
                text_of(status, width)
            assert GOOD in [w["consumer"] for w in status["workers"]]
            [work] = [s for s in status["streams"] if s["stream"] == "obs_work" and s["group"] == GROUP]
            assert work["length"] == 3 and work["group_exists"] is True
        if beat is not None:  # every heartbeat key is a worker or a skipped key, never lost
            shown = beat.decode("utf-8", "backslashreplace")
            consumers = {w["consumer"] for w in named["workers"]}
            skipped = {k["key"] for k in named["bad_keys"]["keys"]}
            assert (shown in skipped) != ("odd" in consumers or shown.rsplit(":", 1)[-1] in consumers)
        found = Findings()
        assert GOOD in [w["consumer"] for w in await live_workers(redis, GROUP, findings=found)]
        assert ("obs_work", GROUP) in await discover_groups(redis, found)
        sampler = Sampler(redis, Targets.of(load_registry(APP)))
        sample = await sampler.sample()
        assert GOOD in [w["consumer"] for w in sample["workers"]]
        json.dumps(sampler.current(), allow_nan=False)
        for letter in await list_dead(redis, "obs_work:dead") if hostile[0] == "dead-fields" else []:
            json.dumps(letter.as_dict(full=True))
    finally:
        await redis.aclose()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(hostile=HOSTILE)
def test_any_value_in_any_key_monitoring_reads_never_blinds_it(
    redis_url: str, hostile: tuple[str, Any]
) -> None:
    """Property: whatever one of those keys holds, status (both ways of asking), discovery,
    the sampler and the dead-letter listing answer, with the good worker and stream in it;
    every heartbeat key is either a worker or a skipped key."""
    asyncio.run(_monitor_everything(redis_url, hostile))


def test_the_property_covers_every_kind_of_key(redis_url: str) -> None:
    """The kinds above, each once, on a clean server (a smoke run of the property)."""
    client = syncredis.Redis.from_url(redis_url)
    try:
        for hostile in [
            ("beat", BAD_VALUES["ts-text"]),
            ("beat-type", "stream"),
            ("dead-type", "string"),
            ("dead-fields", [(b"attempts", b"x")]),
            ("named-type", "hash"),
            ("group-name", b"\xff"),
            ("consumer-name", b"[/]\n"),
            ("stream-name", b"\xfe"),
        ]:
            asyncio.run(_monitor_everything(redis_url, hostile))
    finally:
        client.flushall()
        client.close()
