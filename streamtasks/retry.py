"""Retry policy: backoff as a pure function, and the one place that decides retry or dead.

Every path that ends an attempt asks :class:`RetryPolicy`: a handler's exception for one entry
(:meth:`~RetryPolicy.decide`, on the Ray side), a batch that failed or timed out as a whole
(:meth:`~RetryPolicy.decide_all`, in the worker), and an entry delivered more often than the
policy allows without ever completing (:meth:`~RetryPolicy.over_delivery_limit`, on reclaim).
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Callable, Sequence

from attrs import field, frozen

from .errors import DecodeError, Reject, Retry

DEFAULT_MAX_RETRIES = 3
DEFAULT_BACKOFF_BASE = 0.5
DEFAULT_BACKOFF_MAX = 30.0
#: Tracebacks stored in dead letters are cut to their last this-many characters.
TRACEBACK_LIMIT = 4000


def backoff(
    attempt: int,
    base: float,
    cap: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before attempt ``attempt + 1``: exponential with full jitter.

    ``uniform(0, min(cap, base * 2 ** (attempt - 1)))`` — AWS' "full jitter", which spreads
    retries of a batch that failed together instead of re-synchronising them.
    """
    exponent = min(max(attempt - 1, 0), 62)
    return rand() * min(cap, base * (2.0**exponent))


def _exc_types(
    value: type[BaseException] | tuple[type[BaseException], ...],
) -> tuple[type[BaseException], ...]:
    return value if isinstance(value, tuple) else (value,)


@frozen
class ErrorInfo:
    """What went wrong with an entry, as stored in the failure record and the dead letter."""

    type: str
    message: str
    reason: str = "handler_error"
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException, reason: str | None = None) -> ErrorInfo:
        if reason is None:
            if isinstance(exc, DecodeError):
                reason = exc.reason
            elif isinstance(exc, Reject):
                reason = exc.code
            else:
                reason = "handler_error"
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(
            type=type(exc).__name__,
            message=str(exc)[:1000],
            reason=reason,
            traceback=tb[-TRACEBACK_LIMIT:],
        )


@frozen
class RetryLater:
    """Run the entry again after ``delay`` seconds."""

    delay: float
    error: ErrorInfo


@frozen
class Dead:
    """Move the entry to the dead-letter stream, with its error, and acknowledge it."""

    error: ErrorInfo


#: What happens to an entry that did not succeed (an entry with no outcome is done).
Failure = RetryLater | Dead


@frozen
class RetryPolicy:
    """Per-handler retry options. ``max_retries`` retries means ``max_retries + 1`` attempts."""

    max_retries: int = field(default=DEFAULT_MAX_RETRIES)
    """Retries after the first attempt (``max_retries + 1`` attempts in all)."""
    backoff_base: float = DEFAULT_BACKOFF_BASE
    """Seconds: the backoff's scale (the delay after attempt ``n`` is at most ``base * 2**(n-1)``)."""
    backoff_max: float = DEFAULT_BACKOFF_MAX
    """Seconds: no delay is longer (nor longer than the visibility timeout)."""
    retry_on: tuple[type[BaseException], ...] = field(default=(Exception,), converter=_exc_types)
    """Errors that are retried; any other is dead-lettered at once."""
    dont_retry_on: tuple[type[BaseException], ...] = field(default=(), converter=_exc_types)
    """Errors dead-lettered at once, even if ``retry_on`` names them."""

    @max_retries.validator
    def _check_retries(self, _attr: object, value: int) -> None:
        if value < 0:
            raise ValueError("max_retries must be >= 0")

    def decide(self, exc: BaseException, attempt: int) -> RetryLater | Dead:
        """The outcome of an entry whose ``attempt``-th run raised ``exc``."""
        info = ErrorInfo.from_exception(exc)
        if isinstance(exc, (DecodeError, Reject, *self.dont_retry_on)):
            return Dead(info)
        if not isinstance(exc, (Retry, *self.retry_on)):
            return Dead(info)
        if attempt > self.max_retries:
            return Dead(info)
        if isinstance(exc, Retry) and exc.after is not None:
            return RetryLater(max(0.0, exc.after), info)
        return RetryLater(backoff(attempt, self.backoff_base, self.backoff_max), info)

    def decide_all(self, exc: BaseException, attempts: Sequence[int]) -> dict[int, Failure]:
        """Outcomes, by position, of a batch that failed as a whole (timeout, lost Ray worker)."""
        return {index: self.decide(exc, attempt) for index, attempt in enumerate(attempts)}

    @property
    def delivery_limit(self) -> int:
        """Deliveries an entry may have: one per attempt."""
        return self.max_retries + 1

    def over_delivery_limit(self, deliveries: int) -> bool:
        """True for an entry delivered past :attr:`delivery_limit` without completing (the
        process running it died or timed out each time): dead-letter it without running."""
        return deliveries > self.delivery_limit

    def delivery_limit_error(self) -> ErrorInfo:
        """The error of a dead letter with reason ``delivery_limit``."""
        return ErrorInfo(
            type="DeliveryLimitExceeded",
            message=f"delivered more than {self.delivery_limit} times without completing "
            "(the worker running it died or timed out each time)",
            reason="delivery_limit",
        )
