"""What the in-memory app records of ``results=True`` handlers, and its ``call``/``result``
(the same rules as :data:`streamtasks.lua.SETTLE_RESULT`: the first value stored wins)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .. import hooks
from ..errors import CallTimeout, DeadLettered, ResultNotFound
from ..keys import FIELD_REPLY, pick_shard, shard_stream
from ..message import FieldValue
from ..registry import HandlerSpec
from ..results import DEAD, dead_outcome, decode_outcome, entry_address, new_message_id, result_ident
from ..retry import ErrorInfo
from ..worker.run import BatchResult, RawEntry
from ..worker.settle import settled_hooks

CONSUMER = "in-memory"


class Answers:
    """The results half of :class:`~streamtasks.testing.InMemoryApp` (a mixin)."""

    #: Stored outcomes of ``results=True`` handlers: stream -> message -> ``v...``/``d...``.
    stored: dict[str, dict[str, bytes]]
    #: Every middleware hook called while the app ran a batch: ``Class.hook``, in order.
    hook_calls: list[str]

    async def send(
        self,
        stream: str,
        fields: Mapping[str, FieldValue],
        *,
        key: str | bytes | None = None,
        shards: int | None = None,
        message_id: str | None = None,
    ) -> str:
        raise NotImplementedError

    async def drain(self, *, max_batches: int = ...) -> int:
        raise NotImplementedError

    async def call(
        self,
        stream: str,
        fields: Mapping[str, FieldValue],
        *,
        timeout: float | None = None,
        message_id: str | None = None,
        key: str | bytes | None = None,
        shards: int | None = None,
        result_type: Any = Any,
    ) -> Any:
        """:meth:`Producer.call <streamtasks.Producer.call>` in memory: send, :meth:`drain`
        (retries run as the fake clock moves to them), return the handler's stored value or
        raise :class:`~streamtasks.errors.DeadLettered`. ``timeout`` is not waited for: the
        clock is fake; :class:`~streamtasks.errors.CallTimeout` if no outcome was stored."""
        mid = message_id or new_message_id()
        target = self._target(stream, mid if key is None else key, shards)
        await self.send(target, {**fields, FIELD_REPLY: CONSUMER}, message_id=mid)
        await self.drain()
        stored = self.stored.get(target, {}).get(result_ident(mid))
        if stored is None:
            raise CallTimeout(target, mid, timeout)
        return decode_outcome(stored, result_type)

    async def result(
        self,
        stream: str,
        message_id: str,
        *,
        timeout: float | None = None,
        key: str | bytes | None = None,
        shards: int | None = None,
        result_type: Any = Any,
    ) -> Any:
        """The stored result of ``message_id`` (as :meth:`Producer.result
        <streamtasks.Producer.result>`; nothing runs)."""
        target = self._target(stream, message_id if key is None else key, shards)
        stored = self.stored.get(target, {}).get(result_ident(message_id))
        if stored is None:
            raise ResultNotFound(f"no result stored for message {message_id} on {target}")
        return decode_outcome(stored, result_type)

    def results(self, stream: str) -> dict[str, Any]:
        """Stored outcomes of ``stream``'s results handler by message id: the value, or the
        :class:`~streamtasks.errors.DeadLettered` error a caller would get."""
        out: dict[str, Any] = {}
        for ident, stored in self.stored.get(stream, {}).items():
            try:
                out[ident] = decode_outcome(stored)
            except DeadLettered as exc:
                out[ident] = exc
        return out

    def _target(self, stream: str, key: str | bytes, shards: int | None) -> str:
        return shard_stream(stream, pick_shard(key, shards)) if shards else stream

    def _store(self, spec: HandlerSpec, entry_id: str, raw: Any, outcome: bytes) -> None:
        """As :data:`streamtasks.lua.SETTLE_RESULT`: the first value stored wins; a dead-letter
        outcome is replaced."""
        ident, _ = entry_address(spec.stream, entry_id, raw)
        stored = self.stored.setdefault(spec.stream, {})
        if stored.get(ident, DEAD)[:1] == DEAD:
            stored[ident] = outcome

    def _store_dead(self, spec: HandlerSpec, entry: RawEntry, dead_id: str, error: ErrorInfo) -> None:
        """As :data:`streamtasks.lua.DEAD_LETTER` does with a result key."""
        entry_id, raw, attempt = entry
        outcome = dead_outcome(spec.stream, entry_id, spec.dead_letter_stream, error, attempt)
        self._store(spec, entry_id, raw, f"d{dead_id} {outcome}".encode())

    def _settled(
        self, spec: HandlerSpec, entries: Sequence[RawEntry], result: BatchResult, dead_ids: dict[str, str]
    ) -> None:
        """After the settlement: the done entries' values stored, ``on_retry`` and
        ``on_dead_letter`` called (as the worker's :mod:`~streamtasks.worker.settle` does)."""
        if spec.results:
            for index, (entry_id, raw, _) in enumerate(entries):
                if index not in result.failed:
                    self._store(spec, entry_id, raw, result.results[index])
        if spec.middleware and result.failed:
            settled_hooks(spec, entries, result, dict(dead_ids))

    @contextlib.contextmanager
    def _recording(self) -> Iterator[None]:
        """Record the hooks called meanwhile in :attr:`hook_calls`."""
        hooks.recorder = self.hook_calls.append
        try:
            yield
        finally:
            hooks.recorder = None
