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


#: The commands a user meets first, each with the exit status a refused connection gives.
COMMANDS = (
    (("worker", "core_app:registry", "--executor", "inline"), 1),
    (("send", "clis", "a=1"), 1),
    (("status",), 3),
)


async def _one_line_each(url: str) -> list[str]:
    """The one line each of :data:`COMMANDS` prints for ``url``, after checking its exit status."""
    runs = await asyncio.gather(*(asyncio.to_thread(_cli, *argv, "--redis-url", url) for argv, _ in COMMANDS))
    lines = []
    for (argv, code), done in zip(COMMANDS, runs, strict=True):
        out = (done.stdout + done.stderr).strip().splitlines()
        assert done.returncode == code and len(out) == 1 and "Traceback" not in out[0], (argv, out)
        lines.append(out[0])
    return lines


async def test_a_tls_port_that_requires_a_client_certificate_is_named_as_such(tls_redis_server: Any) -> None:
    """``rediss://`` with only ``ssl_ca_certs`` to a server with ``tls-auth-clients yes``: every
    command names the client certificate (whether the alert or only the reset arrived) and none
    sends the user to ``redis://``."""
    certs = tls_redis_server.certs
    url = f"rediss://127.0.0.1:{tls_redis_server.port}/0?{certs.query(with_cert=False)}"
    for line in await _one_line_each(url):
        assert "client certificate" in line and "ssl_certfile" in line, line
        assert "redis://" not in line.replace("rediss://", ""), line


async def test_rediss_to_a_plain_port_still_says_use_redis(redis_server: Any) -> None:
    """A plain Redis never answers a ClientHello (or answers it in plain text): every command
    suggests ``redis://``."""
    url = f"rediss://127.0.0.1:{redis_server.port}/0?socket_connect_timeout=1"
    for line in await _one_line_each(url):
        assert "rediss:// means TLS" in line and "use redis:// for a plain one" in line, line


async def test_redis_to_a_tls_port_says_tls(tls_redis_server: Any) -> None:
    """One line, exit 1, naming TLS."""
    done = await asyncio.to_thread(
        _cli, "send", "clis", "a=1", "--redis-url", f"redis://127.0.0.1:{tls_redis_server.port}/0"
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot reach Redis"), lines
    assert "if this port expects TLS, use rediss://" in lines[0], lines
