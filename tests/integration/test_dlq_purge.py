"""``streamtasks dlq purge --all`` asks first (on a terminal), needs ``--yes`` elsewhere, and
``--dry-run`` deletes nothing; ``--app`` finds a custom ``dead_letter_stream=``."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as syncredis
from support.deadletters import add_dead

from streamtasks.cli.common import EXIT_ERROR, EXIT_OK, EXIT_USAGE

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.integration


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[syncredis.Redis]:
    client = syncredis.Redis.from_url(redis_url)
    client.flushall()
    yield client
    client.close()


def dlq(redis_url: str, *args: str, answer: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``streamtasks dlq ...``; with ``answer``, stdin is a terminal that types it."""
    argv = [sys.executable, "-m", "streamtasks", "dlq", *args, "--redis-url", redis_url]
    if answer is None:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=60, cwd=HERE, stdin=subprocess.DEVNULL
        )
    controller, terminal = pty.openpty()
    try:
        os.write(controller, answer.encode())
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=HERE, stdin=terminal)
    finally:
        os.close(controller)
        os.close(terminal)


def test_purge_all_without_a_terminal_needs_yes(sync_redis: syncredis.Redis, redis_url: str) -> None:
    for key in "abc":
        add_dead(sync_redis, key)
    refused = dlq(redis_url, "purge", "jobs", "--all")
    assert refused.returncode == EXIT_USAGE and "--yes" in refused.stderr
    assert sync_redis.xlen("jobs:dead") == 3
    done = dlq(redis_url, "purge", "jobs", "--all", "--yes")
    assert done.returncode == EXIT_OK and "purged 3 dead letter(s) from jobs:dead" in done.stdout
    assert sync_redis.xlen("jobs:dead") == 0


def test_purge_all_on_a_terminal_asks_and_no_keeps_everything(
    sync_redis: syncredis.Redis, redis_url: str
) -> None:
    for key in "ab":
        add_dead(sync_redis, key)
    kept = dlq(redis_url, "purge", "jobs", "--all", answer="n\n")
    assert "Delete all 2 dead letter(s) in jobs:dead for good?" in kept.stdout
    assert kept.returncode == EXIT_ERROR and sync_redis.xlen("jobs:dead") == 2
    gone = dlq(redis_url, "purge", "jobs", "--all", answer="y\n")
    assert gone.returncode == EXIT_OK and "purged 2" in gone.stdout
    assert sync_redis.xlen("jobs:dead") == 0


def test_dry_run_prints_what_would_go_and_deletes_nothing(
    sync_redis: syncredis.Redis, redis_url: str
) -> None:
    ids = [add_dead(sync_redis, key) for key in "abc"]
    everything = dlq(redis_url, "purge", "jobs", "--all", "--dry-run")
    assert everything.returncode == EXIT_OK
    assert all(i in everything.stdout for i in ids)
    assert "would purge 3 dead letter(s) from jobs:dead" in everything.stdout
    some = dlq(redis_url, "purge", "jobs", "--id", ids[0], "--id", "1-1", "--dry-run")
    assert "would purge 1 dead letter(s)" in some.stdout and ids[0] in some.stdout
    assert sync_redis.xlen("jobs:dead") == 3


def test_app_names_the_custom_dead_letter_stream(sync_redis: syncredis.Redis, redis_url: str) -> None:
    """``dlq_app`` declares ``dead_letter_stream="graveyard"`` for ``jobs``: ``--app`` finds it."""
    dead_id = add_dead(sync_redis, "a")
    sync_redis.rename("jobs:dead", "graveyard")
    listed = dlq(redis_url, "list", "jobs", "--app", "dlq_app:registry", "--json")
    assert listed.returncode == EXIT_OK, listed.stderr
    assert '"dead_stream": "graveyard"' in listed.stdout and dead_id in listed.stdout
    shown = dlq(redis_url, "show", "jobs", dead_id, "--app", "dlq_app:registry")
    assert shown.returncode == EXIT_OK and "boom a" in shown.stdout
    purged = dlq(redis_url, "purge", "jobs", "--all", "--yes", "--app", "dlq_app:registry")
    assert "purged 1 dead letter(s) from graveyard" in purged.stdout
    unknown = dlq(redis_url, "list", "nope", "--app", "dlq_app:registry")
    assert unknown.returncode == EXIT_ERROR and "has no handler for stream 'nope'" in unknown.stderr


def test_show_replay_and_purge_cover_every_shard_of_a_sharded_stream(
    sync_redis: syncredis.Redis, redis_url: str
) -> None:
    """``orders`` sharded in two (``orders:{0}``, ``orders:{1}``), dead letters in both shards'
    dead-letter streams: the base name reaches all of them, each letter back onto its shard."""
    shards = ["orders:{0}", "orders:{1}"]
    for shard in shards:
        sync_redis.xadd(shard, {"seed": "1"})
    first = [add_dead(sync_redis, f"a{i}", stream=shards[0]) for i in range(2)]
    second = [add_dead(sync_redis, f"b{i}", stream=shards[1], error_type="KeyError") for i in range(3)]
    shown = dlq(redis_url, "show", "orders", second[2])
    assert shown.returncode == EXIT_OK and '"stream": "orders:{1}"' in shown.stdout, shown.stderr
    both = set(first) & set(second)  # ids are per stream: the same id in two shards is likely
    for dead_id in both:
        ambiguous = dlq(redis_url, "show", "orders", dead_id)
        assert ambiguous.returncode == EXIT_ERROR and "--dead-stream" in ambiguous.stderr
        assert "orders:{0}:dead, orders:{1}:dead" in ambiguous.stderr
    missing = dlq(redis_url, "show", "orders", "9-9")
    assert missing.returncode == EXIT_ERROR and "orders's 2 shards" in missing.stderr
    replayed = dlq(redis_url, "replay", "orders", "--error-type", "KeyError")
    assert "replayed 3 dead letter(s) from orders's 2 shards" in replayed.stdout, replayed.stderr
    assert (sync_redis.xlen(shards[0]), sync_redis.xlen(shards[1])) == (1, 4)
    by_app = dlq(redis_url, "list", "orders", "--app", "cluster_app:registry", "--json")  # 16 shards
    assert json.loads(by_app.stdout)["total"] == 2, by_app.stderr
    dry = dlq(redis_url, "purge", "orders", "--all", "--dry-run")
    assert "would purge 2 dead letter(s) from orders's 2 shards" in dry.stdout
    purged = dlq(redis_url, "purge", "orders", "--all", "--yes")
    assert "purged 2 dead letter(s) from orders's 2 shards" in purged.stdout, purged.stderr
    assert sync_redis.xlen("orders:{0}:dead") == sync_redis.xlen("orders:{1}:dead") == 0
