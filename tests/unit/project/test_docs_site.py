"""The docs site (issue 30): ``mkdocs build --strict`` passes offline, and its reference has
every public name (``streamtasks.__all__``) and every command of ``streamtasks``, including
those other packages add through entry points (``db``, ``stats``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

import streamtasks
from streamtasks.cli import main

ROOT = Path(__file__).resolve().parents[3]
BUILD_TIMEOUT_S = 120


def _offline(argv: list[str]) -> list[str]:
    """``argv`` in a network namespace of its own (no route anywhere) where this user may make
    one, so a plugin or theme that fetched anything at build time would fail the build."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True, check=False).returncode == 0:
        return [unshare, "-rn", *argv]
    return argv


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    mkdocs = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        _offline(mkdocs), cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=BUILD_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout[-3000:]}{done.stderr[-5000:]}"
    return out


def test_the_reference_documents_every_public_name(site: Path) -> None:
    page = (site / "reference" / "api" / "index.html").read_text()
    missing = [name for name in streamtasks.__all__ if f'id="streamtasks.{name}"' not in page]
    assert not missing, f"not in the API reference: {missing}"


def _command_ids(group: click.Group, ctx: click.Context, prefix: str) -> list[str]:
    ids = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        ids.append(f"{prefix}-{name}")
        if isinstance(command, click.Group):
            sub_ctx = click.Context(command, parent=ctx, info_name=name)
            ids += _command_ids(command, sub_ctx, f"{prefix}-{name}")
    return ids


def test_the_cli_reference_has_every_command(site: Path) -> None:
    """What ``streamtasks --help`` lists (the entry points' ``db`` and ``stats`` too) and every
    subcommand of a group, each with its own heading."""
    ids = _command_ids(main, click.Context(main, info_name="streamtasks"), "streamtasks")
    expected = {"streamtasks-worker", "streamtasks-db-init", "streamtasks-stats", "streamtasks-dlq-replay"}
    assert expected <= set(ids)
    page = (site / "reference" / "cli" / "index.html").read_text()
    missing = [anchor for anchor in ids if f'id="{anchor}"' not in page]
    assert not missing, f"not in the command-line reference: {missing}"
