"""``streamtasks dlq list/show/replay/purge`` against a real Redis, and acceptance 4 of
issue 3 end to end: poison entries dead-lettered, the handler fixed, replayed, all handled."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis as syncredis
import redis.asyncio as aioredis
from click.testing import CliRunner, Result
from support.deadletters import add_dead
from support.invariants import Invariants, Workers, inv, ledger, ledger_server, poll, workers

from streamtasks.cli import main
from streamtasks.deadletter import dead_letter_fields
from streamtasks.retry import ErrorInfo

__all__ = ["inv", "ledger", "ledger_server", "workers"]  # fixtures used here

pytestmark = pytest.mark.integration


def cli(redis_url: str, *args: str) -> Result:
    result = CliRunner().invoke(
        main, [*args[:2], "--redis-url", redis_url, *args[2:]], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def sync_redis(redis_url: str) -> Any:
    client = syncredis.Redis.from_url(redis_url)
    client.flushall()
    yield client
    client.close()


def test_list_and_show_print_the_dead_letters(sync_redis: syncredis.Redis, redis_url: str) -> None:
    """``dlq list --json`` counts and lists them; ``dlq show`` prints one in full."""
    ids = [add_dead(sync_redis, f"k{i}") for i in range(3)]
    listed = json.loads(cli(redis_url, "dlq", "list", "jobs", "--json").output)
    assert listed["total"] == 3 and [e["dead_id"] for e in listed["entries"]] == ids
    assert "3 dead letter(s)" in cli(redis_url, "dlq", "list", "jobs").output
    shown = json.loads(cli(redis_url, "dlq", "show", "jobs", ids[1]).output)
    assert shown["fields"]["k"] == "k1" and shown["attempts"] == 4 and shown["error_type"] == "ValueError"
    assert shown["fields"]["v"] == "ü\x00"


def test_replay_is_idempotent_per_dead_letter_and_marks_the_origin(
    sync_redis: syncredis.Redis, redis_url: str
) -> None:
    """Replaying one dead letter twice adds one entry, carrying ``_st_origin_id`` and the
    original fields byte for byte; the dead letter is gone from the dead-letter stream."""
    dead_id = add_dead(sync_redis, "k1")
    add_dead(sync_redis, "k2")
    cli(redis_url, "dlq", "replay", "jobs", "--id", dead_id)
    again = cli(redis_url, "dlq", "replay", "jobs", "--id", dead_id)
    assert "replayed 0" in again.output
    entries: Any = sync_redis.xrange("jobs")
    assert len(entries) == 1
    fields = entries[0][1]
    assert fields[b"k"] == b"k1" and fields[b"v"] == "ü\x00".encode()
    assert fields[b"_st_origin_id"] == b"1-2" and fields[b"_st_origin_stream"] == b"jobs"
    assert sync_redis.xlen("jobs:dead") == 1


def test_show_and_replay_a_dead_letter_of_a_non_utf8_field_name(
    sync_redis: syncredis.Redis, redis_url: str
) -> None:
    """``dlq show`` prints a name that is not UTF-8 escaped; ``dlq replay`` sends its bytes."""
    error = ErrorInfo("DecodeError", "invalid_utf8: ...", "invalid_utf8", "")
    fields = dead_letter_fields(
        stream="jobs", entry_id="1-1", group="fault", handler="h", error=error, attempts=1,
        raw=[b"\xff\xfe", b"\xfe", b"k", b"x"], now_ms=1000,
    )  # fmt: skip
    dead_id = sync_redis.execute_command("XADD", "jobs:dead", "*", *fields, "first_failure_ms", "1").decode()
    shown = json.loads(cli(redis_url, "dlq", "show", "jobs", dead_id).output)
    assert shown["fields"] == {"\\xff\\xfe": "\\xfe", "k": "x"}
    cli(redis_url, "dlq", "replay", "jobs", "--id", dead_id)
    entries: Any = sync_redis.xrange("jobs")
    assert entries[0][1][b"\xff\xfe"] == b"\xfe"


def test_replay_by_error_type_and_purge_all(sync_redis: syncredis.Redis, redis_url: str) -> None:
    """``--error-type`` replays only that type; ``purge --all`` empties the stream."""
    add_dead(sync_redis, "a", "ValueError")
    add_dead(sync_redis, "b", "KeyError")
    add_dead(sync_redis, "c", "ValueError")
    out = cli(redis_url, "dlq", "replay", "jobs", "--error-type", "ValueError").output
    assert "replayed 2" in out
    replayed: Any = sync_redis.xrange("jobs")
    assert sorted(f[b"k"] for _, f in replayed) == [b"a", b"c"]
    assert "purged 1" in cli(redis_url, "dlq", "purge", "jobs", "--all", "--yes").output
    assert sync_redis.xlen("jobs:dead") == 0


@pytest.mark.fault
async def test_poison_entries_replayed_after_the_fix_are_all_handled(
    inv: Invariants, workers: Workers, ledger: Any, redis: aioredis.Redis, redis_url: str
) -> None:
    """Acceptance 4: poison entries dead-lettered; the handler fixed (flag ``fixed``); ``dlq
    replay --all`` -> all handled, each once; the dead-letter stream empty after purge."""
    workers.start()
    keys = await inv.send(100)
    poison = await inv.send(5, poison="1")
    out, _ = await inv.check(30, logs=workers.logs)
    assert set(out.dead) == set(poison) and set(out.handled) == set(keys)
    ledger.set("fixed", 1)
    await asyncio.to_thread(cli, redis_url, "dlq", "replay", "jobs", "--all")
    await asyncio.to_thread(cli, redis_url, "dlq", "replay", "jobs", "--all")  # idempotent
    assert await redis.xlen("jobs:dead") == 0  # replay moved them
    everything = set(keys) | set(poison)
    await poll(lambda: set(inv.handled()) == everything, 30, "replayed entries handled", workers.logs)

    async def settled() -> bool:
        return await inv.group_state() == (0, 0)

    await poll(settled, 30, "pending 0 and lag 0", workers.logs)
    handled = inv.handled()
    assert all(handled[k] == 1 for k in poison), handled
    await asyncio.to_thread(cli, redis_url, "dlq", "purge", "jobs", "--all", "--yes")
    assert await redis.xlen("jobs:dead") == 0
