"""Starting and joining Ray from ``streamtasks worker``: a stale cluster recorded by an earlier
``ray start`` is ignored, start-up obeys SIGTERM and is bounded by ``--ray-start-timeout``, and
a ``ray start --head`` cluster with token authentication is joined with its token (or refused
at once without it). Each test starts its own Ray in its own temp dir, on free ports."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from support.modes import one_consumer
from support.procs import free_port, free_ports
from support.waiting import equals, wait_until

from streamtasks.keys import heartbeat_key

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "streamtasks"]
GROUP = "core-tests"
pytestmark = pytest.mark.integration


@pytest.fixture
def ray_tmpdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A Ray temp dir of the test's own (short: Ray's socket paths have a length limit); no
    RAY_ADDRESS or RAY_AUTH_MODE inherited from the test process (its own Ray sets the latter)."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    path = Path(tempfile.mkdtemp(prefix="st-ray-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def worker_argv(redis_url: str, consumer: str, *extra: str) -> list[str]:
    return [*CLI, "worker", "core_app:registry", "--redis-url", redis_url, "--streams", "sync_each",
            "--consumer", consumer, *extra]  # fmt: skip


def one_reader(redis_url: str, name: str, *extra: str) -> tuple[list[str], str]:
    """:func:`worker_argv` for a worker that reads as one consumer, and that consumer (actor
    mode: its one actor, whose heartbeat says "reading"; the worker's own is gone by then)."""
    args, consumer = one_consumer(name)
    return worker_argv(redis_url, name, *args[2:], *extra), consumer  # args[2:]: --actors 1


async def state_of(redis: Redis, consumer: str) -> str | None:
    value = await redis.get(heartbeat_key(GROUP, consumer))
    return None if value is None else str(json.loads(value).get("state"))


def stale_cluster(ray_tmpdir: Path) -> None:
    """What a crashed ``ray start --head`` leaves: Ray's address file naming a dead GCS."""
    (ray_tmpdir / "ray").mkdir(exist_ok=True)
    (ray_tmpdir / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")


async def read_then_sigterm(redis: Redis, redis_url: str, spawn: Any, ray_tmpdir: Path, name: str) -> Any:
    """A worker starting its own Ray (under ``ray_tmpdir``) until it reads, then SIGTERM: it
    exits 0. Returns the process, for its output."""
    argv, reader = one_reader(redis_url, name)
    worker = spawn(argv, env={"RAY_TMPDIR": str(ray_tmpdir)}, cwd=HERE)

    async def reading() -> bool:
        return await state_of(redis, reader) == "reading"

    await wait_until(reading, timeout=90, interval=0.2)
    worker.terminate()
    assert worker.wait(timeout=60) == 0, worker.output_tail()
    return worker


async def test_a_stale_cluster_is_ignored_the_worker_starts_its_own_ray(
    redis: Redis, redis_url: str, spawn: Any, ray_tmpdir: Path
) -> None:
    """No --ray-address: a new local Ray, not the dead cluster Ray's address file names (the
    worker used to try to join it for minutes and never read)."""
    stale_cluster(ray_tmpdir)
    await read_then_sigterm(redis, redis_url, spawn, ray_tmpdir, "fresh")


async def test_starting_ray_logs_what_it_did_at_info_no_ray_warnings_and_sigterm_still_stops_the_worker(
    redis: Redis, redis_url: str, spawn: Any, ray_tmpdir: Path
) -> None:
    """Ray warns "SIGTERM handler is not set" when started outside the main thread, as the
    worker does; the worker handles SIGTERM itself, so the line (printed on every start) is
    dropped, and SIGTERM stops the worker with exit 0. Ray's "Token authentication is enabled
    for this Ray cluster" warning, about the local Ray the worker started for itself, is dropped
    too: the worker says once, at INFO, what it did."""
    from streamtasks.ray.quiet import SIGTERM_NOT_SET, TOKEN_AUTH_ON

    worker = await read_then_sigterm(redis, redis_url, spawn, ray_tmpdir, "quiet")
    err = worker.stderr()
    assert " reading " in err, err[-2000:]  # the worker's log is here: the checks below mean something
    assert SIGTERM_NOT_SET not in err
    assert TOKEN_AUTH_ON not in err and "RAY_AUTH_MODE" not in err, err[-2000:]
    started = [line for line in err.splitlines() if "started a local Ray" in line]
    assert len(started) == 1 and " INFO " in started[0], err[-2000:]
    assert started[0].endswith("started a local Ray (token authentication on)"), started


@pytest.mark.parametrize("mode", ["tasks", "actors"])
async def test_sigterm_during_ray_start_up_exits_at_once(
    redis: Redis, redis_url: str, spawn: Any, ray_tmpdir: Path, mode: str
) -> None:
    """SIGTERM while Ray starts (a stale cluster recorded, as in the report): exit 0 within
    15 s, heartbeat gone, nothing read. It used to be ignored until Ray gave up (minutes). In
    actor mode the worker process announces itself until its actors read (it used to write no
    heartbeat until then, and to wait for Ray's start whatever the signal)."""
    stale_cluster(ray_tmpdir)
    argv = worker_argv(redis_url, "early", "--mode", mode)
    worker = spawn(argv, env={"RAY_TMPDIR": str(ray_tmpdir)}, cwd=HERE)

    async def starting() -> bool:
        return await state_of(redis, "early") == "starting"

    await wait_until(starting, timeout=60, interval=0.02)
    started = time.monotonic()
    worker.terminate()
    assert worker.wait(timeout=30) == 0, worker.output_tail()
    took = time.monotonic() - started
    print(f"SIGTERM during Ray start-up: exited after {took:.1f}s")
    assert took < 15
    assert await state_of(redis, "early") is None


def test_ray_start_is_bounded_by_ray_start_timeout(redis_url: str, ray_tmpdir: Path) -> None:
    """Joining an address nobody answers on: one line, exit 1, after --ray-start-timeout."""
    dead = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    out = subprocess.run(
        [*worker_argv(redis_url, "bounded", "--ray-address", dead, "--ray-start-timeout", "3")],
        capture_output=True, text=True, timeout=90, cwd=HERE, env=_env(ray_tmpdir),
    )  # fmt: skip
    took = time.monotonic() - started
    assert out.returncode == 1, out.stderr[-2000:]
    ours = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert ours == [f"Error: cannot join Ray at {dead}: no answer within 3s (--ray-start-timeout)"]
    assert "Traceback" not in out.stderr
    assert took < 30


def _env(ray_tmpdir: Path, **extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    return {**env, "RAY_TMPDIR": str(ray_tmpdir), **extra}


# -- a `ray start --head` cluster with token authentication ------------------------------------


WORKER_PORTS = 50


def worker_port_range(*taken: int) -> int:
    """The first of ``WORKER_PORTS`` + 1 ports for Ray's workers, none of them ``taken``: Ray
    refuses a worker port range that holds a port given to another of its components (the
    free ports come from the ephemeral range, which a random range could overlap)."""
    while True:
        low = 20_000 + secrets.randbelow(20_000)
        if not any(low <= port <= low + WORKER_PORTS for port in taken):
            return low


@pytest.fixture
def token_head(spawn: Any, ray_tmpdir: Path) -> Iterator[tuple[str, str]]:
    """``ray start --head`` with token authentication (its own token, temp dir and ports);
    yields (GCS address, token). Stopped by killing its process tree, never ``ray stop``
    (which would stop every Ray on the machine)."""
    token = secrets.token_hex(32)
    names = (
        "node-manager-port", "object-manager-port", "metrics-export-port",
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
    )  # fmt: skip
    port, *others = free_ports(1 + len(names))  # distinct: Ray refuses a port given twice
    ports = {f"--{name}": str(other) for name, other in zip(names, others, strict=True)}
    low = worker_port_range(port, *others)
    high = low + WORKER_PORTS
    head = spawn(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--port", str(port),
         "--num-cpus", "1", "--include-dashboard", "false", "--disable-usage-stats",
         "--temp-dir", str(ray_tmpdir), "--min-worker-port", str(low), "--max-worker-port", str(high),
         *[x for kv in ports.items() for x in kv]],
        env={"RAY_TMPDIR": str(ray_tmpdir), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token},
        name="ray-head",
    )  # fmt: skip
    head.wait_for_log("block forever", timeout=90)
    yield f"127.0.0.1:{port}", token
    head.kill9()


async def test_joining_a_token_cluster_picks_up_its_token(
    redis: Redis, redis_url: str, spawn: Any, token_head: tuple[str, str], ray_tmpdir: Path
) -> None:
    """The cluster's token in RAY_AUTH_TOKEN, no RAY_AUTH_MODE: the worker turns token auth
    on by itself and reads (it used to retry for ~20 s, then fail)."""
    address, token = token_head
    argv, reader = one_reader(redis_url, "joiner", "--ray-address", address)
    worker = spawn(argv, env={"RAY_TMPDIR": str(ray_tmpdir), "RAY_AUTH_TOKEN": token}, cwd=HERE)

    async def reading() -> bool:
        return await state_of(redis, reader) == "reading"

    await wait_until(reading, timeout=60, interval=0.2)
    worker.terminate()
    assert worker.wait(timeout=60) == 0, worker.output_tail()


@pytest.mark.parametrize("credentials", ["wrong token", "no token"])
def test_a_cluster_that_refuses_fails_fast_in_one_line(
    credentials: str, redis_url: str, token_head: tuple[str, str], ray_tmpdir: Path
) -> None:
    """A wrong token, or none at all (an empty HOME, no RAY_AUTH_TOKEN): exit 1 within 15 s
    with one line saying the cluster refused (Ray alone retries ~20 s, then says less)."""
    address, _ = token_head
    if credentials == "wrong token":
        env = _env(ray_tmpdir, RAY_AUTH_TOKEN=secrets.token_hex(32))
    else:
        env = {k: v for k, v in _env(ray_tmpdir).items() if not k.startswith("RAY_AUTH_TOKEN")}
        env["HOME"] = str(ray_tmpdir)
    started = time.monotonic()
    out = subprocess.run(
        worker_argv(redis_url, "refused", "--ray-address", address),
        capture_output=True, text=True, timeout=90, cwd=HERE, env=env,
    )  # fmt: skip
    took = time.monotonic() - started
    assert out.returncode == 1, out.stderr[-2000:]
    ours = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(ours) == 1 and "refused to authenticate us" in ours[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    print(f"{credentials}: refused after {took:.1f}s")
    assert took < 15


async def test_a_local_ray_left_by_a_killed_worker_is_stopped_by_the_next_start_and_only_it(
    redis: Redis, redis_url: str, spawn: Any, ray_tmpdir: Path, ray_address: str
) -> None:
    """kill -9 of a worker that started its own Ray: its raylet and GCS go with it, but Ray's two
    agents live on, reparented, for a minute or more (60-90 s measured). The next worker that
    starts a local Ray stops them, saying so in one INFO line; the agents of a live Ray are not
    touched."""
    import psutil

    from streamtasks.ray.leftovers import AGENT_TITLES

    def agents(root: psutil.Process) -> list[psutil.Process]:
        return [p for p in root.children(recursive=True) if " ".join(p.cmdline()).startswith(AGENT_TITLES)]

    argv, reader = one_reader(redis_url, "doomed")
    doomed = spawn(argv, env={"RAY_TMPDIR": str(ray_tmpdir)}, cwd=HERE)
    await wait_until(lambda: equals(state_of(redis, reader), "reading"), timeout=90, interval=0.2)
    left = agents(psutil.Process(doomed.pid))
    assert len(left) == 2, left
    # a live Ray's agents: this test session's own (other Rays on the machine come and go); the
    # doomed worker is this process' child too, so its agents are left out by pid
    doomed_pids = {p.pid for p in left}
    alive_elsewhere = [p for p in agents(psutil.Process(os.getpid())) if p.pid not in doomed_pids]
    assert alive_elsewhere, "the session's Ray has no agents: nothing to check them against"
    doomed.signal(signal.SIGKILL)  # the worker process only, as the OOM killer would
    await wait_until(lambda: all(p.is_running() and p.ppid() == 1 for p in left), timeout=30)
    await asyncio.sleep(2)
    assert all(p.is_running() for p in left), "the agents ended by themselves: nothing to test"
    after = await read_then_sigterm(redis, redis_url, spawn, ray_tmpdir, "next")
    psutil.wait_procs(left, timeout=10)
    assert not [p for p in left if p.is_running()]
    [line] = [line for line in after.stderr().splitlines() if "a local Ray left when its worker died" in line]
    assert " INFO " in line and "stopped 2 process(es)" in line, line
    assert all(p.is_running() for p in alive_elsewhere)
