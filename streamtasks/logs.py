"""Logging set-up and secret redaction.

All loggers live under ``streamtasks`` (``streamtasks.worker``, ``streamtasks.producer`` ...).
:func:`redact` scrubs passwords from URLs and ``password=`` pairs; the log filter installed by
:func:`configure` applies it to every record, so a connection error that quotes a URL cannot
leak a secret.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from datetime import datetime, timezone
from typing import Any

_URL_AUTH = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")
#: ``password=...`` and kin, also as the end of a longer name (``sentinel_password=...``).
_KV_SECRET = re.compile(r"(?i)\b(\w*?(?:password|passwd|pwd|secret|token))(\s*[=:]\s*)(['\"]?)[^\s'\",;&]+")
_known_secrets: set[str] = set()
#: A log line's ``entry_ids`` field lists at most this many ids.
LOGGED_IDS = 100


def register_secret(value: str | None) -> None:
    """Also scrub this literal value (e.g. a password from the environment) everywhere."""
    if value and len(value) >= 3:
        _known_secrets.add(value)


def redact(text: str) -> str:
    """Return ``text`` with credentials replaced by ``***``."""
    text = _URL_AUTH.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    text = _KV_SECRET.sub(lambda m: f"{m[1]}{m[2]}{m[3]}***", text)
    for secret in _known_secrets:
        text = text.replace(secret, "***")
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and exception text) through :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = ()
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


#: Attributes every LogRecord has; anything else on a record came in ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def rfc3339_utc(created: float) -> str:
    """``created`` (seconds since the epoch) as RFC 3339 UTC with milliseconds:
    ``2026-11-29T07:00:00.123Z``."""
    stamp = datetime.fromtimestamp(created, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _field(value: Any) -> Any:
    """An ``extra=`` value for JSON: strings redacted, containers walked, the rest as is or str."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (list, tuple)):
        return [_field(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _field(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (RFC 3339 UTC, milliseconds), ``level``, ``logger``,
    ``msg``, every ``extra=`` field of the call (``stream``, ``handler``, ``entry_id``,
    ``consumer``, ...), and ``exc`` for an exception."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": rfc3339_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and not key.startswith("_") and key not in payload:
                payload[key] = _field(value)
        if record.exc_text:
            payload["exc"] = record.exc_text
        return json.dumps(payload, ensure_ascii=False)


_configured: tuple[str | int, str] = ("INFO", "text")


def configured() -> tuple[str | int, str]:
    """The level and format of the last :func:`configure` (what actor mode's actors repeat)."""
    return _configured


def configure(level: str | int = "INFO", fmt: str = "text") -> None:
    """Configure the ``streamtasks`` logger tree (idempotent)."""
    global _configured
    _configured = (level, fmt)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    for name in ("streamtasks", "async_processing"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level if isinstance(level, int) else level.upper())
        logger.propagate = False


class WholeLines:
    """A text stream that hands each complete line to ``stream`` in one write, under one lock.

    ``print(line)`` is two writes (the text, then its newline). Ray's driver prints what the
    actors log that way from its own thread while this process's handler writes its lines, so
    one thread's line could land between another's text and its newline: two JSON lines on one
    line. Each thread's partial line waits here until its newline comes (or it flushes).
    """

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self._lock = threading.Lock()
        self._partial = threading.local()

    def write(self, text: str) -> int:
        pending: str = getattr(self._partial, "text", "") + text
        cut = pending.rfind("\n") + 1
        self._partial.text = pending[cut:]
        if cut:
            with self._lock:
                self.stream.write(pending[:cut])
        return len(text)

    def flush(self) -> None:
        rest, self._partial.text = getattr(self._partial, "text", ""), ""
        with self._lock:
            if rest:
                self.stream.write(rest)
            self.stream.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding ...: the stream's own
        return getattr(self.stream, name)


def whole_lines() -> None:
    """Make ``sys.stdout`` and ``sys.stderr`` :class:`WholeLines` (idempotent), and point the
    handlers :func:`configure` installed at the new ``sys.stderr``: for a process whose stderr
    carries lines written by other threads (actor mode's, forwarded by Ray)."""
    for name in ("stdout", "stderr"):
        if not isinstance(getattr(sys, name), WholeLines):
            setattr(sys, name, WholeLines(getattr(sys, name)))
    err = sys.stderr
    assert isinstance(err, WholeLines)
    for name in ("streamtasks", "async_processing"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is err.stream:
                handler.setStream(err)
