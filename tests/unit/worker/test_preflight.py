"""The start-up permission check's list of commands, and its way out when it cannot ask."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

import streamtasks
from streamtasks import lua
from streamtasks.worker.preflight import Probe, check_permissions, probes

PACKAGE = Path(streamtasks.__file__).parent


def test_every_redis_command_the_worker_and_its_scripts_use_is_checked() -> None:
    """Commands named in worker/*.py (``redis.<cmd>(`` / ``pipe.<cmd>(``) and in the scripts
    the worker runs (``redis.call('<CMD>'``) all have a probe. (REPLAY is the CLI's.)"""
    found = probes([("s", "s:dead")], "g", "c", trimmed=["s"], periodic=["s"], results=["s"])
    checked = {p.command.split()[0].lower() for p in found}
    scripts = (
        lua.RECLAIM
        + lua.RESET
        + lua.DEAD_LETTER
        + lua.REPAIR_READ_COUNTER
        + lua.MOVE_DUE
        + lua.CLAIM_TICKS
        + lua.SETTLE_RESULT
        + lua.NOTIFY
        + lua.FORGET_CONSUMER
    )
    called = set(re.findall(r"redis\.call\('(\w+)'", scripts))
    methods: set[str] = set()
    calls = re.compile(r"(?:redis|pipe|_client)\.(x\w+|h\w+|set|delete|exists)\(")
    for path in (PACKAGE / "worker").glob("*.py"):
        methods |= set(calls.findall(path.read_text()))
    names = {m.split("_")[0] for m in methods} | {c.lower() for c in called}
    names = {"del" if n == "delete" else n for n in names}
    assert names <= checked, names - checked


def test_every_probe_is_on_the_workers_own_keys() -> None:
    found = probes([("orders", "orders:dead")], "g", "c")
    assert Probe("XADD", ("XADD", "orders:dead", "not-an-id", "f", "v")) in found
    exempt = ("SCRIPT", "EVAL", "SET", "DEL", "EXISTS", "TIME")  # scripts, heartbeats, Redis' clock
    assert all("orders" in " ".join(p.argv) or p.command.startswith(exempt) for p in found)


class NoAclClient:
    """A client (a test double, a proxy) that answers no raw command."""

    async def execute_command(self, *args: Any) -> Any:
        raise NotImplementedError(args[0])


async def test_a_client_that_cannot_be_asked_lets_the_worker_start_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "streamtasks.worker"):
        await check_permissions(NoAclClient(), [("s", "s:dead")], "g", "c")  # type: ignore[arg-type]
    assert "could not check the Redis user's permissions at start (NotImplementedError" in caplog.text


def test_xtrim_is_checked_only_on_the_keys_the_worker_trims() -> None:
    """A worker that trims nothing needs no XTRIM (a user limited to its streams keeps working);
    one that trims a stream or its dead letters is checked for XTRIM on exactly those keys."""
    assert not [p for p in probes([("orders", "orders:dead")], "g", "c") if p.command == "XTRIM"]
    trims = [
        p for p in probes([("orders", "orders:dead")], "g", "c", ["orders:dead"]) if p.command == "XTRIM"
    ]
    assert [p.argv[1] for p in trims] == ["orders:dead"]


def test_each_probe_names_the_key_it_touches_or_none() -> None:
    """What a refusal names ("XADD on key orders:dead") and where a cluster sends ACL DRYRUN."""
    found = probes([("orders", "orders:dead")], "g", "c", ["orders"])
    keys = {p.command: p.key for p in found}
    assert keys["XREADGROUP"] == keys["XACK"] == keys["XGROUP CREATE"] == keys["XTRIM"] == "orders"
    assert {p.key for p in found if p.command == "XADD"} == {"orders:dead", "orders"}  # dead letters, moves
    assert keys["ZRANGEBYSCORE"] == "orders:delayed" and keys["TIME"] is None
    assert keys["HSETNX"] is not None and "orders" in keys["HSETNX"]
    assert keys["EVALSHA"] is None and keys["SCRIPT LOAD"] is None and keys["SCRIPT EXISTS"] is None
