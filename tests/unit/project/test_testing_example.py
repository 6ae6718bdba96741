"""The testing guide's "Testing your handlers" example (docs/guides/testing.md), verbatim, in
a new project: its files in an empty directory, run by ``python -m pytest`` with no
configuration of ours (an empty ``pytest.ini`` of its own, no conftest, no cache), with
pytest-asyncio (its default strict mode) and without it. The files are read from the page at
test time (:mod:`support.doc_examples`)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

from support.doc_examples import example_files

ROOT = Path(__file__).resolve().parents[3]
#: Where the example lives (the page and its section heading).
PAGE, HEADING = ROOT / "docs" / "guides" / "testing.md", "Testing your handlers"
#: pytest-asyncio's own notice, at start-up, in any project that does not set this option.
PYTEST_ASYNCIO_NOTICE = "asyncio_default_fixture_loop_scope"
#: No Redis listens here: an example that tried to reach one would fail.
CLOSED_PORT_URL = "redis://127.0.0.1:1/0"


def new_project(where: Path) -> Path:
    """The example's files, and an empty ``pytest.ini`` so no configuration above is found."""
    where.mkdir()
    for name, source in example_files(PAGE, HEADING).items():
        (where / name).write_text(source, encoding="utf-8")
    (where / "pytest.ini").write_text("", encoding="utf-8")
    return where


def run_pytest(project: Path, *options: str) -> subprocess.CompletedProcess[str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PYTHONPATH", "REDIS"))}
    config = ["--rootdir", str(project), "-c", str(project / "pytest.ini"), "-p", "no:cacheprovider"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *config, *options],
        cwd=project,
        env={**keep, "REDIS_URL": CLOSED_PORT_URL},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_example_has_its_app_and_its_tests() -> None:
    files = example_files(PAGE, HEADING)
    assert {"shop.py", "test_shop.py"} <= set(files)
    assert "async def test_" in files["test_shop.py"] and "streamtasks_app" in files["test_shop.py"]


#: The two setups a new project may have: pytest-asyncio installed (default strict mode), or not.
SETUPS = {"with pytest-asyncio (strict)": (), "without pytest-asyncio": ("-p", "no:asyncio")}


async def test_the_readme_example_runs_verbatim_in_a_new_project(tmp_path: Path) -> None:
    """Both setups at once (each a pytest of its own, a few seconds)."""
    runs = await asyncio.gather(
        *(
            asyncio.to_thread(run_pytest, new_project(tmp_path / f"shop{n}"), *options)
            for n, options in enumerate(SETUPS.values())
        )
    )
    for setup, done in zip(SETUPS, runs, strict=True):
        out = f"{setup}:\n{done.stdout}{done.stderr}"
        assert done.returncode == 0, out
        assert "2 passed" in out and "skipped" not in out, out
        warned = [line for line in out.splitlines() if re.search(r"\w+Warning: |warnings? summary", line)]
        assert all(PYTEST_ASYNCIO_NOTICE in line for line in warned), out
