"""The test infrastructure itself: throwaway servers, fixtures, subprocesses and the proxy."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from support import SERVICES_PATH, load_services
from support.procs import ManagedProcess, ProcessFailed
from support.proxy import TcpProxy

services = load_services()
pytestmark = pytest.mark.integration

SEEN_DATABASES: set[str] = set()
PROXY_WAIT_S = 0.3


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Any]:
    """A private RedisServer, so restarting it disturbs no other test."""
    server = services.RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.kill()


async def _ping(url: str) -> bool:
    client = aioredis.Redis.from_url(url)
    try:
        return bool(await client.ping())
    finally:
        await client.aclose()


async def test_redis_restart_loses_data_and_keeps_port(own_redis: Any) -> None:
    """restart() comes back on the same port with an empty keyspace (no persistence)."""
    server = own_redis
    port, url = server.port, server.url
    client = aioredis.Redis.from_url(url)
    await client.set("k", "v")
    await client.aclose()
    await asyncio.to_thread(server.restart)
    assert server.port == port
    client = aioredis.Redis.from_url(url)
    try:
        assert await client.get("k") is None
    finally:
        await client.aclose()


async def test_redis_kill_then_start_on_same_url(own_redis: Any) -> None:
    """kill() is a SIGKILL crash: the server is gone until start() brings it back."""
    server = own_redis
    await asyncio.to_thread(server.kill)
    assert not server.running
    with pytest.raises(RedisConnectionError):
        await _ping(server.url)
    await asyncio.to_thread(server.start)
    assert await _ping(server.url)


@pytest.mark.parametrize("run", [1, 2])
async def test_redis_fixture_starts_empty(redis: aioredis.Redis, run: int) -> None:
    """The ``redis`` fixture FLUSHALLs: a key written by the previous run is gone."""
    assert await redis.dbsize() == 0
    await redis.set(b"left-over", b"\xff\x00")
    assert await redis.get(b"left-over") == b"\xff\x00"


@pytest.mark.parametrize("run", [1, 2])
async def test_database_per_test_is_fresh_and_empty(database_url: str, run: int) -> None:
    """Each test gets its own database with no tables, whatever the last test created."""
    conn = await asyncpg.connect(database_url)
    try:
        name = await conn.fetchval("SELECT current_database()")
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
        await conn.execute("CREATE TABLE left_over (id int)")
    finally:
        await conn.close()
    assert tables == 0
    if not os.environ.get("STREAMTASKS_TEST_DATABASE_URL"):  # external: one shared database
        assert name not in SEEN_DATABASES
    SEEN_DATABASES.add(name)


async def test_postgres_restart_keeps_port_and_data(pg_server: Any, database_url: str) -> None:
    """restart() stops and starts the cluster on the same port; committed rows survive."""
    conn = await asyncpg.connect(database_url)
    await conn.execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (7)")
    await conn.close()
    await asyncio.to_thread(pg_server.restart)
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT id FROM kept") == 7
    finally:
        await conn.close()


def test_services_cli_start_is_idempotent_and_stop_stops() -> None:
    """`start` twice reuses the running servers (same env); `stop` makes `env` fail."""
    base = Path(tempfile.mkdtemp(prefix="streamtasks-cli-"))
    base.chmod(0o755)  # the postgres OS user must be able to traverse it (when root)
    cli = [sys.executable, str(SERVICES_PATH)]
    try:
        first = subprocess.run([*cli, "start", "--dir", str(base)], capture_output=True, text=True)
        assert first.returncode == 0, first.stderr
        assert "export REDIS_URL=redis://127.0.0.1:" in first.stdout
        assert "/streamtasks" in first.stdout
        second = subprocess.run([*cli, "start", "--dir", str(base)], capture_output=True, text=True)
        assert second.stdout == first.stdout
        env = (base / "env").read_text()
        assert env.splitlines() == [line.removeprefix("export ") for line in first.stdout.splitlines()]
    finally:
        stop = subprocess.run([*cli, "stop", "--dir", str(base)], capture_output=True, text=True)
        after = subprocess.run([*cli, "env", "--dir", str(base)], capture_output=True, text=True)
        shutil.rmtree(base, ignore_errors=True)
    assert stop.returncode == 0, stop.stderr
    assert after.returncode == 1 and "not running" in after.stderr


async def _redis_ping_raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"PING\r\n")
    assert await asyncio.wait_for(reader.readline(), 5) == b"+PONG\r\n"
    return reader, writer


async def test_proxy_forwards_and_drop_all_breaks_connections(redis_server: Any) -> None:
    """Bytes flow both ways through the proxy; drop_all() cuts the open connection."""
    async with TcpProxy("127.0.0.1", redis_server.port) as proxy:
        reader, writer = await _redis_ping_raw(proxy.port)
        assert proxy.drop_all() == 1
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        # a new connection works again
        _, writer2 = await _redis_ping_raw(proxy.port)
        writer2.close()


async def test_proxy_pause_holds_and_refuses_new_connections(redis_server: Any) -> None:
    """pause() holds new connections until resume(); pause(refuse=True) closes them."""
    async with TcpProxy("127.0.0.1", redis_server.port) as proxy:
        proxy.pause()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"PING\r\n")
        reply = asyncio.create_task(reader.readline())
        done, _ = await asyncio.wait({reply}, timeout=PROXY_WAIT_S)
        assert not done, "a held connection must not be forwarded"
        proxy.resume()
        assert await asyncio.wait_for(reply, 5) == b"+PONG\r\n"
        writer.close()
        proxy.pause(refuse=True)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


CHILD_SCRIPT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(f"ready child={child.pid}", flush=True)
time.sleep(60)
"""


def test_managed_process_kill9_kills_descendants(tmp_path: Path) -> None:
    """kill9() SIGKILLs the process and the processes it started."""
    with ManagedProcess([sys.executable, "-c", CHILD_SCRIPT], log_dir=tmp_path) as proc:
        match = proc.wait_for_log(r"ready child=(\d+)", timeout=10)
        child = psutil.Process(int(match.group(1)))
        proc.kill9()
        assert proc.wait(5) == -9
        child.wait(5)
        assert not child.is_running()


def test_managed_process_terminate_and_log_failure(tmp_path: Path) -> None:
    """terminate() sends SIGTERM; wait_for_log fails at once (with output) on exit."""
    proc = ManagedProcess(
        [sys.executable, "-c", "import sys, time; print('hello'); sys.stderr.write('oops\\n')"],
        log_dir=tmp_path / "a",
    )
    with proc:
        assert proc.wait(10) == 0
        with pytest.raises(ProcessFailed, match="oops"):
            proc.wait_for_log("never printed", timeout=30)
        assert "hello" in proc.output() and "oops" in proc.output()
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    sleeper = ManagedProcess(sleep, log_dir=tmp_path / "b")
    with sleeper:
        sleeper.terminate()
        assert sleeper.wait(10) == -15


def test_spawn_fixture_and_env(spawn: Any, tmp_path: Path) -> None:
    """spawn() starts a ManagedProcess with extra env vars and a cwd."""
    proc = spawn(
        [sys.executable, "-c", "import os; print(os.environ['MARK'], os.getcwd())"],
        env={"MARK": "m-42"},
        cwd=tmp_path,
    )
    assert proc.wait(10) == 0
    assert proc.wait_for_log(r"m-42 (\S+)").group(1) == str(tmp_path)


def test_ray_address_is_joinable_gcs_address(ray_address: str) -> None:
    """ray_address is a host:port GCS address of a Ray started in this process."""
    host, _, port = ray_address.rpartition(":")
    assert host and port.isdigit()


async def test_timescale_server_preloads_timescaledb(
    timescale_server: Any, timescale_database_url: str
) -> None:
    """The second throwaway PostgreSQL preloads TimescaleDB; CREATE EXTENSION works there."""
    conn = await asyncpg.connect(timescale_database_url)
    try:
        assert "timescaledb" in await conn.fetchval("SHOW shared_preload_libraries")
        await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        assert await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    finally:
        await conn.close()
    assert services.timescaledb_installed()
    assert (
        "shared_preload_libraries=timescaledb"
        in services.PostgresServer("/tmp/x", preload=("timescaledb",)).settings
    )
    assert services.PostgresServer("/tmp/x").settings == ()


@pytest.mark.parametrize(
    ("said", "installed_before", "note"),
    [
        ("timescaledb 2.28.3 (bgw fix) already installed for PostgreSQL 15", True, False),
        ("timescaledb 2.28.3 (bgw fix) installed for PostgreSQL 15", True, True),  # replaced old files
        ("timescaledb 2.28.3 (bgw fix) installed for PostgreSQL 15", False, False),
    ],
)
def test_ensure_timescaledb_runs_the_installer_even_when_timescaledb_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, said: str, installed_before: bool, note: bool
) -> None:
    """The check for the files alone kept an older build of the same version (2.28.3 without
    the background-job fix): the installer (idempotent) runs as root whenever it is there, and a
    replaced build comes with the advice to restart the servers that had loaded it."""
    marker = tmp_path / "ran"
    installer = tmp_path / "install.sh"
    installer.write_text(f"#!/bin/sh\necho \"$1\" > {marker}\necho '{said}'\n")
    installer.chmod(0o755)
    monkeypatch.setattr(services, "is_root", lambda: True)
    answers = iter([installed_before, True])  # before the installer, after it
    monkeypatch.setattr(services, "timescaledb_installed", lambda bindir=None: next(answers))
    if services.find_pg_bindir() is None:
        pytest.fail("no PostgreSQL binaries (scripts/services.py ensure-binaries)", pytrace=False)
    said_back = services.ensure_timescaledb(installer)
    assert marker.read_text().strip() == services.pg_major(services.find_pg_bindir())
    assert said_back.startswith(f"timescaledb: {said}")
    assert ("restart" in said_back) is note
