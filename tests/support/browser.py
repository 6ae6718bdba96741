"""A real headless Chromium for the dashboard tests, driven by selenium through Debian's
chromedriver (installed by ``scripts/services.py ensure-binaries``). Where Chromium cannot be
had, the tests skip with one line saying why; the network stays closed (no driver download)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from support import load_services

T = TypeVar("T")
CHROMIUM_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)  # fmt: skip


def open_chromium(profile: Path) -> Any:
    """A selenium Chrome on Debian's Chromium with a fresh profile in ``profile``."""
    services = load_services()
    browser, driver = services.find_chromium()
    if browser is None or driver is None:
        pytest.skip(
            "chromium/chromium-driver not installed (run scripts/services.py ensure-binaries as root)"
        )
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = str(browser)
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={profile}"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=str(driver)))


def close_chromium(driver: Any, profile: Path) -> None:
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except Exception:  # the DOM being swapped under us: try again
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
