"""The invariant checker of the fault-injection suite (see RELIABILITY.md, "The checker").

:class:`Invariants` knows every entry a test sent and checks, once the fault is over and
the system has settled:

* sent = handled + dead-lettered + lost, the three disjoint (lost only where the test says
  Redis itself lost data);
* no entry handled twice, except those the test names (a crash forced a re-run);
* the group's pending list empty and its lag 0 — within a stated deadline (polled, no sleeps).

Handlers record the keys (field ``k``) they handled in a *ledger* Redis, separate from the
one under test (``tests/apps/faultapp.py``), so the record survives a restart of the latter.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
import redis as syncredis
import redis.asyncio as aioredis

from streamtasks.deadletter import DeadLetter, list_dead

from . import load_services, modes
from .modes import MODE
from .procs import ManagedProcess

FAULT_DIR = Path(__file__).resolve().parents[1] / "fault"
GROUP = "fault"
VISIBILITY_S = 3
READY_LOG = r"worker \S+ reading"
WORKER_START_S = 60.0
POLL_S = 0.05


@attrs.define
class Workers:
    """Starts ``streamtasks worker faultapp:registry`` subprocesses against the test Redis."""

    spawn: Callable[..., ManagedProcess]
    redis_url: str
    ray_address: str
    ledger_url: str
    mode: str = MODE
    started: list[ManagedProcess] = attrs.field(factory=list)

    @property
    def actors(self) -> bool:
        return self.mode == "actors"

    def one_consumer(self, name: str) -> tuple[list[str], str]:
        """:func:`support.modes.one_consumer` in this suite's mode."""
        return modes.one_consumer(name, self.mode)

    def consumer_names(self, name: str) -> re.Pattern[str]:
        """:func:`support.modes.consumer_names` in this suite's mode."""
        return modes.consumer_names(name, self.mode)

    def loop(self, name: str) -> str:
        """A pattern for background loop ``name`` as ``/readyz`` and ``status`` name it (in
        actor mode, prefixed with the actor that runs it)."""
        return (r"actor-\d+:" if self.actors else "") + re.escape(name)

    def start(
        self,
        streams: str = "jobs",
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        args: Iterable[str] = (),
        redis_url: str | None = None,
        wait: bool = True,
        local_ray: bool = False,
    ) -> ManagedProcess:
        """A worker joining the session's Ray (``local_ray``: starting its own)."""
        ray = [] if local_ray else ["--ray-address", self.ray_address]
        argv = [
            sys.executable, "-m", "streamtasks", "worker", "faultapp:registry", "--mode", self.mode,
            *ray, "--redis-url", redis_url or self.redis_url,
            "--visibility-timeout", str(VISIBILITY_S), "--streams", streams, *args,
        ]  # fmt: skip
        proc = self.spawn(
            argv,
            env={"FAULT_LEDGER_URL": self.ledger_url, "PYTHONFAULTHANDLER": "1", **(env or {})},
            cwd=FAULT_DIR,
            name=name or f"worker{len(self.started)}",
        )
        self.started.append(proc)
        if wait:
            proc.wait_for_log(READY_LOG, timeout=WORKER_START_S)
        return proc

    def logs(self) -> str:
        return "\n".join(p.output_tail() for p in self.started)


@attrs.define
class Outcome:
    """Where every sent entry ended up, and the state of the group."""

    sent: set[str]
    handled: dict[str, int]
    dead: dict[str, DeadLetter]
    pending: int
    lag: int | None

    @property
    def lost(self) -> set[str]:
        return self.sent - set(self.handled) - set(self.dead)

    @property
    def duplicates(self) -> dict[str, int]:
        return {k: n for k, n in self.handled.items() if n > 1}

    @property
    def settled(self) -> bool:
        return self.pending == 0 and self.lag == 0

    def summary(self) -> str:
        return (
            f"sent={len(self.sent)} handled={len(self.handled)} dead={len(self.dead)} "
            f"lost={len(self.lost)} duplicates={len(self.duplicates)} pending={self.pending} lag={self.lag}"
        )


class Invariants:
    """Knows every entry sent to ``stream``; checks where each one ended up.

    Entries are written with a raw client (never the project's producer), each with a unique
    key in field ``k``; the handlers record keys in the ledger, dead letters keep ``f:k``.
    """

    def __init__(self, redis: aioredis.Redis, ledger: syncredis.Redis, stream: str = "jobs") -> None:
        self.redis = redis
        self.ledger = ledger
        self.stream = stream
        self.dead_stream = f"{stream}:dead"
        self.sent: dict[str, str] = {}  # key -> entry id
        self._n = 0

    def new_key(self) -> str:
        self._n += 1
        return f"{self.stream}-{self._n:06d}"

    async def send(self, count: int, chunk: int = 1000, **fields: str | bytes) -> list[str]:
        """XADD ``count`` entries with ``fields`` (plus a fresh ``k``); return their keys."""
        return await self.send_each([dict(fields) for _ in range(count)], chunk)

    async def send_each(self, items: list[dict[str, str | bytes]], chunk: int = 1000) -> list[str]:
        """XADD one entry per field mapping (a fresh ``k`` unless given); return the keys."""
        keys: list[str] = []
        for start in range(0, len(items), chunk):
            pipe = self.redis.pipeline(transaction=False)
            batch = items[start : start + chunk]
            for fields in batch:
                key = str(fields.get("k") or self.new_key())
                keys.append(key)
                pipe.xadd(self.stream, {**fields, "k": key})  # type: ignore[dict-item]
            ids = await pipe.execute()
            for key, entry_id in zip(keys[start:], ids, strict=True):
                self.sent[key] = entry_id.decode()
        return keys

    def handled(self) -> dict[str, int]:
        raw: Any = self.ledger.hgetall("handled")
        return {k.decode(): int(v) for k, v in raw.items() if k.decode() in self.sent}

    async def dead(self) -> dict[str, DeadLetter]:
        out: dict[str, DeadLetter] = {}
        start = "-"
        while True:
            chunk = await list_dead(self.redis, self.dead_stream, 1000, start)
            if not chunk:
                return out
            for letter in chunk:
                key = letter.fields.get("k", b"").decode("utf-8", "replace")
                assert key not in out, f"{key} is in the dead-letter stream twice"
                out[key] = letter
            start = "(" + chunk[-1].dead_id

    async def group_state(self) -> tuple[int, int | None]:
        """(pending count, lag) of the group; (-1, None) while the group does not exist."""
        try:
            groups: Any = await self.redis.xinfo_groups(self.stream)
        except aioredis.ResponseError:
            return -1, None
        for g in groups:
            name = g.get("name") or g.get(b"name")
            if (name.decode() if isinstance(name, bytes) else name) == GROUP:
                lag = g.get("lag", g.get(b"lag"))
                return int(g.get("pending", g.get(b"pending", 0))), None if lag is None else int(lag)
        return -1, None

    async def snapshot(self) -> Outcome:
        pending, lag = await self.group_state()
        return Outcome(set(self.sent), self.handled(), await self.dead(), pending, lag)

    async def wait_settled(
        self, timeout: float, *, may_lose: Iterable[str] = (), logs: Callable[[], str] = str
    ) -> tuple[Outcome, float]:
        """Poll until every sent entry is handled or dead (or lost, if allowed) and the group
        is settled; return the outcome and how long it took. Fails after ``timeout`` s."""
        allowed = set(may_lose)
        started = time.monotonic()
        deadline = started + timeout
        while True:
            out = await self.snapshot()
            if out.settled and out.lost <= allowed:
                return out, time.monotonic() - started
            if time.monotonic() > deadline:
                pytest.fail(f"not settled within {timeout:.0f}s: {out.summary()}\n{logs()}", pytrace=False)
            await asyncio.sleep(POLL_S * 4)

    async def check(
        self,
        timeout: float,
        *,
        may_lose: Iterable[str] = (),
        may_repeat: Iterable[str] = (),
        logs: Callable[[], str] = str,
    ) -> tuple[Outcome, float]:
        """:meth:`wait_settled`, then assert the invariant. Returns (outcome, seconds)."""
        out, took = await self.wait_settled(timeout, may_lose=may_lose, logs=logs)
        both = set(out.handled) & set(out.dead)
        assert not both, f"{len(both)} entries both handled and dead-lettered: {sorted(both)[:10]}"
        assert out.lost <= set(may_lose), f"lost: {sorted(out.lost)[:10]}"
        assert set(out.handled) | set(out.dead) | out.lost == out.sent
        unexpected = set(out.duplicates) - set(may_repeat)
        assert not unexpected, (
            f"handled more than once: { {k: out.duplicates[k] for k in sorted(unexpected)[:10]} }"
        )
        return out, took


async def poll(check: Callable[[], Any], timeout: float, what: str, logs: Callable[[], str] = str) -> float:
    """Await ``check()`` (sync or async) until truthy; return seconds taken, fail at the deadline."""
    started = time.monotonic()
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not within {timeout:.0f}s\n{logs()}", pytrace=False)
        await asyncio.sleep(POLL_S)


# --------------------------------------------------------------------------- ledger


@pytest.fixture(scope="session")
def ledger_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A second throwaway Redis: the handlers' record of what they did, and fault flags."""
    server = _services().RedisServer(tmp_path_factory.mktemp("ledger"))
    try:
        server.start()
    except (_services().ServiceError, OSError) as exc:
        pytest.fail(f"could not start the ledger redis-server: {exc}", pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def ledger(ledger_server: Any) -> Iterator[syncredis.Redis]:
    """A client on the emptied ledger."""
    client = syncredis.Redis.from_url(ledger_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def workers(
    request: pytest.FixtureRequest, spawn: Any, redis_url: str, ray_address: str,
    ledger: syncredis.Redis, ledger_server: Any,
) -> Workers:  # fmt: skip
    """Starts the test's workers in :data:`MODE`, or in the mode the test is parametrized with
    (:func:`both_modes`)."""
    return Workers(spawn, redis_url, ray_address, ledger_server.url, getattr(request, "param", MODE))


def both_modes(metafunc: pytest.Metafunc) -> None:
    """``pytest_generate_tests``: a test marked ``both_modes`` runs its workers in task mode
    and in actor mode, unless ``STREAMTASKS_MODE`` chose one mode for the whole run."""
    marked = metafunc.definition.get_closest_marker("both_modes") is not None
    if marked and "workers" in metafunc.fixturenames and "STREAMTASKS_MODE" not in os.environ:
        metafunc.parametrize("workers", ["tasks", "actors"], indirect=True)


@pytest.fixture
async def inv(redis: aioredis.Redis, ledger: syncredis.Redis) -> Invariants:
    """An :class:`Invariants` for the ``jobs`` stream on an emptied Redis and ledger."""
    return Invariants(redis, ledger)


def _services() -> Any:
    return load_services()
