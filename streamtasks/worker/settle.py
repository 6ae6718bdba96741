"""Settlement: turn the outcome of every entry of a batch into Redis writes.

:meth:`Settlement.of` is the pure plan (done / retry after a delay / dead); :class:`Settler`
applies it in one pipeline:

* done  -> ``XACK`` (after the handler returned, never before);
* retry -> the entry stays pending; its idle time is set so that it becomes claimable
  exactly ``delay`` seconds from now, and any worker's reclaim step runs it again;
* dead  -> added to the dead-letter stream and acked in one Lua script.

Delayed retries live in the pending list (PEL), not in a side structure: the entry keeps its
id (so idempotency keys stay stable), the retry count *is* Redis' delivery counter (so it
survives restarts), and a crashed worker's entries are recovered by the very same
``XAUTOCLAIM`` step. The price: a retry delay is capped at the visibility timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from attrs import define, evolve, field
from redis.asyncio import Redis

from .. import hooks, keys, lua
from ..connect import queue_script
from ..deadletter import dead_letter_fields
from ..hooks import SettleEvent
from ..logs import LOGGED_IDS
from ..registry import HandlerSpec
from ..results import REPLY_MAXLEN, dead_outcome, entry_address
from ..retry import ErrorInfo, RetryLater
from .pending import PendingEntries
from .run import BatchResult, RawEntry

log = logging.getLogger("streamtasks.worker")
#: (pipeline index of the script that stored the outcome, reply stream, result identity)
Reply = tuple[int, str, str]
#: Never used in practice: every done entry of a results handler has its value.
NO_VALUE = b"vnull"


@define
class Settlement:
    """What to do with each entry of a settled batch."""

    done: list[str] = field(factory=list)
    retried_before: list[str] = field(factory=list)  # done entries with a failure record
    delays: dict[int, list[str]] = field(factory=dict)  # idle ms to set -> entry ids
    dead: list[tuple[RawEntry, ErrorInfo]] = field(factory=list)

    @property
    def retried(self) -> int:
        return sum(len(ids) for ids in self.delays.values())

    @classmethod
    def of(cls, entries: Sequence[RawEntry], result: BatchResult, visibility_ms: int) -> Settlement:
        """The plan for ``entries`` given their ``result``; a retry ``delay`` seconds away gets
        idle time ``visibility_ms - delay`` (claimable exactly then)."""
        plan = cls()
        for index, entry in enumerate(entries):
            outcome = result.failed.get(index)
            if outcome is None:
                plan.done.append(entry[0])
                if entry[2] > 1:
                    plan.retried_before.append(entry[0])
            elif isinstance(outcome, RetryLater):
                idle = max(0, visibility_ms - int(outcome.delay * 1000))
                plan.delays.setdefault(idle, []).append(entry[0])
            else:
                plan.dead.append((entry, outcome.error))
        return plan


class Settler:
    """Applies settlements for one group and consumer."""

    def __init__(
        self, redis: Redis, pending: PendingEntries, visibility_ms: int, dead_letter_maxlen: int = 0
    ) -> None:
        self.redis = redis
        self.pending = pending
        self.group = pending.group
        self.consumer = pending.consumer
        self.visibility_ms = visibility_ms
        self.dead_letter_maxlen = dead_letter_maxlen
        self._dead_script = redis.register_script(lua.DEAD_LETTER)
        self._result_script = redis.register_script(lua.SETTLE_RESULT)
        self._notify_script = redis.register_script(lua.NOTIFY)

    async def apply(self, spec: HandlerSpec, entries: Sequence[RawEntry], result: BatchResult) -> Settlement:
        """One pipeline of XACK / retry / dead-letter for ``entries``; returns the plan."""
        plan = Settlement.of(entries, result, self.visibility_ms)
        stream, failures = spec.stream, keys.failures_key(spec.stream, self.group)
        pipe = self.redis.pipeline(transaction=False)
        replies: list[Reply] = []  # callers waiting for an outcome settled here
        if plan.done and spec.results:
            await self._store_results(pipe, spec, entries, result, replies)
        elif plan.done:
            pipe.xack(stream, self.group, *plan.done)
        if plan.retried_before:
            pipe.hdel(failures, *plan.retried_before)
        now_ms = int(time.time() * 1000)
        for idle, ids in plan.delays.items():
            for entry_id in ids:
                pipe.hsetnx(failures, entry_id, now_ms)  # the first failure time, kept
            await self.pending.reset(stream, ids, idle, client=pipe)
        dead_at = []  # pipeline index of each dead letter's script
        for entry, error in plan.dead:
            dead_at.append(len(pipe))
            await self._add_dead(pipe, spec, entry, error, now_ms, replies)
        done: list[Any] = await pipe.execute() if len(pipe) else []
        if replies:
            await self._notify(done, replies)
        if plan.dead:
            _log_dead(spec, self.consumer, plan.dead)
        if spec.middleware and result.failed:
            written = {entry[0]: done[i] for (entry, _), i in zip(plan.dead, dead_at, strict=True)}
            settled_hooks(spec, entries, result, written)
        return plan

    async def _add_dead(
        self,
        pipe: Any,
        spec: HandlerSpec,
        entry: RawEntry,
        error: ErrorInfo,
        now_ms: int,
        replies: list[Reply],
    ) -> None:
        entry_id, raw, attempt = entry
        fields = dead_letter_of(spec, self.group, entry, error, now_ms)
        script_keys = [spec.stream, spec.dead_letter_stream, keys.failures_key(spec.stream, self.group)]
        args: list[Any] = [self.group, self.consumer, entry_id, self.dead_letter_maxlen, now_ms]
        if spec.results:  # the caller's outcome, stored in the same step
            ident, reply = entry_address(spec.stream, entry_id, raw)
            outcome = dead_outcome(spec.stream, entry_id, spec.dead_letter_stream, error, attempt)
            script_keys.append(keys.result_key(spec.stream, ident))
            args += [int(spec.result_ttl * 1000), outcome]
            if reply:
                replies.append((len(pipe), reply, ident))
        await queue_script(self._dead_script, script_keys, [*args, *fields], pipe)

    async def _store_results(
        self,
        pipe: Any,
        spec: HandlerSpec,
        entries: Sequence[RawEntry],
        result: BatchResult,
        replies: list[Reply],
    ) -> None:
        """Each done entry's value stored and the entry acked, in one script per entry."""
        ttl_ms = int(spec.result_ttl * 1000)
        for index, (entry_id, raw, _) in enumerate(entries):
            if index in result.failed:
                continue
            ident, reply = entry_address(spec.stream, entry_id, raw)
            if reply:
                replies.append((len(pipe), reply, ident))
            value = result.results.get(index, NO_VALUE)
            await queue_script(
                self._result_script,
                [spec.stream, keys.result_key(spec.stream, ident)],
                [self.group, entry_id, ttl_ms, value],
                pipe,
            )

    async def _notify(self, done: list[Any], replies: list[Reply]) -> None:
        """Tell the waiting callers, with the outcome that was stored (ours, or the one stored
        first). The settlement is written already: a failure here is logged and changes
        nothing else (a caller not told reads the stored result at its deadline)."""
        pipe = self.redis.pipeline(transaction=False)
        for index, reply, ident in replies:
            stored = done[index]
            if isinstance(stored, list):  # a dead letter: [dead-letter id, stored outcome]
                stored = stored[1]
            if stored:  # False: the entry was no longer ours, its new owner settles it
                await queue_script(self._notify_script, [reply], [REPLY_MAXLEN, ident, stored], pipe)
        try:
            await pipe.execute()
        except Exception as exc:  # Redis gone since, an ACL without the reply streams ...
            log.warning("notifying %d waiting caller(s) failed: %s", len(replies), exc)


def _log_dead(spec: HandlerSpec, consumer: str, dead: list[tuple[RawEntry, ErrorInfo]]) -> None:
    """One line per settled batch, not per entry: a flood of bad input stays readable."""
    (entry_id, _, attempt), error = dead[0]
    more = f" and {len(dead) - 1} more" if len(dead) > 1 else ""
    log.warning(
        "dead-lettered %s/%s%s after %d attempt(s): %s: %s",
        spec.stream,
        entry_id,
        more,
        attempt,
        error.type,
        error.message[:200],
        extra={
            "stream": spec.stream,
            "handler": spec.name,
            "consumer": consumer,
            "entry_id": entry_id,
            "entry_ids": [e[0] for e, _ in dead[:LOGGED_IDS]],
        },
    )


def settled_hooks(
    spec: HandlerSpec, entries: Sequence[RawEntry], result: BatchResult, dead_ids: dict[str, Any]
) -> None:
    """``on_retry`` / ``on_dead_letter`` for the entries just settled (after their writes: a
    failing hook is logged and loses nothing). A dead letter another consumer wrote (the
    entry was no longer ours: its script returned nothing) is left to that consumer's hooks."""
    ran = result.duration > 0
    for index, outcome in result.failed.items():
        entry_id, raw, attempt = entries[index]
        event = SettleEvent(
            spec.stream,
            spec.name,
            spec.group,
            entry_id,
            attempt,
            outcome.error,
            raw,
            ran=ran,
            delay=outcome.delay if isinstance(outcome, RetryLater) else None,
            dead_letter_stream=spec.dead_letter_stream,
        )
        if isinstance(outcome, RetryLater):
            hooks.notify(spec.middleware, "on_retry", event)
            continue
        written = dead_ids.get(entry_id)
        written = written[0] if isinstance(written, list) else written
        if written:
            dead_id = written.decode() if isinstance(written, bytes) else str(written)
            hooks.notify(spec.middleware, "on_dead_letter", evolve(event, dead_letter_id=dead_id))


def dead_letter_of(
    spec: HandlerSpec, group: str, entry: RawEntry, error: ErrorInfo, now_ms: int
) -> list[str | bytes]:
    """The dead letter of ``entry`` that ``spec``'s handler gave up on, as the worker writes it."""
    entry_id, raw, attempt = entry
    return dead_letter_fields(
        stream=spec.stream,
        entry_id=entry_id,
        group=group,
        handler=spec.name,
        error=error,
        attempts=attempt,
        raw=raw,
        now_ms=now_ms,
    )
