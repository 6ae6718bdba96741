"""Scale past one process: two worker processes on a local two-node Ray cluster."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from support.entries import handled, pending, xadd_many
from support.waiting import wait_until

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.integration


@pytest.fixture
def two_node_cluster(ray_address: str) -> Iterator[str]:
    """A second Ray cluster (head + one more node, one CPU each), via Ray's own test utility."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        yield str(cluster.address)
    finally:
        cluster.shutdown()


async def test_two_workers_on_a_two_node_cluster_store_every_entry_once(
    redis: Redis, redis_url: str, two_node_cluster: str, spawn: Any
) -> None:
    """20,000 entries, two `streamtasks worker --ray-address --mode tasks` processes in one
    group, batches scheduled by Ray on both nodes: every entry handled exactly once, nothing
    pending. Task mode: where a batch runs is Ray's choice per batch. (In actor mode it is
    where the actors were placed, and the one that reads first may drain the backlog alone.)"""
    ids = await xadd_many(redis, "spread", 20_000)
    argv = [sys.executable, "-m", "streamtasks", "worker", "core_app:registry", "--redis-url", redis_url,
            "--ray-address", two_node_cluster, "--streams", "spread", "--mode", "tasks"]  # fmt: skip
    started = time.monotonic()
    first = spawn(argv, cwd=HERE, name="w1")
    second = spawn(argv, cwd=HERE, name="w2")
    await wait_until(lambda: _count(redis, 20_000), timeout=120, interval=0.1)
    took = time.monotonic() - started
    counts = await handled(redis, "spread")
    assert set(counts) == set(ids) and set(counts.values()) == {1}
    await wait_until(lambda: _no_pending(redis), timeout=30)
    assert len(await redis.smembers("spread:nodes")) == 2  # both nodes ran batches
    names = [c["name"].decode() for c in await redis.xinfo_consumers("spread", "core-tests")]
    assert len(names) == 2, names
    print(f"two workers on a two-node Ray cluster: 20,000 entries in {took:.1f}s (start-up included)")
    for worker in (first, second):
        worker.terminate()
        assert worker.wait(timeout=30) == 0, worker.output_tail()


async def _count(redis: Redis, n: int) -> bool:
    return len(await handled(redis, "spread")) >= n


async def _no_pending(redis: Redis) -> bool:
    return await pending(redis, "spread", "core-tests") == 0
