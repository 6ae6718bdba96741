"""Middleware: objects with hook methods, registered with ``registry.middleware(obj)``.

A middleware implements any of these methods (none is required; an object with none of them,
or with a misspelt ``on_*``/``before_*``/``after_*``/``around_*`` method, is refused):

======================  =======================================================  =============
hook                    called                                                   runs in
======================  =======================================================  =============
``before_batch(b)``     before a batch's handler call(s); ``b``: :class:`BatchInfo`  the handler's
``around_call(c)``      returns a context manager wrapping each handler call        process (the
                        (per entry for a per-entry handler, once per batch for a    actor; the Ray
                        batch handler; sync and async handlers); ``c``:             task in task
                        :class:`CallInfo` (``c.result`` / ``c.error`` on exit)      mode)
``after_batch(b, f)``   after the batch; ``f``: ``{entry_id: RetryLater | Dead}``
``on_retry(e)``         an entry will run again; ``e``: :class:`SettleEvent`       where settle runs
``on_dead_letter(e)``   an entry was dead-lettered (written, acked)                 (the actor; the
                                                                                    worker process
                                                                                    in task mode)
``on_send(s)``          before an entry is added; ``s``: :class:`SendInfo`         the producer
======================  =======================================================  =============

Order: hooks run in registration order going in (``before_batch``, ``around_call``'s entry,
``on_retry``, ``on_dead_letter``, ``on_send``) and in reverse order coming out
(``around_call``'s exit, ``after_batch``): the first registered middleware is the outermost.

Exceptions: hooks observe; they never change an entry's outcome. A hook that raises is logged
with its name (``Class.method``) and traceback, and everything else goes on as if it had not
been registered: the handler runs once (a failing ``before_batch`` or ``around_call`` entry
does not stop it; that hook's exit is skipped), its outcome stands (a context manager cannot
swallow the handler's exception, and a failing exit changes nothing), the other hooks run,
and the settlement (ack, retry, dead letter) is written before ``on_retry`` /
``on_dead_letter`` run, so a failing one neither loses the dead letter nor holds the batch up.
An entry is never lost or run twice because of a hook. To refuse an entry, raise in the
handler (``Reject``), not in a hook.

Middleware objects travel to the actors and Ray tasks with the registry (pickled): keep their
state picklable, or rebuild it lazily in the process that uses it (see
:class:`streamtasks.tracing.Tracing`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from attrs import define, field, frozen

from .errors import RegistryError

if TYPE_CHECKING:
    from .message import Message, RawFields
    from .retry import ErrorInfo, Failure

log = logging.getLogger("streamtasks.hooks")

HOOKS = ("before_batch", "around_call", "after_batch", "on_retry", "on_dead_letter", "on_send")
_HOOKISH = ("on_", "before_", "after_", "around_")


def check_middleware(obj: object) -> None:
    """:class:`RegistryError` unless ``obj`` implements at least one hook, and no method that
    looks like a hook but is none (``on_dead_leter``: silently never called otherwise)."""
    names = [n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n, None))]
    unknown = [n for n in names if n.startswith(_HOOKISH) and n not in HOOKS]
    if unknown:
        raise RegistryError(
            f"middleware {type(obj).__name__} has unknown hook(s) {', '.join(unknown)}; "
            f"hooks are {', '.join(HOOKS)}"
        )
    if not any(n in HOOKS for n in names):
        raise RegistryError(f"middleware {type(obj).__name__} implements none of {', '.join(HOOKS)}")


@define
class BatchInfo:
    """A batch as ``before_batch`` / ``after_batch`` see it: the entries handed to the handler
    (those that decoded), and ``state``, a dict for middleware to keep what they need between
    their hooks of this batch (key it by ``self``)."""

    stream: str
    handler: str
    group: str
    messages: Sequence[Message]
    state: dict[object, Any] = field(factory=dict)


@define
class CallInfo:
    """One handler call as ``around_call`` sees it: the entries it is given (one, or the batch),
    its batch, and on exit what it returned (``result``) or raised (``error``)."""

    batch: BatchInfo
    messages: Sequence[Message]
    whole_batch: bool = False  # a batch handler's call (else one entry's)
    result: Any = None
    error: BaseException | None = None


@frozen
class SettleEvent:
    """An entry settled as retry or dead letter. ``ran``: False when the worker decided
    without running the handler (a batch timeout, a lost executor, the delivery limit)."""

    stream: str
    handler: str
    group: str
    entry_id: str
    attempt: int
    error: ErrorInfo
    fields: RawFields
    ran: bool = True
    delay: float | None = None  # a retry's delay in seconds
    dead_letter_stream: str = ""
    dead_letter_id: str = ""  # the dead letter's id (``on_dead_letter``)


@define
class SendInfo:
    """An entry about to be added: ``fields`` may be changed (add reserved ``_st_`` fields)."""

    stream: str
    fields: dict[str, Any]


#: Set by the in-memory test app while it runs: told ``Class.hook`` of every hook called.
recorder: Callable[[str], None] | None = None


def _name(obj: object, hook: str) -> str:
    return f"{type(obj).__name__}.{hook}"


def _record(obj: object, hook: str) -> None:
    if recorder is not None:
        recorder(_name(obj, hook))


def _logged(obj: object, hook: str) -> None:
    log.exception("middleware hook %s failed (ignored: the entry's outcome stands)", _name(obj, hook))


def bound(middleware: Sequence[object], hook: str) -> list[tuple[object, Callable[..., Any]]]:
    """(middleware, its bound ``hook``) for those that implement it, in registration order."""
    out = []
    for obj in middleware:
        method = getattr(obj, hook, None)
        if method is not None:
            out.append((obj, method))
    return out


def notify(middleware: Sequence[object], hook: str, *args: Any, reverse: bool = False) -> None:
    """Call ``hook(*args)`` on every middleware that has it; a failure is logged and skipped."""
    hooks = bound(middleware, hook)
    for obj, method in reversed(hooks) if reverse else hooks:
        _record(obj, hook)
        try:
            method(*args)
        except Exception:
            _logged(obj, hook)


Entered = list[tuple[object, AbstractContextManager[Any]]]


def enter_calls(middleware: Sequence[object], call: CallInfo) -> Entered:
    """Enter each ``around_call`` in registration order; those that fail are logged and left
    out (their exit is not called)."""
    entered: Entered = []
    for obj, method in bound(middleware, "around_call"):
        _record(obj, "around_call")
        try:
            manager = method(call)
            manager.__enter__()
        except Exception:
            _logged(obj, "around_call")
            continue
        entered.append((obj, manager))
    return entered


def exit_calls(entered: Entered, call: CallInfo) -> None:
    """Exit the entered ``around_call``\\ s in reverse order with the call's exception (if it
    raised); whatever they return (a context manager's "suppress") or raise changes nothing."""
    error = call.error
    info = (type(error), error, error.__traceback__) if error is not None else (None, None, None)
    for obj, manager in reversed(entered):
        try:
            manager.__exit__(*info)
        except BaseException as exc:
            if exc is not error:  # contextlib re-raises the handler's own exception: not a failure
                _logged(obj, "around_call")


def call_sync(middleware: Sequence[object], call: CallInfo, fn: Callable[[], Any]) -> Any:
    """``fn()`` wrapped by the ``around_call`` hooks: returns or raises exactly what ``fn`` did."""
    entered = enter_calls(middleware, call)
    try:
        call.result = fn()
    except BaseException as exc:
        call.error = exc
        raise
    finally:
        exit_calls(entered, call)
    return call.result


async def call_async(middleware: Sequence[object], call: CallInfo, fn: Callable[[], Any]) -> Any:
    """:func:`call_sync` for a coroutine function ``fn``."""
    entered = enter_calls(middleware, call)
    try:
        call.result = await fn()
    except BaseException as exc:
        call.error = exc
        raise
    finally:
        exit_calls(entered, call)
    return call.result


def sending(middleware: Sequence[object], stream: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` after every ``on_send`` hook (each may change them; one that fails is logged)."""
    info = SendInfo(stream, dict(fields))
    notify(middleware, "on_send", info)
    return info.fields


def after_batch(middleware: Sequence[object], batch: BatchInfo, failed: Mapping[str, Failure]) -> None:
    notify(middleware, "after_batch", batch, failed, reverse=True)
