"""Start-up check: may this Redis user run every command the worker needs, on its keys?

A user whose ACL lacks one command (``XAUTOCLAIM``, ``EVALSHA``, ...) would otherwise give a
worker that reads and stores, but never reclaims or dead-letters. :func:`check_permissions`
names every missing command in one line (:class:`MissingPermissions`), before anything runs.

Two ways to ask, both with the worker's real keys (an ACL may allow a command on some keys
only): ``ACL DRYRUN`` (Redis 7; nothing runs) when this user may run it, else each command
once in a form that cannot change anything (an invalid id, an expiry of 0, a consumer that
does not exist) and a ``NOPERM`` answer is what counts. Commands run by our Lua scripts are
checked themselves: Redis applies the caller's ACL inside scripts too.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from attrs import frozen
from redis import exceptions as rx
from redis.asyncio import Redis

from .. import keys
from ..connect import is_cluster
from ..errors import ConfigError
from ..fanout import declared_stream
from ..redisutil import REDIS_DOWN

if TYPE_CHECKING:
    from ..registry import HandlerSpec

log = logging.getLogger("streamtasks.worker")

#: An id no command accepts: each probe fails on it after Redis checked the ACL.
BAD_ID = "not-an-id"
NO_SUCH_SHA = "0" * 40
#: A field of the failures hash that no entry id can be.
PROBE_FIELD = "streamtasks:preflight"


class MissingPermissions(ConfigError):
    """The Redis user lacks commands (or key access) the worker needs."""


@frozen
class Probe:
    """One command the worker runs, as the user would grant it (``XGROUP CREATE``), and a
    harmless invocation of it on the worker's real keys."""

    command: str
    argv: tuple[str, ...]

    @property
    def key(self) -> str | None:
        """The key it names (None for the script commands: they name none here)."""
        if self.command in ("EVALSHA", "TIME") or self.command.startswith("SCRIPT"):
            return None
        index = 5 if self.command == "XREADGROUP" else 2 if " " in self.command else 1
        return self.argv[index]


def probes(
    streams: Sequence[tuple[str, str]],
    group: str,
    consumer: str,
    trimmed: Sequence[str] = (),
    recorded: Sequence[str] = (),
    periodic: Sequence[str] = (),
    results: Sequence[str] = (),
) -> list[Probe]:
    """Every command of the worker (``worker/*.py``, ``lua/``, redis-py's script loading) for
    ``streams`` (``(stream, dead-letter stream)`` pairs; ``trimmed``: the keys it trims;
    ``recorded``: the keys it sets; ``periodic``: the streams whose ticks it claims;
    ``results``: the streams whose handlers store results)."""
    nobody = f"streamtasks-preflight-{uuid.uuid4().hex[:8]}"  # a consumer that does not exist
    beat, other_beat = keys.heartbeat_key(group, consumer), keys.heartbeat_key(group, nobody)
    out = [
        Probe("SET", ("SET", beat, "{}", "EX", "0")),  # heartbeat; "invalid expire time"
        Probe("DEL", ("DEL", other_beat)),  # sign-off
        Probe("EXISTS", ("EXISTS", other_beat)),  # consumer hygiene: a live worker's heartbeat?
        Probe("EVALSHA", ("EVALSHA", NO_SUCH_SHA, "0")),  # NOSCRIPT
        Probe("SCRIPT LOAD", ("SCRIPT", "LOAD", "return 1")),
        Probe("SCRIPT EXISTS", ("SCRIPT", "EXISTS", NO_SUCH_SHA)),  # scripts in a pipeline
    ]
    for stream, dead in streams:
        failures = keys.failures_key(stream, group)
        out += [
            Probe("XGROUP CREATE", ("XGROUP", "CREATE", stream, group, BAD_ID, "MKSTREAM")),
            Probe("XGROUP SETID", ("XGROUP", "SETID", stream, group, BAD_ID)),
            Probe("XGROUP DELCONSUMER", ("XGROUP", "DELCONSUMER", stream, group, nobody)),
            Probe("XREADGROUP", ("XREADGROUP", "GROUP", group, consumer, "STREAMS", stream, BAD_ID)),
            Probe("XREVRANGE", ("XREVRANGE", stream, BAD_ID, BAD_ID)),
            Probe("XINFO STREAM", ("XINFO", "STREAM", stream)),
            Probe("XINFO GROUPS", ("XINFO", "GROUPS", stream)),
            Probe("XINFO CONSUMERS", ("XINFO", "CONSUMERS", stream, group)),  # consumer hygiene
            Probe("XPENDING", ("XPENDING", stream, group, BAD_ID, BAD_ID, "1")),
            Probe("XACK", ("XACK", stream, group, BAD_ID)),
            Probe("XCLAIM", ("XCLAIM", stream, group, consumer, "0", BAD_ID)),
            Probe("XAUTOCLAIM", ("XAUTOCLAIM", stream, group, consumer, "0", BAD_ID)),
            Probe("XADD", ("XADD", dead, BAD_ID, "f", "v")),
            Probe("HGET", ("HGET", failures, PROBE_FIELD)),
            Probe("HDEL", ("HDEL", failures, PROBE_FIELD)),
            # HSETNX has no harmless form: set a field no entry id can be, then delete it.
            Probe("HSETNX", ("HSETNX", failures, PROBE_FIELD, "0")),
            *_timer_probes(stream),
        ]
    # trimming (trim_acked_after=, dead_letter_retention=): no id is below 0-0
    out += [Probe("XTRIM", ("XTRIM", key, "MINID", "0")) for key in trimmed]
    # sharded streams: their shard counts are recorded (an expiry of 0 is refused)
    out += [Probe("SET", ("SET", key, "0", "EX", "0")) for key in recorded]
    # periodic handlers: the tick claim reads and writes its hash (a probe field, then deleted)
    for stream in periodic:
        tick = keys.tick_key(stream)
        out += [Probe("HGETALL", ("HGETALL", tick)), Probe("HSET", ("HSET", tick, PROBE_FIELD, "0"))]
    reply = keys.reply_stream("preflight")  # callers' reply streams: streamtasks:reply:{...}
    for stream in results:  # results=True: the result key, and notifying the callers
        key = keys.result_key(stream, PROBE_FIELD)
        out += [
            Probe("GET", ("GET", key)),
            Probe("SET", ("SET", key, "v", "PX", "0")),  # "invalid expire time"
            Probe("EXISTS", ("EXISTS", reply)),
            Probe("XADD", ("XADD", reply, BAD_ID, "k", "v")),
        ]
    return [*out, Probe("TIME", ("TIME",))] if streams else out


def _timer_probes(stream: str) -> list[Probe]:
    """What the delayed-entry mover's script runs on ``stream``'s keys (the worker process runs
    it for every stream: producers may delay an entry for any): harmless forms, as above."""
    delayed, fields = keys.delayed_key(stream), keys.delayed_fields_key(stream)
    return [
        Probe("ZRANGEBYSCORE", ("ZRANGEBYSCORE", delayed, "1", "0")),
        Probe("ZRANGE", ("ZRANGE", delayed, "1", "0")),
        Probe("ZREM", ("ZREM", delayed, PROBE_FIELD)),
        Probe("HGET", ("HGET", fields, PROBE_FIELD)),
        Probe("HDEL", ("HDEL", fields, PROBE_FIELD)),
        Probe("XADD", ("XADD", stream, BAD_ID, "f", "v")),
    ]


def flow_probes(rate_keys: Sequence[str], concurrency_keys: Sequence[str]) -> list[Probe]:
    """The commands of the flow-control scripts (``GCRA``, ``SEM_*``) and the slots' release,
    on the keys of the handlers that have a rate limit or ``max_concurrency``."""
    out = [Probe("TIME", ("TIME",))] if rate_keys or concurrency_keys else []
    for key in rate_keys:
        out += [Probe("GET", ("GET", key)), Probe("SET", ("SET", key, "0 0", "EX", "0"))]
    for key in concurrency_keys:
        out += [
            Probe("ZREMRANGEBYSCORE", ("ZREMRANGEBYSCORE", key, "1", "0")),  # an empty range
            Probe("ZCARD", ("ZCARD", key)),
            Probe("ZRANGE", ("ZRANGE", key, "0", "0")),
            Probe("ZSCORE", ("ZSCORE", key, PROBE_FIELD)),
            Probe("ZADD", ("ZADD", key, "XX", "0", PROBE_FIELD)),  # XX: no such member, no change
            Probe("ZREM", ("ZREM", key, PROBE_FIELD)),
            Probe("PEXPIRE", ("PEXPIRE", key, "1", "NX", "XX")),  # NX with XX: refused after the ACL
        ]
    return out


async def check_permissions(
    redis: Redis,
    streams: Sequence[tuple[str, str]],
    group: str,
    consumer: str,
    trimmed: Sequence[str] = (),
    recorded: Sequence[str] = (),
    periodic: Sequence[str] = (),
    results: Sequence[str] = (),
    extra: Sequence[Probe] = (),
) -> None:
    """Raise :class:`MissingPermissions` naming every command the user may not run
    (``trimmed``: the keys the worker trims; ``recorded``: the keys it sets; ``periodic``: the
    streams whose ticks it claims; ``results``: the streams whose results it stores; ``extra``:
    more probes, e.g. :func:`flow_probes`)."""
    checks = [*probes(streams, group, consumer, trimmed, recorded, periodic, results), *extra]
    try:
        user = await _whoami(redis)
        denied = await _dry_run(redis, user, checks) if user is not None else None
        if denied is None:  # ACL DRYRUN is not ours to run (or this Redis has no ACL): ask each
            denied = await _probe(redis, checks)
    except REDIS_DOWN:
        raise
    except Exception as exc:  # a client or server that cannot answer: start, supervised anyway
        log.warning(
            "could not check the Redis user's permissions at start (%s: %s); a missing "
            "one will show as a failing loop",
            type(exc).__name__,
            exc,
        )
        return
    if denied:
        who = f"Redis user {user!r}" if user else "the Redis user"
        raise MissingPermissions(f"{who} lacks permissions the worker needs: {', '.join(denied)}")


async def check_handlers(redis: Redis, specs: Iterable[HandlerSpec], group: str, consumer: str) -> None:
    """:func:`check_permissions` for what serving ``specs`` needs (their streams, dead-letter
    streams, and the keys their trimming deletes from)."""
    specs = list(specs)
    streams = [(spec.stream, spec.dead_letter_stream) for spec in specs]
    trimmed = [s.stream for s in specs if s.trim_acked_after is not None]
    trimmed += [s.dead_letter_stream for s in specs if s.dead_letter_retention is not None]
    recorded = sorted({keys.shard_count_key(s.shard_of) for s in specs if s.shard_of})
    periodic = [s.stream for s in specs if s.periodic is not None]
    results = [s.stream for s in specs if s.results]
    rates = {keys.rate_key(group, declared_stream(s)) for s in specs if s.rate_limit is not None}
    slots = {keys.concurrency_key(group, declared_stream(s)) for s in specs if s.max_concurrency}
    flow = flow_probes(sorted(rates), sorted(slots))
    await check_permissions(redis, streams, group, consumer, trimmed, recorded, periodic, results, flow)


async def _whoami(redis: Redis) -> str | None:
    try:
        name = await _acl(redis, None, "WHOAMI")
    except rx.ResponseError:  # NOPERM, or a server without ACL
        return None
    return name.decode() if isinstance(name, bytes) else str(name)


async def _dry_run(redis: Redis, user: str, checks: Sequence[Probe]) -> list[str] | None:
    """What ``ACL DRYRUN`` denies; None when we may not ask (or the server cannot answer)."""
    denied: dict[str, None] = {}
    for probe in checks:
        try:
            answer = await _acl(redis, probe, "DRYRUN", user, *probe.argv)
        except rx.ResponseError:  # NOPERM for ACL DRYRUN itself, or Redis < 7
            return None
        text = answer.decode(errors="replace") if isinstance(answer, bytes) else str(answer)
        if text != "OK":
            denied[_denied(probe, text)] = None
    return list(denied)


async def _probe(redis: Redis, checks: Sequence[Probe]) -> list[str]:
    denied: dict[str, None] = {}
    for probe in checks:
        try:
            await _command(redis, *probe.argv)
        except rx.NoPermissionError as exc:
            denied[_denied(probe, str(exc))] = None
            continue
        except rx.ResponseError:
            continue  # the error we provoked: the command itself is allowed
        if probe.command in ("HSETNX", "HSET"):  # it set the probe field: take it away again
            with contextlib.suppress(rx.ResponseError):
                await _command(redis, "HDEL", probe.argv[1], PROBE_FIELD)
    log.debug("permissions checked by running each command (ACL DRYRUN is not permitted)")
    return list(denied)


async def _command(redis: Redis, *argv: str) -> Any:
    return await redis.execute_command(*argv)  # type: ignore[no-untyped-call]


async def _acl(redis: Redis, probe: Probe | None, *argv: str) -> Any:
    """``ACL ...`` on the node that serves ``probe``'s key (any node without one): a Redis
    Cluster client cannot route ACL commands by itself (they name no key)."""
    if not is_cluster(redis):
        return await _command(redis, "ACL", *argv)
    cluster: Any = redis
    key = None if probe is None else probe.key
    node = cluster.get_random_node() if key is None else cluster.get_node_from_key(key)
    return await cluster.execute_command("ACL", *argv, target_nodes=node)


def _denied(probe: Probe, why: str) -> str:
    if probe.key is not None and "key" in why.lower():  # the command is allowed, a key is not
        return f"{probe.command} on key {probe.key}"
    return probe.command
