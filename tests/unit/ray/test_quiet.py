"""Ray's "SIGTERM handler is not set" and "Token authentication is enabled for this Ray
cluster" warnings are dropped, and only they (pure logic)."""

from __future__ import annotations

import logging

import pytest

from streamtasks.ray.quiet import (
    SIGTERM_NOT_SET,
    TOKEN_AUTH_LOGGER,
    TOKEN_AUTH_ON,
    quiet_sigterm_warning,
    quiet_token_auth_warning,
)


def _passes(message: str) -> bool:
    record = logging.LogRecord("ray._private.worker", logging.WARNING, __file__, 1, message, None, None)
    return logging.getLogger("ray._private.worker").filter(record) is not False


@pytest.mark.parametrize(
    "other",
    ["Token authentication is enabled for this Ray cluster.", SIGTERM_NOT_SET + " (again)", "SIGTERM"],
)
def test_only_the_sigterm_warning_is_dropped_and_the_filter_is_added_once(other: str) -> None:
    quiet_sigterm_warning()
    quiet_sigterm_warning()
    assert len(logging.getLogger("ray._private.worker").filters) == 1
    assert not _passes(SIGTERM_NOT_SET)
    assert _passes(other)


def _auth_passes(message: str) -> bool:
    record = logging.LogRecord(TOKEN_AUTH_LOGGER, logging.WARNING, __file__, 1, message, None, None)
    return logging.getLogger(TOKEN_AUTH_LOGGER).filter(record) is not False


@pytest.mark.parametrize(
    "other",
    [
        "Token authentication is disabled for this Ray cluster. Anyone with network access ...",
        "Token authentication is enabled but no token was found.",
        SIGTERM_NOT_SET,
    ],
)
def test_only_the_token_auth_on_warning_is_dropped_and_the_filter_is_added_once(other: str) -> None:
    """Ray's words, as Ray 2.60 logs them (the opt-out advice follows the first sentence)."""
    quiet_token_auth_warning()
    quiet_token_auth_warning()
    assert len(logging.getLogger(TOKEN_AUTH_LOGGER).filters) == 1
    assert not _auth_passes(
        f"{TOKEN_AUTH_ON} Set RAY_AUTH_MODE=disabled to opt out. For more information, see ..."
    )
    assert _auth_passes(other)
