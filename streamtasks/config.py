"""Core configuration: where Redis is, and the helpers that read typed values from the
environment (the adserving product's settings, and its ``.env`` file, are in
:mod:`streamtasks.adserving.config`).

Every value has a documented environment variable; a value that cannot be used raises
:class:`~streamtasks.errors.ConfigError` naming the variable. Passwords are kept out of
``repr`` and logs (see :func:`streamtasks.logs.redact`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import SplitResult, quote, urlsplit

from attrs import field, frozen

from .errors import ConfigError


def env_int(environ: Mapping[str, str], name: str, default: int, minimum: int | None = None) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={raw!r} must be >= {minimum}")
    return value


#: How a worker serves its handlers (``streamtasks worker --mode``, ``STREAMTASKS_MODE``):
#: Ray actors that each read, run and settle their own batches, or one Ray task per batch.
MODES = ("tasks", "actors")
DEFAULT_MODE = "actors"
#: Seconds Ray may take to start (or to join a cluster) before the worker gives up
#: (``--ray-start-timeout``).
RAY_START_TIMEOUT_S = 60.0


def env_choice(environ: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    """One of ``choices``, as written (surrounding blanks ignored); anything else is an error."""
    raw = environ.get(name) or ""
    value = raw.strip() or default
    if value in choices:
        return value
    raise ConfigError(f"{name}={raw!r} is not one of {', '.join(choices)}")


_SCHEME_HINTS = {
    "redis": "redis://, rediss://, redis+cluster:// or redis+sentinel://",
    "postgres": "postgresql://",
}
#: What ``REDIS_URL`` may start with (:mod:`streamtasks.connect`).
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


def split_url(name: str, url: str, schemes: tuple[str, ...], default_port: int) -> tuple[SplitResult, int]:
    """The parts and port of URL variable ``name``; ConfigError for a wrong scheme or port."""
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        hint = _SCHEME_HINTS[schemes[0]]
        raise ConfigError(f"{name} has scheme {parts.scheme!r}; use {hint}")
    try:
        port = parts.port or default_port
    except ValueError:
        raise ConfigError(f"{name} has an invalid port") from None
    return parts, port


@frozen
class RedisConfig:
    """Where Redis is.

    ``REDIS_URL`` wins over ``REDIS_HOST``/``REDIS_PORT``/``REDIS_PASSWORD``/``REDIS_DB``.
    """

    host: str = "127.0.0.1"
    """``REDIS_HOST``."""
    port: int = 6379
    """``REDIS_PORT``."""
    db: int = 0
    """``REDIS_DB``."""
    password: str | None = field(default=None, repr=False)
    """``REDIS_PASSWORD`` (kept out of ``repr`` and logs)."""
    url_override: str | None = field(default=None, repr=False)
    """``REDIS_URL``: wins over the fields above."""

    @property
    def url(self) -> str:
        """The connection URL, password included: never log it (use :attr:`safe_url`)."""
        if self.url_override:
            return self.url_override
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/{self.db}"

    @property
    def safe_url(self) -> str:
        """The connection URL with its password redacted: safe to log."""
        from .logs import redact

        return redact(self.url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RedisConfig:
        """From ``REDIS_URL``, else ``REDIS_HOST``/``PORT``/``PASSWORD``/``DB`` (default:
        ``os.environ``)."""
        env = os.environ if environ is None else environ
        url = env.get("REDIS_URL") or None
        if url is not None and _is_sentinel(url):
            host, port = _first_sentinel(url)
            return cls(host=host, port=port, url_override=url)
        if url is not None:
            parts, port = split_url("REDIS_URL", url, REDIS_SCHEMES, 6379)
            return cls(host=parts.hostname or "127.0.0.1", port=port, url_override=url)
        return cls(
            host=env.get("REDIS_HOST") or "127.0.0.1",
            port=env_int(env, "REDIS_PORT", 6379, minimum=1),
            db=env_int(env, "REDIS_DB", 0, minimum=0),
            password=env.get("REDIS_PASSWORD") or None,
        )


def _is_sentinel(url: str) -> bool:
    from .sentinel import is_sentinel_url

    return is_sentinel_url(url)


def _first_sentinel(url: str) -> tuple[str, int]:
    """The first sentinel of a Sentinel ``REDIS_URL``; ConfigError when it cannot be used."""
    from .sentinel import parse_sentinel_url

    try:
        return parse_sentinel_url(url).sentinels[0]
    except ValueError as exc:
        raise ConfigError(f"REDIS_URL: {exc}") from None


_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    """``true``/``false``/``1``/``0``/``yes``/``no`` (any case); anything else is an error."""
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true/false/1/0/yes/no)")


def env_stream(environ: Mapping[str, str], name: str, default: str) -> str:
    """A stream name from ``name``, validated like every stream name."""
    from .keys import validate_name

    value = environ.get(name) or default
    try:
        return validate_name("stream", value)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None
