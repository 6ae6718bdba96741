"""Priority levels and flow limits as operators see them, against real Redis: ``status``
(JSON and table), ``/metrics``, the dashboard's overview, and ``streamtasks send --priority``."""

from __future__ import annotations

import aiohttp
import flow_app
import pytest
from redis.asyncio import Redis
from rich.console import Console
from support.cli import cli
from support.dashboard import TOKEN

from streamtasks.cli.status import render
from streamtasks.observe.dashboard import Access, Dashboard, DashboardServer, Targets
from streamtasks.observe.inspect import gather_status
from streamtasks.observe.metrics import WorkerMetrics
from streamtasks.worker import InlineExecutor, Worker

pytestmark = pytest.mark.integration
GROUP = flow_app.registry.group


async def _levels_backlog(redis: Redis) -> None:
    """``levels``: 3 entries at level 0, none at level 1, 5 at level 2 of which 2 are pending."""
    for stream in ("levels", "levels:p1", "levels:p2"):
        await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    for i in range(3):
        await redis.xadd("levels", {"n": str(i)})
    for i in range(5):
        await redis.xadd("levels:p2", {"n": str(i)})
    await redis.xreadgroup(GROUP, "c1", {"levels:p2": ">"}, count=2)


async def test_status_sums_the_levels_and_shows_each(redis: Redis) -> None:
    await _levels_backlog(redis)
    status = await gather_status(redis, ["levels", "levels:p1", "levels:p2"], GROUP, throughput=False)
    total = status["levels"]["levels"]
    assert (total["length"], total["lag"], total["pending"], total["dead_letters"]) == (8, 6, 2, 0)
    assert [(row["level"], row["length"], row["lag"], row["pending"]) for row in total["levels"]] == [
        (0, 3, 3, 0), (1, 0, 0, 0), (2, 5, 3, 2),
    ]  # fmt: skip
    console = Console(width=200, record=True)
    console.print(render(status))
    assert "levels (all 3 levels)" in console.export_text()


async def test_metrics_show_each_level_and_the_flow_limits(redis: Redis) -> None:
    await _levels_backlog(redis)
    registry = flow_app.registry.only(["levels", "limited", "scarce"])
    scrape = (await WorkerMetrics(Worker(registry, redis, InlineExecutor())).exposition()).decode()
    assert 'streamtasks_priority_level_pending{group="flow-tests",level="2",stream="levels"} 2.0' in scrape
    assert 'streamtasks_priority_level_lag{group="flow-tests",level="0",stream="levels"} 3.0' in scrape
    assert 'streamtasks_flow_limit{group="flow-tests",limit="concurrency",stream="scarce"} 3.0' in scrape
    assert 'streamtasks_concurrency_slots_held{group="flow-tests",stream="scarce"} 0.0' in scrape


async def test_the_dashboard_overview_lists_the_levels(redis: Redis) -> None:
    await _levels_backlog(redis)
    registry = flow_app.registry.only(["levels"])
    board = Dashboard(redis, Targets.of(registry), Access(token=TOKEN), registry=registry)
    server = await DashboardServer(board, 0).start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{server.url}/api/overview") as r:
                overview = await r.json()
            async with s.get(f"{server.url}/") as r:
                page = await r.text()
    finally:
        await server.close()
    assert [row["pending"] for row in overview["levels"]["levels"]["levels"]] == [0, 0, 2]
    assert 'id="levels"' in page and 'data-stream="levels" data-level="2"' in page


async def test_send_writes_to_the_level_asked_for(redis: Redis, redis_url: str) -> None:
    out = cli("send", "orders", "n=1", "--priority", "2", "--redis-url", redis_url)
    assert out.returncode == 0, out.stderr
    assert [i.decode() for i, _ in await redis.xrange("orders:p2")] == [out.stdout.strip()]
    assert int(await redis.exists("orders")) == 0
    bad = cli("send", "orders", "n=1", "--priority", "-1", "--redis-url", redis_url)
    assert bad.returncode != 0 and "--priority" in bad.stderr and "Traceback" not in bad.stderr


async def test_a_user_without_the_flow_commands_is_told_at_start(redis: Redis, redis_url: str) -> None:
    """A limited handler's worker checks its Redis user may run the flow scripts' commands on
    the limits' keys; one that may not is named in one line (ACL DRYRUN), before anything runs."""
    from streamtasks.worker.preflight import MissingPermissions, check_handlers

    user, password = "st-flow-limited", "flow-pw"
    await redis.execute_command(
        "ACL", "SETUSER", user, "reset", "on", f">{password}", "~*", "&*", "+@all", "-zadd"
    )
    client = Redis.from_url(redis_url.replace("redis://", f"redis://{user}:{password}@"))
    try:
        # (TIME, which the flow scripts use too, every worker needs: its delayed-entry mover)
        with pytest.raises(MissingPermissions, match=r"lacks permissions the worker needs: ZADD$"):
            await check_handlers(client, flow_app.registry.only(["scarce"]).handlers.values(), GROUP, "c")
        await check_handlers(client, flow_app.registry.only(["levels"]).handlers.values(), GROUP, "c")
    finally:
        await client.aclose()
        await redis.execute_command("ACL", "DELUSER", user)
