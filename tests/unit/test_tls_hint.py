"""The hint a failed connection gets when TLS is the likely cause (``redisutil.tls_hint``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from redis import exceptions as rx

from streamtasks.redisutil import tls_hint


def test_rediss_to_a_plain_port_times_out_and_the_hint_says_tls() -> None:
    hint = tls_hint("rediss://h:1/0", rx.TimeoutError("Timeout connecting to server"))
    assert "rediss:// means TLS" in hint and "is this a TLS port?" in hint


def test_a_certificate_problem_points_at_the_url_settings() -> None:
    error = rx.ConnectionError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    assert "ssl_ca_certs" in tls_hint("rediss://h:1/0?ssl_ca_certs=/x", error)


def test_plain_redis_to_a_tls_port_suggests_rediss() -> None:
    error = rx.ConnectionError("Error while reading from h:1 : (104, 'Connection reset by peer')")
    assert tls_hint("redis://h:1/0", error) == " (if this port expects TLS, use rediss://)"
    assert tls_hint("redis://h:1/0", rx.ConnectionError("Connection refused")) == ""


@given(st.text(), st.text())
def test_any_url_and_error_give_a_hint_or_nothing_and_never_fail(url: str, message: str) -> None:
    hint = tls_hint(url, rx.ConnectionError(message))
    assert hint == "" or "TLS" in hint
