"""One error hierarchy, rooted at :class:`StreamtasksError`.

Handlers may raise two control-flow errors:

* :class:`Retry` — "try again later", optionally after a given delay;
* :class:`Reject` — "never retry this entry": it goes straight to the dead-letter stream.
"""

from __future__ import annotations


class StreamtasksError(Exception):
    """Base class of every error streamtasks raises on purpose."""


class ConfigError(StreamtasksError):
    """A setting (option, env var, ``.env`` line) has a value that cannot be used."""


class MissingExtra(StreamtasksError, ImportError):
    """A part of streamtasks needs an optional extra that is not installed: one line saying
    which (``pip install 'streamtasks[adserving]'``)."""

    def __init__(self, part: str, extra: str, missing: str | None = None) -> None:
        lacking = f" ({missing} is not installed)" if missing else ""
        super().__init__(f"{part} needs the {extra} extra{lacking}: pip install 'streamtasks[{extra}]'")
        self.extra = extra


class RegistryError(StreamtasksError):
    """A handler was registered in a way the worker cannot serve (e.g. two on one stream)."""


class DecodeError(StreamtasksError):
    """An entry (or a field of it) could not be decoded; it is never retried.

    ``reason`` is a short, stable code (``invalid_utf8``, ``invalid_json``, ``too_large``,
    ``missing_field``, ``wrong_type``, ``nul_byte``, ``too_deep``, ...) that ends up in the
    dead-letter entry so operators can filter and replay by it.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        """The reason code (see above)."""
        self.detail = detail
        """What was wrong, for a person: the field, the value's problem."""


class MissingFieldError(DecodeError, KeyError):
    """``msg[name]`` of a field the entry does not have: bad input (reason ``missing_field``),
    so the entry is dead-lettered at once; still a :class:`KeyError` for code that expects one."""

    def __init__(self, name: str) -> None:
        super().__init__("missing_field", f"field {name!r} is missing")

    def __str__(self) -> str:  # KeyError's would print the repr of the message
        return f"{self.reason}: {self.detail}"


class Retry(StreamtasksError):
    """Raised by a handler to ask for another attempt, ``after`` seconds from now.

    ``after=None`` uses the handler's backoff policy. The attempt still counts toward
    ``max_retries``: an entry that keeps asking is dead-lettered when its retries are spent.
    """

    def __init__(self, after: float | None = None, reason: str = "") -> None:
        super().__init__(reason or (f"retry requested after {after}s" if after else "retry requested"))
        self.after = after
        """Seconds until the next attempt; ``None``: the handler's backoff."""


class Reject(StreamtasksError):
    """Raised by a handler to dead-letter an entry at once, without retries."""

    def __init__(self, reason: str = "rejected", *, code: str = "rejected") -> None:
        super().__init__(reason)
        self.code = code
        """The dead letter's reason code (``rejected`` unless given)."""


class DeadLettered(StreamtasksError):
    """Raised by ``handler.call`` (and ``Producer.result``) when the entry was dead-lettered:
    ``reason`` is the dead letter's reason code (``handler_error``, ``rejected``,
    ``unencodable_result``, ``delivery_limit``, ...), ``error_type`` and ``error`` its error,
    ``dead_letter_id`` its id in ``dead_letter_stream`` (for ``streamtasks dlq show|replay``)."""

    def __init__(
        self,
        reason: str,
        error_type: str = "",
        error: str = "",
        *,
        stream: str = "",
        entry_id: str = "",
        dead_letter_stream: str = "",
        dead_letter_id: str = "",
        attempts: int = 0,
    ) -> None:
        shown = f"{error_type}: {error}" if error_type else error
        super().__init__(f"{stream}/{entry_id} was dead-lettered ({reason}): {shown}")
        self.reason = reason
        self.error_type = error_type
        self.error = error
        self.stream = stream
        self.entry_id = entry_id
        self.dead_letter_stream = dead_letter_stream
        self.dead_letter_id = dead_letter_id
        self.attempts = attempts


class CallTimeout(StreamtasksError, TimeoutError):
    """``handler.call`` got no answer within its timeout. The entry is left to be handled
    anyway: ``await producer.result(stream, message_id)`` fetches its result later."""

    def __init__(self, stream: str, message_id: str, timeout: float | None) -> None:
        super().__init__(f"no result for message {message_id} on {stream} within {timeout}s")
        self.stream = stream
        self.message_id = message_id
        self.timeout = timeout


class ResultNotFound(StreamtasksError, LookupError):
    """``Producer.result`` found no stored result: the entry was not handled yet, its handler
    does not store results (``results=True``), or the result expired (``result_ttl``)."""


class UnencodableResult(StreamtasksError):
    """A handler with ``results=True`` returned a value that cannot be stored (not JSON-able,
    not a msgspec Struct, attrs class or dataclass). Dead-lettered at once with reason
    ``unencodable_result``: the same code returns the same kind of value on every retry."""
