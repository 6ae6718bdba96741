"""What the dashboard serves and who may act: the targets (streams, group, dead-letter streams)
and the access rules (token or basic-auth credentials, CSRF, read-only mode).

Reading needs nothing unless basic-auth credentials are configured (then every request needs
them). Every mutating request (replay, purge) needs, all at once: a dashboard that is not
read-only, ``Authorization: Bearer <STREAMTASKS_DASHBOARD_TOKEN>`` or the basic-auth
credentials, the page's CSRF token in ``X-CSRF-Token``, and no foreign ``Origin``. Without a
token or credentials configured the dashboard is read-only. Secrets never reach a page: the
reprs hide them and the pages show only the CSRF token, an HMAC of a per-process random key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from typing import Any

from attrs import field, frozen

from ... import keys
from ...registry import Registry

ENV_TOKEN = "STREAMTASKS_DASHBOARD_TOKEN"
ENV_USER = "STREAMTASKS_DASHBOARD_USER"
ENV_PASSWORD = "STREAMTASKS_DASHBOARD_PASSWORD"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8555
CSRF_HEADER = "X-CSRF-Token"


@frozen
class Targets:
    """The streams the dashboard shows (nothing else can be asked for), their group and
    dead-letter streams."""

    group: str
    streams: tuple[str, ...]
    dead_letter_streams: Mapping[str, str] = field(factory=dict)

    @classmethod
    def of(cls, registry: Registry, streams: list[str] | None = None, group: str | None = None) -> Targets:
        if streams:
            registry = registry.only(streams)
        dead = {s: spec.dead_letter_stream for s, spec in registry.handlers.items()}
        return cls(group or registry.group, tuple(registry.handlers), dead)

    def dead_of(self, stream: str) -> str:
        return self.dead_letter_streams.get(stream) or keys.dead_letter_stream(stream)


@frozen
class Access:
    """Who may read and who may act (see the module docstring)."""

    token: str | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    read_only: bool = False
    csrf_key: bytes = field(factory=lambda: secrets.token_bytes(32), repr=False)

    @classmethod
    def from_env(cls, read_only: bool = False, env: Mapping[str, str] | None = None) -> Access:
        env = os.environ if env is None else env
        return cls(
            token=env.get(ENV_TOKEN) or None,
            user=env.get(ENV_USER) or None,
            password=env.get(ENV_PASSWORD) or None,
            read_only=read_only,
        )

    @property
    def basic_auth(self) -> bool:
        return bool(self.user and self.password)

    @property
    def writable(self) -> bool:
        """Actions are possible at all: not read-only, and someone can prove who they are."""
        return not self.read_only and (bool(self.token) or self.basic_auth)

    @property
    def csrf_token(self) -> str:
        return hmac.new(self.csrf_key, b"streamtasks-dashboard-csrf", hashlib.sha256).hexdigest()

    def may_read(self, headers: Mapping[str, str]) -> bool:
        return not self.basic_auth or self._basic_ok(headers)

    def refuse_write(self, headers: Mapping[str, str], host: str) -> str | None:
        """Why a mutating request is refused, or ``None`` when it may go ahead."""
        if self.read_only:
            return "the dashboard is read-only"
        if not self.writable:
            return f"actions are disabled: set {ENV_TOKEN} (or {ENV_USER}/{ENV_PASSWORD})"
        if not (self._bearer_ok(headers) or self._basic_ok(headers)):
            return "a valid token or credentials are required"
        if not hmac.compare_digest(headers.get(CSRF_HEADER, ""), self.csrf_token):
            return "missing or wrong CSRF token"
        origin = headers.get("Origin")
        if origin and origin.split("://", 1)[-1] != host:
            return "cross-origin request"
        return None

    def _bearer_ok(self, headers: Mapping[str, str]) -> bool:
        scheme, _, value = headers.get("Authorization", "").partition(" ")
        return bool(self.token) and scheme.lower() == "bearer" and _same(value.strip(), self.token)

    def _basic_ok(self, headers: Mapping[str, str]) -> bool:
        scheme, _, value = headers.get("Authorization", "").partition(" ")
        if not self.basic_auth or scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return _same(user, self.user) & _same(password, self.password)


def _same(given: str, expected: Any) -> bool:
    return isinstance(expected, str) and hmac.compare_digest(given.encode(), expected.encode())
