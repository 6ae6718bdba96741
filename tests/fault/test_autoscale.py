"""``--actors auto``: a step load makes the controller add an actor within seconds; once the
producer stops and the backlog drains, the actors go back to ``--min-actors`` after the idle
period. Every decision is one log line with its reason, shown in the actors key (``status``,
the dashboard) and ``streamtasks_actors`` (``/metrics``); nothing is lost or handled twice."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp
import pytest
from support.invariants import Invariants, Workers, poll
from support.procs import free_port

from streamtasks import keys
from streamtasks.observe.inspect import gather_status

pytestmark = [pytest.mark.fault, pytest.mark.integration]

AUTO = ["--mode", "actors", "--actors", "auto", "--min-actors", "1", "--max-actors", "2"]
FAST = ["--target-drain-seconds", "5", "--scale-down-after", "4"]
#: One actor settles ~2 batches of 10 entries at once, each entry 10 ms: ~200 entries/s.
ENTRY_SLEEP = "0.01"


async def _produce(inv: Invariants, rate: float, seconds: float) -> None:
    """``rate`` entries/s for ``seconds``, in 10 chunks a second."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        await inv.send(max(1, int(rate / 10)), sleep=ENTRY_SLEEP)
        await asyncio.sleep(0.1)


async def _actors(inv: Invariants) -> list[dict[str, Any]]:
    raw = [await inv.redis.get(k) async for k in inv.redis.scan_iter(match=keys.actors_pattern("fault"))]
    return [g for body in raw if body for g in json.loads(body)["groups"]]


async def _metric(port: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    return {
        m[1]: float(m[2])
        for m in re.finditer(r'streamtasks_actors\{handlers="jobs",state="(\w+)"\} (\S+)', text)
    }


async def test_a_step_load_adds_an_actor_and_idleness_takes_it_away(
    inv: Invariants, workers: Workers, ledger: Any
) -> None:
    port = free_port()
    w = workers.start(
        name="auto", args=[*AUTO, *FAST, "--metrics-port", str(port)], env={"FAULT_BATCH_SIZE": "10"}
    )
    [group] = await _actors(inv)
    assert (group["desired"], group["min"], group["max"]) == (1, 1, 2)
    producer = asyncio.create_task(_produce(inv, 600, 8))  # ~3 times what one actor settles
    took = await poll(lambda: "actors of jobs: up 1 -> 2" in w.output(), 20, "an actor added", workers.logs)
    print(f"step load: the second actor asked for {took:.1f}s after the load began")
    await poll(lambda: _running(inv, 2), 20, "two actors running", workers.logs)
    assert (await _metric(port)) == {"desired": 2.0, "running": 2.0, "starting": 0.0}
    status = await gather_status(inv.redis, ["jobs"], "fault")
    assert [g["desired"] for pool in status["actors"] for g in pool["groups"]] == [2]
    await producer
    await poll(lambda: "down 2 -> 1" in w.output(), 60, "back to one actor", workers.logs)
    await poll(lambda: _running(inv, 1), 20, "one actor running", workers.logs)
    out, _ = await inv.check(60, logs=workers.logs)
    assert len(out.handled) == len(inv.sent) and not out.dead and not out.duplicates
    assert re.search(r"actors of jobs: up 1 -> 2: backlog [\d,]+", w.output())
    print("\n".join(line for line in w.output().splitlines() if "actors of" in line))
    rows: Any = await inv.redis.xinfo_consumers("jobs", "fault")
    assert len(rows) == 1  # the removed actor's consumer left the group
    w.terminate()
    assert w.wait(60) == 0, w.output_tail()


async def _running(inv: Invariants, n: int) -> bool:
    groups = await _actors(inv)
    return [g["running"] for g in groups] == [n] and [g["desired"] for g in groups] == [n]
