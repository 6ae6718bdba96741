"""The producing side of an in-memory app: ``send`` and ``send_raw``, as a producer and a foreign
``XADD`` would add an entry."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

from .. import otel
from ..delayed import Delay, due_ms
from ..keys import FIELD_MESSAGE_ID, pick_shard, shard_stream
from ..message import FieldValue, encode_fields
from ..producer import new_message_id
from .broker import FakeClock
from .timers import MemoryTimers


class Sending:
    """How entries get into an in-memory app's streams (the app adds them: ``_xadd``)."""

    clock: FakeClock
    timers: MemoryTimers
    _turns: dict[str, Iterator[int]]

    _xadd: Callable[[str, Mapping[str, str | bytes]], str]

    async def send(
        self,
        stream: str,
        fields: Mapping[str, FieldValue],
        *,
        key: str | bytes | None = None,
        shards: int | None = None,
        message_id: str | None = None,
        delay: Delay | None = None,
        eta: datetime | None = None,
    ) -> str:
        """Add an entry the way :meth:`Producer.send <streamtasks.Producer.send>` does (on a
        sharded stream, ``key`` picks the shard; without one the shards take turns). With
        ``delay`` or ``eta``, the entry waits until :meth:`advance` moves the clock to its due
        time, and its message id is returned."""
        due = due_ms(delay, eta, self.clock.now)
        if shards:
            turn = self._turns.setdefault(stream, itertools.count())
            stream = shard_stream(stream, pick_shard(key, shards) if key is not None else next(turn) % shards)
        encoded = encode_fields(fields)
        encoded[FIELD_MESSAGE_ID] = message_id or str(encoded.get(FIELD_MESSAGE_ID) or new_message_id())
        if due is not None:
            return self.timers.schedule(stream, due, encoded)
        return _traced_add(stream, encoded, self._xadd)

    async def send_raw(self, stream: str, fields: Mapping[str, str | bytes]) -> str:
        """Add an entry as a foreign producer would (``XADD``): no message id, any bytes.
        Awaited like :meth:`send` and like the ``XADD`` it stands for."""
        return self._xadd(stream, fields)

    def add_raw(self, stream: str, fields: Mapping[str, str | bytes]) -> str:
        """Deprecated: ``await app.send_raw(stream, fields)``. Adds the entry at once."""
        warnings.warn(
            "InMemoryApp.add_raw() is deprecated: use `await app.send_raw(stream, fields)`",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._xadd(stream, fields)


def _traced_add(stream: str, encoded: dict[str, str | bytes], add: Callable[[str, Any], str]) -> str:
    """``add(stream, encoded)`` in a send span when the caller is traced (as the producer)."""
    span = otel.send_span(stream, encoded)
    entry_id = add(stream, encoded)
    if span is not None:
        otel.end_send(span, entry_id)
    return entry_id
