"""Results (request-reply): how a handler's return value is stored, and how a caller waits.

A handler declared with ``results=True`` has the value it returns stored in Redis for
``result_ttl`` seconds, under ``<stream>:result:<message>`` (:func:`streamtasks.keys.result_key`;
``<message>`` is the entry's idempotency key: the producer's message id). The value is written
in the same Lua step as the entry's ``XACK`` (:data:`streamtasks.lua.SETTLE_RESULT`), and a dead
letter's outcome in the same step as the dead letter (:data:`streamtasks.lua.DEAD_LETTER`).

The stored outcome is text with a one-letter kind:

* ``v<json>``: the value the handler returned, JSON as msgspec encodes it (JSON-able values,
  msgspec Structs, attrs classes, dataclasses, datetimes, UUIDs ...);
* ``d<dead-letter id> <json>``: the entry was dead-lettered; the JSON object holds its
  ``reason``, ``error_type``, ``error``, ``attempts``, ``stream``, ``id`` and ``dead_stream``.

The first value stored for a message wins: a handler that runs twice for one message (a
redelivery after a crash, a second send with the same message id) cannot change the answer a
caller got. A dead-letter outcome is replaced by the outcome of the message's replay.

A caller (``handler.call``) waits on a notification, not by polling: each producer has ONE
reply stream (:class:`ReplyWaiter`) named in the entry's ``_st_reply`` field; when the entry is
settled, the worker adds the stored outcome to that stream (:data:`streamtasks.lua.NOTIFY`),
and the producer's single blocking ``XREAD`` hands it to the waiting call's future.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import typing
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from redis.asyncio import Redis

from . import keys
from .errors import CallTimeout, DeadLettered, UnencodableResult
from .keys import FIELD_MESSAGE_ID, FIELD_ORIGIN_ID, FIELD_ORIGIN_STREAM, FIELD_REPLY
from .logs import redact
from .message import Message, RawFields, field_pairs
from .redisutil import REDIS_DOWN
from .retry import ErrorInfo

log = logging.getLogger("streamtasks.results")

#: Seconds a handler's results are kept unless it says otherwise (``result_ttl``).
DEFAULT_RESULT_TTL = 3600.0
#: Seconds ``handler.call`` waits unless told otherwise.
DEFAULT_CALL_TIMEOUT = 30.0
VALUE, DEAD = b"v", b"d"
#: The reply stream of a producer lives this long after its last refresh (its process gone,
#: it expires; the worker never re-creates it).
REPLY_TTL_S = 600
#: A producer refreshes its reply stream's time to live at most this often.
REPLY_REFRESH_S = 60.0
#: Notifications a reply stream keeps (a caller that missed its own checks the result key).
REPLY_MAXLEN = 10_000
#: The waiter's blocking read: milliseconds and entries per read.
REPLY_BLOCK_MS = 2_000
REPLY_COUNT = 1_000
#: Seconds between two attempts of a waiter whose read failed (Redis down).
REPLY_RETRY_S = 0.5
_RESERVED = (FIELD_MESSAGE_ID, FIELD_ORIGIN_STREAM, FIELD_ORIGIN_ID, FIELD_REPLY)
_RESERVED_BYTES = frozenset(name.encode() for name in _RESERVED)


# -- the stored outcome ----------------------------------------------------------------------


def encode_value(value: Any, handler: str = "the handler") -> bytes:
    """``v<json>`` of ``value``; :class:`UnencodableResult` if msgspec cannot encode it."""
    import msgspec

    try:
        return VALUE + msgspec.json.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise UnencodableResult(
            f"{handler} returned {type(value).__name__}, which cannot be stored as its result "
            f"({exc}): return JSON-able values, a msgspec Struct, an attrs class or a dataclass"
        ) from None


def dead_outcome(stream: str, entry_id: str, dead_stream: str, error: ErrorInfo, attempts: int) -> str:
    """The JSON part of a dead-letter outcome (the script puts ``d<dead-letter id> `` before it);
    the message redacted, as in the dead letter."""
    return json.dumps(
        {
            "reason": error.reason,
            "error_type": error.type,
            "error": redact(error.message),
            "attempts": attempts,
            "stream": stream,
            "id": entry_id,
            "dead_stream": dead_stream,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def decode_outcome(stored: bytes | str, result_type: Any = Any) -> Any:
    """The value of a stored outcome (decoded into ``result_type``), or :class:`DeadLettered`."""
    import msgspec

    raw = stored.encode() if isinstance(stored, str) else stored
    kind, body = raw[:1], raw[1:]
    if kind == VALUE:
        return msgspec.json.decode(body, type=result_type)
    if kind == DEAD:
        dead_id, _, info = body.partition(b" ")
        data = json.loads(info or b"{}")
        if not isinstance(data, dict):
            raise ValueError(f"not a stored dead-letter outcome: {raw[:40]!r}")
        raise DeadLettered(
            str(data.get("reason", "")),
            str(data.get("error_type", "")),
            str(data.get("error", "")),
            stream=str(data.get("stream", "")),
            entry_id=str(data.get("id", "")),
            dead_letter_stream=str(data.get("dead_stream", "")),
            dead_letter_id=dead_id.decode("utf-8", "replace"),
            attempts=_int(data.get("attempts")),
        )
    raise ValueError(f"not a stored result: {raw[:40]!r}")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def result_type_of(fn: Callable[..., Any], batch: bool) -> Any:
    """What a caller decodes ``fn``'s stored value into: its return annotation (for a batch
    handler, ``X`` of ``list[X]``) when msgspec can decode into it, else plain JSON (``Any``)."""
    import msgspec

    try:
        annotation = typing.get_type_hints(fn).get("return", Any)
    except Exception:  # a name only imported under TYPE_CHECKING ...
        return Any
    if batch:
        args = typing.get_args(annotation)
        annotation = args[0] if typing.get_origin(annotation) in (list, tuple) and args else Any
    try:
        msgspec.json.Decoder(annotation)
    except TypeError:
        return Any
    return annotation


# -- which message an entry is ---------------------------------------------------------------


def new_message_id() -> str:
    """A new producer-assigned message id (``_st_mid``)."""
    return uuid.uuid4().hex


def result_ident(message_id: str) -> str:
    """The result identity of a message id (its idempotency key, :attr:`Message.idempotency_key`)."""
    return Message.owning("", "", {FIELD_MESSAGE_ID: message_id}, 1).idempotency_key


def entry_address(stream: str, entry_id: str, raw: RawFields) -> tuple[str, str | None]:
    """(result identity, reply stream or None) of a raw entry, read leniently: a dead letter's
    entry may not even be UTF-8."""
    found: dict[str, str] = {}
    for name, value in field_pairs(raw):
        if name in _RESERVED_BYTES:
            found[name.decode()] = value.decode("utf-8", "replace")
    reply = found.pop(FIELD_REPLY, None)
    return Message.owning(stream, entry_id, found, 1).idempotency_key, reply or None


# -- the caller's side -----------------------------------------------------------------------


class ReplyWaiter:
    """One per producer: a reply stream of its own, ONE blocking ``XREAD`` over it while calls
    wait, and their futures by result identity. A thousand concurrent calls cost one
    connection and one read per batch of notifications, not a connection each."""

    def __init__(self) -> None:
        self.stream = keys.reply_stream(uuid.uuid4().hex)
        self._waiting: dict[str, set[asyncio.Future[bytes]]] = {}
        self._last_id = "0-0"
        self._refreshed = -REPLY_REFRESH_S
        self._task: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Future[None] | None = None
        self.reads = 0  # blocking reads done (for tests and benchmarks)

    async def ensure(self, redis: Redis) -> None:
        """Create the reply stream, or refresh its time to live, when it is due (once for all
        the calls that ask at the same time)."""
        if time.monotonic() - self._refreshed < REPLY_REFRESH_S:
            return
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh(redis))
        await asyncio.shield(self._refreshing)

    async def _refresh(self, redis: Redis) -> None:
        now = time.monotonic()
        pipe = redis.pipeline(transaction=False)
        pipe.xadd(self.stream, {"k": "", "v": ""}, maxlen=REPLY_MAXLEN, approximate=True)
        pipe.expire(self.stream, REPLY_TTL_S)
        await pipe.execute()
        self._refreshed = now

    def expect(self, ident: str, redis: Redis) -> asyncio.Future[bytes]:
        """A future for the outcome of ``ident``, resolved by the reader (started if needed)."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(ident, set()).add(future)
        if self._task is None:
            self._task = asyncio.create_task(self._read(redis), name="streamtasks-replies")
        return future

    def forget(self, ident: str, future: asyncio.Future[bytes]) -> None:
        waiting = self._waiting.get(ident)
        if waiting is not None:
            waiting.discard(future)
            if not waiting:
                del self._waiting[ident]

    async def wait(
        self, redis: Redis, stream: str, ident: str, future: asyncio.Future[bytes], timeout: float | None
    ) -> bytes:
        """The stored outcome: notified, or (the notification lost) read at the deadline."""
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            stored = await redis.get(keys.result_key(stream, ident))
            if stored is not None:
                return stored if isinstance(stored, bytes) else str(stored).encode()
            raise CallTimeout(stream, ident, timeout) from None
        finally:
            self.forget(ident, future)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _read(self, redis: Redis) -> None:
        """Read notifications while anyone waits; a failed read is retried (Redis down), any
        other failure fails the waiting calls at once rather than leaving them to time out."""
        failing = False
        try:
            while self._waiting:
                try:
                    streams: dict[Any, Any] = {self.stream: self._last_id}
                    got = await redis.xread(streams, count=REPLY_COUNT, block=REPLY_BLOCK_MS)
                    await self.ensure(redis)
                except REDIS_DOWN as exc:
                    failing = _log_read_failure(failing, exc)
                    await asyncio.sleep(REPLY_RETRY_S)
                    continue
                failing = False
                self.reads += 1
                self._dispatch(got)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("reading the reply stream %s failed", self.stream)
            for futures in self._waiting.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
        finally:
            if self._task is asyncio.current_task():
                self._task = None  # no await since the last check: a new call starts a reader

    def _dispatch(self, got: Any) -> None:
        for _stream, entries in got or ():
            for entry_id, fields in entries:
                self._last_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                ident, value = _notification(fields)
                for future in self._waiting.get(ident, ()):
                    if not future.done():
                        future.set_result(value)


def _notification(fields: Mapping[Any, Any]) -> tuple[str, bytes]:
    ident = fields.get(b"k", fields.get("k", b""))
    value = fields.get(b"v", fields.get("v", b""))
    return (
        ident.decode() if isinstance(ident, bytes) else str(ident),
        value if isinstance(value, bytes) else str(value).encode(),
    )


def _log_read_failure(failing: bool, exc: BaseException) -> bool:
    if not failing:
        log.warning("waiting for results: Redis did not answer (%s); retrying", exc)
    return True
