"""Every command, every bad value: a malformed URL, a closed port, a wrong password. Each gets
one line of output, the documented exit status (``streamtasks.cli.common``) and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.procs import free_port

from streamtasks.cli.common import EXIT_ERROR, EXIT_UNHEALTHY, EXIT_USAGE

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.integration
SECRET = "s3cretpw9"

#: Every command, with arguments that are valid apart from the URL; "redis" or "db" says which.
COMMANDS: list[tuple[list[str], str]] = [
    (["worker", "core_app:registry"], "redis"),
    (["send", "orders", "a=1"], "redis"),
    (["dlq", "list", "orders"], "redis"),
    (["dlq", "show", "orders", "1-0"], "redis"),
    (["dlq", "replay", "orders", "--all"], "redis"),
    (["dlq", "purge", "orders", "--id", "1-0"], "redis"),
    (["status"], "redis"),
    (["status", "core_app:registry"], "redis"),
    (["db", "init"], "db"),
    (["db", "status"], "db"),
    (["stats", "fraud_detection"], "db"),
]
IDS = [" ".join(argv) for argv, _ in COMMANDS]


def run_cli(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    return subprocess.run(
        [sys.executable, "-m", "streamtasks", *argv], capture_output=True, text=True, timeout=60,
        cwd=HERE, env={**clean, "COLUMNS": "300", **env},
    )  # fmt: skip


def url_option(kind: str, url: str) -> list[str]:
    return ["--redis-url" if kind == "redis" else "--database-url", url]


def assert_one_line(out: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    text = (out.stdout + out.stderr).strip()
    assert out.returncode == code, text
    assert "Traceback" not in text and SECRET not in text, text
    assert len(text.splitlines()) == 1, text
    for word in words:
        assert word in text, text
    return text


MALFORMED = {
    "redis": ["http://x", "redis://h:abc/0", "redis://[::1"],
    "db": ["http://x", "postgresql://h:abc/db"],
}


@pytest.mark.parametrize(("argv", "kind"), COMMANDS, ids=IDS)
def test_a_malformed_url_is_one_line_and_exit_1(argv: list[str], kind: str) -> None:
    for url in MALFORMED[kind]:
        assert_one_line(run_cli([*argv, *url_option(kind, url)]), EXIT_ERROR, "bad")


@pytest.mark.parametrize(("argv", "kind"), COMMANDS, ids=IDS)
def test_a_closed_port_is_one_line_and_exit_1_or_unhealthy_for_status(argv: list[str], kind: str) -> None:
    port = free_port()
    url = f"redis://:{SECRET}@127.0.0.1:{port}/0" if kind == "redis" else (
        f"postgresql://u:{SECRET}@127.0.0.1:{port}/db"
    )  # fmt: skip
    code = EXIT_UNHEALTHY if argv[0] == "status" else EXIT_ERROR
    assert_one_line(run_cli([*argv, *url_option(kind, url)]), code, "unreachable" if code == 3 else "reach")


@pytest.fixture(scope="module")
def redis_with_password(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A throwaway redis-server that requires the password ``right``."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--requirepass", "right",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path_factory.mktemp("redis-pw"))],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        import redis

        client = redis.Redis(port=port, password="right")
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                import time

                time.sleep(0.05)
        client.close()
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize(("argv", "kind"), [c for c in COMMANDS if c[1] == "redis"], ids=IDS[:8])
def test_a_wrong_redis_password_is_one_line_and_exit_1(
    argv: list[str], kind: str, redis_with_password: int
) -> None:
    port = redis_with_password
    for url in (f"redis://:{SECRET}@127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/0"):
        assert_one_line(run_cli([*argv, *url_option(kind, url)]), EXIT_ERROR, "refused the credentials")


@pytest.mark.parametrize(("argv", "kind"), COMMANDS, ids=IDS)
def test_every_command_states_the_exit_codes_in_its_help_and_exits_2_on_a_usage_error(
    argv: list[str], kind: str
) -> None:
    command = argv[:2] if argv[0] in ("dlq", "db") else argv[:1]
    help_text = run_cli([*command, "--help"])
    assert help_text.returncode == 0
    flat = " ".join(help_text.stdout.split())
    assert (
        "Exit status: 0 success; 1 an error" in flat and "2 a usage error" in flat and "3 unhealthy" in flat
    )
    usage = run_cli([*argv, "--no-such-option"])
    assert usage.returncode == EXIT_USAGE and "No such option" in usage.stderr
    assert "Traceback" not in usage.stderr


DSNS = st.builds(
    lambda scheme, rest: scheme + rest,
    st.sampled_from(["", "postgresql://", "postgres://", "http://", "postgresql://u:pw@"]),
    st.text(max_size=40),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dsn=DSNS)
def test_any_database_url_is_one_line_or_a_connection(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the DSN, the db commands' error handling gives one line (or connects)."""
    from streamtasks.adserving import db
    from streamtasks.adserving.cli import _run_db

    closed = str(free_port())
    monkeypatch.setenv("PGHOST", "127.0.0.1")  # a DSN without a host must not find a real server
    monkeypatch.setenv("PGPORT", closed)

    async def probe() -> None:
        pool = await db.create_pool(dsn, min_size=1, max_size=1, timeout=2)
        await pool.close()

    try:
        _run_db(probe())
    except click.ClickException as exc:
        assert "\n" not in exc.format_message()
