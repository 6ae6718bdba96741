"""The ``streamtasks`` command in a subprocess, as a user types it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: Where the test apps are imported from (``tests/integration``; ``tests/apps`` is on the path).
HERE = Path(__file__).resolve().parents[1] / "integration"
CLI = [sys.executable, "-m", "streamtasks"]


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path = HERE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, cwd=cwd, env={**os.environ, **(env or {})}
    )
