"""``pip install streamtasks`` without the ``adserving`` extra: the framework works alone, and
what needs the product says in one line which extra to install.

The subprocesses run with asyncpg and python-dotenv made unimportable (a ``sitecustomize`` that
refuses them), as in an environment where the extra was never installed; a first test checks
that the refusal holds, so the others cannot pass by importing them after all."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from support.procs import ManagedProcess
from support.waiting import equals, wait_until

pytestmark = pytest.mark.integration

EXTRA_HINT = "pip install 'streamtasks[adserving]'"

BLOCK = '''
import sys

class _NotInstalled:
    """The adserving extra's packages, as if never installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("asyncpg", "dotenv"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
'''

PLAIN_APP = """
from streamtasks import Message, Registry

registry = Registry(group="plain")


@registry.stream_handler("plain")
async def on_plain(msg: Message) -> None:
    import redis.asyncio as redis
    import os

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    await client.sadd("plain:handled", msg.id)
    await client.aclose()
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory with the import blocker (on PYTHONPATH) and a plain app."""
    (tmp_path / "sitecustomize.py").write_text(BLOCK)
    (tmp_path / "plain_app.py").write_text(PLAIN_APP)
    return tmp_path


def run(project: Path, *argv: str, redis_url: str = "") -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(project), "REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, *argv], cwd=project, env=env, capture_output=True, text=True, timeout=60
    )


def test_without_the_extra_asyncpg_and_dotenv_do_not_import(project: Path) -> None:
    done = run(project, "-c", "import asyncpg")
    assert done.returncode != 0 and "No module named 'asyncpg'" in done.stderr
    done = run(project, "-c", "import dotenv")
    assert done.returncode != 0 and "No module named 'dotenv'" in done.stderr


def test_the_framework_imports_without_the_product(project: Path) -> None:
    probe = (
        "import sys, streamtasks, streamtasks.serve, streamtasks.worker, streamtasks.observe.inspect, "
        "streamtasks.cli; assert 'asyncpg' not in sys.modules and 'ray' not in sys.modules; "
        "print(sorted(streamtasks.__all__))"
    )
    done = run(project, "-c", probe)
    assert done.returncode == 0, done.stderr
    assert "AsyncProcessingSystem" not in done.stdout


def test_help_lists_the_products_commands_with_the_extra_to_install(project: Path) -> None:
    done = run(project, "-m", "streamtasks", "--help")
    assert done.returncode == 0, done.stderr
    db_line = next(line for line in done.stdout.splitlines() if line.strip().startswith("db"))
    assert "streamtasks[adserving]" in db_line


@pytest.mark.parametrize(
    "argv",
    [
        ("db", "init"),
        ("db", "status", "--json"),
        ("stats", "fraud_detection"),
        ("worker", "streamtasks.builtins:registry", "--executor", "inline"),
    ],
)
def test_what_needs_the_product_says_which_extra_in_one_line(project: Path, argv: tuple[str, ...]) -> None:
    done = run(project, "-m", "streamtasks", *argv, redis_url="redis://127.0.0.1:1/0")
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and EXTRA_HINT in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_the_facade_alias_names_the_extra(project: Path) -> None:
    done = run(project, "-c", "from streamtasks import AsyncProcessingSystem")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].endswith(EXTRA_HINT)


async def test_a_plain_app_is_served_and_inspected_without_the_extra(
    project: Path, redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    ids = [await redis.xadd("plain", {"n": str(i)}) for i in range(20)]
    env = {"PYTHONPATH": str(project), "REDIS_URL": redis_url}
    argv = [sys.executable, "-m", "streamtasks", "worker", "plain_app:registry", "--executor", "inline"]
    with ManagedProcess(argv, log_dir=tmp_path / "worker", env=env, cwd=project) as worker:
        await wait_until(lambda: equals(redis.scard("plain:handled"), len(ids)))
        assert await redis.smembers("plain:handled") == set(ids)
        argv = ["-m", "streamtasks", "status", "plain_app:registry", "--json"]
        status = await asyncio.to_thread(run, project, *argv, redis_url=redis_url)
        assert status.returncode == 0, status.stderr
        assert '"plain"' in status.stdout
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    stderr: Any = worker.stderr()
    assert "asyncpg" not in stderr and "Traceback" not in stderr


def test_the_products_dashboard_panel_shows_only_for_an_app_serving_its_handlers() -> None:
    """The Models tab and PostgreSQL's health belong to apps that serve the built-ins: the
    panel's entry point decides, the dashboard core asks it."""
    from streamtasks import Registry
    from streamtasks.builtins import registry as builtins
    from streamtasks.observe.dashboard import installed_panels

    plain = Registry(group="plain")
    plain.stream_handler("orders")(lambda msg: None)
    mixed = Registry(group="mixed")
    mixed.include(builtins)
    mixed.stream_handler("orders")(lambda msg: None)
    assert [p.name for p in installed_panels(plain)] == []
    assert [p.name for p in installed_panels(mixed)] == ["models"]
    assert [p.name for p in installed_panels(builtins)] == ["models"]
