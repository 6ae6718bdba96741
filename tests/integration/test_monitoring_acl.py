"""Monitoring under least privilege (issue 25, item 4), with real Redis ACL users made by the
test: the configuration guide's read-only monitoring ACL lets ``status``, ``dlq list``/``show``, the
dashboard's sampler and pages read everything and write nothing; each permission in it is
needed (taken away, something names it); and a user with less -- the configuration guide's worker ACL,
which has no INFO, XLEN, SCAN ... -- gets what it may read, never a failure as a whole
(before: ``NoPermissionError: this user has no permissions to run the 'info' command``)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner
from redis import exceptions as rx
from redis.asyncio import Redis
from support.dashboard import served

from streamtasks.app import load_registry
from streamtasks.cli import main as cli
from streamtasks.cli.common import EXIT_OK
from streamtasks.keys import heartbeat_key
from streamtasks.observe.dashboard import Access, Targets
from streamtasks.observe.dashboard.queries import DeadFilter, find_dead, stream_detail
from streamtasks.observe.dashboard.sampler import Sampler
from streamtasks.observe.inspect import gather_status
from streamtasks.observe.metrics import WorkerMetrics
from streamtasks.worker import InlineExecutor, Worker, WorkerSettings

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent
ACL_DOC = HERE.parents[1] / "docs" / "guides" / "configuration.md"
GROUP = "obs-tests"
APP = "obs_app:registry"
PASSWORD = "monitor-acl-pw"


def readme_acl(user: str) -> list[str]:
    """The rules of the configuration guide's ``ACL SETUSER <user> on >password ...`` block."""
    text = ACL_DOC.read_text().replace("\\\n", " ")
    found = re.search(rf"^ACL SETUSER {user} on >password (.*)$", text, re.M)
    assert found, f"no ACL for {user!r} in docs/guides/configuration.md"
    return found.group(1).split()


MONITOR = readme_acl("monitor")
WORKER = readme_acl("app")
#: What /metrics needs beyond the worker's ACL (the configuration guide says so).
METRICS_EXTRA = ["+xlen", "+scan", "+mget", "+type"]


@pytest.fixture
async def acl(redis: Redis, redis_url: str) -> AsyncIterator[Any]:
    """``await acl(rules)``: a user with exactly ``rules``; its URL. Deleted afterwards."""
    made: set[str] = set()

    async def setuser(rules: list[str], user: str = "st-monitor") -> str:
        made.add(user)
        await redis.execute_command("ACL", "SETUSER", user, "reset", "on", f">{PASSWORD}", *rules)
        return redis_url.replace("redis://", f"redis://{user}:{PASSWORD}@")

    yield setuser
    for user in made:
        await redis.execute_command("ACL", "DELUSER", user)


async def setup(redis: Redis) -> None:
    """A stream with entries and a dead letter, a live worker, and a heartbeat key of another
    type (so that reading it needs TYPE)."""
    await redis.xgroup_create("obs_work", GROUP, id="0", mkstream=True)
    for i in range(3):
        await redis.xadd("obs_work", {"n": str(i)})
    await redis.xreadgroup(GROUP, "good", {"obs_work": ">"}, count=1)
    await redis.xadd(
        "obs_work:dead", {"stream": "obs_work", "id": "1-0", "reason": "rejected", "attempts": "1"}
    )
    beat = {"consumer": "good", "state": "reading", "streams": ["obs_work"], "ts": time.time()}
    await redis.set(heartbeat_key(GROUP, "good"), json.dumps(beat), ex=60)
    await redis.hset(heartbeat_key(GROUP, "not-a-string"), "ts", "1")


def dlq(*args: str) -> Any:
    return CliRunner().invoke(cli, ["dlq", *args])


async def everything(url: str) -> dict[str, Any]:
    """What every monitoring path says as the user of ``url``: status both ways, the sampler,
    the stream page, the dead letters page, ``dlq list --json`` and ``dlq show``."""
    redis = Redis.from_url(url)
    try:
        targets = Targets.of(load_registry(APP))
        out: dict[str, Any] = {
            "named": await gather_status(redis, list(targets.streams), GROUP, named=["obs_work"]),
            "every": await gather_status(redis, None, None),
            "sample": await Sampler(redis, targets).sample(),
            "stream": await stream_detail(redis, targets, "obs_work", 10),
        }
        try:
            out["dead"] = (await find_dead(redis, "obs_work:dead", DeadFilter(), 10))[0]
        except rx.NoPermissionError as exc:
            out["dead"] = str(exc)
    finally:
        await redis.aclose()
    listed = await asyncio.to_thread(dlq, "list", "obs_work", "--redis-url", url, "--json")
    assert listed.exit_code == EXIT_OK, listed.output
    out["dlq"] = json.loads(listed.output)
    dead_id = out["dlq"]["entries"][0]["dead_id"] if out["dlq"]["entries"] else "1-0"
    out["show"] = await asyncio.to_thread(dlq, "show", "obs_work", dead_id, "--redis-url", url)
    return out


def named(out: dict[str, Any]) -> str:
    """Every line in which some path named what it could not read."""
    lines = [*out["named"]["not_checked"], *out["every"]["not_checked"], *out["sample"]["not_checked"]]
    lines += [*out["stream"]["not_checked"], *out["dlq"]["not_checked"]]
    if isinstance(out["dead"], str):
        lines.append(out["dead"])
    if out["show"].exit_code:
        lines.append(out["show"].output)
    return "\n".join(lines)


async def test_the_readme_monitoring_acl_reads_everything_and_writes_nothing(
    redis: Redis, redis_url: str, acl: Any
) -> None:
    await setup(redis)
    url = await acl(MONITOR)
    out = await everything(url)
    assert named(out) == ""
    full = await everything(redis_url)  # the default user: the same picture
    for key in ("named", "sample"):
        assert [w["consumer"] for w in out[key]["workers"]] == ["good"]
        assert out[key]["problems"] == full[key]["problems"]
        assert out[key]["bad_keys"] == full[key]["bad_keys"] and out[key]["bad_keys"]["count"] == 1
    [work] = [s for s in out["named"]["streams"] if s["stream"] == "obs_work"]
    assert (work["length"], work["pending"], work["undelivered"], work["dead_letters"]) == (3, 1, 2, 1)
    assert len(out["stream"]["newest"]) == 3 and len(out["dead"]) == 1 and out["dlq"]["total"] == 1
    assert out["show"].exit_code == 0 and json.loads(out["show"].output)["reason"] == "rejected"
    monitor = Redis.from_url(url)
    try:
        async with served(monitor, access=Access(read_only=True)) as server, aiohttp.ClientSession() as http:
            for page in (
                "/",
                "/api/overview",
                "/streams/obs_work",
                "/api/streams/obs_work",
                "/deadletters?stream=obs_work",
                "/api/deadletters/obs_work",
            ):
                async with http.get(server.url + page) as r:
                    assert r.status == 200, (page, await r.text())
                    assert "NOPERM" not in await r.text() and "not checked" not in await r.text()
        for write in (
            monitor.xadd("obs_work", {"n": "x"}),
            monitor.xack("obs_work", GROUP, "1-0"),
            monitor.delete("obs_work:dead"),
            monitor.set(heartbeat_key(GROUP, "fake"), "{}"),
            monitor.xgroup_destroy("obs_work", GROUP),
        ):
            with pytest.raises(rx.NoPermissionError):
                await write
    finally:
        await monitor.aclose()


@pytest.mark.parametrize("rule", [r for r in MONITOR if r.startswith("+")])
async def test_each_permission_of_the_monitoring_acl_is_needed_and_named_when_missing(
    redis: Redis, acl: Any, rule: str
) -> None:
    """Without it, every path still answers, and one of them names the command it lacked."""
    await setup(redis)
    out = await everything(await acl([r for r in MONITOR if r != rule]))
    command = rule[1:].replace("|", " ").upper()
    assert re.search(rf"\b{command}\b", named(out), re.I), (rule, named(out))
    assert out["named"]["redis"]["ok"] and [s["stream"] for s in out["named"]["streams"]] == [
        "obs_work",
        "obs_latency",
    ]


async def test_status_and_dlq_as_the_readme_worker_user_say_what_they_could_not_read(
    redis: Redis, acl: Any
) -> None:
    """The issue's case: ``status`` (text and ``--json``) and ``dlq list`` as the worker's
    least-privilege user: what it may read (the group's lag and pending), and a list of what
    it may not, instead of ``Error: NoPermissionError``; exit 0 (nothing it could see is
    wrong)."""
    await setup(redis)
    url = await acl(WORKER)
    args = [sys.executable, "-m", "streamtasks", "status", APP, "--redis-url", url]
    env = {**os.environ, "COLUMNS": "80"}
    as_json, table = await asyncio.gather(
        asyncio.to_thread(
            subprocess.run, [*args, "--json"], capture_output=True, text=True, cwd=HERE, env=env
        ),
        asyncio.to_thread(subprocess.run, args, capture_output=True, text=True, cwd=HERE, env=env),
    )
    assert as_json.returncode == EXIT_OK, as_json.stdout + as_json.stderr
    status = json.loads(as_json.stdout)
    [work, _] = status["streams"]
    assert (work["stream"], work["length"], work["lag"], work["pending"]) == ("obs_work", 3, 2, 1)
    assert work["dead_letters"] is None and status["workers_known"] is False
    for line in ("INFO: no permission (NOPERM)", "SCAN: no permission (NOPERM)"):
        assert line in status["not_checked"]
    assert any(n.startswith("XLEN (obs_work, obs_work:dead") for n in status["not_checked"])
    assert table.returncode == EXIT_OK and "Traceback" not in table.stdout + table.stderr
    assert "live workers: not known" in table.stdout and "  - INFO: no permission (NOPERM)" in table.stdout
    assert "healthy (as far as this Redis user may read: see above)" in table.stdout

    listed = await asyncio.to_thread(dlq, "list", "obs_work", "--redis-url", url)
    assert listed.exit_code == EXIT_OK, listed.output
    assert "not read: XRANGE (obs_work:dead): no permission (NOPERM)" in listed.output
    shown = await asyncio.to_thread(
        dlq, "show", "obs_work", "1-0", "--redis-url", url, "--dead-stream", "obs_work:dead"
    )
    assert shown.exit_code == 1 and "xrange" in shown.output and "(NOPERM)" in shown.output


async def test_metrics_as_the_worker_user_leave_out_what_it_may_not_read_and_name_it(
    redis: Redis, acl: Any
) -> None:
    """``/metrics`` of a worker whose user has the configuration guide's worker ACL: Redis up, the gauges
    it may read, ``streamtasks_monitoring_denied`` for the rest; with the configuration guide's additions
    for ``--metrics-port``, every gauge and nothing denied."""
    await setup(redis)
    values = {}
    for rules in (WORKER, [*WORKER, *METRICS_EXTRA]):
        client = Redis.from_url(await acl(rules))
        try:
            worker = Worker(
                load_registry(APP).only(["obs_work"]),
                client,
                InlineExecutor(),
                WorkerSettings(consumer="good"),
            )
            metrics = WorkerMetrics(worker)
            await metrics.exposition()
        finally:
            await client.aclose()
        get = metrics.registry.get_sample_value
        labels = {"stream": "obs_work", "group": GROUP}
        denied = {
            c
            for c in ("XLEN", "EXISTS", "XINFO CONSUMERS", "SCAN", "MGET", "TYPE")
            if get("streamtasks_monitoring_denied", {"command": c})
        }
        values[len(rules)] = (
            get("streamtasks_redis_up"),
            get("streamtasks_group_lag", labels),
            get("streamtasks_stream_length", labels),
            get("streamtasks_live_workers", {"group": GROUP}),
            denied,
        )
    # the length from XINFO STREAM (which the worker may run), no live-worker count without SCAN
    assert values[len(WORKER)] == (1.0, 2.0, 3.0, None, {"XLEN", "SCAN"})
    assert values[len(WORKER) + len(METRICS_EXTRA)] == (1.0, 2.0, 3.0, 1.0, set())
