"""Configuration from the environment and a .env file: values, precedence, errors, secrets."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamtasks.adserving.config import AsyncProcessingConfig, ConsumerConfig, DatabaseConfig, load_env
from streamtasks.config import DEFAULT_MODE, MODES, env_bool, env_choice
from streamtasks.errors import ConfigError
from streamtasks.logs import redact

ROOT = Path(__file__).resolve().parents[3]


def test_defaults_without_any_variable() -> None:
    """An empty environment gives local defaults and the built-in stream names."""
    cfg = AsyncProcessingConfig.from_env({}, env_file=None)
    assert cfg.database.dsn == "postgresql://postgres@127.0.0.1:5432/streamtasks"
    assert cfg.redis.url == "redis://127.0.0.1:6379/0"
    assert cfg.consumer == ConsumerConfig()
    assert cfg.consumer.batch_size == 1000
    assert cfg.consumer.streams == ("training_data_stream", "inference_results_stream")
    assert cfg.consumer.mode == "actors"  # as for `streamtasks worker`
    assert (cfg.enabled, cfg.log_level, cfg.debug) == (True, "INFO", False)


def test_values_from_variables() -> None:
    """Every documented variable is read."""
    cfg = AsyncProcessingConfig.from_env(
        {
            "REDIS_HOST": "redis.local", "REDIS_PORT": "6380",
            "DATABASE_HOST": "db.local", "DATABASE_PORT": "5433", "DATABASE_NAME": "ads",
            "DATABASE_USER": "app", "DATABASE_PASSWORD": "p@ss/word",
            "ASYNC_PROCESSING_ENABLED": "no", "ASYNC_PROCESSING_NUM_WORKERS": "3",
            "CONSUMER_BATCH_SIZE": "250", "CONSUMER_BLOCK_MS": "50",
            "DEBUG_ENABLED": "YES", "ASYNC_PROCESSING_LOG_LEVEL": "debug",
            "TRAINING_DATA_STREAM": "t", "INFERENCE_RESULTS_STREAM": "i", "STREAMTASKS_MODE": "tasks",
        },
        env_file=None,
    )  # fmt: skip
    assert cfg.redis.host == "redis.local" and cfg.redis.port == 6380
    assert cfg.database.dsn == "postgresql://app:p%40ss%2Fword@db.local:5433/ads"
    assert cfg.consumer == ConsumerConfig(
        batch_size=250, num_workers=3, mode="tasks", block_ms=50, streams=("t", "i")
    )
    assert (cfg.enabled, cfg.debug, cfg.log_level) == (False, True, "DEBUG")


def test_database_url_wins() -> None:
    """DATABASE_URL overrides the DATABASE_* parts and is used as the DSN verbatim."""
    url = "postgresql://u:pw123@h:6000/d?sslmode=require"
    cfg = DatabaseConfig.from_env({"DATABASE_URL": url, "DATABASE_HOST": "ignored"})
    assert cfg.dsn == url
    assert (cfg.host, cfg.port, cfg.name, cfg.user, cfg.password) == ("h", 6000, "d", "u", "pw123")


def test_database_url_without_name_or_user_uses_defaults() -> None:
    """A bare DATABASE_URL fills database name and user with the defaults; parts are unquoted."""
    cfg = DatabaseConfig.from_env({"DATABASE_URL": "postgresql://h"})
    assert (cfg.host, cfg.port, cfg.name, cfg.user, cfg.password) == (
        "h",
        5432,
        "streamtasks",
        "postgres",
        None,
    )
    cfg = DatabaseConfig.from_env({"DATABASE_URL": "postgres://a%40b:p%2Fw@h/my%20db"})
    assert (cfg.user, cfg.password, cfg.name) == ("a@b", "p/w", "my db")


def test_env_file_is_overridden_by_real_environment(tmp_path: Path) -> None:
    """.env supplies values; a real environment variable of the same name wins."""
    env_file = tmp_path / ".env"
    env_file.write_text("CONSUMER_BATCH_SIZE=10\nDATABASE_NAME=from_file\n# comment\nDEBUG_ENABLED=true\n")
    cfg = AsyncProcessingConfig.from_env({"CONSUMER_BATCH_SIZE": "20"}, env_file=env_file)
    assert cfg.consumer.batch_size == 20
    assert cfg.database.name == "from_file"
    assert cfg.debug is True


def test_missing_env_file_is_ignored(tmp_path: Path) -> None:
    """A .env path that does not exist is skipped."""
    assert load_env({"A": "1"}, tmp_path / "nope.env") == {"A": "1"}


def test_env_template_lists_every_variable_and_loads() -> None:
    """The shipped .env.template is a valid configuration naming every variable read."""
    template = ROOT / ".env.template"
    text = template.read_text()
    for name in (
        "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_URL", "DATABASE_HOST",
        "DATABASE_PORT", "DATABASE_NAME", "DATABASE_USER", "DATABASE_PASSWORD", "DATABASE_URL",
        "ASYNC_PROCESSING_ENABLED", "ASYNC_PROCESSING_NUM_WORKERS", "CONSUMER_BATCH_SIZE",
        "CONSUMER_BLOCK_MS", "DEBUG_ENABLED", "ASYNC_PROCESSING_LOG_LEVEL",
        "TRAINING_DATA_STREAM", "INFERENCE_RESULTS_STREAM", "STREAMTASKS_MODE",
    ):  # fmt: skip
        assert name in text, name
    assert AsyncProcessingConfig.from_env({}, env_file=template) == AsyncProcessingConfig.from_env(
        {}, env_file=None
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_PORT", "abc"),
        ("DATABASE_PORT", "0"),
        ("REDIS_PORT", "x"),
        ("CONSUMER_BATCH_SIZE", "0"),
        ("CONSUMER_BATCH_SIZE", "ten"),
        ("ASYNC_PROCESSING_NUM_WORKERS", "-1"),
        ("CONSUMER_BLOCK_MS", "0"),
        ("ASYNC_PROCESSING_ENABLED", "maybe"),
        ("DEBUG_ENABLED", "2"),
        ("ASYNC_PROCESSING_LOG_LEVEL", "LOUD"),
        ("STREAMTASKS_MODE", "actor"),
        ("STREAMTASKS_MODE", "ACTORS"),
        ("TRAINING_DATA_STREAM", "has space"),
        ("DATABASE_URL", "mysql://h/d"),
        ("DATABASE_URL", "postgresql://h:port/d"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    """A value that cannot be used raises ConfigError naming its variable."""
    with pytest.raises(ConfigError, match=name):
        AsyncProcessingConfig.from_env({name: value}, env_file=None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("TRUE", True), ("1", True), ("yes", True), ("false", False),
     ("0", False), ("No", False), ("", True), (None, True)],
)  # fmt: skip
def test_env_bool(raw: str | None, expected: bool) -> None:
    """Booleans: true/false/1/0/yes/no in any case; empty or unset means the default."""
    env = {} if raw is None else {"FLAG": raw}
    assert env_bool(env, "FLAG", True) is expected


def test_passwords_never_in_repr_and_redacted_in_logs() -> None:
    """Passwords are not in any repr, safe_dsn hides them, and redact() scrubs them anywhere."""
    cfg = AsyncProcessingConfig.from_env(
        {"DATABASE_PASSWORD": "db-s3cret-1", "REDIS_PASSWORD": "redis-s3cret-2"}, env_file=None
    )
    text = repr(cfg)
    assert "db-s3cret-1" not in text and "redis-s3cret-2" not in text
    assert "db-s3cret-1" not in cfg.database.safe_dsn
    assert "db-s3cret-1" in cfg.database.dsn
    assert redact("auth failed for db-s3cret-1 / redis-s3cret-2") == "auth failed for *** / ***"


def test_password_from_database_url_is_registered() -> None:
    """A password inside DATABASE_URL is scrubbed from free text too."""
    cfg = DatabaseConfig.from_env({"DATABASE_URL": "postgresql://u:url-s3cret-3@h/d"})
    assert "url-s3cret-3" not in repr(cfg)
    assert redact("error: url-s3cret-3") == "error: ***"


@given(st.text(max_size=12))
def test_a_mode_is_one_of_the_clis_choices_or_an_error_naming_the_variable(raw: str) -> None:
    """STREAMTASKS_MODE takes what ``streamtasks worker --mode`` takes (blanks around it
    ignored; empty means the default), and refuses anything else naming the variable."""
    try:
        mode = env_choice({"STREAMTASKS_MODE": raw}, "STREAMTASKS_MODE", MODES, DEFAULT_MODE)
    except ConfigError as exc:
        assert "STREAMTASKS_MODE" in str(exc) and raw.strip() not in MODES and raw.strip()
    else:
        assert mode == (raw.strip() or DEFAULT_MODE)
        assert mode in click.Choice(list(MODES)).choices
