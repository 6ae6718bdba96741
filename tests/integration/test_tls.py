"""TLS: the worker, the producer and the CLI against a redis-server that serves TLS only
(a CA, a server certificate and required client certificates made by the suite); and a TLS
mismatch gets an error that says TLS."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
import redis.asyncio as aioredis

from streamtasks import Message, Producer, Registry
from streamtasks.worker import InlineExecutor, Worker, WorkerSettings

pytestmark = pytest.mark.integration


async def test_a_worker_and_a_producer_work_over_tls_with_a_client_certificate(tls_redis_server: Any) -> None:
    """CA-verified server, client certificate: entries sent over TLS are handled and acked."""
    redis = aioredis.Redis.from_url(tls_redis_server.url)
    await redis.flushall()
    registry = Registry(group="tls")
    seen: list[str] = []

    @registry.stream_handler("secure", batch_size=10)
    def handle(msg: Message) -> None:
        seen.append(msg["n"])

    producer = Producer(redis)
    await producer.send_many("secure", [{"n": str(i)} for i in range(25)])
    worker = Worker(registry, redis, InlineExecutor(), WorkerSettings(block=0.1))
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(200):
            if len(seen) == 25:
                break
            await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await task
    assert sorted(seen, key=int) == [str(i) for i in range(25)]
    assert (await redis.xpending("secure", "tls"))["pending"] == 0
    await redis.aclose()


async def test_without_the_client_certificate_or_the_ca_the_connection_is_refused(
    tls_redis_server: Any,
) -> None:
    certs = tls_redis_server.certs
    base = f"rediss://127.0.0.1:{tls_redis_server.port}/0"
    for url, error in (
        # TLS 1.3: the server's alert may race its reset of the connection
        (f"{base}?{certs.query(with_cert=False)}", "certificate required|reset by peer|closed by server"),
        (
            f"{base}?ssl_certfile={certs.client_cert}&ssl_keyfile={certs.client_key}",
            "certificate verify failed",
        ),
    ):
        client = aioredis.Redis.from_url(url)
        with pytest.raises(aioredis.ConnectionError, match=error):
            await client.ping()
        await client.aclose()


def _cli(*args: str) -> Any:
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "streamtasks", *args], capture_output=True, text=True, timeout=60, check=False
    )


async def test_the_cli_over_tls(tls_redis_server: Any) -> None:
    done = await asyncio.to_thread(_cli, "send", "clis", "a=1", "--redis-url", tls_redis_server.url)
    assert done.returncode == 0, done.stderr
    client = aioredis.Redis.from_url(tls_redis_server.url)
    assert await client.xlen("clis") == 1
    await client.aclose()


async def test_rediss_to_a_plain_port_and_redis_to_a_tls_port_say_tls(
    redis_server: Any, tls_redis_server: Any
) -> None:
    """One line, exit 1, naming TLS either way."""
    for url, words in (
        (f"rediss://127.0.0.1:{redis_server.port}/0", "rediss:// means TLS"),
        (f"redis://127.0.0.1:{tls_redis_server.port}/0", "if this port expects TLS, use rediss://"),
    ):
        done = await asyncio.to_thread(_cli, "send", "clis", "a=1", "--redis-url", url)
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: cannot reach Redis") and words in lines[0], (
            lines
        )
