"""The dashboard's JSON endpoints over HTTP against a real Redis: the numbers of
``streamtasks status --json``, dead letters listed, filtered, replayed and purged, and hostile
input (unknown streams, injection attempts, huge pages, bad bodies, missing token or CSRF
token) answered with a clear 4xx and nothing changed."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import redis as syncredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from support.browser import wait_for
from support.dashboard import TOKEN, add_dead, served, served_in_thread, write_headers
from support.modes import one_consumer

from streamtasks.observe.dashboard import Access
from streamtasks.observe.inspect import gather_status

pytestmark = pytest.mark.integration
GROUP = "obs-tests"


async def snapshot(redis: Redis) -> dict[str, Any]:
    """Everything an action could change: every stream's entries."""
    out = {}
    for key in sorted([k async for k in redis.scan_iter(_type="stream")]):
        out[key] = await redis.xrange(key)
    return out


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as r:
        body = await r.text()
        return r.status, json.loads(body) if r.content_type == "application/json" else body


async def post(
    session: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str]
) -> tuple[int, Any]:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    async with session.post(url, data=data, headers=headers) as r:
        return r.status, await r.json()


async def test_overview_has_the_numbers_of_status_json(redis: Redis) -> None:
    """/api/overview reports, per stream, the same length, lag, pending and dead letters as
    gather_status (the code of ``status --json``) read right after it, nothing moving."""
    await redis.xgroup_create("obs_work", GROUP, id="0", mkstream=True)
    for i in range(7):
        await redis.xadd("obs_work", {"n": str(i)})
    await redis.xreadgroup(GROUP, "c1", {"obs_work": ">"}, count=3)
    await add_dead(redis, "obs_work", 2)
    async with served(redis) as server, aiohttp.ClientSession() as s:
        status, body = await get(s, f"{server.url}/api/overview")
    assert status == 200
    expected = await gather_status(redis, ["obs_work", "obs_latency"], GROUP)
    for got, want in zip(body["streams"], expected["streams"], strict=True):
        for key in ("stream", "length", "lag", "pending", "dead_letters", "entries_read"):
            assert got[key] == want[key], key
    work = body["streams"][0]
    assert (work["length"], work["lag"], work["pending"], work["dead_letters"]) == (7, 4, 3, 2)
    assert body["services"]["redis"]["health"] == "healthy"
    assert "url" not in json.dumps(body["services"]).lower()


async def test_stream_page_data_lists_pending_entries_and_newest(redis: Redis) -> None:
    await redis.xgroup_create("obs_work", GROUP, id="0", mkstream=True)
    ids = [(await redis.xadd("obs_work", {"n": str(i)})).decode() for i in range(5)]
    await redis.xreadgroup(GROUP, "c1", {"obs_work": ">"}, count=2)
    async with served(redis) as server, aiohttp.ClientSession() as s:
        status, body = await get(s, f"{server.url}/api/streams/obs_work?limit=3")
    assert status == 200
    assert [p["id"] for p in body["pending_entries"]] == ids[:2]
    assert {p["consumer"] for p in body["pending_entries"]} == {"c1"}
    assert [p["deliveries"] for p in body["pending_entries"]] == [1, 1]
    assert [e["id"] for e in body["newest"]] == ids[:1:-1]


async def test_dead_letters_filtered_by_handler_reason_and_time(redis: Redis) -> None:
    a = await add_dead(redis, "obs_work", 3, handler="h.one", reason="invalid_json", error_type="DecodeError")
    b = await add_dead(redis, "obs_work", 2, handler="h.two", reason="handler_error")
    async with served(redis) as server, aiohttp.ClientSession() as s:
        base = f"{server.url}/api/deadletters/obs_work"
        _, everything = await get(s, base)
        _, one = await get(s, f"{base}?handler=h.one")
        _, json_errors = await get(s, f"{base}?reason=invalid_json")
        _, by_type = await get(s, f"{base}?reason=DecodeError&limit=2")
        since = b[0].split("-")[0]
        _, recent = await get(s, f"{base}?since={since}")
        _, shown = await get(s, f"{base}/{a[0]}")
    assert everything["total"] == 5 and [e["dead_id"] for e in everything["entries"]] == (a + b)[::-1]
    assert [e["dead_id"] for e in one["entries"]] == a[::-1]
    assert [e["dead_id"] for e in json_errors["entries"]] == a[::-1]
    assert [e["dead_id"] for e in by_type["entries"]] == a[:0:-1] and by_type["next"] == a[1]
    assert set(b) <= {e["dead_id"] for e in recent["entries"]}
    assert shown["fields"]["n"] == "0" and shown["traceback"].startswith("Traceback")


async def test_replay_twice_puts_the_entry_on_its_stream_once(redis: Redis) -> None:
    (dead_id,) = await add_dead(redis, "obs_work", 1)
    async with served(redis) as server, aiohttp.ClientSession() as s:
        url = f"{server.url}/api/deadletters/obs_work/replay"
        results = await asyncio.gather(
            *(post(s, url, {"ids": [dead_id]}, write_headers(server)) for _ in range(4))
        )
    assert [r[0] for r in results] == [200] * 4
    assert sorted(r[1]["replayed"] for r in results) == [0, 0, 0, 1]
    assert await redis.xlen("obs_work") == 1 and await redis.xlen("obs_work:dead") == 0


async def test_replay_and_purge_all_matching_need_the_confirmation(redis: Redis) -> None:
    await add_dead(redis, "obs_work", 3, handler="h.one")
    keep = await add_dead(redis, "obs_work", 2, handler="h.two")
    async with served(redis) as server, aiohttp.ClientSession() as s:
        url = f"{server.url}/api/deadletters/obs_work"
        h = write_headers(server)
        unconfirmed = await post(s, f"{url}/replay", {"match": {"handler": "h.one"}}, h)
        replayed = await post(s, f"{url}/replay", {"match": {"handler": "h.one"}, "confirm": "obs_work"}, h)
        purged = await post(s, f"{url}/purge", {"ids": keep[:1]}, h)
        refused = await post(s, f"{url}/purge", {"all": True}, h)
        emptied = await post(s, f"{url}/purge", {"all": True, "confirm": "obs_work"}, h)
    assert unconfirmed[0] == 400 and "confirm" in unconfirmed[1]["error"]
    assert replayed == (200, replayed[1]) and replayed[1]["replayed"] == 3
    assert purged[1] == {"purged": 1} and refused[0] == 400 and emptied[1] == {"purged": 1}
    assert await redis.xlen("obs_work") == 3 and await redis.xlen("obs_work:dead") == 0


@pytest.mark.parametrize(
    ("headers", "access", "why"),
    [
        ({"X-CSRF-Token": "csrf"}, Access(token=TOKEN), "token"),
        ({"Authorization": f"Bearer {TOKEN}x", "X-CSRF-Token": "csrf"}, Access(token=TOKEN), "token"),
        ({"Authorization": f"Bearer {TOKEN}"}, Access(token=TOKEN), "CSRF"),
        ({"Authorization": f"Bearer {TOKEN}", "X-CSRF-Token": "csrf", "Origin": "http://evil.example"},
         Access(token=TOKEN), "cross-origin"),
        ({"Authorization": f"Bearer {TOKEN}", "X-CSRF-Token": "csrf"}, Access(token=TOKEN, read_only=True),
         "read-only"),
        ({"Authorization": f"Bearer {TOKEN}", "X-CSRF-Token": "csrf"}, Access(), "disabled"),
    ],
)  # fmt: skip
async def test_actions_without_token_or_csrf_are_refused_and_change_nothing(
    redis: Redis, headers: dict[str, str], access: Access, why: str
) -> None:
    """403 for purge and replay without the token, with a wrong one, without the CSRF token,
    from another origin, read-only or with no token configured; the streams are untouched.
    (With basic auth configured, wrong credentials get 401 on every request: see below.)"""
    await add_dead(redis, "obs_work", 2)
    before = await snapshot(redis)
    async with served(redis, access=access) as server, aiohttp.ClientSession() as s:
        if headers.get("X-CSRF-Token") == "csrf":
            headers = {**headers, "X-CSRF-Token": access.csrf_token}
        headers = {**headers, "Content-Type": "application/json"}
        for action, body in (
            ("purge", {"all": True, "confirm": "obs_work"}),
            ("replay", {"match": {}, "confirm": "obs_work"}),
        ):
            status, reply = await post(s, f"{server.url}/api/deadletters/obs_work/{action}", body, headers)
            assert status == 403 and why in reply["error"], reply
    assert await snapshot(redis) == before


async def test_basic_auth_guards_pages_and_allows_actions(redis: Redis) -> None:
    access = Access(user="ops", password="s3cret-pw")
    await add_dead(redis, "obs_work", 1)
    async with served(redis, access=access) as server, aiohttp.ClientSession() as s:
        assert (await get(s, f"{server.url}/api/overview"))[0] == 401
        wrong = {
            "Authorization": "Basic dTpw",
            "X-CSRF-Token": access.csrf_token,
            "Content-Type": "application/json",
        }
        status, _ = await post(
            s, f"{server.url}/api/deadletters/obs_work/purge", {"all": True, "confirm": "obs_work"}, wrong
        )
        assert status == 401
        auth = {"Authorization": "Basic " + base64.b64encode(b"ops:s3cret-pw").decode()}
        async with s.get(f"{server.url}/", headers=auth) as r:
            assert r.status == 200 and "s3cret-pw" not in await r.text()
        h = {"X-CSRF-Token": access.csrf_token, "Content-Type": "application/json", **auth}
        everything = {"all": True, "confirm": "obs_work"}
        async with s.post(f"{server.url}/api/deadletters/obs_work/purge", json=everything, headers=h) as r:
            assert r.status == 200
    assert await redis.xlen("obs_work:dead") == 0


HOSTILE_GETS = [
    ("/api/streams/no_such_stream", 404),
    ("/api/streams/obs_work:dead", 404),
    ("/api/streams/*", 404),
    ("/api/deadletters/unknown", 404),
    ("/api/deadletters/obs_work?limit=100000000", 400),
    ("/api/deadletters/obs_work?limit=0", 400),
    ("/api/deadletters/obs_work?limit=-5", 400),
    ("/api/deadletters/obs_work?limit=1e9", 400),
    ("/api/streams/obs_work?limit=999999", 400),
    ("/api/deadletters/obs_work?since=yesterday", 400),
    ("/api/deadletters/obs_work?since=1;FLUSHALL", 400),
    ("/api/deadletters/obs_work?before=-%20%2B", 400),
    ("/api/deadletters/obs_work?before=0-0%27%3B%20DEL%20x", 400),
    ("/api/deadletters/obs_work?handler=" + "x" * 201, 400),
    ("/api/deadletters/obs_work?stream=obs_latency", 400),
    ("/api/deadletters/obs_work?evil=1", 400),
    ("/api/deadletters/obs_work/not-an-id", 400),
    ("/api/deadletters/obs_work/1-1", 404),
    ("/api/overview?x=1", 400),
    ("/api/panels/models", 404),
    ("/api/nothing", 404),
]


async def test_hostile_gets_get_a_clear_4xx_and_change_nothing(redis: Redis) -> None:
    await add_dead(redis, "obs_work", 2)
    await redis.xadd("obs_work", {"n": "1"})
    before = await snapshot(redis)
    async with served(redis) as server, aiohttp.ClientSession() as s:
        for path, expected in HOSTILE_GETS:
            status, body = await get(s, server.url + path)
            assert status == expected, (path, body)
            assert isinstance(body, dict) and body["error"], path
        # an injection attempt in a filter is only ever compared, never run
        status, body = await get(
            s, f"{server.url}/api/deadletters/obs_work?handler=%27%20OR%201%3D1%20--&reason=*"
        )
        assert status == 200 and body["entries"] == []
    assert await snapshot(redis) == before


HOSTILE_BODIES: list[tuple[Any, int]] = [
    ("not json", 400),
    ("[1, 2]", 400),
    ({}, 400),
    ({"ids": []}, 400),
    ({"ids": "1-1"}, 400),
    ({"ids": ["1-1"] * 501}, 400),
    ({"ids": ["*"]}, 400),
    ({"ids": ["1-1 OR 1"]}, 400),
    ({"ids": [{"$ne": 1}]}, 400),
    ({"ids": ["1-1"], "match": {}}, 400),
    ({"match": {"handler": "x" * 500}, "confirm": "obs_work"}, 400),
    ({"match": {"eval": "redis.call('FLUSHALL')"}, "confirm": "obs_work"}, 400),
    ({"match": {}, "confirm": "obs_latency"}, 400),
    ({"all": True, "confirm": "obs_work", "extra": 1}, 400),
    ({"match": {"since": "abc"}, "confirm": "obs_work"}, 400),
    ({"match": {"since": [1]}, "confirm": "obs_work"}, 400),
]


async def test_hostile_action_bodies_get_a_4xx_and_change_nothing(redis: Redis) -> None:
    await add_dead(redis, "obs_work", 2)
    before = await snapshot(redis)
    async with served(redis) as server, aiohttp.ClientSession() as s:
        for action in ("replay", "purge"):
            url = f"{server.url}/api/deadletters/obs_work/{action}"
            for body, expected in HOSTILE_BODIES:
                status, reply = await post(s, url, body, write_headers(server))
                if action == "replay" and isinstance(body, dict) and "all" in body:
                    expected = 400
                assert status == expected, (action, body, reply)
            status, _ = await post(s, f"{server.url}/api/deadletters/nope/{action}", {"ids": ["1-1"]},
                                   write_headers(server))  # fmt: skip
            assert status == 404
            big = json.dumps({"ids": ["1-1"], "pad": "x" * 200_000})
            async with s.post(url, data=big, headers=write_headers(server)) as r:
                assert r.status == 413
            async with s.post(
                url, data="{}", headers={**write_headers(server), "Content-Type": "text/plain"}
            ) as r:
                assert r.status == 415
    assert await snapshot(redis) == before


QUERY_KEYS = st.sampled_from(
    ["limit", "handler", "reason", "since", "until", "before", "stream", "x", "$where"]
)
QUERY_VALUES = st.one_of(
    st.text(max_size=300),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.sampled_from(
        ["-", "+", "*", "1-1", "0-0", "(0-0", "' OR 1=1 --", "$gt", "\x00", "%00", "../../etc/passwd"]
    ),
)


@pytest.fixture
def threaded_dashboard(redis_url: str) -> Iterator[tuple[str, syncredis.Redis]]:
    """A dashboard served from a thread (its own loop), so a sync hypothesis test can hit it."""
    client = syncredis.Redis.from_url(redis_url)
    client.flushall()
    for i in range(3):
        client.xadd("obs_work:dead", {"stream": "obs_work", "id": f"1-{i}", "handler": "h", "reason": "r"})
    with served_in_thread(redis_url) as url:
        yield url, client
    client.close()


def sync_snapshot(client: syncredis.Redis) -> dict[Any, Any]:
    return {k: client.xrange(k) for k in sorted(client.scan_iter(_type="stream"))}


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(query=st.dictionaries(QUERY_KEYS, QUERY_VALUES, max_size=4))
def test_any_query_gets_200_or_a_clear_4xx_and_changes_nothing(
    threaded_dashboard: tuple[str, syncredis.Redis], query: dict[str, str]
) -> None:
    """Whatever the query string, the dead-letter list answers 200 or a 4xx with an error line,
    never a 5xx, and never changes a stream."""
    url, client = threaded_dashboard
    before = sync_snapshot(client)
    target = f"{url}/api/deadletters/obs_work?{urllib.parse.urlencode(query)}"
    try:
        with urllib.request.urlopen(target, timeout=10) as r:
            status, body = r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        status, body = exc.code, json.loads(exc.read())
    assert status == 200 or (400 <= status < 500 and body["error"]), (status, body)
    if status == 200:
        assert len(body["entries"]) <= 500
    assert sync_snapshot(client) == before


async def test_every_page_renders_and_carries_no_secret(redis: Redis) -> None:
    """Overview, stream, dead-letter list and detail pages answer 200 with the numbers in the
    HTML, the security headers set, and neither the token nor a Redis password in them."""
    await redis.xgroup_create("obs_work", GROUP, id="0", mkstream=True)
    await redis.xadd("obs_work", {"n": "<script>alert(1)</script>"})
    (dead_id,) = await add_dead(redis, "obs_work", 1, fields={"note": "<b>x</b>"})
    async with served(redis) as server, aiohttp.ClientSession() as s:
        async with s.get(
            server.url + "/deadletters?stream=obs_work&since=2000-01-01T00:00&until=yesterday"
        ) as r:
            assert r.status == 400 and "until" in await r.text()
        async with s.get(server.url + "/deadletters?stream=obs_work&since=2000-01-01T00:00") as r:
            assert r.status == 200 and dead_id in await r.text()
        async with s.get(server.url + "/deadletters?stream=obs_work&until=2000-01-01T00:00") as r:
            assert r.status == 200 and dead_id not in await r.text()
        for path in ("/", "/streams/obs_work", "/deadletters", "/deadletters?stream=obs_work&handler=x",
                     f"/deadletters/obs_work/{dead_id}"):  # fmt: skip
            async with s.get(server.url + path) as r:
                page = await r.text()
                assert r.status == 200, (path, page)
                assert "default-src 'self'" in r.headers["Content-Security-Policy"]
                assert TOKEN not in page and "<script>alert" not in page and "<b>x</b>" not in page
        async with s.get(server.url + "/static/dashboard.js") as r:
            assert r.status == 200
        async with s.get(server.url + "/static/../config.py") as r:
            assert r.status in (403, 404)


def test_a_worker_serves_the_dashboard_on_its_dashboard_port(
    redis_url: str, ray_address: str, spawn: Any
) -> None:
    """``worker --dashboard-port``: the overview, served from the worker's own loop on
    127.0.0.1, lists this worker reading and Ray's resources (the worker is a Ray driver)."""
    from pathlib import Path

    from support.procs import free_port

    syncredis.Redis.from_url(redis_url).flushall()
    port = free_port()
    here = Path(__file__).resolve().parent
    args, me = one_consumer("dash-self")  # actor mode: one actor, dash-self-a0
    spawn(
        [sys.executable, "-m", "streamtasks", "worker", "obs_app:registry", "--redis-url", redis_url,
         "--ray-address", ray_address, *args, "--dashboard-port", str(port)],
        cwd=here, name="worker",
    ).wait_for_log(r"dashboard on http://127\.0\.0\.1:\d+/", timeout=60)  # fmt: skip

    def overview() -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/overview", timeout=10) as r:
            body = json.loads(r.read())
        states = {w["consumer"]: w["state"] for w in body["workers"]}
        return body if states.get(me) == "reading" else None

    body = wait_for(overview, 60, "the worker reading in its own dashboard")
    assert body["services"]["ray"]["health"] == "healthy"
    assert body["services"]["ray"]["cluster_resources"]["CPU"] >= 1


async def test_the_sampler_measures_entries_in_and_out_per_second(redis: Redis) -> None:
    """Between two samples: 30 entries added and 10 acked show as in/s and out/s over the
    time between the samples; the history keeps both."""
    from support.dashboard import APP

    from streamtasks.app import load_registry
    from streamtasks.observe.dashboard import Targets
    from streamtasks.observe.dashboard.sampler import Sampler

    await redis.xgroup_create("obs_work", GROUP, id="0", mkstream=True)
    sampler = Sampler(redis, Targets.of(load_registry(APP), ["obs_work"]))
    first = await sampler.sample()
    assert first["streams"][0]["rate_in"] is None
    for i in range(30):
        await redis.xadd("obs_work", {"n": str(i)})
    got = await redis.xreadgroup(GROUP, "c", {"obs_work": ">"}, count=10)
    await redis.xack("obs_work", GROUP, *[i for i, _ in got[0][1]])
    second = await sampler.sample()
    span = second["checked_at"] - first["checked_at"]
    work = second["streams"][0]
    assert work["rate_in"] == pytest.approx(30 / span) and work["rate_out"] == pytest.approx(10 / span)
    assert work["history"]["in"] == [None, work["rate_in"]] and len(work["history"]["t"]) == 2


async def test_no_password_reaches_a_page_or_a_response_when_services_are_down() -> None:
    """Redis and PostgreSQL unreachable with passwords in their URLs: the overview, its page and
    the models panel report them unhealthy (503 for the panel) and show neither password."""
    from support.procs import free_port

    from streamtasks.adserving.dashboard import ModelsPanel

    port = free_port()
    redis = Redis.from_url(f"redis://:redis-pw-4471@127.0.0.1:{port}/0", socket_connect_timeout=1)
    panel = ModelsPanel(dsn=lambda: f"postgresql://app:db-pw-9183@127.0.0.1:{port}/x").panel()
    bodies = []
    async with served(redis, panels=[panel]) as server, aiohttp.ClientSession() as s:
        for path in ("/api/overview", "/", "/api/panels/models?model=m", "/panels/models", "/deadletters"):
            async with s.get(server.url + path) as r:
                bodies.append((path, r.status, await r.text()))
    await redis.aclose()
    statuses = {path: status for path, status, _ in bodies}
    assert statuses["/api/overview"] == 200 and statuses["/api/panels/models?model=m"] == 503
    assert statuses["/deadletters"] == 503
    overview = json.loads(bodies[0][2])
    assert overview["services"]["redis"]["health"] == "unhealthy"
    assert overview["services"]["postgresql"]["health"] == "unhealthy"
    for path, _, body in bodies:
        assert "redis-pw-4471" not in body and "db-pw-9183" not in body, path


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["no_such_module:registry"], 1, "no_such_module"),
        (["obs_app:registry", "--port", "70000"], 2, "70000"),
        (["obs_app:registry", "--interval", "0"], 2, "interval"),
        (["obs_app:registry", "--redis-url", "redis://:pw-7731@127.0.0.1:1/0"], 1, "cannot reach Redis"),
    ],
)
def test_bad_dashboard_command_lines_get_one_line_and_their_exit_status(
    args: list[str], code: int, message: str
) -> None:
    import subprocess
    from pathlib import Path

    result = subprocess.run(
        [sys.executable, "-m", "streamtasks", "dashboard", *args], capture_output=True, text=True,
        timeout=60, cwd=Path(__file__).resolve().parent,
    )  # fmt: skip
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr and "pw-7731" not in result.stderr


def test_a_busy_port_is_one_line_and_exit_1(redis_url: str) -> None:
    import socket
    import subprocess
    from pathlib import Path

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "streamtasks", "dashboard", "obs_app:registry", "--redis-url", redis_url,
             "--port", str(port)],
            capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
    assert result.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


async def test_the_event_stream_pushes_samples_and_does_not_hold_up_a_shutdown(redis: Redis) -> None:
    """/api/events sends one ``overview`` event per sample; closing the server with a page
    still listening takes well under the grace a worker has (it is what --dashboard-port does
    on SIGTERM)."""
    import time

    session = aiohttp.ClientSession()
    async with session as s, served(redis, interval=0.2) as server, s.get(f"{server.url}/api/events") as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        events = []
        async for line in r.content:
            if line.startswith(b"data: "):
                events.append(json.loads(line[6:]))
            if len(events) == 3:
                break
        assert len({e["checked_at"] for e in events}) == 3
        started = time.monotonic()
        await server.close()
        closed_in = time.monotonic() - started
    print(f"closed with a listener in {closed_in:.2f}s")
    assert closed_in < 5


async def test_a_loopback_dashboard_refuses_foreign_host_headers(redis: Redis) -> None:
    """Bound to 127.0.0.1, the dashboard answers only requests for a loopback name: a page whose
    DNS name was rebound to 127.0.0.1 gets 403 and no data."""
    async with served(redis) as server, aiohttp.ClientSession() as s:
        for host, status in (("evil.example:8555", 403), ("127.0.0.1.evil.example", 403),
                             ("localhost:1", 200), ("127.0.0.1", 200), ("[::1]:80", 200)):  # fmt: skip
            async with s.get(f"{server.url}/api/overview", headers={"Host": host}) as r:
                assert r.status == status, host
