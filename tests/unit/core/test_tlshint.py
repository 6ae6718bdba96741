"""The hint a failed connection gets when TLS is the likely cause (``streamtasks.tlshint``):
``redis://`` is suggested only when the server answered in plain text or not at all; a
handshake the server ended names the client certificate and the version/cipher causes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis import exceptions as rx

from streamtasks import tlshint
from streamtasks.tlshint import TlsTrouble, classify, error_text, tls_hint

#: Error texts seen from redis-py 8 / OpenSSL 3.0 against real servers (tests/integration/test_tls.py).
SEEN: list[tuple[str, TlsTrouble]] = [
    # rediss:// with only ssl_ca_certs to `tls-auth-clients yes`: the alert, or the reset that overtook it
    (
        "Error while reading from 127.0.0.1:1 : (1, '[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] "
        "tlsv13 alert certificate required (_ssl.c:2580)')",
        TlsTrouble.CLIENT_CERT,
    ),
    (
        "Error while reading from 127.0.0.1:1 : (104, 'Connection reset by peer')",
        TlsTrouble.HANDSHAKE_REFUSED,
    ),
    # a server that closed as soon as the ClientHello came: redis-py's text names no cause
    (
        "ConnectionError: Error connecting to 127.0.0.1:1. | ConnectionResetError: ",
        TlsTrouble.HANDSHAKE_REFUSED,
    ),
    (
        "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation of protocol",
        TlsTrouble.HANDSHAKE_REFUSED,
    ),
    ("[SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] sslv3 alert handshake failure", TlsTrouble.HANDSHAKE_REFUSED),
    # a plain server that answered (a Redis error line, an HTTP reply, a banner)
    (
        "Error 1 connecting to 127.0.0.1:1. [SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006).",
        TlsTrouble.PLAIN_REPLY,
    ),
    ("[SSL: RECORD_LAYER_FAILURE] record layer failure (_ssl.c:1010)", TlsTrouble.PLAIN_REPLY),
    ("[SSL: PACKET_LENGTH_TOO_LONG] packet length too long", TlsTrouble.PLAIN_REPLY),
    # a plain Redis waiting for the end of the "command" the ClientHello began
    ("TimeoutError: Timeout connecting to server", TlsTrouble.NO_ANSWER),
    ("[SSL: TLSV1_ALERT_PROTOCOL_VERSION] tlsv1 alert protocol version", TlsTrouble.VERSION_OR_CIPHER),
    ("[SSL: NO_CIPHERS_AVAILABLE] no ciphers available", TlsTrouble.VERSION_OR_CIPHER),
    (
        "Error 1 connecting to h:1. [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
        "self-signed certificate in certificate chain (_ssl.c:1006).",
        TlsTrouble.UNTRUSTED,
    ),
    ("[SSL] some new OpenSSL complaint", TlsTrouble.OTHER_TLS),
]


@pytest.mark.parametrize(("said", "trouble"), SEEN)
def test_what_the_server_did_is_told_apart(said: str, trouble: TlsTrouble) -> None:
    assert classify(True, said) is trouble


def test_redis_is_suggested_only_when_the_server_answered_in_plain_text_or_not_at_all() -> None:
    suggests = {t for t in TlsTrouble if "use redis://" in t.value}
    assert suggests == {TlsTrouble.PLAIN_REPLY, TlsTrouble.NO_ANSWER}


def test_a_reset_during_the_handshake_names_the_client_certificate_not_a_plain_port() -> None:
    error = rx.ConnectionError("Error while reading from h:1 : (104, 'Connection reset by peer')")
    hint = tls_hint("rediss://h:1/0?ssl_ca_certs=/ca.crt", error)
    assert "client certificate" in hint and "ssl_certfile" in hint and "TLS version or cipher" in hint
    assert "use redis://" not in hint


def test_the_cause_under_a_bare_message_is_read() -> None:
    try:
        try:
            raise ConnectionResetError()
        except ConnectionResetError as reset:
            raise rx.ConnectionError("Error connecting to 127.0.0.1:1.") from reset
    except rx.ConnectionError as error:
        assert classify(True, error_text(error)) is TlsTrouble.HANDSHAKE_REFUSED


def test_rediss_cluster_urls_are_tls_too() -> None:
    error = rx.TimeoutError("Timeout connecting to server")
    assert "use redis://" in tls_hint("rediss+cluster://h:1/0", error)
    assert "use redis://" in tls_hint("REDISS://h:1/0", error)


def test_plain_redis_to_a_tls_port_suggests_rediss() -> None:
    error = rx.ConnectionError("Error while reading from h:1 : (104, 'Connection reset by peer')")
    assert tls_hint("redis://h:1/0", error) == " (if this port expects TLS, use rediss://)"


def test_no_server_or_no_such_host_is_not_a_tls_problem() -> None:
    for said in (
        "Error 111 connecting to h:1. Connection refused.",
        "Error -2 connecting to h:1. Name or service not known.",
    ):
        assert tls_hint("rediss://h:1/0", rx.ConnectionError(said)) == ""
        assert tls_hint("redis://h:1/0", rx.ConnectionError(said)) == ""


def test_a_cycle_of_chained_exceptions_ends() -> None:
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a
    assert error_text(a) == "ValueError: a | ValueError: b"


# -- properties over arbitrary error texts -----------------------------------------------------

MARKERS = [
    *tlshint.NOT_TLS,
    *tlshint.PLAIN_REPLY,
    *tlshint.CERT_REQUIRED,
    *tlshint.UNTRUSTED,
    *tlshint.VERSION_OR_CIPHER,
    *tlshint.ENDED,
    *tlshint.TIMED_OUT,
    *tlshint.SOME_TLS,
]
#: Arbitrary text with the words the classifier looks for mixed in, in any case.
texts = st.lists(st.one_of(st.text(max_size=20), st.sampled_from(MARKERS)), max_size=6).map(" ".join)
cased = texts.flatmap(lambda t: st.sampled_from([t, t.upper(), t.title()]))
#: Text none of whose characters can form a marker (no letters).
noise = st.text(alphabet=st.characters(categories=["Nd", "P", "Zs"]), max_size=30)


@settings(deadline=None)  # pure and fast; a loaded machine must not fail it
@given(cased)
def test_redis_is_suggested_only_for_a_plain_answer_or_none(said: str) -> None:
    """``use redis://`` only when the text says the server answered in plain text or timed out;
    never when it names a certificate or no server at all; and a reset or EOF only together
    with a plain-text answer (the plain server's answer, then its hang-up)."""
    trouble = classify(True, said)
    if trouble is not None and "use redis://" in trouble.value:
        lower = said.lower()
        assert any(w in lower for w in (*tlshint.PLAIN_REPLY, *tlshint.TIMED_OUT))
        assert not any(w in lower for w in (*tlshint.NOT_TLS, *tlshint.CERT_REQUIRED, *tlshint.UNTRUSTED))
        if any(w in lower for w in tlshint.ENDED):
            assert any(w in lower for w in tlshint.PLAIN_REPLY)


@settings(deadline=None)  # pure and fast; a loaded machine must not fail it
@given(noise, st.sampled_from(tlshint.ENDED), noise)
def test_a_handshake_the_server_ended_never_sends_the_user_to_redis(
    before: str, ended: str, after: str
) -> None:
    trouble = classify(True, f"{before}{ended}{after}")
    assert trouble is TlsTrouble.HANDSHAKE_REFUSED
    assert "client certificate" in trouble.value and "use redis://" not in trouble.value


@settings(deadline=None)  # pure and fast; a loaded machine must not fail it
@given(noise, st.sampled_from(tlshint.PLAIN_REPLY), noise)
def test_a_plain_text_answer_suggests_redis(before: str, plain: str, after: str) -> None:
    assert classify(True, f"{before}{plain.upper()}{after}") is TlsTrouble.PLAIN_REPLY


@settings(deadline=None)  # pure and fast; a loaded machine must not fail it
@given(st.text(), st.text())
def test_any_url_and_error_give_a_hint_or_nothing_and_never_fail(url: str, message: str) -> None:
    hint = tls_hint(url, rx.ConnectionError(message))
    assert hint == "" or ("TLS" in hint and hint.startswith(" (") and hint.endswith(")"))
    if not tlshint.is_tls_url(url):
        assert "use redis://" not in hint
