"""What to add to a failed Redis connection's message when TLS is the likely cause: one place,
used by every command that connects (``worker``, ``send``, ``status``, ``dlq``, ``dashboard``).

The advice follows from what the server did with the TLS handshake, read from the error's
text and the exceptions chained under it (redis-py's own message can be as bare as "Error
connecting to host:port." over a ``ConnectionResetError``):

- it **answered in plain text** (OpenSSL: "wrong version number", "record layer failure",
  "packet length too long", "http request"): the port does not speak TLS; ``redis://``.
- it **never answered** (a timeout): a plain Redis reads the ClientHello as the start of an
  inline command and waits for the rest of the line; likely a plain port, so ``redis://``.
- it **asked for a certificate** (the "certificate required" alert): add one.
- it **reset or closed the connection** (or EOF) during the handshake: a TLS port that
  refused this client. Likely causes: a client certificate is required (over TLS 1.3 the
  reset can overtake the alert that would have said so), or no TLS version or cipher in
  common. Never ``redis://``: a plain Redis does not hang up on a ClientHello.
- its **certificate was not trusted**: ``ssl_ca_certs`` and the host name.

A ``redis://`` URL whose connection was reset or closed: a TLS port hangs up on plain text.
Anything else (refused, no such host, a protocol error) has nothing to do with TLS: no hint.
"""

from __future__ import annotations

import enum


class TlsTrouble(enum.Enum):
    """What the server did that points at TLS (the value is the advice, in parentheses)."""

    PLAIN_REPLY = (
        "rediss:// means TLS, and the server answered in plain text: this port does not speak "
        "TLS; use redis:// for a plain one"
    )
    NO_ANSWER = (
        "rediss:// means TLS, and the server did not answer the TLS handshake: is this a plain "
        "port? use redis:// for a plain one"
    )
    CLIENT_CERT = "TLS: the server requires a client certificate: add ssl_certfile and ssl_keyfile to the URL"
    HANDSHAKE_REFUSED = (
        "TLS: the server ended the handshake. Likely causes: it requires a client certificate, "
        "so add ssl_certfile and ssl_keyfile to the URL; or it shares no TLS version or cipher "
        "with this client, see the server's tls-protocols and tls-ciphers"
    )
    VERSION_OR_CIPHER = (
        "TLS: the server and this client share no TLS version or cipher, see the server's "
        "tls-protocols and tls-ciphers"
    )
    UNTRUSTED = (
        "TLS: the server's certificate is not trusted: ssl_ca_certs in the URL names the CA that "
        "signed it, and the host name must match the certificate"
    )
    OTHER_TLS = "TLS: check ssl_ca_certs, ssl_certfile, ssl_keyfile and ssl_cert_reqs in the URL"
    TLS_EXPECTED = "if this port expects TLS, use rediss://"


#: Nothing to do with TLS: no server there, or no such host.
NOT_TLS = (
    "connection refused",
    "name or service not known",
    "nodename nor servname",
    "no route to host",
    "temporary failure in name resolution",
    "no address associated",
)
#: OpenSSL's words for a record that is not TLS: the server answered in plain text.
PLAIN_REPLY = ("wrong version number", "record layer failure", "packet length too long", "http request")
#: The server's alert asking for a client certificate (TLS 1.3; 1.2 says "handshake failure").
CERT_REQUIRED = ("certificate required",)
UNTRUSTED = ("certificate verify failed", "hostname mismatch")
VERSION_OR_CIPHER = (
    "protocol version",
    "unsupported protocol",
    "no protocols available",
    "no shared cipher",
    "no ciphers available",
    "no cipher match",
)
#: The connection ended under the handshake: reset, closed, EOF, or a generic failure alert.
ENDED = (
    "reset by peer",
    "connectionreseterror",
    "closed by server",
    "eof occurred",
    "unexpected eof",
    "ssleoferror",
    "broken pipe",
    "handshake failure",
)
TIMED_OUT = ("timeout", "timed out")
SOME_TLS = ("ssl", "tls", "certificate")


def _has(said: str, words: tuple[str, ...]) -> bool:
    return any(word in said for word in words)


def classify(tls: bool, said: str) -> TlsTrouble | None:
    """What a connection error's text ``said`` (any case) points at, for a TLS (``rediss://``)
    or a plain URL; ``None``: nothing that TLS explains. Pure: the first match in this order."""
    said = said.lower()
    if _has(said, NOT_TLS):
        return None
    if not tls:
        return TlsTrouble.TLS_EXPECTED if _has(said, ENDED) else None
    for words, trouble in (
        (CERT_REQUIRED, TlsTrouble.CLIENT_CERT),
        (UNTRUSTED, TlsTrouble.UNTRUSTED),
        (PLAIN_REPLY, TlsTrouble.PLAIN_REPLY),
        (VERSION_OR_CIPHER, TlsTrouble.VERSION_OR_CIPHER),
        (ENDED, TlsTrouble.HANDSHAKE_REFUSED),
        (TIMED_OUT, TlsTrouble.NO_ANSWER),
        (SOME_TLS, TlsTrouble.OTHER_TLS),
    ):
        if _has(said, words):
            return trouble
    return None


def error_text(error: BaseException) -> str:
    """``error`` and the exceptions chained under it, each as ``Type: message``, joined."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(parts) < 8:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return " | ".join(parts)


def is_tls_url(url: str) -> bool:
    """True for ``rediss://`` and ``rediss+cluster://``."""
    return url.lower().startswith(("rediss://", "rediss+cluster://"))


def tls_hint(url: str, error: BaseException) -> str:
    """What to add to the message of ``error``, raised connecting to ``url``: `` (advice)``
    when TLS explains it (:func:`classify`), else ``""``."""
    trouble = classify(is_tls_url(url), error_text(error))
    return "" if trouble is None else f" ({trouble.value})"
