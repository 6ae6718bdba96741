"""What happened in an in-memory app (:class:`~streamtasks.testing.InMemoryApp`), by stream:
the entries handled, acknowledged, dead-lettered, waiting for a retry, or scheduled."""

from __future__ import annotations

from collections.abc import Mapping

from ..deadletter import DeadLetter
from ..registry import Registry
from .broker import FakeClock, MemoryStream
from .timers import MemoryTimers


class Outcomes:
    """The in-memory streams of an app and the questions a test asks of them."""

    registry: Registry
    clock: FakeClock
    streams: dict[str, MemoryStream]
    timers: MemoryTimers

    def dead_letters(self, stream: str) -> list[DeadLetter]:
        """Dead letters of ``stream``'s handler (its dead-letter stream), parsed as the CLI does."""
        spec = self.registry.handlers.get(stream)
        dead = self._stream(spec.dead_letter_stream if spec else f"{stream}:dead")
        return [
            DeadLetter.from_entry(i, dict(zip(r[0::2], r[1::2], strict=True)))
            for i, r in dead.entries.items()
        ]

    def handled(self, stream: str) -> list[str]:
        """Entry ids whose handler succeeded, in the order they were acknowledged."""
        return list(self._stream(stream).handled)

    def acked(self, stream: str) -> list[str]:
        """Every entry id the group acknowledged, in order: the handled ones and the
        dead-lettered ones (the worker acks an entry once its dead letter is written)."""
        return list(self._stream(stream).acked)

    def pending(self, stream: str) -> dict[str, int]:
        """Entries waiting for a retry: entry id -> deliveries so far."""
        return {i: p.deliveries for i, p in self._stream(stream).pending.items()}

    def entries(self, stream: str) -> list[tuple[str, dict[str, bytes]]]:
        """Every entry of ``stream`` (a stream with no handler just collects them)."""
        entries = self._stream(stream).entries.items()
        return [(i, {k.decode(): v for k, v in _as_dict(raw).items()}) for i, raw in entries]

    def _xadd(self, stream: str, fields: Mapping[str, str | bytes]) -> str:
        raw = [b for kv in fields.items() for b in (_bytes(kv[0]), _bytes(kv[1]))]
        return self._stream(stream).add(raw, self.clock.ms)

    def _stream(self, name: str) -> MemoryStream:
        if name not in self.streams:
            self.streams[name] = MemoryStream(name)
        return self.streams[name]

    def scheduled(self, stream: str) -> dict[str, float]:
        """Delayed entries of ``stream`` not due yet: message id -> due time (seconds)."""
        return {mid: due / 1000 for mid, (due, _) in self.timers.scheduled.get(stream, {}).items()}


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _as_dict(raw: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(raw[0::2], raw[1::2], strict=True))
