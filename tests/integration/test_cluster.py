"""Redis Cluster: a real local cluster (3 masters + 1 replica each) started by the suite.

Workers run in-process on the ``InlineExecutor``; ``cluster_app`` records what it handled."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import cluster_app
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from support.waiting import wait_until

from streamtasks import Producer
from streamtasks.connect import connect
from streamtasks.errors import ConfigError
from streamtasks.keys import shard_streams
from streamtasks.registry import Registry
from streamtasks.worker import InlineExecutor, Worker, WorkerSettings

pytestmark = pytest.mark.integration

GROUP = cluster_app.registry.group
ORDER_SHARDS = shard_streams("orders", cluster_app.SHARDS)


@pytest.fixture
async def workers(cluster_redis: Redis) -> AsyncIterator[Callable[..., Worker]]:
    """Start in-process workers on the cluster; stop them after the test."""
    cluster_app.reset()
    started: list[tuple[Worker, asyncio.Task[None]]] = []

    def start(consumer: str, registry: Registry = cluster_app.registry) -> Worker:
        settings = WorkerSettings(consumer=consumer, block=0.2, visibility_timeout=5, reclaim_interval=0.2)
        worker = Worker(registry, cluster_redis, InlineExecutor(), settings)
        started.append((worker, asyncio.create_task(worker.run())))
        return worker

    yield start
    for worker, _ in started:
        worker.stop()
    await asyncio.gather(*(task for _, task in started), return_exceptions=True)


async def test_connect_tells_a_cluster_from_one_node(redis_cluster: Any, redis_url: str) -> None:
    """A plain URL of any cluster node gives a cluster client; a single node a plain one;
    ``redis+cluster://`` forces cluster mode."""
    for url in (redis_cluster.url, redis_cluster.nodes[-1].url):
        client = await connect(url)
        assert isinstance(client, RedisCluster)
        assert len(client.get_primaries()) == 3
        await client.aclose()
    plain = await connect(redis_url)
    assert not isinstance(plain, RedisCluster)
    await plain.aclose()
    forced = await connect(redis_cluster.url.replace("redis://", "redis+cluster://"))
    assert isinstance(forced, RedisCluster)
    await forced.aclose()


async def test_sharded_stream_is_handled_once_in_key_order_across_the_cluster(
    cluster_redis: Redis, workers: Callable[..., Worker]
) -> None:
    """Entries sent with keys to a 16-shard stream land on shards spread over every master;
    two workers handle each once, each key's entries in the order sent."""
    keys_n, per_key = 100, 20
    sent = [(f"k{k}", seq) for seq in range(per_key) for k in range(keys_n)]
    producer = Producer(cluster_redis, shards={"orders": cluster_app.SHARDS})
    await producer.send_many(
        "orders", [{"key": k, "seq": s} for k, s in sent], keys=[k for k, _ in sent], chunk=500
    )
    masters = {cluster_redis.get_node_from_key(s).name for s in ORDER_SHARDS}  # type: ignore[attr-defined]
    assert len(masters) == 3
    workers("c1")
    workers("c2")

    async def all_handled() -> bool:
        return sum(len(v) for v in cluster_app.handled.values()) >= len(sent)

    await wait_until(all_handled)
    got = [item for stream in ORDER_SHARDS for item in cluster_app.handled[stream]]
    assert sorted(got) == sorted(sent)  # each once
    for stream in ORDER_SHARDS:
        by_key: dict[str, list[int]] = {}
        for key, seq in cluster_app.handled[stream]:
            by_key.setdefault(key, []).append(seq)
        for key, seqs in by_key.items():  # one key: one shard, in order
            assert seqs == sorted(seqs), (stream, key)
    shard_of = {k: s for s in ORDER_SHARDS for k, _ in cluster_app.handled[s]}
    assert len(shard_of) == keys_n and len(set(shard_of.values())) >= 12

    async def nothing_pending() -> bool:
        counts = [(await cluster_redis.xpending(s, GROUP))["pending"] for s in ORDER_SHARDS]
        return sum(counts) == 0

    await wait_until(nothing_pending)


async def test_dead_letters_and_acks_share_a_pipeline_on_a_cluster(
    cluster_redis: Redis, workers: Callable[..., Worker]
) -> None:
    """A hash-tagged stream's bad entries are dead-lettered (the script runs in a cluster
    pipeline) beside its good ones, which are acked."""
    pipe = cluster_redis.pipeline(transaction=False)
    for i in range(60):
        pipe.xadd("{events}", {"seq": str(i), "bad": "1" if i % 10 == 0 else "0"})
    await pipe.execute()
    workers("c1")

    async def settled() -> bool:
        return (
            int(await cluster_redis.xlen("{events}:dead")) == 6 and len(cluster_app.handled["{events}"]) == 54
        )

    await wait_until(settled)
    assert (await cluster_redis.xpending("{events}", GROUP))["pending"] == 0


async def test_a_stream_without_a_hash_tag_is_refused_on_a_cluster(cluster_redis: Redis) -> None:
    """Its dead-letter stream would live in another slot: the worker says so and how to fix it."""
    worker = Worker(
        cluster_app.plain, cluster_redis, InlineExecutor(), WorkerSettings(heartbeat_interval=0.1)
    )
    with pytest.raises(ConfigError, match=r"hash tag.*\{untagged_stream\}.*shards=N"):
        await asyncio.wait_for(worker.run(), 30)


async def test_status_and_dlq_work_on_a_cluster(redis_cluster: Any, cluster_redis: Redis) -> None:
    """``streamtasks status`` and ``dlq`` accept any node's plain URL and see every shard."""
    await Producer(cluster_redis, shards={"orders": cluster_app.SHARDS}).send_many(
        "orders", [{"key": "a", "seq": i} for i in range(32)]
    )
    for stream in ORDER_SHARDS:
        await cluster_redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    env_url = redis_cluster.nodes[1].url
    argv = [
        sys.executable,
        "-m",
        "streamtasks",
        "status",
        "cluster_app:registry",
        "--redis-url",
        env_url,
        "--json",
    ]
    result = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60)
    status = json.loads(result.stdout)
    assert status["redis"]["ok"], result.stderr
    lags = {s["stream"]: s["lag"] for s in status["streams"]}
    assert sum(lags[s] for s in ORDER_SHARDS) == 32
    assert status["shards"]["orders"] == {
        "shards": 16,
        "length": 32,
        "lag": 32,
        "undelivered": 32,
        "pending": 0,
        "dead_letters": 0,
        "scheduled": 0,
    }
    trims = {s["stream"]: s["trim"] for s in status["streams"] if s["exists"]}
    assert {t["held_by"] for t in trims.values()} == {GROUP}  # nothing read: the group holds all
    argv = [sys.executable, "-m", "streamtasks", "status", "--group", GROUP, "--json", "--redis-url", env_url]
    result = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60)
    found = {s["stream"] for s in json.loads(result.stdout)["streams"]}
    assert found == set(ORDER_SHARDS)  # discovered by scanning every master
    argv = [sys.executable, "-m", "streamtasks", "dlq", "list", "{events}:dead", "--redis-url", env_url]
    result = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


async def test_reads_on_a_cluster_keep_fields_flat_and_per_lane(cluster_redis: Redis) -> None:
    """Lanes in several slots are read in one cluster pipeline, each at its own COUNT, and
    entries stay flat byte lists (a field name given twice keeps both values)."""
    from streamtasks.worker.lanes import Lane
    from streamtasks.worker.read import Reader

    handlers = cluster_app.registry.handlers.items()
    lanes = {s: Lane(spec, prefetch=1, max_batch_bytes=1 << 22) for s, spec in handlers}
    reader = Reader(cluster_redis, GROUP, "c1", lanes)
    await reader.ensure_groups()
    for stream in ORDER_SHARDS[:3]:
        for _ in range(80):
            await cluster_redis.execute_command("XADD", stream, "*", "a", "1", "a", "2")
    got = await reader.read(list(lanes.values()), block=0.1)
    assert sorted(len(v) for v in got.values()) == [50, 50, 50]  # FIRST_READ_COUNT each
    assert all(v[0][1] == [b"a", b"1", b"a", b"2"] for v in got.values())
    empty = [lanes[s] for s in ORDER_SHARDS[5:]]
    assert await reader.read(empty, block=0.1) == {}  # several slots: a short pause, nothing


async def test_live_workers_are_found_on_a_cluster(
    cluster_redis: Redis, workers: Callable[..., Worker]
) -> None:
    """Heartbeat keys live in many slots: status scans every master and reads them all."""
    from streamtasks.observe.inspect import live_workers

    workers("hb1")
    workers("hb2")

    async def both() -> bool:
        return len(await live_workers(cluster_redis, GROUP)) == 2

    await wait_until(both)


async def test_the_permission_check_runs_on_a_cluster_and_names_what_is_missing(
    redis_cluster: Any, cluster_redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """``ACL WHOAMI`` / ``ACL DRYRUN`` name no key, so a cluster client cannot route them: the
    check sends each to the node serving the probed key. The default user passes without the
    'could not check' warning; a user without XAUTOCLAIM (on every node) is refused, by name."""
    import logging

    from streamtasks.worker.preflight import MissingPermissions, check_permissions

    streams = [(s, f"{s}:dead") for s in ORDER_SHARDS[:4]]
    with caplog.at_level(logging.WARNING, logger="streamtasks.worker"):
        await check_permissions(cluster_redis, streams, GROUP, "c1")
    assert "could not check" not in caplog.text
    cluster: Any = cluster_redis
    setuser = ["ACL", "SETUSER", "limited", "on", ">pw", "~*", "+@all", "-xautoclaim"]
    await cluster.execute_command(*setuser, target_nodes=cluster.get_nodes())
    try:
        node = redis_cluster.nodes[0]
        limited = await connect(node.url.replace("redis://", "redis://limited:pw@", 1))
        try:
            with pytest.raises(MissingPermissions, match="XAUTOCLAIM"):
                await check_permissions(limited, streams, GROUP, "c1")
        finally:
            await limited.aclose()
    finally:
        await cluster.execute_command("ACL", "DELUSER", "limited", target_nodes=cluster.get_nodes())
