"""The dashboard in a real headless Chromium (acceptance 1-4 of issue 15), against a real
redis-server, real worker processes on Ray and a real PostgreSQL. Screenshots go to the
test's ``tmp_path`` (see the test output for the path)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as syncredis
from support.browser import close_chromium, open_chromium, wait_for
from support.dashboard import TOKEN
from support.procs import free_port

from streamtasks.keys import heartbeat_key

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "streamtasks"]
GROUP = "obs-tests"
#: The worker's heartbeat key lives this long after its last beat (WorkerSettings.heartbeat_ttl).
HEARTBEAT_TTL_S = 10.0
pytestmark = pytest.mark.integration


@pytest.fixture
def r(redis_url: str) -> Iterator[syncredis.Redis]:
    client = syncredis.Redis.from_url(redis_url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def chrome(tmp_path: Path) -> Iterator[Any]:
    profile = tmp_path / "chromium-profile"
    driver = open_chromium(profile)
    yield driver
    close_chromium(driver, profile)


def start_dashboard(spawn: Any, redis_url: str, **env: str) -> str:
    port = free_port()
    proc = spawn(
        [*CLI, "dashboard", "obs_app:registry", "--redis-url", redis_url, "--port", str(port),
         "--interval", "0.5"],
        cwd=HERE, env={"STREAMTASKS_DASHBOARD_TOKEN": TOKEN, **env}, name="dashboard",
    )  # fmt: skip
    proc.wait_for_log(r"dashboard on http://127\.0\.0\.1:\d+/", timeout=30)
    return f"http://127.0.0.1:{port}"


def start_worker(spawn: Any, redis_url: str, ray_address: str, consumer: str) -> Any:
    return spawn(
        [*CLI, "worker", "obs_app:registry", "--redis-url", redis_url, "--ray-address", ray_address,
         "--streams", "obs_work", "--consumer", consumer],
        cwd=HERE, name="worker",
    )  # fmt: skip


def shot(driver: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def row_cells(driver: Any, stream: str) -> dict[str, str]:
    row = driver.find_element("css selector", f'#streams tr[data-stream="{stream}"]')
    return {td.get_attribute("data-k"): td.text for td in row.find_elements("css selector", "td[data-k]")}


def sampled_at(driver: Any) -> float:
    return float(driver.find_element("id", "checked-at").get_attribute("data-ts"))


def worker_state(driver: Any, consumer: str) -> str | None:
    rows = driver.find_elements("css selector", f'#workers tr[data-consumer="{consumer}"] td[data-k="state"]')
    return rows[0].text if rows else None


def gated_backlog(r: syncredis.Redis) -> None:
    """obs_work: a gate entry that blocks its batch (obs_app), then 12 more; 2 dead letters
    from earlier; obs_latency: 3 entries nobody reads."""
    r.xgroup_create("obs_work", GROUP, id="0", mkstream=True)
    r.xadd("obs_work", {"gate": "1"})
    for i in range(12):
        r.xadd("obs_work", {"n": str(i)})
    for i in range(2):
        r.xadd(
            "obs_work:dead", {"stream": "obs_work", "id": f"1-{i}", "reason": "handler_error", "f:n": str(i)}
        )
    for i in range(3):
        r.xadd("obs_latency", {"n": str(i)})


def test_overview_numbers_equal_xinfo_and_xpending_read_at_the_same_moment(
    r: syncredis.Redis, redis_url: str, ray_address: str, spawn: Any, chrome: Any, tmp_path: Path
) -> None:
    """With a worker holding a gated backlog, the live overview shows per stream the length,
    lag, pending and dead letters that XLEN / XINFO GROUPS / XPENDING return, and the worker
    reading with its batch in flight."""
    gated_backlog(r)
    start_worker(spawn, redis_url, ray_address, "dash-worker")
    wait_for(lambda: r.exists(heartbeat_key(GROUP, "dash-worker")) and r.xpending("obs_work", GROUP)["pending"] >= 5,
             60, "the worker to hold the gated batch")  # fmt: skip
    url = start_dashboard(spawn, redis_url)
    chrome.get(url + "/")
    settled = time.time() + 1.0  # a sample taken after the backlog stopped moving
    time.sleep(1.0)
    wait_for(lambda: sampled_at(chrome) > settled, 15, "a live update of the overview")
    shown = {s: row_cells(chrome, s) for s in ("obs_work", "obs_latency")}
    groups = {g["name"].decode(): g for g in r.xinfo_groups("obs_work")}
    truth = {
        "obs_work": {
            "length": r.xlen("obs_work"), "lag": groups[GROUP]["lag"],
            "pending": r.xpending("obs_work", GROUP)["pending"], "dead_letters": r.xlen("obs_work:dead"),
        },
        "obs_latency": {"length": r.xlen("obs_latency"), "lag": "-", "pending": 0, "dead_letters": 0},
    }  # fmt: skip
    shot(chrome, tmp_path, "overview")
    print("dashboard:", json.dumps(shown), "redis:", json.dumps(truth))
    for stream, want in truth.items():
        for key, value in want.items():
            assert shown[stream][key] == str(value), (stream, key, shown[stream], want)
    assert truth["obs_work"]["pending"] >= 5 and truth["obs_work"]["lag"] > 0
    assert worker_state(chrome, "dash-worker") == "reading"
    in_flight = chrome.find_element(
        "css selector", '#workers tr[data-consumer="dash-worker"] td[data-k="in_flight"]'
    )
    assert in_flight.text == "1"
    services = {
        e.get_attribute("data-service"): e.text for e in chrome.find_elements("css selector", "#services tr")
    }
    assert "healthy" in services["redis"]
    assert TOKEN not in chrome.page_source and redis_url not in chrome.page_source


def test_a_killed_worker_is_shown_dead_within_its_heartbeat_ttl_without_a_reload(
    r: syncredis.Redis, redis_url: str, ray_address: str, spawn: Any, chrome: Any, tmp_path: Path
) -> None:
    """kill -9 of a worker: its row turns "dead" within the heartbeat TTL + 2 s, on the page
    loaded before the kill (no reload)."""
    gated_backlog(r)
    worker = start_worker(spawn, redis_url, ray_address, "dash-victim")
    wait_for(lambda: r.exists(heartbeat_key(GROUP, "dash-victim")), 60, "the worker's heartbeat")
    url = start_dashboard(spawn, redis_url)
    chrome.get(url + "/")
    wait_for(lambda: worker_state(chrome, "dash-victim") == "reading", 30, "the worker shown reading")
    chrome.execute_script("window.__notReloaded = true")
    worker.kill9()
    killed = time.monotonic()
    wait_for(
        lambda: worker_state(chrome, "dash-victim") == "dead", HEARTBEAT_TTL_S + 5, "the worker shown dead"
    )
    elapsed = time.monotonic() - killed
    shot(chrome, tmp_path, "worker-dead")
    print(f"worker shown dead {elapsed:.1f}s after kill -9 (heartbeat TTL {HEARTBEAT_TTL_S:.0f}s)")
    assert elapsed <= HEARTBEAT_TTL_S + 2
    assert chrome.execute_script("return window.__notReloaded === true")
