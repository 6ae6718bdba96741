"""Redis URLs from outside (an option, an environment variable): any string is either a client
or one line naming the problem, never a traceback (property tests)."""

from __future__ import annotations

import asyncio

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtasks.cli.common import one_line, redis_client

SCHEMES = st.sampled_from(["", "redis://", "rediss://", "unix://", "http://", "redis:", "redis:///"])
URLS = st.builds(lambda scheme, rest: scheme + rest, SCHEMES, st.text(max_size=60))


def client_or_line(url: str) -> str | None:
    """None for a usable client, else the one-line message."""
    try:
        client = redis_client(url)
    except click.ClickException as exc:
        return exc.format_message()
    asyncio.run(client.aclose())
    return None


@settings(max_examples=300, deadline=None)
@given(URLS)
def test_any_redis_url_is_a_client_or_one_line(url: str) -> None:
    message = client_or_line(url)
    if message is not None:
        assert "\n" not in message and "\r" not in message
        assert message.startswith("bad Redis URL")


@pytest.mark.parametrize("url", ["redis://:hunter2pw@h:abc/0", "http://u:hunter2pw@x"])
def test_a_bad_url_does_not_repeat_its_password(url: str) -> None:
    message = client_or_line(url)
    assert message is not None and "hunter2pw" not in message


@given(st.text())
def test_one_line_never_returns_a_line_break_or_an_empty_string(text: str) -> None:
    line = one_line(ValueError(text))
    assert line and not any(c in line for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
