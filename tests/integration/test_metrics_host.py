"""``streamtasks worker --metrics-host``: where /metrics, /healthz and /readyz listen."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from support.procs import free_port

from streamtasks.cli.worker import METRICS_HOST
from streamtasks.observe.http import DEFAULT_HOST

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "streamtasks"]
pytestmark = pytest.mark.integration


def listening_address(pid: int, port: int, timeout: float = 60) -> str:
    """The local address the process ``pid`` listens on at ``port`` (waits for it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
                return str(conn.laddr.ip)
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port}")


def test_the_default_is_every_interface_as_documented() -> None:
    assert METRICS_HOST == DEFAULT_HOST == "0.0.0.0"
    help_text = subprocess.run([*CLI, "worker", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--metrics-host" in help_text and "0.0.0.0" in help_text


@pytest.mark.parametrize(("host", "expected"), [("127.0.0.1", "127.0.0.1"), (None, "0.0.0.0")])
def test_metrics_bind_to_metrics_host(
    host: str | None, expected: str, redis_url: str, ray_address: str, spawn: Any
) -> None:
    port = free_port()
    argv = [*CLI, "worker", "core_app:registry", "--redis-url", redis_url, "--ray-address", ray_address,
            "--streams", "sync_each", "--metrics-port", str(port)]  # fmt: skip
    worker = spawn([*argv, "--metrics-host", host] if host else argv, cwd=HERE)
    assert listening_address(worker.pid, port) == expected
    worker.terminate()
    assert worker.wait(timeout=60) == 0, worker.output_tail()


def test_an_address_not_of_this_machine_is_one_line(redis_url: str) -> None:
    out = subprocess.run(
        [*CLI, "worker", "core_app:registry", "--redis-url", redis_url, "--metrics-port", str(free_port()),
         "--metrics-host", "203.0.113.7"],
        capture_output=True, text=True, timeout=60, cwd=HERE,
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.strip().startswith("Error: cannot serve metrics on 203.0.113.7:")
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
