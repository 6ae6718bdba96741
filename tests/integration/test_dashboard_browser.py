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
from support.dashboard import TOKEN, start_dashboard
from support.modes import one_consumer

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


def start_worker(spawn: Any, redis_url: str, ray_address: str, name: str) -> tuple[Any, str]:
    """A worker that reads as one consumer, and that consumer (actor mode: its one actor)."""
    args, consumer = one_consumer(name)
    worker = spawn(
        [*CLI, "worker", "obs_app:registry", "--redis-url", redis_url, "--ray-address", ray_address,
         "--streams", "obs_work", *args],
        cwd=HERE, name="worker",
    )  # fmt: skip
    return worker, consumer


def shot(driver: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


#: The overview as shown, read in one script run: the page swaps rows on every live update,
#: so reading element by element could mix two samples (or find a row already replaced).
READ_OVERVIEW = """
const cells = (row) => Object.fromEntries(
  [...row.querySelectorAll("td[data-k]")].map((td) => [td.dataset.k, td.textContent]));
const rows = (css, key, read) => Object.fromEntries(
  [...document.querySelectorAll(css)].map((r) => [r.dataset[key], read(r)]));
return {
  sampled_at: parseFloat(document.getElementById("checked-at").dataset.ts),
  streams: rows("#streams tr[data-stream]", "stream", cells),
  workers: rows("#workers tr[data-consumer]", "consumer", cells),
  services: rows("#services tr[data-service]", "service", (r) => r.textContent),
};
"""


def overview(driver: Any) -> dict[str, Any]:
    return dict(driver.execute_script(READ_OVERVIEW))


def sampled_at(driver: Any) -> float:
    return float(overview(driver)["sampled_at"])


def worker_state(driver: Any, consumer: str) -> str | None:
    worker = overview(driver)["workers"].get(consumer)
    return None if worker is None else str(worker["state"])


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
    _, consumer = start_worker(spawn, redis_url, ray_address, "dash-worker")

    def holding() -> bool:
        return (
            bool(r.exists(heartbeat_key(GROUP, consumer))) and r.xpending("obs_work", GROUP)["pending"] >= 5
        )

    wait_for(holding, 60, "the worker to hold the gated batch")
    url = start_dashboard(spawn, redis_url)
    chrome.get(url + "/")
    settled = time.time() + 1.0  # a sample taken after the backlog stopped moving
    time.sleep(1.0)
    wait_for(lambda: sampled_at(chrome) > settled, 15, "a live update of the overview")
    page = overview(chrome)
    shown = {s: page["streams"][s] for s in ("obs_work", "obs_latency")}
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
    assert "healthy" in page["services"]["redis"]

    # The worker's row comes from its heartbeat (every 2 s): reading, its gated batch in
    # flight, the free/total CPUs of its Ray.
    def worker_row() -> dict[str, str] | None:
        row = overview(chrome)["workers"].get(consumer)
        return row if row and row["in_flight"] == "1" and row["ray"].startswith("CPU ") else None

    assert wait_for(worker_row, 10, "the worker's batch and Ray in its row")["state"] == "reading"
    assert TOKEN not in chrome.page_source and redis_url not in chrome.page_source


def test_a_killed_worker_is_shown_dead_within_its_heartbeat_ttl_without_a_reload(
    r: syncredis.Redis, redis_url: str, ray_address: str, spawn: Any, chrome: Any, tmp_path: Path
) -> None:
    """kill -9 of a worker: its row turns "dead" within the heartbeat TTL + 2 s, on the page
    loaded before the kill (no reload)."""
    gated_backlog(r)
    worker, victim = start_worker(spawn, redis_url, ray_address, "dash-victim")
    wait_for(lambda: r.exists(heartbeat_key(GROUP, victim)), 60, "the worker's heartbeat")
    url = start_dashboard(spawn, redis_url)
    chrome.get(url + "/")
    wait_for(lambda: worker_state(chrome, victim) == "reading", 30, "the worker shown reading")
    chrome.execute_script("window.__notReloaded = true")
    worker.kill9()
    killed = time.monotonic()
    wait_for(lambda: worker_state(chrome, victim) == "dead", HEARTBEAT_TTL_S + 5, "the worker shown dead")
    elapsed = time.monotonic() - killed
    shot(chrome, tmp_path, "worker-dead")
    print(f"worker shown dead {elapsed:.1f}s after kill -9 (heartbeat TTL {HEARTBEAT_TTL_S:.0f}s)")
    assert elapsed <= HEARTBEAT_TTL_S + 2
    assert chrome.execute_script("return window.__notReloaded === true")


def dead_stream(r: syncredis.Redis) -> list[Any]:
    return r.xrange("obs_work:dead")


def on_stream(r: syncredis.Redis, origin_id: str) -> int:
    """Entries of obs_work that are a replay of the entry ``origin_id``."""
    return sum(1 for _, f in r.xrange("obs_work") if f.get(b"_st_origin_id") == origin_id.encode())


def open_dead_letters(chrome: Any, url: str, token: str | None) -> None:
    chrome.get(url + "/deadletters?stream=obs_work")
    if token is not None:
        chrome.find_element("id", "token").send_keys(token)


def result_text(chrome: Any) -> str:
    return str(chrome.find_element("id", "result").text)


def test_replay_from_two_tabs_and_a_double_click_puts_the_entry_back_once_and_purge_needs_the_token(
    r: syncredis.Redis, redis_url: str, ray_address: str, spawn: Any, chrome: Any, tmp_path: Path
) -> None:
    """Poison entries dead-lettered by a real worker; one replayed from two tabs, one of them
    double-clicking: the entry is on its stream once. Purge without the token: 403, nothing
    changed."""
    from selenium.webdriver.common.action_chains import ActionChains

    r.xgroup_create("obs_work", GROUP, id="0", mkstream=True)
    poison = [r.xadd("obs_work", {"bad": "1", "n": str(i)}).decode() for i in range(3)]
    worker, _ = start_worker(spawn, redis_url, ray_address, "dash-poison")
    wait_for(lambda: r.xlen("obs_work:dead") == 3, 60, "three dead letters")
    worker.terminate()
    assert worker.wait(60) == 0
    letters = {f[b"id"].decode(): i.decode() for i, f in dead_stream(r)}
    assert sorted(letters) == poison and {f[b"reason"] for _, f in dead_stream(r)} == {b"test_bad"}
    target = letters[poison[0]]
    url = start_dashboard(spawn, redis_url)

    open_dead_letters(chrome, url, TOKEN)
    first = chrome.current_window_handle
    chrome.switch_to.new_window("tab")
    open_dead_letters(chrome, url, TOKEN)
    second = chrome.current_window_handle
    button = f'button.replay-one[data-id="{target}"]'
    chrome.switch_to.window(first)
    ActionChains(chrome).double_click(chrome.find_element("css selector", button)).perform()
    wait_for(lambda: result_text(chrome).startswith("replayed"), 15, "the replay's answer in tab 1")
    shot(chrome, tmp_path, "deadletters-replayed")
    tab1 = result_text(chrome)
    chrome.switch_to.window(second)
    chrome.find_element("css selector", button).click()
    wait_for(lambda: result_text(chrome).startswith("replayed"), 15, "the replay's answer in tab 2")
    tab2 = result_text(chrome)
    print(f"tab 1: {tab1!r}, tab 2: {tab2!r}")
    assert (tab1, tab2) == ("replayed 1", "replayed 0")
    assert on_stream(r, poison[0]) == 1
    assert target not in {i.decode() for i, _ in dead_stream(r)} and r.xlen("obs_work:dead") == 2

    before = dead_stream(r)
    chrome.switch_to.new_window("tab")
    open_dead_letters(chrome, url, None)  # a fresh tab: no token typed
    for box in chrome.find_elements("css selector", "input.pick"):
        box.click()
    chrome.find_element("id", "purge-selected").click()
    chrome.switch_to.alert.accept()
    wait_for(lambda: result_text(chrome).startswith("403"), 15, "the purge refused")
    shot(chrome, tmp_path, "purge-refused")
    print(f"purge without the token: {result_text(chrome)!r}")
    assert "token" in result_text(chrome)
    assert dead_stream(r) == before

    other = letters[poison[1]]
    chrome.get(f"{url}/deadletters/obs_work/{other}")
    shot(chrome, tmp_path, "deadletter")
    assert "test_bad" in chrome.find_element("css selector", "table.kv").text
    assert "asked to reject" in chrome.page_source and chrome.find_element("id", "traceback").text
    chrome.get(f"{url}/streams/obs_work")
    shot(chrome, tmp_path, "stream")
    newest = chrome.find_element("id", "newest").text
    assert newest.count("_st_origin_id") == 1  # the original (acked) and its replay, once
    assert chrome.find_element("id", "length").text == "4"


INFERENCE_COLUMNS = [
    "model_name", "request_id", "prediction", "confidence", "anomaly_score", "is_anomaly",
    "processing_time_ms", "metadata", "created_at", "idempotency_key", "stream", "entry_id",
]  # fmt: skip


def store_inference_rows(dsn: str, model: str, n: int, hours: float) -> None:
    """``n`` inference results of ``model`` spread over the last ``hours`` (one COPY), none in its
    first ten minutes: the page asks for the last ``hours`` a few seconds later, and a row stored
    at the window's edge would have left it by then."""
    import asyncio
    import random
    from datetime import datetime, timedelta, timezone

    from streamtasks.adserving.db import create_pool
    from streamtasks.adserving.schema import setup_database

    async def go() -> None:
        pool = await create_pool(dsn)
        try:
            await setup_database(pool)
            now = datetime.now(timezone.utc)
            rng = random.Random(15)
            span = hours * 3600 - 600
            rows = [
                (model, f"req-{i}", json.dumps({"p": 1}), rng.random(), rng.random(), rng.random() < 0.05,
                 rng.lognormvariate(3, 0.6), "{}", now - timedelta(seconds=rng.uniform(0, span)),
                 f"k-{i}", "inference_results_stream", f"{i}-0")
                for i in range(n)
            ]  # fmt: skip
            columns = INFERENCE_COLUMNS
            async with pool.acquire() as conn:
                await conn.copy_records_to_table("inference_results", records=rows, columns=columns)
        finally:
            await pool.close()

    asyncio.run(go())


def test_the_models_page_draws_the_charts_of_10000_results_over_24h_in_under_a_second(
    r: syncredis.Redis, redis_url: str, database_url: str, chrome: Any, tmp_path: Path
) -> None:
    """The models panel (adserving) for a model with 10,000 inference results over 24 h: the
    figures and four charts (requests, p50/p95/p99 latency, confidence, anomaly rate) are
    drawn, and the page loads in under a second."""
    from support.dashboard import served_in_thread

    from streamtasks.adserving.dashboard import ModelsPanel

    store_inference_rows(database_url, "fraud", 10_000, 24)
    panel = ModelsPanel(dsn=lambda: database_url).panel()
    with served_in_thread(redis_url, panels=[panel]) as url:
        loads = []
        for _ in range(3):
            started = time.perf_counter()
            chrome.get(url + "/panels/models?model=fraud&hours=24")
            loads.append(time.perf_counter() - started)
        timing = chrome.execute_script(
            "const t = performance.getEntriesByType('navigation')[0]; return [t.responseEnd, t.loadEventEnd];"
        )
        shot(chrome, tmp_path, "models")
        figures = {
            e.find_element("css selector", "span").text: e.find_element("css selector", "b").text
            for e in chrome.find_elements("css selector", ".figures div")
        }
        charts = chrome.find_elements("css selector", "svg.chart")
        lines = chrome.find_elements("css selector", "svg.chart polyline.series")
        chart_count, line_count = len(charts), len(lines)
        chrome.get(url + "/")
        postgresql = chrome.execute_script(  # one script run: live updates swap these rows
            "const row = document.querySelector('#services tr[data-service=\"postgresql\"]');"
            "return row ? row.innerText : '';"
        )
    print(f"models page: loads {[f'{s * 1000:.0f} ms' for s in loads]} (first with a cold pool); "
          f"navigation response {timing[0]:.0f} ms, load event {timing[1]:.0f} ms")  # fmt: skip
    assert figures["requests"] == "10,000"
    assert (chart_count, line_count) == (4, 6)  # requests, p50/p95/p99, confidence, anomaly rate
    assert max(loads[1:]) < 1.0 and timing[1] < 1000
    assert "healthy" in postgresql and database_url.split("@")[0] not in chrome.page_source
