"""The middleware composition (streamtasks/hooks.py), pure: over random stacks of hooks that
fail on the way in or out, or try to swallow the handler's exception, the handler runs exactly
once, its outcome stands, hooks run in registration order going in and reverse order coming
out, and each failing hook is logged once with its name."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtasks import hooks
from streamtasks.errors import RegistryError
from streamtasks.hooks import BatchInfo, CallInfo

ENTER = ("ok", "raise")
EXIT = ("ok", "raise", "suppress", "reraise")


class Boom(Exception):
    pass


class HandlerError(Exception):
    pass


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def captured_logs() -> Iterator[Captured]:
    logger = logging.getLogger("streamtasks.hooks")
    handler = Captured()
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


class Manager:
    """A hand-written context manager."""

    def __init__(self, index: int, enter: str, exit_: str, events: list[Any]) -> None:
        self.index, self.enter, self.exit, self.events = index, enter, exit_, events

    def __enter__(self) -> None:
        self.events.append(("enter", self.index))
        if self.enter == "raise":
            raise Boom(f"enter {self.index}")

    def __exit__(self, *exc: Any) -> bool:
        self.events.append(("exit", self.index, exc[0]))
        if self.exit == "raise":
            raise Boom(f"exit {self.index}")
        if self.exit == "reraise" and exc[1] is not None:
            raise exc[1]  # passes the handler's exception on: not a failure of the hook
        return self.exit == "suppress"


@contextlib.contextmanager
def gen_manager(index: int, enter: str, exit_: str, events: list[Any]) -> Iterator[None]:
    """The same behaviour written with contextlib (a generator)."""
    events.append(("enter", index))
    if enter == "raise":
        raise Boom(f"enter {index}")
    try:
        yield
    except BaseException as exc:
        events.append(("exit", index, type(exc)))
        if exit_ == "raise":
            raise Boom(f"exit {index}") from exc
        if exit_ == "suppress":
            return  # tries to swallow the handler's exception
        raise
    events.append(("exit", index, None))
    if exit_ == "raise":
        raise Boom(f"exit {index}")


def make_hook(index: int, enter: str, exit_: str, generator: bool, events: list[Any]) -> object:
    """A middleware class ``H<index>`` whose ``around_call`` behaves as told."""

    def around_call(self: object, call: CallInfo) -> Any:
        kind = gen_manager if generator else Manager
        return kind(index, enter, exit_, events)

    return type(f"H{index}", (), {"around_call": around_call})()


stacks = st.lists(st.tuples(st.sampled_from(ENTER), st.sampled_from(EXIT), st.booleans()), max_size=6)


def check(stack: list[tuple[str, str, bool]], events: list[Any], logs: Captured, raised: bool) -> None:
    n = len(stack)
    entered = [e[1] for e in events if e[0] == "enter"]
    assert entered == list(range(n)), "every hook is entered, in registration order"
    ok_in = [i for i, (enter, _, _) in enumerate(stack) if enter == "ok"]
    exits = [e for e in events if e[0] == "exit"]
    assert [e[1] for e in exits] == ok_in[::-1], "those entered exit in reverse order"
    assert all(e[2] is (HandlerError if raised else None) for e in exits), "each exit sees the outcome"
    failed_in = [f"H{i}.around_call" for i in range(n) if stack[i][0] == "raise"]
    failed_out = [f"H{i}.around_call" for i in ok_in[::-1] if stack[i][1] == "raise"]
    assert [m.split()[2] for m in logs.messages] == failed_in + failed_out, "each failure logged by name"


def call_info() -> CallInfo:
    return CallInfo(BatchInfo("s", "h", "g", []), [])


@settings(deadline=None)  # logging tracebacks on a loaded machine
@given(stack=stacks, raised=st.booleans())
def test_around_call_composes_in_order_and_never_changes_the_outcome(
    stack: list[tuple[str, str, bool]], raised: bool
) -> None:
    events: list[Any] = []
    middleware = [make_hook(i, *spec, events) for i, spec in enumerate(stack)]
    calls: list[int] = []
    error = HandlerError("the handler's own")

    def handler() -> str:
        calls.append(1)
        events.append(("handler",))
        if raised:
            raise error
        return "value"

    call = call_info()
    with captured_logs() as logs:
        if raised:
            with pytest.raises(HandlerError) as caught:
                hooks.call_sync(middleware, call, handler)
            assert caught.value is error
        else:
            assert hooks.call_sync(middleware, call, handler) == "value"
    assert calls == [1]
    assert call.error is (error if raised else None)
    assert call.result == (None if raised else "value")
    check(stack, events, logs, raised)


@settings(deadline=None)
@given(stack=stacks, raised=st.booleans())
def test_around_call_of_an_async_handler_composes_the_same_way(
    stack: list[tuple[str, str, bool]], raised: bool
) -> None:
    events: list[Any] = []
    middleware = [make_hook(i, *spec, events) for i, spec in enumerate(stack)]

    async def handler() -> str:
        await asyncio.sleep(0)
        if raised:
            raise HandlerError("async")
        return "value"

    with captured_logs() as logs:
        coro = hooks.call_async(middleware, call_info(), handler)
        if raised:
            with pytest.raises(HandlerError):
                asyncio.run(coro)
        else:
            assert asyncio.run(coro) == "value"
    check(stack, events, logs, raised)


@settings(deadline=None)
@given(failing=st.lists(st.booleans(), max_size=6))
def test_batch_hooks_run_in_order_going_in_and_reverse_coming_out(failing: list[bool]) -> None:
    events: list[tuple[str, int]] = []

    def make(i: int, fails: bool) -> object:
        def hook(name: str) -> Any:
            def method(self: object, *args: Any) -> None:
                events.append((name, i))
                if fails:
                    raise Boom(name)

            return method

        names = ("before_batch", "after_batch", "on_dead_letter")
        return type(f"B{i}", (), {n: hook(n) for n in names})()

    middleware = [make(i, f) for i, f in enumerate(failing)]
    batch = BatchInfo("s", "h", "g", [])
    with captured_logs() as logs:
        hooks.notify(middleware, "before_batch", batch)
        hooks.after_batch(middleware, batch, {})
        hooks.notify(middleware, "on_dead_letter", object())
    n = len(failing)
    assert events == [
        *(("before_batch", i) for i in range(n)),
        *(("after_batch", i) for i in reversed(range(n))),
        *(("on_dead_letter", i) for i in range(n)),
    ]
    assert len(logs.messages) == 3 * sum(failing)


def test_middleware_without_hooks_or_with_a_misspelt_hook_is_refused() -> None:
    class Nothing:
        def report(self) -> None: ...

    class Misspelt:
        def on_dead_leter(self, event: object) -> None: ...

    with pytest.raises(RegistryError, match="implements none"):
        hooks.check_middleware(Nothing())
    with pytest.raises(RegistryError, match="on_dead_leter"):
        hooks.check_middleware(Misspelt())
