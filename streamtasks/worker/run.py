"""The batch runner: what runs inside the Ray task (or the inline executor's thread).

:func:`run_batch` decodes the raw entries, calls the handler (per entry or per batch, sync or
async), and turns every exception into an outcome with the handler's
:class:`~streamtasks.retry.RetryPolicy`. It never raises for a handler error, so a failing
entry cannot fail or re-run its batch-mates. Async handlers run on the process' persistent
loop (:mod:`streamtasks.resources`), so the resources they use live across batches.
"""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import Mapping, Sequence
from typing import Any

from attrs import frozen

from ..errors import DecodeError, StreamtasksError
from ..message import Message, RawFields, decode_entry
from ..registry import HandlerSpec
from ..resources import process_loop
from ..retry import Dead, ErrorInfo, Failure
from ..typed import codec_for

#: A raw entry as read from Redis: (entry id, fields as bytes, delivery attempt).
RawEntry = tuple[str, RawFields, int]


@frozen
class BatchResult:
    """Outcomes of a batch: every entry not listed in ``failed`` (by index) is done.

    ``duration`` is the handler time; 0 when the worker decided without running the handler
    (a timeout, a lost Ray worker, the delivery limit)."""

    size: int
    failed: Mapping[int, Failure]
    duration: float = 0.0


def run_batch(spec: HandlerSpec, entries: Sequence[RawEntry]) -> BatchResult:
    """Decode ``entries``, run the handler, and return the outcome of each entry."""
    started = time.perf_counter()
    failed: dict[int, Failure] = {}
    messages: list[Message] = []
    positions: list[int] = []
    values: list[Any] = []  # what the handler is given: the messages, or their typed values
    decode_value = None if spec.message_type is None else codec_for(spec.message_type).decode
    for index, (entry_id, raw, attempt) in enumerate(entries):
        try:
            msg = decode_entry(spec.stream, entry_id, raw, attempt, spec.max_entry_bytes)
            if decode_value is not None:
                values.append(decode_value(msg.fields))
            messages.append(msg)
            positions.append(index)
        except DecodeError as exc:
            failed[index] = Dead(ErrorInfo.from_exception(exc))
        except Exception as exc:  # a decoder bug: deterministic, so dead at once, and alone
            failed[index] = Dead(ErrorInfo.from_exception(exc, reason="invalid"))
    if messages:
        for pos, error in _call(spec, messages, values if decode_value else messages).items():
            failed[positions[pos]] = spec.retry.decide(error, messages[pos].attempt)
    return BatchResult(len(entries), failed, time.perf_counter() - started)


def run_packed_batch(spec: HandlerSpec, packed: bytes) -> BatchResult:
    """The Ray task: ``packed`` is the worker's own pickle of the raw entries it read (ids,
    field bytes and attempt counts only), never bytes taken from Redis as they are."""
    return run_batch(spec, pickle.loads(packed))


def _call(spec: HandlerSpec, messages: list[Message], values: list[Any]) -> dict[int, BaseException]:
    """The handler's exceptions by position in ``messages`` (``values``: what it is given)."""
    if spec.batch:
        return _call_batch(spec, messages, values)
    if spec.is_async:
        return process_loop().run(_call_each_async(spec, values))
    return _call_each_sync(spec, values)


def _call_each_sync(spec: HandlerSpec, values: list[Any]) -> dict[int, BaseException]:
    errors: dict[int, BaseException] = {}
    for pos, value in enumerate(values):
        try:
            spec.fn(value)
        except Exception as exc:
            errors[pos] = exc
    return errors


async def _call_each_async(spec: HandlerSpec, values: list[Any]) -> dict[int, BaseException]:
    errors: dict[int, BaseException] = {}
    limit = asyncio.Semaphore(spec.concurrency)

    async def one(pos: int, value: Any) -> None:
        async with limit:
            try:
                await asyncio.wait_for(spec.fn(value), spec.timeout)
            except Exception as exc:
                errors[pos] = exc

    await asyncio.gather(*(one(pos, value) for pos, value in enumerate(values)))
    return errors


def _call_batch(spec: HandlerSpec, messages: list[Message], values: list[Any]) -> dict[int, BaseException]:
    """Run a batch handler; map its ``{entry_id or position: exception}`` result to positions."""
    try:
        if spec.is_async:
            result = process_loop().run(asyncio.wait_for(spec.fn(values), spec.timeout))
        else:
            result = spec.fn(values)
    except Exception as exc:
        failure: BaseException = exc
        return dict.fromkeys(range(len(messages)), failure)
    if not result:
        return {}
    if not isinstance(result, Mapping):
        error = StreamtasksError(
            f"batch handler {spec.name} returned {type(result).__name__}; "
            "expected None or a mapping {entry_id: exception}"
        )
        return dict.fromkeys(range(len(messages)), error)
    index: dict[object, int] = {msg.id: pos for pos, msg in enumerate(messages)}
    index.update((pos, pos) for pos in range(len(messages)))
    return {index[key]: exc for key, exc in result.items() if key in index}
