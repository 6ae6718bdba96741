"""Ray's "SIGTERM handler is not set" warning is dropped, and only it (pure logic)."""

from __future__ import annotations

import logging

import pytest

from streamtasks.ray.start import SIGTERM_NOT_SET, _quiet_sigterm_warning


def _passes(message: str) -> bool:
    record = logging.LogRecord("ray._private.worker", logging.WARNING, __file__, 1, message, None, None)
    return logging.getLogger("ray._private.worker").filter(record) is not False


@pytest.mark.parametrize(
    "other",
    ["Token authentication is enabled for this Ray cluster.", SIGTERM_NOT_SET + " (again)", "SIGTERM"],
)
def test_only_the_sigterm_warning_is_dropped_and_the_filter_is_added_once(other: str) -> None:
    _quiet_sigterm_warning()
    _quiet_sigterm_warning()
    assert len(logging.getLogger("ray._private.worker").filters) == 1
    assert not _passes(SIGTERM_NOT_SET)
    assert _passes(other)
