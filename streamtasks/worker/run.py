"""The batch runner: what runs inside the Ray task (or the inline executor's thread).

:func:`run_batch` decodes the raw entries, calls the handler (per entry or per batch, sync or
async), and turns every exception into an outcome with the handler's
:class:`~streamtasks.retry.RetryPolicy`. It never raises for a handler error, so a failing
entry cannot fail or re-run its batch-mates. Async handlers run on the process' persistent
loop (:mod:`streamtasks.resources`), so the resources they use live across batches.
"""

from __future__ import annotations

import asyncio
import functools
import pickle
import time
from collections.abc import Mapping, Sequence
from typing import Any

from attrs import define, field, frozen

from .. import hooks
from ..errors import DecodeError, StreamtasksError, UnencodableResult
from ..hooks import BatchInfo, CallInfo
from ..message import Message, RawFields, decode_entry
from ..registry import HandlerSpec
from ..resources import process_loop
from ..results import encode_value
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
    #: A ``results=True`` handler's stored values (``v<json>``) by index, for every done entry.
    results: Mapping[int, bytes] = field(factory=dict)


def run_batch(spec: HandlerSpec, entries: Sequence[RawEntry]) -> BatchResult:
    """Decode ``entries``, run the handler, and return the outcome of each entry. Called off
    the process loop (a pool thread, a Ray task): an async handler runs on that loop."""
    run = _Run.start(spec, entries)
    if run.messages:
        run.called(_call(spec, run.messages, run.values, run.batch))
    return run.result()


async def run_batch_async(spec: HandlerSpec, entries: Sequence[RawEntry]) -> BatchResult:
    """:func:`run_batch` of an async handler, on the running loop, which must be the process
    loop (:func:`streamtasks.resources.adopt_process_loop`): no thread between the worker's
    read and the handler's awaits."""
    run = _Run.start(spec, entries)
    if run.messages:
        run.called(await _call_async(spec, run.messages, run.values, run.batch))
    return run.result()


@define
class _Run:
    """One batch between its decoding and its :class:`BatchResult`."""

    spec: HandlerSpec
    entries: Sequence[RawEntry]
    started: float
    failed: dict[int, Failure]
    messages: list[Message]
    positions: list[int]  # of each message in the entries
    values: list[Any]  # what the handler is given: the messages, or their typed values
    batch: BatchInfo | None  # for the middleware; None without any
    results: dict[int, bytes] = field(factory=dict)

    @classmethod
    def start(cls, spec: HandlerSpec, entries: Sequence[RawEntry]) -> _Run:
        started = time.perf_counter()
        failed: dict[int, Failure] = {}
        messages, positions, values = _decode(spec, entries, failed)
        batch = BatchInfo(spec.stream, spec.name, spec.group, messages) if spec.middleware else None
        if batch is not None:
            hooks.notify(spec.middleware, "before_batch", batch)
        return cls(spec, entries, started, failed, messages, positions, values, batch)

    def called(self, called: Called) -> None:
        """Record what the handler raised and returned."""
        errors, returned = called
        for pos, error in errors.items():
            self.failed[self.positions[pos]] = self.spec.retry.decide(error, self.messages[pos].attempt)
        if self.spec.results:
            for pos, value in returned.items():
                _encode(self.spec, self.positions[pos], value, self.results, self.failed)

    def result(self) -> BatchResult:
        if self.batch is not None:
            failed = {self.entries[i][0]: f for i, f in self.failed.items()}
            hooks.after_batch(self.spec.middleware, self.batch, failed)
        return BatchResult(len(self.entries), self.failed, time.perf_counter() - self.started, self.results)


def _decode(
    spec: HandlerSpec, entries: Sequence[RawEntry], failed: dict[int, Failure]
) -> tuple[list[Message], list[int], list[Any]]:
    """The messages that decoded, their positions in ``entries``, and what the handler is
    given (the messages, or their typed values); the others are dead at once in ``failed``."""
    messages: list[Message] = []
    positions: list[int] = []
    values: list[Any] = []
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
    return messages, positions, values if decode_value else messages


def _encode(
    spec: HandlerSpec, index: int, value: Any, results: dict[int, bytes], failed: dict[int, Failure]
) -> None:
    """Store ``value`` as entry ``index``'s result; one that cannot be stored is the entry's
    dead letter at once (reason ``unencodable_result``): the same code returns the same kind
    of value on every retry, and a retry would only repeat the handler's side effects."""
    try:
        results[index] = encode_value(value, spec.name)
    except UnencodableResult as exc:
        failed[index] = Dead(ErrorInfo.from_exception(exc, reason="unencodable_result"))


def run_packed_batch(spec: HandlerSpec, packed: bytes) -> BatchResult:
    """The Ray task: ``packed`` is the worker's own pickle of the raw entries it read (ids,
    field bytes and attempt counts only), never bytes taken from Redis as they are."""
    return run_batch(spec, pickle.loads(packed))


#: What the handler raised and (``results=True``) returned, by position in the messages.
Called = tuple[dict[int, BaseException], dict[int, Any]]


def _call(spec: HandlerSpec, messages: list[Message], values: list[Any], batch: BatchInfo | None) -> Called:
    """The handler's exceptions and return values by position in ``messages`` (``values``:
    what it is given; ``batch``: for the middleware's ``around_call``, None without any)."""
    if spec.is_async:
        return process_loop().run(_call_async(spec, messages, values, batch))
    if spec.batch:
        return _call_batch(spec, messages, values, batch)
    if batch is not None:
        return _call_each_hooked(spec, messages, values, batch)
    return _call_each_sync(spec, values)


async def _call_async(
    spec: HandlerSpec, messages: list[Message], values: list[Any], batch: BatchInfo | None
) -> Called:
    """:func:`_call` of an async handler, on the process loop."""
    if spec.batch:
        return await _call_batch_async(spec, messages, values, batch)
    return await _call_each_async(spec, messages, values, batch)


def _call_each_sync(spec: HandlerSpec, values: list[Any]) -> Called:
    errors: dict[int, BaseException] = {}
    returned: dict[int, Any] = {}
    keep = spec.results
    for pos, value in enumerate(values):
        try:
            out = spec.fn(value)
        except Exception as exc:
            errors[pos] = exc
        else:
            if keep:
                returned[pos] = out
    return errors, returned


def _call_each_hooked(
    spec: HandlerSpec, messages: list[Message], values: list[Any], batch: BatchInfo
) -> Called:
    """:func:`_call_each_sync` with each call wrapped by the middleware's ``around_call``."""
    errors: dict[int, BaseException] = {}
    returned: dict[int, Any] = {}
    for pos, value in enumerate(values):
        call = CallInfo(batch, messages[pos : pos + 1])
        try:
            returned[pos] = hooks.call_sync(spec.middleware, call, functools.partial(spec.fn, value))
        except Exception as exc:
            errors[pos] = exc
    return errors, returned


async def _call_each_async(
    spec: HandlerSpec, messages: list[Message], values: list[Any], batch: BatchInfo | None
) -> Called:
    errors: dict[int, BaseException] = {}
    returned: dict[int, Any] = {}
    limit = asyncio.Semaphore(spec.concurrency)
    keep = spec.results or batch is not None

    async def one(pos: int, value: Any) -> None:
        async with limit:
            try:
                if batch is None:
                    out = await asyncio.wait_for(spec.fn(value), spec.timeout)
                else:
                    call = CallInfo(batch, messages[pos : pos + 1])
                    out = await hooks.call_async(spec.middleware, call, lambda: _timed(spec, value))
            except Exception as exc:
                errors[pos] = exc
            else:
                if keep:
                    returned[pos] = out

    await asyncio.gather(*(one(pos, value) for pos, value in enumerate(values)))
    return errors, returned


async def _timed(spec: HandlerSpec, value: Any) -> Any:
    return await asyncio.wait_for(spec.fn(value), spec.timeout)


def _call_batch(
    spec: HandlerSpec, messages: list[Message], values: list[Any], batch: BatchInfo | None
) -> Called:
    """Run a sync batch handler; map what it returned to positions (:func:`batch_outcomes`)."""
    try:
        if batch is not None:
            call = CallInfo(batch, messages, whole_batch=True)
            result = hooks.call_sync(spec.middleware, call, functools.partial(spec.fn, values))
        else:
            result = spec.fn(values)
    except Exception as exc:
        return _every(messages, exc)
    return batch_outcomes(spec, [m.id for m in messages], result)


async def _call_batch_async(
    spec: HandlerSpec, messages: list[Message], values: list[Any], batch: BatchInfo | None
) -> Called:
    """:func:`_call_batch` of an async batch handler."""
    try:
        if batch is not None:
            call = CallInfo(batch, messages, whole_batch=True)
            result = await hooks.call_async(spec.middleware, call, lambda: _timed(spec, values))
        else:
            result = await _timed(spec, values)
    except Exception as exc:
        return _every(messages, exc)
    return batch_outcomes(spec, [m.id for m in messages], result)


def _every(entries: Sequence[object], error: BaseException) -> Called:
    """``error`` for every one of ``entries`` (a batch handler failed as a whole)."""
    return dict.fromkeys(range(len(entries)), error), {}


def batch_outcomes(spec: HandlerSpec, ids: list[str], result: Any) -> Called:
    """A batch handler's return value as (errors, values) by position.

    Without results: ``None`` (all done) or a mapping ``{entry_id or position: exception}``.
    With ``results=True``: a list (or tuple) with one value per entry in the order given, or
    a mapping ``{entry_id or position: value}`` covering every entry; in either, an exception
    instance fails its entry. Any other shape fails every entry of the batch (a handler bug:
    the retry policy decides, as for an exception)."""
    if spec.results and isinstance(result, (list, tuple)):
        if len(result) != len(ids):
            return _all_failed(spec, ids, f"returned {len(result)} values for {len(ids)} entries")
        return _split(dict(enumerate(result)))
    if not spec.results and not result:
        return {}, {}
    if not isinstance(result, Mapping):
        expected = "a list with one value per entry" if spec.results else "None"
        return _all_failed(
            spec, ids, f"returned {type(result).__name__}; expected {expected} or a mapping {{entry_id: ...}}"
        )
    index: dict[object, int] = {entry_id: pos for pos, entry_id in enumerate(ids)}
    index.update((pos, pos) for pos in range(len(ids)))
    by_pos = {index[key]: out for key, out in result.items() if key in index}
    if spec.results:
        missing = StreamtasksError(f"batch handler {spec.name} returned no result for this entry")
        by_pos = {pos: by_pos.get(pos, missing) for pos in range(len(ids))}
    return _split(by_pos)


def _split(by_pos: Mapping[int, Any]) -> Called:
    errors = {pos: out for pos, out in by_pos.items() if isinstance(out, BaseException)}
    return errors, {pos: out for pos, out in by_pos.items() if pos not in errors}


def _all_failed(spec: HandlerSpec, ids: list[str], what: str) -> Called:
    return _every(ids, StreamtasksError(f"batch handler {spec.name} {what}"))
