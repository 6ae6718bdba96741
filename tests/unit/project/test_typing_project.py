"""mypy --strict on a small user project: typed handlers' send() takes their type only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PROJECT = ROOT / "tests" / "typing_project"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mypy cache for both runs: the second one reuses streamtasks' and its deps' types."""
    return tmp_path_factory.mktemp("mypy-cache")


def mypy(path: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file=", f"--cache-dir={cache}", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_typed_and_message_handlers_type_check(cache: Path) -> None:
    done = mypy(PROJECT / "good.py", cache)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_rejects_a_mapping_sent_to_a_typed_handler(cache: Path) -> None:
    done = mypy(PROJECT / "bad.py", cache)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        'Argument 1 to "send" of "TypedHandler" has incompatible type "dict[str, int]"; expected "Order"'
        in (done.stdout)
    )
