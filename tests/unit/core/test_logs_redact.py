"""Log configuration and secret redaction (``streamtasks.logs``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from streamtasks import logs
from streamtasks.cli import main

PASSWORD = "Sup3r-s3cret!pw"
TREES = ("streamtasks", "async_processing")


@pytest.fixture(autouse=True)
def restore_loggers() -> Iterator[None]:
    """``configure`` changes process-wide loggers and the secret set: put them back after."""
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate)
             for n in TREES}  # fmt: skip
    secrets = set(logs._known_secrets)
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate
    logs._known_secrets.clear()
    logs._known_secrets.update(secrets)


def test_redact_hides_the_password_of_a_url_and_keeps_the_rest() -> None:
    text = logs.redact(f"cannot reach redis://default:{PASSWORD}@cache.internal:6379/0 (refused)")
    assert PASSWORD not in text
    assert text == "cannot reach redis://default:***@cache.internal:6379/0 (refused)"
    assert logs.redact(f"postgresql://app:{PASSWORD}@db/x") == "postgresql://app:***@db/x"
    assert logs.redact(f"rediss://:{PASSWORD}@h:6380") == "rediss://:***@h:6380"


def test_redact_hides_password_and_token_pairs() -> None:
    for text in (
        f"password={PASSWORD}",
        f"PASSWORD: {PASSWORD}",
        f"token='{PASSWORD}'",
        f"a=1&pwd={PASSWORD}&b=2",
    ):
        assert PASSWORD not in logs.redact(text), text
    assert logs.redact("host=db password=abc123 port=5432") == "host=db password=*** port=5432"


def test_redact_hides_registered_secrets_anywhere() -> None:
    logs.register_secret("plain-value-xyz")
    assert logs.redact("auth failed for plain-value-xyz on h") == "auth failed for *** on h"
    logs.register_secret("")  # empty and tiny values are not registered (they'd scrub everything)
    logs.register_secret("ab")
    assert logs.redact("ab cd") == "ab cd"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_logged_exception_with_a_url_in_its_message_does_not_leak_the_password(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The message, its %-args and the traceback text all go through ``redact``."""
    logs.configure("INFO", fmt)
    url = f"redis://user:{PASSWORD}@10.0.0.5:6379/0"
    try:
        raise ConnectionError(f"Error 111 connecting to {url}. Connection refused.")
    except ConnectionError:
        logging.getLogger("streamtasks.worker").exception("lost Redis at %s", url)
    err = capsys.readouterr().err
    assert "lost Redis at redis://user:***@10.0.0.5:6379/0" in err
    assert "ConnectionError: Error 111 connecting to redis://user:***@" in err.replace("\\n", "\n")
    assert PASSWORD not in err
    if fmt == "json":
        record = json.loads(err.strip().splitlines()[-1])
        assert record["logger"] == "streamtasks.worker" and record["level"] == "ERROR" and "exc" in record


def test_seed_logger_names_are_aliases_of_the_streamtasks_tree(capsys: pytest.CaptureFixture[str]) -> None:
    """``async_processing.producer`` / ``.consumer`` (the seed's names) log like ours: same
    handler, level, format and redaction."""
    logs.configure("WARNING", "json")
    logging.getLogger("async_processing.producer").warning("producer says password=%s", PASSWORD)
    logging.getLogger("async_processing.consumer").info("hidden below WARNING")
    logging.getLogger("streamtasks.producer").warning("ours")
    lines = [json.loads(line) for line in capsys.readouterr().err.strip().splitlines()]
    assert [(r["logger"], r["msg"]) for r in lines] == [
        ("async_processing.producer", "producer says password=***"),
        ("streamtasks.producer", "ours"),
    ]


CLEAN_LOG_ENV = {"DEBUG_ENABLED": None, "ASYNC_PROCESSING_LOG_LEVEL": None, "STREAMTASKS_LOG_LEVEL": None}


@pytest.mark.parametrize(
    ("env", "level"), [({"STREAMTASKS_LOG_LEVEL": "ERROR"}, logging.ERROR), ({}, logging.INFO)]
)
def test_worker_honours_the_log_level_environment(env: dict[str, str], level: int) -> None:
    """The worker configures logging before it loads the app, so a missing app still shows it."""
    result = CliRunner().invoke(main, ["worker", "no_such_module_xyz:registry"], env={**CLEAN_LOG_ENV, **env})
    assert result.exit_code == 1 and "no_such_module_xyz" in result.output
    for name in TREES:
        assert logging.getLogger(name).level == level


@pytest.mark.parametrize(
    ("env", "level"),
    [
        ({"DEBUG_ENABLED": "true"}, logging.DEBUG),
        ({"ASYNC_PROCESSING_LOG_LEVEL": "WARNING"}, logging.WARNING),
        ({"DEBUG_ENABLED": "true", "STREAMTASKS_LOG_LEVEL": "ERROR"}, logging.ERROR),
    ],
)
def test_the_adserving_registry_brings_the_seed_log_variables(env: dict[str, str], level: int) -> None:
    """``DEBUG_ENABLED`` / ``ASYNC_PROCESSING_LOG_LEVEL`` apply to a worker serving the built-ins
    (the core names no product variable); an explicit ``STREAMTASKS_LOG_LEVEL`` wins."""
    import importlib

    import streamtasks.adserving.handlers
    import streamtasks.builtins

    with pytest.MonkeyPatch.context() as mp:
        for name, value in {**CLEAN_LOG_ENV, **env}.items():
            if value is None:
                mp.delenv(name, raising=False)
            else:
                mp.setenv(name, value)
        importlib.reload(streamtasks.adserving.handlers)
        importlib.reload(streamtasks.builtins)
        argv = ["worker", "streamtasks.builtins:registry", "--redis-url", "redis://127.0.0.1:1/0"]
        result = CliRunner().invoke(main, argv)
    importlib.reload(streamtasks.adserving.handlers)
    importlib.reload(streamtasks.builtins)
    assert result.exit_code == 1, result.output
    for name in TREES:
        assert logging.getLogger(name).level == level
